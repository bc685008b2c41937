"""Pickling compiled Functions.

A :class:`~graphc.function.Function` reduces (``Function.__reduce__``) to a
flat description of its *optimized* graph: one tuple per node in topological
order, inputs given as indices of earlier nodes, op instances (frozen
dataclasses, which pickle by reference to their class; custom ops pickle when
their callables are importable), constants' arrays and variables. Loading
rebuilds the tensors in one loop (no recursion, so 100k-node graphs load) and
calls :func:`graphc.compile.build_plan` directly: nothing is optimized again.

Variables pickle as fresh variables holding their current value. Within one
pickle a variable shared by several functions stays shared
(``pickle.dumps([train, predict])``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.compile import build_plan
from graphc.errors import LoadError
from graphc.function import PICKLING, Executable, Function, input_positions
from graphc.graph import pickled_node, pickled_placeholder, unpickled_node
from graphc.leaves import Placeholder
from graphc.structure import unflatten
from graphc.tensor import Tensor, Variable

__all__ = ["STATE_VERSION", "function_state", "rebuild_function", "restore_function", "snapshot"]

STATE_VERSION = 1


def snapshot(variables: list[Variable]) -> dict[int, np.ndarray]:
    """The variables' values read together, under their locks (taken in the executor's order),
    so that a save running beside a training call sees the state before or after it, not a mix."""
    ordered = sorted(variables, key=lambda v: v.serial)
    for variable in ordered:
        variable.lock.acquire()
    try:
        return {id(v): v.value for v in ordered}
    finally:
        for variable in reversed(ordered):
            variable.lock.release()


def function_state(fn) -> dict:
    """A flat, picklable description of ``fn``'s optimized graph and its variables."""
    plan = fn.plan
    order = plan.graph_order()
    index = {id(node): k for k, node in enumerate(order)}
    input_ids = {id(t) for t in plan.inputs}
    values = snapshot([node for node in order if isinstance(node, Variable)])
    nodes: list[tuple] = []
    for node in order:
        primitive = node.primitive
        if isinstance(node, Variable):
            # the Variable itself keeps variables shared within one pickle; the value is the one
            # read together with the others, under their locks
            nodes.append(("variable", node, values[id(node)]))
        elif id(node) in input_ids or isinstance(primitive, Placeholder):
            nodes.append(("placeholder", node.name, node.shape, node.dtype))
        else:
            nodes.append(pickled_node(node, index))
    return {
        "version": STATE_VERSION,
        "nodes": nodes,
        "inputs": [index[id(t)] for t in plan.inputs],
        "outputs": [index[id(t)] for t in plan.outputs],
        "updates": [(index[id(var)], index[id(value)]) for var, value in plan.updates],
        "spec": fn._spec,
        "optimize": fn.optimize,
        # an execution option, kept: the loaded Function behaves as the pickled one did
        "inplace_updates": bool(getattr(fn, "inplace_updates", False)),
        "check_numerics": bool(getattr(fn, "check_numerics", False)),
        "backend": getattr(fn, "backend", "numpy"),
    }


def restore_function(state: dict):
    """Rebuild a Function from :func:`function_state`'s description, without optimizing."""
    version = state.get("version") if isinstance(state, dict) else None
    if version != STATE_VERSION:
        raise LoadError(f"this pickle holds a graphc Function of pickle state version {version!r}; "
                        f"this graphc reads version {STATE_VERSION}")
    tensors: list[Tensor] = []
    append = tensors.append
    site = ("<unknown>", 0)
    for entry in state["nodes"]:
        kind = entry[0]
        if kind in ("constant", "op"):
            append(unpickled_node(entry, tensors, site))
        elif kind == "variable":
            variable = entry[1]
            if len(entry) > 2 and entry[2] is not None:
                value = np.array(entry[2], dtype=variable.dtype, copy=True)
                with variable.lock:
                    variable._install(value)
            append(variable)
        elif kind == "placeholder":
            append(pickled_placeholder(*entry[1:], site=site))
        else:
            raise ValueError(f"unknown node kind {kind!r} in a pickled graphc Function")
    inputs = [tensors[k] for k in state["inputs"]]
    outputs = [tensors[k] for k in state["outputs"]]
    updates = [(tensors[v], tensors[k]) for v, k in state["updates"]]
    return rebuild_function(inputs, outputs, state["spec"], updates, state["optimize"],
                            inplace_updates=bool(state.get("inplace_updates", False)),
                            check_numerics=bool(state.get("check_numerics", False)),
                            backend=str(state.get("backend", "numpy")))


def rebuild_function(inputs: Sequence[Tensor], outputs: Sequence[Tensor], spec,
                     updates: Sequence[tuple[Variable, Tensor]], optimize: bool = True, *,
                     inplace_updates: bool = False, check_numerics: bool = False, backend: str = "numpy"):
    """A Function over an already optimized graph: lowered with ``build_plan``, never optimized.

    Sets the same attributes as ``Function.__init__`` (a test checks they agree).
    """
    fn = Function.__new__(Function)
    fn.inputs = list(inputs)
    fn.outputs = unflatten(spec, list(outputs))
    fn._spec = spec
    fn._updates = list(updates)
    fn.optimize = optimize
    fn.inplace_updates = bool(inplace_updates)
    fn.check_numerics = bool(check_numerics)
    fn.backend = backend
    options = {"check_numerics": True} if fn.check_numerics else {}
    if backend != "numpy":
        options["backend"] = backend
    fn._executable = Executable(build_plan(list(outputs), list(inputs), list(updates),
                                           inplace_updates=fn.inplace_updates, **options), backend=backend)
    fn._positions = input_positions(fn.inputs)
    return fn


@PICKLING.provide
def reduce_function(fn) -> tuple:
    """``Function.__reduce__``: the function's flat state, rebuilt by :func:`restore_function`."""
    return restore_function, (function_state(fn),)
