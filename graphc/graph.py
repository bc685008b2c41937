"""Whole-graph utilities shared by autodiff, the passes and the executor."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from graphc.errors import ExecutionError, GraphcError
from graphc.op import Constant, Placeholder
from graphc.tensor import Tensor, toposort


def substitute(outputs: Sequence[Tensor], replace: Mapping[Tensor, Tensor]) -> dict[int, Tensor]:
    """``id(tensor) -> its copy`` for every tensor of the graph of ``outputs``, with ``replace`` applied.

    Nodes that do not depend on a replaced tensor are shared, not copied (they map to
    themselves); the others are rebuilt with :meth:`Tensor.with_inputs`, their types
    inferred again, so a replacement may have a more specific shape.
    """
    mapping: dict[int, Tensor] = {id(old): new for old, new in replace.items()}
    for node in toposort(outputs, stop_at=list(replace)):
        if id(node) not in mapping:
            mapping[id(node)] = node.with_inputs([mapping[id(p)] for p in node.inputs], retype=True)
    return mapping


def clone(outputs: Sequence[Tensor], replace: Mapping[Tensor, Tensor]) -> list[Tensor]:
    """Copies of ``outputs`` with the tensors in ``replace`` substituted (see :func:`substitute`)."""
    mapping = substitute(outputs, replace)
    return [mapping[id(t)] for t in outputs]


def depending(order: Sequence[Tensor], is_source: Callable[[Tensor], bool]) -> set[int]:
    """``id`` of every node of ``order`` (inputs before consumers) that is a source or reads one, transitively."""
    found: set[int] = set()
    for node in order:
        if is_source(node) or any(id(p) in found for p in node.inputs):
            found.add(id(node))
    return found


def frontier(order: Sequence[Tensor], outputs: Sequence[Tensor], inside: set[int]) -> list[Tensor]:
    """The tensors outside ``inside`` that a node of ``inside`` (from ``order``) reads or that are among
    ``outputs``: where a part of a graph (a loop's step-dependent nodes) meets the rest. In order of first use."""
    used = [p for node in order if id(node) in inside for p in node.inputs] + list(outputs)
    return list({id(t): t for t in used if id(t) not in inside}.values())


class InnerGraph:
    """A closed graph an op runs as part of its computation (a loop's body).

    ``inputs`` are distinct placeholders (the values the op binds on each run, by position),
    ``outputs`` the tensors it computes. Closed: every leaf it reaches is one of ``inputs`` or a
    constant (no variable, no outer placeholder), so it can be optimized, compiled, saved and
    loaded on its own. Immutable; equality and hashing go by ``key``, a structural digest in
    which each input counts by its position (so two traces of the same function are equal).
    Iterative everywhere: deep bodies need no recursion limit; nesting (a scan inside a body)
    recurses once per level.
    """

    __slots__ = ("inputs", "outputs", "key", "size", "__weakref__")

    def __init__(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
        inputs, outputs = tuple(inputs), tuple(outputs)
        position = {id(t): k for k, t in enumerate(inputs)}
        if len(position) != len(inputs):
            raise GraphcError("inner graph: an input is listed twice")
        for tensor in inputs:
            if not isinstance(tensor, Tensor) or not isinstance(tensor.primitive, Placeholder):
                raise GraphcError(f"inner graph: inputs must be placeholders, got {tensor!r}")
        if not outputs:
            raise GraphcError("inner graph: needs at least one output")
        keys: dict[int, str] = {}
        order = toposort(outputs, stop_at=inputs)
        for node in order:
            if id(node) in position:
                keys[id(node)] = f"input{position[id(node)]}:{node.dtype}:{node.shape!r}"
                continue
            if not node.inputs and not isinstance(node.primitive, Constant):
                raise GraphcError(f"inner graph: {node.describe()} is neither an input nor a constant "
                                  f"(an inner graph is closed: outer tensors must be passed as inputs)")
            digest = hashlib.blake2b(digest_size=16)
            digest.update(node.primitive.key_bytes(node))
            digest.update(str(node.dtype).encode())
            digest.update(repr(node.shape).encode())
            for parent in node.inputs:
                digest.update(keys[id(parent)].encode())
            keys[id(node)] = digest.hexdigest()
        total = hashlib.blake2b(digest_size=16)
        total.update(f"graph{len(inputs)}:".encode())
        for tensor in inputs:
            total.update(keys.get(id(tensor), f"input:{tensor.dtype}:{tensor.shape!r}").encode())
        for tensor in outputs:
            total.update(keys[id(tensor)].encode())
        setattr_ = object.__setattr__
        setattr_(self, "inputs", inputs)
        setattr_(self, "outputs", outputs)
        setattr_(self, "key", total.hexdigest())
        setattr_(self, "size", len(order))

    def __setattr__(self, name, value):
        raise AttributeError("InnerGraph is immutable")

    def __eq__(self, other) -> bool:
        return isinstance(other, InnerGraph) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"graph(inputs={len(self.inputs)}, outputs={len(self.outputs)}, nodes={self.size})"

    def nodes(self) -> list[Tensor]:
        """Every node, inputs before consumers (the body's own placeholders included)."""
        return toposort(self.outputs, stop_at=self.inputs)

    def evaluate(self, arrays: Sequence) -> tuple:
        """The outputs' values for the inputs' ``arrays``, node by node with each op's ``impl``.

        The reference interpreter (the compiler's plans are what runs normally): every value
        computed, nothing reused, outputs copied so they never alias an input or each other.
        """

        values: dict[int, object] = {id(t): a for t, a in zip(self.inputs, arrays)}
        for node in self.nodes():
            if id(node) in values:
                continue
            if not node.inputs:
                values[id(node)] = node.primitive.impl()
                continue
            try:
                values[id(node)] = node.primitive.impl(*[values[id(p)] for p in node.inputs])
            except ExecutionError:
                raise
            except Exception as exc:  # noqa: BLE001 - named like the executor names a failing node
                raise ExecutionError(f"op {node.op!r} ({node.describe()}) failed: {type(exc).__name__}: {exc}") from exc
        return tuple(np.array(values[id(t)], copy=True) for t in self.outputs)

    def __reduce__(self):
        # the graph flattened into one node list (tensors do not pickle alone); ops pickle as themselves
        order = self.nodes()
        index = {id(node): k for k, node in enumerate(order)}
        position = {id(t): k for k, t in enumerate(self.inputs)}
        nodes = [("input", node.name, node.shape, node.dtype) if id(node) in position else pickled_node(node, index)
                 for node in order]
        # inputs the outputs do not reach are kept too (they fix the positions)
        missing = [(k, t.name, t.shape, t.dtype) for k, t in enumerate(self.inputs) if id(t) not in index]
        return _restore_inner_graph, (nodes, [index.get(id(t), -1) for t in self.inputs],
                                      [index[id(t)] for t in self.outputs], missing)


def _restore_inner_graph(nodes, inputs, outputs, missing) -> InnerGraph:
    site = ("<inner graph>", 0)
    tensors: list[Tensor] = []
    for entry in nodes:
        if entry[0] == "input":
            tensors.append(pickled_placeholder(*entry[1:], site=site))
        elif entry[0] in ("constant", "op"):
            tensors.append(unpickled_node(entry, tensors, site))
        else:
            raise ValueError(f"unknown node kind {entry[0]!r} in a pickled inner graph")
    extra = {k: pickled_placeholder(name, shape, dtype, site=site) for k, name, shape, dtype in missing}
    graph_inputs = [tensors[i] if i >= 0 else extra[k] for k, i in enumerate(inputs)]
    return InnerGraph(graph_inputs, [tensors[k] for k in outputs])


# ---- pickled node lists ---------------------------------------------------------------------
# A pickled graph (an inner graph's __reduce__, pickling.function_state) is a flat list of entries,
# inputs before consumers; a constant or op node is one of
#   ("constant", value, name, is_gradient)
#   ("op", primitive, positions of its inputs in the list, shape, dtype, name, is_gradient, site)
# and a placeholder (name, shape, dtype) under its writer's own tag.

def pickled_node(node: Tensor, index: Mapping[int, int]) -> tuple:
    """The entry of the constant or op ``node``; ``index`` maps ``id(tensor)`` to its position in the list."""
    if isinstance(node.primitive, Constant):
        return ("constant", node.primitive.value, node.name, node.is_gradient)
    return ("op", node.primitive, tuple(index[id(p)] for p in node.inputs), node.shape, node.dtype, node.name,
            node.is_gradient, node.site)


def unpickled_node(entry: tuple, tensors: Sequence[Tensor], site: tuple) -> Tensor:
    """The tensor of a "constant" or "op" entry, its inputs taken from ``tensors`` (the list so far);
    ``site`` stands for a constant's, or an op's the pickle did not record. A constant holds a read-only copy."""
    if entry[0] == "constant":
        _, value, name, is_gradient = entry
        value = np.array(value, copy=True)
        value.flags.writeable = False
        return Tensor(Constant(value), (), value.shape, value.dtype, name=name, site=site, is_gradient=is_gradient)
    _, primitive, parents, shape, dtype, name, is_gradient, node_site = entry
    return Tensor(primitive, [tensors[k] for k in parents], shape, dtype, name=name,
                  site=node_site if node_site is not None else site, is_gradient=is_gradient)


def pickled_placeholder(name: str, shape: tuple, dtype, *, site: tuple) -> Tensor:
    """The placeholder of a pickled placeholder entry's fields."""
    return Tensor(Placeholder(), (), shape, dtype, name=name, site=site, is_gradient=False)
