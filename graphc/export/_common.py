"""What the exporters share: accepting outputs in any form, node kinds and labels.

Every exporter walks the graph with :func:`graphc.tensor.toposort` (iterative,
ordered by the graph alone) and numbers nodes by that order, so the output is
the same in every process: never ``id()`` or ``hash()``.
"""

from __future__ import annotations

import numpy as np

from graphc.function import Function
from graphc.leaves import Constant, Placeholder, VariableLeaf
from graphc.structure import flatten
from graphc.tensor import Tensor, toposort
from graphc.types import format_shape

#: how many elements of a constant are shown in labels
SMALL_CONSTANT = 4


def flat_outputs(outputs) -> list[Tensor]:
    """The tensors of ``outputs``: a Tensor, a nested list/tuple/dict of them, or a Function."""
    if isinstance(outputs, Function):
        return list(outputs._graph_outputs())
    flat, _ = flatten(outputs)
    return flat


def graph_nodes(outputs) -> tuple[list[Tensor], list[Tensor], dict[int, int]]:
    """(nodes in topological order, the flat outputs, ``id(node)`` -> index)."""
    flat = flat_outputs(outputs)
    order = toposort(flat)
    index = {id(node): k for k, node in enumerate(order)}
    return order, flat, index


def loop_nodes(order) -> list[Tensor]:
    """The nodes of ``order`` that run inner graphs (loops: ``gc.scan``, ``gc.map``, ``gc.foldl``), in its order."""
    return [node for node in order if node.inputs and node.primitive.inner_graphs()]


def node_kind(node: Tensor) -> str:
    """``"placeholder"``, ``"constant"``, ``"variable"`` or ``"op"``."""
    primitive = node.primitive
    if isinstance(primitive, Placeholder):
        return "placeholder"
    if isinstance(primitive, Constant):
        return "constant"
    if isinstance(primitive, VariableLeaf):
        return "variable"
    return "op"


def type_text(node: Tensor) -> str:
    """``(?, 3) float64`` (``2 outputs`` for a multi-output node such as a loop)."""
    if node.primitive.multi_output:
        return f"{len(node.primitive.output_types(*node.inputs))} outputs"
    return f"{format_shape(node.shape)} {node.dtype}"


def constant_text(node: Tensor) -> str | None:
    """The value of a small constant as text (``2.0``, ``[1 2 3]``), else None."""
    if not isinstance(node.primitive, Constant):
        return None
    value = np.asarray(node.primitive.value)
    if value.size > SMALL_CONSTANT:
        return None
    if value.ndim == 0:
        return repr(value.item())
    return "[" + " ".join(repr(v) for v in value.ravel().tolist()) + "]"


def param_text(node: Tensor) -> str:
    """The op's parameters as ``axis=1, keepdims=True`` (empty for leaves and no parameters)."""
    if node_kind(node) != "op":
        return ""
    try:
        params = node.primitive.params()
    except Exception:  # noqa: BLE001 - a custom op without dataclass fields
        return ""
    parts = []
    for key, value in params.items():
        if isinstance(value, np.dtype):
            value = str(value)
        parts.append(f"{key}={value!r}" if not isinstance(value, str) else f"{key}={value}")
    return ", ".join(parts)


def _index_text(entries: tuple) -> str:
    """``[0]``, ``[:, 1:3]``, ``[..., None]``, ``[i]`` for getitem's normalized index entries."""
    parts = []
    arrays = 0
    for entry in entries:
        kind = entry[0]
        if kind == "int":
            parts.append(str(entry[1]))
        elif kind == "slice":
            start, stop, step = entry[1:]
            text = f"{'' if start is None else start}:{'' if stop is None else stop}"
            parts.append(text + (f":{step}" if step is not None else ""))
        elif kind == "newaxis":
            parts.append("None")
        elif kind == "ellipsis":
            parts.append("...")
        else:  # an index array, fed as the node's input 1, 2, ...
            arrays += 1
            parts.append(f"<input {arrays}>")
    return "[" + ", ".join(parts) + "]"


#: einsum subscripts with a well-known meaning (spaces and letters as written by graphc)
_EINSUM_MEANINGS = {"ij,jk->ik": "matrix product", "i,i->": "dot product", "i,j->ij": "outer product",
                    "ij->ji": "transpose", "ii->i": "diagonal", "ii->": "trace", "ij->": "sum",
                    "ij,ij->ij": "element-wise product", ",z->z": "scalar times vector",
                    "z,->z": "vector times scalar", "bij,bjk->bik": "batched matrix product",
                    "ij,j->i": "matrix times vector", "i,ij->j": "vector times matrix"}


def _einsum_text(subscripts: str) -> str:
    """``ij,jk->ik (matrix product)``: the subscripts, and what they compute when it is well known."""
    terms, _, output = subscripts.partition("->")
    letters = []
    for term in terms.split(","):
        letters.extend(c for c in term if c.isalpha())
    canonical = {c: k for k, c in enumerate(dict.fromkeys(letters + [c for c in output if c.isalpha()]))}
    # compare up to renaming of the letters (bi,ij->bj is ij,jk->ik)
    for pattern, meaning in _EINSUM_MEANINGS.items():
        p_terms, _, p_out = pattern.partition("->")
        p_letters = [c for term in p_terms.split(",") for c in term] + list(p_out)
        p_canonical = {c: k for k, c in enumerate(dict.fromkeys(p_letters))}

        def shape_of(text, table):
            return "".join(str(table[c]) if c.isalpha() else c for c in text)

        if shape_of(subscripts, canonical) == shape_of(pattern, p_canonical):
            return f"{subscripts} ({meaning})"
    return subscripts


def readable_params(node: Tensor) -> str:
    """The op's parameters for pictures: ``[0]`` for getitem, einsum's subscripts with their
    meaning, and ``key=value`` for the others, leaving out switches at their default
    (``keepdims=False``)."""
    import dataclasses

    if node_kind(node) != "op":
        return ""
    primitive = node.primitive
    try:
        params = primitive.params()
    except Exception:  # noqa: BLE001 - a custom op without dataclass fields
        return ""
    name = getattr(primitive, "name", "")
    if name == "getitem" and isinstance(params.get("index"), tuple):
        return _index_text(params["index"])
    if name == "einsum" and isinstance(params.get("subscripts"), str):
        return _einsum_text(params["subscripts"])
    defaults = {}
    if dataclasses.is_dataclass(primitive):
        defaults = {f.name: f.default for f in dataclasses.fields(primitive)
                    if f.default is not dataclasses.MISSING}
    parts = []
    for key, value in params.items():
        if isinstance(value, bool) and type(defaults.get(key)) is bool and defaults[key] == value:
            continue  # a switch at its default: keepdims=False, approximate=False, ...
        if isinstance(value, np.dtype):
            value = str(value)
        parts.append(f"{key}={value!r}" if not isinstance(value, str) else f"{key}={value}")
    return ", ".join(parts)


def output_labels(outputs) -> list[str]:
    """For each flat output, what it is: ``output 'loss'`` (a dict key), ``output 1`` (a position),
    ``update W`` (a Function's new value for a variable)."""
    from graphc.function import Function

    if isinstance(outputs, Function):
        labels = _structure_labels(outputs._spec)
        labels += [f"update {variable.name or '<unnamed>'}" for variable, _ in outputs.plan.updates]
        return labels
    _, spec = flatten(outputs)
    return _structure_labels(spec)


def _structure_labels(spec) -> list[str]:
    if spec is None:
        return ["output"]
    labels = []
    stack = [(spec, "")]
    while stack:
        item, path = stack.pop()
        if item is None:
            labels.append(f"output {path}" if path else "output")
            continue
        kind, _, children = item
        if kind == "dict":
            entries = [(child, f"{path}[{key!r}]" if path else repr(key)) for key, child in children]
        else:
            entries = [(child, f"{path}[{k}]" if path else str(k)) for k, child in enumerate(children)]
        stack.extend(reversed(entries))
    return labels
