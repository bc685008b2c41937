"""Facts about a step that several stages ask: its direct NumPy kernel, whether its shape is
static, its size, and which updated variables' storage it may look into."""

from __future__ import annotations

import math
from collections.abc import Sequence

from graphc.tensor import Tensor, Variable


def kernel(node: Tensor):
    """The function the op declares for a direct ``f(*arrays, out=...)`` call, or None (a call of ``impl``)."""
    lowering = getattr(node.primitive, "lowering", None)
    return lowering() if lowering is not None else None


def static(node: Tensor) -> bool:
    """A known, non-empty-rank shape: its buffers can be reused through ``out=``."""
    return bool(node.shape) and None not in node.shape


def nbytes(node: Tensor) -> int:
    """The bytes of a step's value (``node`` has a static shape)."""
    return math.prod(node.shape) * node.dtype.itemsize


def looks_into(steps: Sequence[Tensor], deps: dict[Tensor, list[Tensor]],
               updates: Sequence[tuple[Variable, Tensor]]) -> dict[int, frozenset]:
    """For each value, the updated variables whose storage it may look into (itself or a view)."""
    looks: dict[int, frozenset] = {id(v): frozenset((id(v),)) for v, _ in updates}
    for node in steps:
        if node.primitive.view:
            seen = frozenset().union(*(looks.get(id(p), frozenset()) for p in deps[node]))
            if seen:
                looks[id(node)] = seen
    return looks
