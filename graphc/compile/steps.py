"""Facts about a step that several stages ask: its direct NumPy kernel, whether its shape is
static, its size, and which updated variables' storage it may look into."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.ops.elementwise import Relu
from graphc.ops.linalg import Matmul
from graphc.tensor import Tensor, Variable


def kernel(node: Tensor):
    """The function the op declares for a direct ``f(*arrays, out=...)`` call, or None (a call of ``impl``)."""
    lowering = getattr(node.primitive, "lowering", None)
    return lowering() if lowering is not None else None


def writes_out(node: Tensor) -> bool:
    """Whether the step runs as a NumPy call that can write through ``out=``: a kernel, ``relu``
    (``np.maximum(x, 0, out=)``) or ``matmul`` (``np.matmul(a, b, out=)``); exact classes, since a
    subclass may compute something else."""
    cls = type(node.primitive)
    return cls is Relu or cls is Matmul or kernel(node) is not None


def static(node: Tensor) -> bool:
    """A known, non-empty-rank shape: its buffers can be reused through ``out=``."""
    return bool(node.shape) and None not in node.shape


def nbytes(node: Tensor) -> int:
    return int(np.prod(node.shape, dtype=np.int64)) * node.dtype.itemsize


def looks_into(steps: Sequence[Tensor], deps: dict[int, list[Tensor]],
               updates: Sequence[tuple[Variable, Tensor]]) -> dict[int, frozenset]:
    """For each value, the updated variables whose storage it may look into (itself or a view)."""
    looks: dict[int, frozenset] = {id(v): frozenset((id(v),)) for v, _ in updates}
    for node in steps:
        if node.primitive.view:
            seen = frozenset().union(*(looks.get(id(p), frozenset()) for p in deps[id(node)]))
            if seen:
                looks[id(node)] = seen
    return looks
