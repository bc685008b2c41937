"""The compiler: a graph becomes a Plan, straight-line Python over NumPy calls.

Everything that can be decided once is decided here, at compile time, so that a call does
nothing but the NumPy work (measurements: docs/performance.md). The compiler is the stages of
``STAGES``, in order, each a function ``Program -> Program`` over plain data
(``graphc/compile/plan.py``):

1. **lowering** (``lowering.py``): leaves are named, fused nodes expanded into their steps,
   and the lowering rules (registered per op class, exact value for value, named in
   ``plan.explain()``) rewrite steps so that the plan saves passes or memory;
2. **scheduling** (``schedule.py``): the run order; each update's computation right after its
   gradient is complete; for in-place plans, readers of a variable before its update;
3. **in-place planning** (``inplace.py``, ``inplace_updates=True``): where each new value is
   written into its variable's storage, and the copies that must be taken first;
4. **buffer assignment** (``buffers.py``): how each step is lowered, the lifetimes of the
   buffers, and which dead buffer (or dying input) each ``out=`` step writes into;
5. **code generation** (``codegen.py``): the ``run`` function's source, one line per step,
   values in recycled local names, escapes copied, and the error handler naming the op; a plan
   of more than ``table.TABLE_STEPS`` steps runs those lines as a step table instead of
   compiling them (``table.py``).

Whatever the tricks, a plan never writes into a feed, a variable's storage or a constant, and
never returns aliased arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from graphc.tensor import Tensor, Variable, collector_paused

from .buffers import assign_buffers
from .codegen import generate
from .inplace import plan_inplace
from .lowering import lower, softmax_minus_one_hot_nodes
from .plan import Options, Plan, Program
from .runtime import SPARE_MIN_BYTES
from .schedule import schedule

__all__ = ["SPARE_MIN_BYTES", "STAGES", "Plan", "build_plan", "compile_inner"]

#: the values of ``build_plan``'s ``backend``: "numba" is the optional extra (``pip install "graphc[numba]"``)
BACKENDS = ("numpy", "numba")

#: the compiler's stages, in the order they run (see the module docstring)
STAGES: tuple[Callable[[Program], Program], ...] = (lower, schedule, plan_inplace, assign_buffers, generate)


def build_plan(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
               updates: Sequence[tuple[Variable, Tensor]] = (), *, reuse_buffers: bool = True,
               schedule_updates: bool = True, scalar_mode: bool = True, peepholes: bool = True,
               expand_fused: bool = True, inplace_updates: bool = False, check_numerics: bool = False,
               backend: str = "numpy") -> Plan:
    """Lower the graph computing ``outputs`` and the update values to a Plan.

    ``inputs`` are the tensors fed at call time, in call order. Every
    placeholder the graph needs must be among them (else ``FeedError``). The
    keyword switches turn individual executor optimizations off (for tests and
    measurements; ``peepholes`` are the lowering rules); results are the same either way.

    ``inplace_updates=True`` (with updates) makes an in-place plan (see
    :class:`Plan`): each new value is written into its variable's storage as
    soon as every reader of the old value has run, and the update of a
    variable is scheduled after those readers where that is possible.

    ``check_numerics=True`` makes a checked plan (graphc/numerics.py): the first
    step whose value holds a NaN or an infinity while its inputs do not, or a
    non-finite feed or variable value, raises ``NumericsError`` (an
    ``ExecutionError``). It writes no step into its inputs' buffers, and cannot be
    an in-place plan. Without it the generated code is what it always was.

    ``backend="numba"`` runs each group of compilable element-wise steps as one compiled
    kernel (``numba_kernels.py``) and the sparse cross-entropy's loss and gradient with its
    own (``numba_loss.py``), bit-identical values; the plan's graph (``outputs``, ``updates``,
    what pickles hold) is still the one given.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; the backends are {', '.join(map(repr, BACKENDS))}")
    outputs, updates = tuple(outputs), tuple(updates)
    roots, new_values = outputs, updates
    if backend == "numba":
        if check_numerics:
            raise ValueError('backend="numba" cannot be combined with check_numerics=True: a kernel has no '
                             "intermediate values to check")
        from .numba_kernels import kernel_graph

        kernel_roots = kernel_graph(softmax_minus_one_hot_nodes(list(outputs) + [value for _, value in updates]))
        roots = tuple(kernel_roots[:len(outputs)])
        new_values = tuple((var, value) for (var, _), value in zip(updates, kernel_roots[len(outputs):]))
    if check_numerics:
        if inplace_updates and updates:
            raise ValueError("check_numerics=True cannot be combined with inplace_updates=True: an in-place "
                             "call writes variables before it ends, so a failed check could not leave them "
                             "unchanged")
        reuse_buffers = False  # a step's inputs must still hold their values when its check runs
    options = Options(reuse_buffers=reuse_buffers, schedule_updates=schedule_updates, scalar_mode=scalar_mode,
                      peepholes=peepholes, expand_fused=expand_fused, inplace=bool(inplace_updates and updates),
                      check_numerics=check_numerics, backend=backend)
    program = Program(roots, tuple(inputs), new_values, options, compile_graph=compile_inner)
    with collector_paused():  # (lowering makes many small long-lived objects: see collector_paused)
        for stage in STAGES:
            program = stage(program)
    assert program.plan is not None  # noqa: S101 - code generation always makes one
    if backend == "numpy":
        return program.plan
    return dataclasses.replace(program.plan, outputs=outputs, updates=updates)  # (the graph given)


def compile_inner(graph) -> Callable:
    """An inner graph (a loop's body) compiled once into its own plan: ``run(arrays) -> tuple``."""
    plan = build_plan(list(graph.outputs), list(graph.inputs))
    return functools.partial(plan.run, variables=())
