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
    """``(?, 3) float64``."""
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
