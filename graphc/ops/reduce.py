"""Reductions over ``axis`` with ``keepdims``: sum, mean, max, min, prod, logsumexp, var, std, norm,
any, all; and argmax, argmin over one axis."""

from __future__ import annotations

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.op import Op, apply, as_tensor, op_dataclass, same_elements_form
from graphc.ops.elementwise import abs as abs_
from graphc.ops.elementwise import cast, div, equal, maximum, mul, not_equal, sign, sub, where
from graphc.ops.shape import broadcast_like, expand_dims
from graphc.tensor import Tensor
from graphc.types import (
    broadcast_shapes,
    check_axes,
    float_dtype,
    format_shape,
    known_size,
    normalize_axes,
    normalize_axis,
    reduced_shape,
)


@op_dataclass
class Reduction(Op):
    """Base of reductions; ``axes`` is normalized (sorted, non-negative)."""

    axes: tuple = ()
    keepdims: bool = False

    def infer(self, x):
        check_axes(self.name, self.axes, x.ndim)  # a tampered file's parameters, too
        return reduced_shape(x.shape, self.axes, self.keepdims), self.result_dtype(x.dtype)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def expand(self, g: Tensor) -> Tensor:
        """``g`` with the reduced axes put back as size 1 (keepdims form)."""
        return g if self.keepdims or not self.axes else expand_dims(g, self.axes)


def _reduction(op_class, x, axis, keepdims) -> Tensor:
    x = as_tensor(x)
    return apply(op_class(normalize_axes(op_class.name, axis, x.ndim), bool(keepdims)), x)


@op_dataclass
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


@op_dataclass
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
        return (broadcast_like(div(self.expand(g), reduced_count(self.axes, x)), x),)


@op_dataclass
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


def reduced_count(axes: tuple, x: Tensor):
    """How many entries of ``x`` a reduction over ``axes`` combines: an int, or a scalar tensor
    computed at run time when a size is unknown."""
    sizes = [x.shape[a] for a in axes]
    if None in sizes:
        return apply(ReducedCount(axes), x)
    return int(np.prod(sizes, dtype=np.int64))


@op_dataclass
class Extremum(Reduction):
    """Max or min; tied entries share the gradient evenly."""

    def vjp(self, node, g):
        (x,) = node.inputs
        winners = cast(equal(x, self.expand(node)), g.dtype)
        share = div(winners, Sum(self.axes, True)(winners))
        return (mul(self.expand(g), share),)


@op_dataclass
class Max(Extremum):
    name = "max"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def impl(self, x):
        return np.max(x, axis=self.axes, keepdims=self.keepdims)


@op_dataclass
class Min(Extremum):
    name = "min"
    scalar_expr = "{0}"
    sympy_form = same_elements_form

    def impl(self, x):
        return np.min(x, axis=self.axes, keepdims=self.keepdims)


@op_dataclass
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


@op_dataclass
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
        # d others_i / d x_j = prod of the entries other than i and j: computed without dividing
        # by x, so the second derivative of prod is finite at zeros too
        (x,) = node.inputs
        return (apply(ProdOthersGrad(self.axes), x, g),)


def _along_last(x: np.ndarray, axes: tuple) -> tuple[np.ndarray, list, tuple]:
    """``x`` with ``axes`` moved last and flattened into one: (flat, kept axes, moved shape)."""
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, kept + list(axes))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return moved.reshape(moved.shape[:len(kept)] + (count,)), kept, moved.shape


@op_dataclass
class ProdOthersGrad(Op):
    """The vector-Jacobian product of ``prod_others`` along ``axes``: for each entry ``j``,
    ``sum over i != j of g_i * (product of the entries other than i and j)``.

    Computed by the number of zeros in each slice, dividing only by nonzero entries: with one zero
    at ``m`` the result is ``g_m * others_j`` off ``m`` and ``sum(g_i * others_i)`` at ``m`` (the
    products taken with the zero read as 1); with two zeros only their two entries are nonzero.
    """

    name = "prod_others_grad"
    axes: tuple = ()

    def infer(self, x, g):
        return broadcast_shapes(self.name, [x.shape, g.shape]), x.dtype

    def impl(self, x, g):
        x = np.asarray(x)
        g = np.broadcast_to(np.asarray(g, dtype=x.dtype), x.shape)
        flat, kept, moved_shape = _along_last(x, self.axes)
        if flat.shape[-1] == 0:
            return np.zeros(x.shape, x.dtype)
        gflat = _along_last(g, self.axes)[0]
        zeros = flat == 0
        count = zeros.sum(axis=-1, keepdims=True)
        safe = np.where(zeros, np.ones((), x.dtype), flat)
        ones = np.ones(flat.shape[:-1] + (1,), x.dtype)
        before = np.cumprod(np.concatenate([ones, safe[..., :-1]], axis=-1), axis=-1)
        after = np.cumprod(np.concatenate([ones, safe[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        others = before * after  # the products of the other entries, zeros read as 1
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = gflat / safe
            none = others * (np.sum(ratio, axis=-1, keepdims=True) - ratio)
        at_zero = np.sum(np.where(zeros, 0, gflat * others), axis=-1, keepdims=True)
        g_zero = np.sum(np.where(zeros, gflat, 0), axis=-1, keepdims=True)
        one = np.where(zeros, at_zero, g_zero * others)
        two = np.where(zeros, (g_zero - gflat) * others, 0)
        result = np.where(count == 0, none, np.where(count == 1, one, np.where(count == 2, two, 0)))
        result = result.astype(x.dtype, copy=False).reshape(moved_shape)
        return np.transpose(result, np.argsort(kept + list(self.axes)))

    def vjp(self, node, h):
        x, g = node.inputs
        # linear in g with a symmetric matrix: its own transpose
        grad_g = apply(ProdOthersGrad(self.axes), x, h)
        # d/dx_k: (1 / x_k) (sum_j h_j out_j - h_k out_k - g_k (P h)_k), exact where x has no zeros
        weighted = mul(h, node)
        grad_x = div(sub(sub(Sum(self.axes, True)(weighted), weighted), mul(g, grad_g)), x)
        return grad_x, grad_g


@op_dataclass
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


@op_dataclass
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


# ---- statistics, norms, logical and arg-reductions --------------------------------------------

def _float_result(name: str, dtype: np.dtype) -> np.dtype:
    if dtype.kind not in "biuf":
        raise DTypeError(f"{name}: unsupported dtype {dtype}")
    return float_dtype(dtype)


def ratio_or_zero(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, but exactly 0 where ``den == 0``; never 0/0, also in its own gradients (the
    divisor is replaced by 1 there, so no branch divides by zero). A NaN ``den`` still gives NaN."""
    nonzero = not_equal(den, 0)
    return where(nonzero, div(num, where(nonzero, den, 1)), 0)


@op_dataclass
class Var(Reduction):
    """Variance with ``ddof`` delta degrees of freedom, computed in two passes like ``np.var`` (the
    mean, then the mean squared deviation from it): no cancellation for data far from zero."""

    name = "var"
    ddof: int = 0

    def result_dtype(self, dtype):
        return _float_result(self.name, dtype)

    def impl(self, x):
        return np.var(x, axis=self.axes, ddof=self.ddof, keepdims=self.keepdims)

    def dof(self, x: Tensor):
        """``max(n - ddof, 0)``, the divisor NumPy uses (an int, or a run-time scalar when a
        reduced size is unknown)."""
        n = reduced_count(self.axes, x)
        if isinstance(n, int):
            return n - self.ddof if n > self.ddof else 0
        return maximum(sub(n, self.ddof), 0.0)

    def centered(self, x: Tensor) -> Tensor:
        return sub(x, Mean(self.axes, True)(x))

    def vjp(self, node, g):
        (x,) = node.inputs
        dof = self.dof(x)
        # d var / dx = 2 (x - mean) / (n - ddof); the mean's own dependence on x cancels
        scale = div(2.0, dof) if isinstance(dof, Tensor) else (2.0 / dof if dof else np.inf)
        return (mul(self.expand(g), mul(self.centered(x), scale)),)


@op_dataclass
class Std(Var):
    """``sqrt(var)``. Its gradient ``(x - mean) / ((n - ddof) std)`` is 0 where the spread is 0.

    At a constant input std is not differentiable (it is a norm of ``x - mean``, like ``abs`` at
    0); 0 is its minimum-norm subgradient, the same convention as ``abs'(0) = 0`` and
    ``norm'(0) = 0``. (PyTorch and JAX return NaN there, which poisons a whole training step.)
    """

    name = "std"

    def impl(self, x):
        return np.std(x, axis=self.axes, ddof=self.ddof, keepdims=self.keepdims)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (ratio_or_zero(mul(self.expand(g), self.centered(x)), mul(self.expand(node), self.dof(x))),)


_NORM_ORDERS = (1.0, 2.0, np.inf)


@op_dataclass
class Norm(Reduction):
    """Vector norm of order 1, 2 or inf over ``axes`` (``np.linalg.vector_norm``).

    The 2-norm is recomputed scaled by the largest magnitude where the plain sum of squares would
    overflow or underflow, so ``[3e200, 4e200]`` gives 5e200 (not inf) and ``[3e-200, 4e-200]``
    gives 5e-200 (not 0). Gradients: ``sign(x)`` (1), ``x / norm`` (2),
    ``sign(x)`` on the entries of largest magnitude, ties split evenly (inf); all exactly 0 at 0.
    """

    name = "norm"
    ord: float = 2.0

    def __post_init__(self):
        if self.ord not in _NORM_ORDERS:
            raise ValueError(f"norm: ord must be 1, 2 or inf (vector norms), got {self.ord!r}")

    def result_dtype(self, dtype):
        return _float_result(self.name, dtype)

    def impl(self, x):
        x = np.asarray(x)
        magnitude = np.abs(x if x.dtype.kind == "f" else x.astype(np.float64))
        if self.ord == 1.0:
            return np.sum(magnitude, axis=self.axes, keepdims=self.keepdims)
        if self.ord == np.inf:
            return np.max(magnitude, axis=self.axes, keepdims=self.keepdims, initial=0)  # 0 for no entries
        result = np.sqrt(np.sum(np.square(magnitude), axis=self.axes, keepdims=True))
        info = np.finfo(result.dtype)
        if not np.all((result >= np.sqrt(info.tiny / info.eps)) & (result <= np.sqrt(info.max))):
            # the squares may have overflowed or lost digits to underflow (or x is 0, inf or NaN):
            # again, scaled by the largest magnitude
            peak = np.max(magnitude, axis=self.axes, keepdims=True, initial=0)
            scale = np.where((peak > 0) & np.isfinite(peak), peak, 1)  # inf and NaN go through unscaled
            result = scale * np.sqrt(np.sum(np.square(magnitude / scale), axis=self.axes, keepdims=True))
        return result if self.keepdims else np.squeeze(result, self.axes)

    def vjp(self, node, g):
        (x,) = node.inputs
        g = self.expand(g)
        if self.ord == 2.0:
            return (ratio_or_zero(mul(g, x), self.expand(node)),)
        if self.ord == np.inf:
            winners = cast(equal(abs_(x), self.expand(node)), g.dtype)
            g = mul(g, div(winners, Sum(self.axes, True)(winners)))
        return (mul(g, sign(x)),)


@op_dataclass
class AnyOf(Reduction):
    """Whether any entry is nonzero (bool)."""

    name = "any"
    zero_gradient = True

    def result_dtype(self, dtype):
        return np.dtype(bool)

    def impl(self, x):
        return np.any(x, axis=self.axes, keepdims=self.keepdims)


@op_dataclass
class AllOf(AnyOf):
    """Whether every entry is nonzero (bool)."""

    name = "all"

    def impl(self, x):
        return np.all(x, axis=self.axes, keepdims=self.keepdims)


@op_dataclass
class Argmax(Op):
    """Index (int64) of the first largest entry along ``axis`` (of the flattened input when None)."""

    name = "argmax"
    axis: int | None = None
    keepdims: bool = False
    zero_gradient = True

    def infer(self, x):
        axes = normalize_axes(self.name, self.axis, x.ndim)
        if self.axis is not None and axes != (self.axis,):
            raise ShapeError(f"{self.name}: axis {self.axis!r} is not normalized for rank {x.ndim}")
        if 0 in [x.shape[a] for a in axes]:  # (the module-level any is the op)
            raise ShapeError(f"{self.name}: an empty axis of shape {format_shape(x.shape)} has no {self.name}")
        return reduced_shape(x.shape, axes, self.keepdims), np.dtype(np.int64)

    def impl(self, x):
        return np.asarray(self.pick(x, axis=self.axis, keepdims=self.keepdims), dtype=np.int64)

    pick = staticmethod(np.argmax)


@op_dataclass
class Argmin(Argmax):
    """Index (int64) of the first smallest entry along ``axis``."""

    name = "argmin"
    pick = staticmethod(np.argmin)


def var(x, axis=None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Variance ``mean((x - mean(x))**2) * n / (n - ddof)`` over ``axis`` (``np.var``). ``ddof`` is an
    int or a whole-numbered float (``1.0``)."""
    return _statistic(Var, x, axis, ddof, keepdims)


def std(x, axis=None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    """Standard deviation ``sqrt(var(x, axis, ddof))``; its gradient is 0 at a constant input."""
    return _statistic(Std, x, axis, ddof, keepdims)


def _statistic(op_class, x, axis, ddof, keepdims) -> Tensor:
    # NumPy takes a float ddof too; a whole-numbered one (ddof=1.0, np.float32(1)) is the int
    # it equals, while a fractional one (a divisor n - 0.5) is refused as before
    whole_float = isinstance(ddof, (float, np.floating)) and np.isfinite(ddof) and float(ddof).is_integer()
    if isinstance(ddof, (bool, np.bool_)) or not (isinstance(ddof, (int, np.integer)) or whole_float):
        raise TypeError(f"{op_class.name}: ddof must be an int (or a whole-numbered float), got {ddof!r}")
    x = as_tensor(x)
    return apply(op_class(normalize_axes(op_class.name, axis, x.ndim), bool(keepdims), int(ddof)), x)


def norm(x, ord=2, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A002 - NumPy's name
    """Vector norm of order ``ord`` (1, 2 or inf; None means 2) over ``axis`` (every axis when None:
    the input is treated as one vector, like ``np.linalg.vector_norm``, also for matrices)."""
    if ord is None:
        ord = 2  # noqa: A001
    if isinstance(ord, (bool, np.bool_)) or not isinstance(ord, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm: ord must be 1, 2 or inf, got {ord!r}")
    if float(ord) not in _NORM_ORDERS:
        raise ValueError(f"norm: ord must be 1, 2 or inf (vector norms), got {ord!r}")
    x = as_tensor(x)
    return apply(Norm(normalize_axes("norm", axis, x.ndim), bool(keepdims), float(ord)), x)


def any(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the contract's name
    """Whether any entry along ``axis`` is nonzero (bool; no gradient)."""
    return _reduction(AnyOf, x, axis, keepdims)


def all(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - the contract's name
    """Whether every entry along ``axis`` is nonzero (bool; no gradient)."""
    return _reduction(AllOf, x, axis, keepdims)


def _arg(op_class, x, axis, keepdims) -> Tensor:
    x = as_tensor(x)
    if axis is not None:
        axis = normalize_axis(op_class.name, axis, x.ndim)
    return apply(op_class(axis, bool(keepdims)), x)


def argmax(x, axis=None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the largest entry along ``axis`` (of the flattened input when None); the first
    one among ties, NaN counting as largest, as in NumPy. No gradient."""
    return _arg(Argmax, x, axis, keepdims)


def argmin(x, axis=None, keepdims: bool = False) -> Tensor:
    """Index (int64) of the smallest entry along ``axis``; the first one among ties. No gradient."""
    return _arg(Argmin, x, axis, keepdims)
