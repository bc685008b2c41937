"""The data the compiler's stages pass on: ``Program`` (a plan in the making) and ``Plan`` (the result).

Every stage of ``graphc.compile.STAGES`` is a function ``Program -> Program``: it reads the
fields the stages before it filled in and fills in its own (each field says which stage sets
it). Values are identified by ``id(tensor)``, except in ``deps`` and ``number``, keyed by the tensors
themselves (they hash by identity; a long plan's lookups there are the stages' most frequent, and a
tensor key needs no compare of a stored int); ``deps`` is the dependency map the stages work on (the
lowering rules rewire it without touching the user's graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from graphc.tensor import Tensor, Variable, toposort
from graphc.types import format_shape


@dataclass
class Plan:
    """A compiled graph: what to feed, what to read, and the generated ``run``.

    ``run(feeds, variables)`` takes the validated feed arrays (in ``inputs``
    order) and the variables' current values (in ``variables`` order) and
    returns the output values followed by the update values, none of them
    aliasing its arguments or each other.

    An ``inplace`` plan is ``run(feeds, variables, targets)``: ``targets`` has
    one entry per update, the writeable array the new value is written into
    (normally the variable's own storage, also passed in ``variables``) or
    None (the new value then goes into a fresh array). It returns the outputs
    followed by the arrays holding the new values (the targets, or the fresh
    arrays). When it fails, the ``ExecutionError`` lists the variables already
    written and carries ``_graphc_written`` ({update index: array}).
    """

    inputs: tuple[Tensor, ...]
    variables: tuple[Variable, ...]
    outputs: tuple[Tensor, ...]
    updates: tuple[tuple[Variable, Tensor], ...]
    steps: tuple[Tensor, ...]
    source: str
    run: Callable = field(repr=False)
    #: how each step was lowered (for tests and ``explain``): "call", "ufunc", "inplace", "reuse", "scalar", ...
    kinds: tuple[str, ...] = ()
    #: True when the plan runs on NumPy scalars (every value 0-d)
    scalar: bool = False
    #: True when the plan writes new values into the variables' storage (see ``build_plan``)
    inplace: bool = False
    #: True when every float step's value is checked for NaN and infinities (graphc/numerics.py)
    check_numerics: bool = False
    #: per step, the lowering rule that rewrote it ("" if none; see ``graphc/compile/lowering.py``)
    rules: tuple[str, ...] = ()

    @property
    def updated_variables(self) -> tuple[Variable, ...]:
        return tuple(v for v, _ in self.updates)

    def graph_order(self) -> list[Tensor]:
        """Every node of the plan's graph, inputs before consumers (the order pickles and saved files use)."""
        roots = (list(self.inputs) + list(self.outputs) + [value for _, value in self.updates]
                 + list(self.updated_variables))
        return toposort(roots, stop_at=list(self.inputs))

    def explain(self) -> str:
        """One line per step: its lowering, op and type, and the lowering rule that made it, if one did."""
        rules = self.rules or ("",) * len(self.steps)
        return "\n".join(f"{i:4d} {kind:8s} {node.op} {format_shape(node.shape)} {node.dtype}"
                         + (f"  [rule {rule}]" if rule else "")
                         for i, (kind, node, rule) in enumerate(zip(self.kinds, self.steps, rules)))


class Deps(dict):
    """Each step (the tensor) -> its inputs, as the plan computes them: only the steps whose inputs the
    compiler changed are stored, a step not stored reads its own ``inputs`` (a dict of every step
    misses the caches on every insertion and lookup in a long plan)."""

    def __missing__(self, node: Tensor) -> tuple[Tensor, ...]:
        return node.inputs


@dataclass(frozen=True)
class Options:
    """``build_plan``'s switches (see there); every combination computes the same values."""

    reuse_buffers: bool = True
    schedule_updates: bool = True
    scalar_mode: bool = True
    peepholes: bool = True
    expand_fused: bool = True
    inplace: bool = False
    check_numerics: bool = False
    #: ``"numpy"`` or ``"numba"``: the lowering rules pick a backend's implementation of some steps
    backend: str = "numpy"


@dataclass
class Program:
    """A plan in the making: the request, then what each stage decided (ids are ``id(tensor)``)."""

    # ---- the request (``build_plan``) ----
    outputs: tuple[Tensor, ...]
    inputs: tuple[Tensor, ...]
    updates: tuple[tuple[Variable, Tensor], ...]
    options: Options
    #: compiles an inner graph (a loop's body) into ``run(arrays) -> tuple`` (``compile_inner``), for the
    #: ops that run inner graphs (``Op.compiled_impl``)
    compile_graph: Callable | None = None
    # ---- lowering ----
    #: every node the roots need, inputs before consumers (the user's graph, before any rule)
    order: list[Tensor] = field(default_factory=list)
    #: the leaves' names: ``x{k}`` feeds, ``w{k}`` variables, ``c{k}`` constants (steps get ``v{k}`` later)
    names: dict[int, str] = field(default_factory=dict)
    #: the constants' values by name
    defaults: dict[str, object] = field(default_factory=dict)
    variables: list[Variable] = field(default_factory=list)
    leaves: list[Tensor] = field(default_factory=list)
    #: the computing nodes; lowering: in dependency order, later stages: in run order
    steps: list[Tensor] = field(default_factory=list)
    #: each step (the tensor) -> its inputs, as the plan computes it (lowering rules rewire these; see ``Deps``)
    deps: Deps = field(default_factory=Deps)
    #: the outputs followed by each update's value (in-place planning: what each update returns)
    roots: list[Tensor] = field(default_factory=list)
    #: steps computed by another NumPy function of their (rewired) inputs, e.g. ``np.vdot``
    special: dict[int, Callable] = field(default_factory=dict)
    #: the lowering rule that changed each step
    fired: dict[int, str] = field(default_factory=dict)
    # ---- scheduling ----
    #: the dependencies the schedule respects (``deps`` plus, in place, "after every reader of the old value")
    order_deps: dict[Tensor, list[Tensor]] | None = None
    # ---- in-place planning ----
    #: steps computing straight into variable ``t{k}``'s storage (id -> update index k)
    fused: dict[int, int] = field(default_factory=dict)
    #: write steps copying a new value into the storage (id -> update index k)
    writes: dict[int, int] = field(default_factory=dict)
    # ---- buffer assignment ----
    # From here on values are also numbered: ``values[k]`` is value number k, the steps in run order
    # (a step's number is its index) and then the leaves. The later stages index lists by number rather
    # than dicts by id(): a long plan's dicts outgrow the caches, and each lookup then costs a miss.
    #: every value of the plan, by number
    values: list[Tensor] = field(default_factory=list)
    #: each value (the tensor) -> its number
    number: dict[Tensor, int] = field(default_factory=dict)
    #: per step, the numbers of its inputs (``deps``, numbered)
    parents: list[list[int]] = field(default_factory=list)
    #: per step, how it is lowered ("ufunc", "inplace", "reuse", "call", ...; code generation refines it)
    kinds: list[str] = field(default_factory=list)
    #: per step, the number of the buffer it writes into with ``out=`` (a step's: buffers are steps'), or None
    target: list[int | None] = field(default_factory=list)
    #: per value number, the step index writing into its buffer, or -1
    taken_at: list[int] = field(default_factory=list)
    #: per step, the numbers of the values whose names are dropped after it (``()``: none)
    frees: list = field(default_factory=list)
    # ---- code generation ----
    #: the name each shared value (a NumPy function, a 0-d zero) is bound to in ``run``'s namespace
    shared: dict = field(default_factory=dict)
    plan: Plan | None = None

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    @property
    def update_values(self) -> list[Tensor]:
        return self.roots[len(self.outputs):]

    @property
    def resolved_updates(self) -> list[tuple[Variable, Tensor]]:
        """(variable, the step computing its new value), after the lowering rules."""
        return [(var, value) for (var, _), value in zip(self.updates, self.update_values)]
