"""Reductions: sum, mean, max, min, prod, logsumexp over ``axis`` with ``keepdims``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.errors import DTypeError
from graphc.op import Op, apply, as_tensor, same_elements_form
from graphc.ops.elementwise import cast, div, equal, mul, sub
from graphc.ops.shape import broadcast_like, expand_dims
from graphc.tensor import Tensor
from graphc.types import float_dtype, known_size, normalize_axes, reduced_shape


@dataclass(frozen=True)
class Reduction(Op):
    """Base of reductions; ``axes`` is normalized (sorted, non-negative)."""

    axes: tuple = ()
    keepdims: bool = False

    def infer(self, x):
        return reduced_shape(x.shape, self.axes, self.keepdims), self.result_dtype(x.dtype)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def expand(self, g: Tensor) -> Tensor:
        """``g`` with the reduced axes put back as size 1 (keepdims form)."""
        return g if self.keepdims or not self.axes else expand_dims(g, self.axes)


def _reduction(op_class, x, axis, keepdims) -> Tensor:
    x = as_tensor(x)
    return apply(op_class(normalize_axes(op_class.name, axis, x.ndim), bool(keepdims)), x)


@dataclass(frozen=True)
class Sum(Reduction):
    name = "sum"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def result_dtype(self, dtype):
        return np.sum(np.zeros((0,), dtype)).dtype

    def impl(self, x):
        return np.sum(x, axis=self.axes, keepdims=self.keepdims)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (broadcast_like(self.expand(g), x),)


@dataclass(frozen=True)
class Mean(Reduction):
    name = "mean"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def result_dtype(self, dtype):
        return np.mean(np.zeros((1,), dtype)).dtype

    def impl(self, x):
        return np.mean(x, axis=self.axes, keepdims=self.keepdims)

    def vjp(self, node, g):
        (x,) = node.inputs
        sizes = [x.shape[a] for a in self.axes]
        if None in sizes:
            count = apply(ReducedCount(self.axes), x)
        else:
            count = int(np.prod(sizes, dtype=np.int64))
        return (broadcast_like(div(self.expand(g), count), x),)


@dataclass(frozen=True)
class ReducedCount(Op):
    """The number of elements a reduction over ``axes`` combines (known at run time), as a scalar."""

    name = "reduced_count"
    axes: tuple = ()
    zero_gradient = True

    def infer(self, x):
        return (), float_dtype(x.dtype)

    def sympy_form(self, sp, node, a):
        count = known_size([node.inputs[0].shape[axis] for axis in self.axes])
        if count is None:
            raise ValueError("reduced_count over an unknown size")
        return sp.Integer(count)

    def impl(self, x):
        return np.asarray(np.prod([x.shape[a] for a in self.axes], dtype=np.int64), dtype=float_dtype(x.dtype))


@dataclass(frozen=True)
class Extremum(Reduction):
    """Max or min; tied entries share the gradient evenly."""

    def vjp(self, node, g):
        (x,) = node.inputs
        winners = cast(equal(x, self.expand(node)), g.dtype)
        share = div(winners, Sum(self.axes, True)(winners))
        return (mul(self.expand(g), share),)


@dataclass(frozen=True)
class Max(Extremum):
    name = "max"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def impl(self, x):
        return np.max(x, axis=self.axes, keepdims=self.keepdims)


@dataclass(frozen=True)
class Min(Extremum):
    name = "min"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def impl(self, x):
        return np.min(x, axis=self.axes, keepdims=self.keepdims)


@dataclass(frozen=True)
class Prod(Reduction):
    name = "prod"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def result_dtype(self, dtype):
        return np.prod(np.zeros((0,), dtype)).dtype

    def impl(self, x):
        return np.prod(x, axis=self.axes, keepdims=self.keepdims)

    def vjp(self, node, g):
        (x,) = node.inputs
        # the product of the other entries: right at zeros too, unlike out / x
        return (mul(self.expand(g), apply(ProdOthers(self.axes), x)),)


@dataclass(frozen=True)
class ProdOthers(Op):
    """For each entry, the product of the other entries along ``axes`` (exclusive products)."""

    name = "prod_others"
    axes: tuple = ()

    def infer(self, x):
        return x.shape, x.dtype

    def impl(self, x):
        x = np.asarray(x)
        kept = [a for a in range(x.ndim) if a not in self.axes]
        moved = np.transpose(x, kept + list(self.axes))
        count = int(np.prod([x.shape[a] for a in self.axes], dtype=np.int64))
        if count == 0:  # no entries (the shifted concatenations below would make one)
            return np.ones(x.shape, x.dtype)
        flat = moved.reshape(moved.shape[:len(kept)] + (count,))  # (not -1: ambiguous for empty arrays)
        ones = np.ones(flat.shape[:-1] + (1,), x.dtype)
        before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        others = (before * after).reshape(moved.shape)
        return np.transpose(others, np.argsort(kept + list(self.axes)))

    def vjp(self, node, g):
        # d others_i / d x_j = others_j / x_i for i != j (exact where x has no zeros)
        (x,) = node.inputs
        ratio = div(g, x)
        return (mul(node, sub(Sum(self.axes, True)(ratio), ratio)),)


@dataclass(frozen=True)
class Logsumexp(Reduction):
    """``log(sum(exp(x)))`` computed without overflow."""

    name = "logsumexp"
    sympy_form = same_elements_form

    def result_dtype(self, dtype):
        if dtype.kind not in "biuf":
            raise DTypeError(f"logsumexp: unsupported dtype {dtype}")
        return float_dtype(dtype)

    def impl(self, x):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        peak = np.max(x, axis=self.axes, keepdims=True)
        # an infinite peak (all -inf, or some +inf) must not give inf - inf = NaN
        peak = np.where(np.isfinite(peak), peak, 0)
        total = np.sum(np.exp(x - peak), axis=self.axes, keepdims=True)
        result = np.log(total) + peak
        return result if self.keepdims else np.squeeze(result, self.axes)

    def vjp(self, node, g):
        # softmax over the axes, computed from x (exp(x - out) would inherit out's rounding:
        # in float32, out = 1000.69 is only known to 6e-5, which exp turns into a relative error)
        (x,) = node.inputs
        return (mul(self.expand(g), apply(SoftmaxOver(self.axes), x)),)


@dataclass(frozen=True)
class SoftmaxOver(Op):
    """``exp(x - logsumexp(x, axes, keepdims=True))``, computed stably (logsumexp's gradient)."""

    name = "softmax_over"
    axes: tuple = ()

    def infer(self, x):
        return x.shape, float_dtype(x.dtype)

    def impl(self, x):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        peak = np.max(x, axis=self.axes, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0)
        shifted = np.exp(x - peak)
        return shifted / np.sum(shifted, axis=self.axes, keepdims=True)

    def vjp(self, node, g):
        # J^T g = s * (g - sum(g * s))
        inner = Sum(self.axes, True)(mul(g, node))
        return (mul(node, sub(g, inner)),)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the contract's name
    return _reduction(Sum, x, axis, keepdims)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    return _reduction(Mean, x, axis, keepdims)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the contract's name
    return _reduction(Max, x, axis, keepdims)


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the contract's name
    return _reduction(Min, x, axis, keepdims)


def prod(x, axis=None, keepdims: bool = False) -> Tensor:
    return _reduction(Prod, x, axis, keepdims)


def logsumexp(x, axis=None, keepdims: bool = False) -> Tensor:
    return _reduction(Logsumexp, x, axis, keepdims)
