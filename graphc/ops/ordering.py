"""Ordering: sort, argsort, top_k; and the gather along an axis (``take_along_axis``) with its
scatter-add gradient (``take_along_axis_grad``) that carry values and gradients through an order.

Orders are stable: tied entries keep their input order (argsort and top_k agree with
``np.argsort(kind="stable")``), so results are the same on every run and machine.
"""

from __future__ import annotations

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.op import Op, apply, as_tensor, op_dataclass
from graphc.ops.arrange import _check_axis, _is_int
from graphc.ops.shape import _target_inputs, _target_shape, composite, reshape, unify_shapes
from graphc.tensor import Tensor
from graphc.types import format_shape, normalize_axis


@op_dataclass
class Sort(Op):
    """``np.sort(x, axis)``. Gradient: ``g`` sent back through the sorting permutation; tied entries
    take the cotangents of their positions in stable order (the first tied input gets the first)."""

    name = "sort"
    axis: int = 0

    def infer(self, x):
        _check_axis(self.name, self.axis, x.ndim)
        return x.shape, x.dtype

    def impl(self, x):
        return np.sort(x, axis=self.axis)  # the values do not depend on stability (NumPy's fastest sort)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (take_along_axis_grad(g, Argsort(self.axis)(x), x, self.axis),)


@op_dataclass
class Argsort(Sort):
    """``np.argsort(x, axis, kind="stable")`` as int64. No gradient."""

    name = "argsort"
    zero_gradient = True

    def infer(self, x):
        _check_axis(self.name, self.axis, x.ndim)
        return x.shape, np.dtype(np.int64)

    def impl(self, x):
        return np.argsort(x, axis=self.axis, kind="stable").astype(np.int64, copy=False)


@op_dataclass
class TopK(Op):
    """The indices (int64) of the ``k`` largest entries along the last axis, largest first; ties
    in input order (lower index first); NaN counts as the largest value, as in ``np.sort``."""

    name = "top_k"
    k: int = 1
    zero_gradient = True

    def infer(self, x):
        if x.ndim == 0:
            raise ShapeError(f"{self.name}: needs at least 1 dimension, got a 0-d tensor")
        size = x.shape[-1]
        if not _is_int(self.k) or self.k < 0 or (size is not None and self.k > size):
            raise ShapeError(f"{self.name}: k={self.k!r} is not between 0 and the last size of "
                             f"shape {format_shape(x.shape)}")
        return x.shape[:-1] + (self.k,), np.dtype(np.int64)

    def impl(self, x):
        x = np.asarray(x)
        size, k = x.shape[-1], self.k
        if k > size:
            raise ValueError(f"top_k: k={k} is larger than the last size of shape {x.shape}")
        if k == 0:
            return np.zeros(x.shape[:-1] + (0,), np.int64)
        # O(n) selection, then an order of the k chosen only: the k-th largest value splits the
        # entries into those above it (all chosen) and those tied with it (the first ones chosen)
        kth = np.partition(x, size - k, axis=-1)[..., size - k:size - k + 1]  # NaN sorts last: largest
        if x.dtype.kind == "f":
            nan, kth_nan = np.isnan(x), np.isnan(kth)
            above, tied = (x > kth) | (nan & ~kth_nan), (x == kth) | (nan & kth_nan)
        else:
            above, tied = x > kth, x == kth
        needed = k - np.sum(above, axis=-1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=-1) <= needed))  # exactly k per row
        picked = np.nonzero(chosen)[-1].reshape(x.shape[:-1] + (k,))  # in index order
        return np.take_along_axis(picked, _descending(np.take_along_axis(x, picked, -1)), -1)


def _descending(x: np.ndarray) -> np.ndarray:
    """Indices (int64) sorting the last axis from largest to smallest, ties in input order, NaN first:
    a stable ascending order of the reversed entries, read backwards (no negation, so exact for
    unsigned ints and bools)."""
    order = np.argsort(x[..., ::-1], axis=-1, kind="stable")[..., ::-1]
    return (x.shape[-1] - 1 - order).astype(np.int64)


@op_dataclass
class TakeAlongAxis(Op):
    """``np.take_along_axis(x, indices, axis)`` (shapes equal outside ``axis``). Gradient: a
    scatter-add of ``g`` into zeros of ``x``'s shape; none to the indices."""

    name = "take_along_axis"
    axis: int = 0
    nondiff_inputs = (1,)

    def infer(self, x, indices):
        if indices.dtype.kind not in "iu":
            raise DTypeError(f"{self.name}: indices must be integers, got dtype {indices.dtype}")
        _check_axis(self.name, self.axis, x.ndim)
        if indices.ndim != x.ndim:
            raise ShapeError(f"{self.name}: indices of shape {format_shape(indices.shape)} for an input "
                             f"of shape {format_shape(x.shape)}: the ranks differ")
        others = [tuple(s for i, s in enumerate(t.shape) if i != self.axis) for t in (x, indices)]
        rest = unify_shapes(self.name, others)
        return rest[:self.axis] + (indices.shape[self.axis],) + rest[self.axis:], x.dtype

    def impl(self, x, indices):
        return np.take_along_axis(x, indices, self.axis)

    def vjp(self, node, g):
        x, indices = node.inputs
        return take_along_axis_grad(g, indices, x, self.axis), None


@op_dataclass
class TakeAlongAxisGrad(Op):
    """Scatter-add ``g`` into zeros of ``shape`` at ``indices`` along ``axis`` (repeats accumulate)."""

    name = "take_along_axis_grad"
    axis: int = 0
    shape: tuple = ()
    nondiff_inputs = (1, 2)

    def infer(self, g, indices, *ref):
        _check_axis(self.name, self.axis, len(self.shape))
        unify_shapes(self.name, [g.shape, indices.shape])
        rest = [tuple(s for i, s in enumerate(shape) if i != self.axis) for shape in (self.shape, indices.shape)]
        unify_shapes(self.name, rest)
        return self.shape, g.dtype

    def impl(self, g, indices, *ref):
        result = np.zeros(_target_shape(self, ref), g.dtype)
        where = list(np.indices(indices.shape, sparse=True))
        where[self.axis] = indices
        np.add.at(result, tuple(where), g)
        return result

    def vjp(self, node, g):
        return (TakeAlongAxis(self.axis)(g, node.inputs[1]),) + (None,) * (len(node.inputs) - 1)


def take_along_axis_grad(g: Tensor, indices: Tensor, x: Tensor, axis: int) -> Tensor:
    return apply(TakeAlongAxisGrad(axis, x.shape), g, indices, *_target_inputs(x))


def _along(op_class, x, axis) -> Tensor:
    x = as_tensor(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return apply(op_class(normalize_axis(op_class.name, axis, x.ndim)), x)


def sort(x, axis: int | None = -1) -> Tensor:
    """``np.sort``: ascending along ``axis`` (of the flattened input when None; NaN last).
    Gradient: each cotangent goes back to the entry that was sorted there (stable among ties)."""
    return _along(Sort, x, axis)


def argsort(x, axis: int | None = -1) -> Tensor:
    """``np.argsort(kind="stable")``: int64 indices that sort ``x`` along ``axis``, ties in input
    order. No gradient."""
    return _along(Argsort, x, axis)


def top_k(x, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries along the last axis, largest first: ``(values, indices)``.

    ``indices`` (int64, op ``top_k``) lists tied entries in input order (the lower index first,
    also where a tie straddles the k-th place); NaN counts as largest. ``values`` (op ``top_k`` too) is the
    gather ``take_along_axis(x, indices, -1)``: its gradient is scattered (added) to the chosen entries,
    the others get 0.
    """
    if not _is_int(k):
        raise TypeError(f"top_k: k must be an int, got {k!r}")
    x = as_tensor(x)
    if k < 0:
        raise ShapeError(f"top_k: k must be non-negative, got {k}")
    indices = apply(TopK(int(k)), x)
    return composite(apply(TakeAlongAxis(x.ndim - 1), x, indices), "top_k"), indices
