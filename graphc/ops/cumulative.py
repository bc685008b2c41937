"""Cumulative ops along one axis: cumsum, cumprod; and the two internal ops behind their gradients,
``shift`` (entries moved along an axis, vacated places filled) and ``linear_scan`` (the first-order
linear recurrence ``s_k = a_k s_{k-1} + b_k``, whose gradient is the same recurrence run backwards).
"""

from __future__ import annotations

import numpy as np

from graphc.errors import ShapeError
from graphc.op import Op, apply, as_tensor, op_dataclass
from graphc.ops.arrange import Flip, _check_axis, _is_int
from graphc.ops.elementwise import mul
from graphc.ops.shape import reshape, unify_shapes
from graphc.tensor import Tensor
from graphc.types import normalize_axis


@op_dataclass
class Cumulative(Op):
    axis: int = 0

    def infer(self, x):
        _check_axis(self.name, self.axis, x.ndim)
        return x.shape, self.result_dtype(x.dtype)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return self.np_op(np.zeros((1,), dtype)).dtype  # NumPy's accumulator (bool and small ints -> int64)


@op_dataclass
class Cumsum(Cumulative):
    """``np.cumsum(x, axis)``. Gradient: the reverse cumulative sum of ``g``."""

    name = "cumsum"
    np_op = staticmethod(np.cumsum)

    def impl(self, x):
        return np.cumsum(x, axis=self.axis)

    def vjp(self, node, g):
        back = Flip((self.axis,))
        return (back(Cumsum(self.axis)(back(g))),)


@op_dataclass
class Cumprod(Cumulative):
    """``np.cumprod(x, axis)``. Gradient without dividing by ``x`` (exact where ``x`` has zeros)."""

    name = "cumprod"
    np_op = staticmethod(np.cumprod)

    def impl(self, x):
        return np.cumprod(x, axis=self.axis)

    def vjp(self, node, g):
        # d out_i / d x_k = prod(x_j, j < k) * prod(x_j, k < j <= i) for i >= k, so the cotangent of
        # x_k is the exclusive product before k (out shifted by one, 1 first) times s_k, where
        # s_k = g_k + x_{k+1} s_{k+1} runs from the end: O(n) work, no division, any order.
        (x,) = node.inputs
        before = Shift(self.axis, 1, 1.0)(node)
        after = LinearScan(self.axis, True)(Shift(self.axis, -1)(x), g)
        return (mul(before, after),)


@op_dataclass
class Shift(Op):
    """``result[..., i, ...] = x[..., i - offset, ...]`` along ``axis``; vacated places hold ``fill``."""

    name = "shift"
    axis: int = 0
    offset: int = 1
    fill: float = 0.0

    def infer(self, x):
        _check_axis(self.name, self.axis, x.ndim)
        if not _is_int(self.offset):
            raise ShapeError(f"{self.name}: offset must be an int, got {self.offset!r}")
        return x.shape, x.dtype

    def impl(self, x):
        x = np.asarray(x)
        result = np.full(x.shape, self.fill, x.dtype)
        size = x.shape[self.axis]
        moved = min(abs(self.offset), size)
        kept, rest = slice(0, size - moved), slice(moved, size)
        source, target = (kept, rest) if self.offset >= 0 else (rest, kept)
        lead = (slice(None),) * self.axis
        result[lead + (target,)] = x[lead + (source,)]
        return result

    def vjp(self, node, g):
        return (Shift(self.axis, -self.offset)(g),)


@op_dataclass
class LinearScan(Op):
    """``s_k = a_k * s_{k-1} + b_k`` along ``axis`` with ``s_{-1} = 0``; ``reverse`` runs from the end
    (``s_k = a_k * s_{k+1} + b_k``). Evaluated by recursive doubling (log2(n) vectorized steps) when the
    other axes are small, else step by step along the axis (O(n) work in n vectorized steps)."""

    name = "linear_scan"
    axis: int = 0
    reverse: bool = False

    def infer(self, a, b):
        shape = unify_shapes(self.name, [a.shape, b.shape])
        _check_axis(self.name, self.axis, len(shape))
        return shape, np.result_type(a.dtype, b.dtype)

    def impl(self, a, b):
        dtype = np.result_type(a, b)
        order = slice(None, None, -1 if self.reverse else 1)
        # scanned axis first, contiguous, in scan order: every step below reads whole blocks
        coef = np.array(np.moveaxis(np.asarray(a), self.axis, 0)[order], dtype, order="C")
        total = np.array(np.moveaxis(np.asarray(b), self.axis, 0)[order], dtype, order="C")
        size = len(total)
        if size and total[0].size * size.bit_length() > 1000:
            # wide: n vectorized steps do O(n * batch) work, log2(n) times less than doubling
            for k in range(1, size):
                total[k] += coef[k] * total[k - 1]
        else:
            # recursive doubling, log2(n) steps; invariant for span d: s_k = coef_k * s_{k-d} + total_k
            # for k >= d, and total_k = s_k below d
            span = 1
            while span < size:
                total[span:] = total[span:] + coef[span:] * total[:-span]
                coef[2 * span:] = coef[2 * span:] * coef[span:size - span]  # only coefficients still needed
                span *= 2
        return np.ascontiguousarray(np.moveaxis(total[order], 0, self.axis))

    def vjp(self, node, g):
        a, _ = node.inputs
        step = -1 if self.reverse else 1
        # the adjoint recurrence runs the other way: lam_k = g_k + a_{k+step} lam_{k+step}
        lam = LinearScan(self.axis, not self.reverse)(Shift(self.axis, -step)(a), g)
        return mul(lam, Shift(self.axis, step)(node)), lam


def _cumulative(op_class, x, axis) -> Tensor:
    x = as_tensor(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return apply(op_class(normalize_axis(op_class.name, axis, x.ndim)), x)


def cumsum(x, axis: int | None = None) -> Tensor:
    """``np.cumsum``: running sums along ``axis`` (of the flattened input when None)."""
    return _cumulative(Cumsum, x, axis)


def cumprod(x, axis: int | None = None) -> Tensor:
    """``np.cumprod``: running products along ``axis`` (of the flattened input when None). Its
    gradient is exact where ``x`` has zeros (no division by ``x``) and differentiable again."""
    return _cumulative(Cumprod, x, axis)
