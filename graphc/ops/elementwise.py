"""Element-wise ops: arithmetic, transcendental functions, activations, comparisons.

Every op here broadcasts its inputs with NumPy's rules; Python scalars given to
it are weak (``x32 * 2.0`` stays float32). Gradient rules are written as if the
shapes matched; the grad driver undoes broadcasting.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError
from graphc.leaves import constant
from graphc.op import Op, apply, as_tensor, first_input_form, op_dataclass, weak_constant
from graphc.tensor import Tensor
from graphc.types import as_dtype, broadcast_shapes, float_dtype


@op_dataclass
class Elementwise(Op):
    """Base of element-wise ops: broadcast shapes, NumPy's dtype resolution.

    An op with a ``ufunc`` (or a ``kernel``) needs no ``impl``: its value is that NumPy function of
    the inputs, which the compiler and the fuser call directly, writing through ``out=``.
    """

    elementwise = True
    weak_scalars = True
    #: the NumPy ufunc whose type resolution gives the output dtype (None: the float rule) and which
    #: computes the op, unless ``kernel`` does
    ufunc: ClassVar = None
    #: the NumPy function computing the op, ``kernel(*arrays, out=None)``, where that is not ``ufunc``
    kernel: ClassVar = None

    def lowering(self):
        return (self.kernel or self.ufunc) if type(self).impl is Elementwise.impl else None

    def impl(self, *arrays):
        function = self.kernel or self.ufunc
        if function is None:
            raise NotImplementedError(f"op {self.name!r} declares no ufunc, kernel or impl")
        return function(*arrays)

    def infer(self, *inputs):
        # the common cases (one input; two of one shape, or one of them 0-d) need no broadcasting
        if len(inputs) == 1:
            x = inputs[0]
            return x.shape, self.result_dtype(x.dtype)
        if len(inputs) == 2:
            a, b = inputs
            shape = a.shape if a.shape == b.shape or b.shape == () else b.shape if a.shape == () else None
            if shape is not None:
                return shape, self.result_dtype(a.dtype, b.dtype)
        shape = broadcast_shapes(self.name, [t.shape for t in inputs])
        return shape, self.result_dtype(*[t.dtype for t in inputs])

    def result_dtype(self, *dtypes: np.dtype) -> np.dtype:
        # NumPy's type resolution is a pure function of (ufunc, input dtypes): resolved once per pair
        key = (self.ufunc, dtypes)
        found = _RESOLVED.get(key)
        if found is None:
            found = _RESOLVED[key] = self._resolve(dtypes)
        return found

    def _resolve(self, dtypes: tuple[np.dtype, ...]) -> np.dtype:
        if self.ufunc is None:
            return float_dtype(np.result_type(*dtypes))
        try:
            return self.ufunc.resolve_dtypes((*dtypes, None))[-1]
        except TypeError as exc:
            listed = ", ".join(str(d) for d in dtypes)
            raise DTypeError(f"{self.name}: no implementation for input dtypes ({listed})") from exc


#: (ufunc or None, input dtypes) -> the result dtype of ``Elementwise.result_dtype`` (a small table:
#: one entry per ufunc and dtype combination used)
_RESOLVED: dict[tuple, np.dtype] = {}


def _sympy_number(sp, value: float):
    """An integral parameter as a SymPy Integer (``1 * x`` simplifies away), others as a Float."""
    return sp.Integer(int(value)) if float(value).is_integer() else sp.Float(value)


def _form(function):
    """A ``sympy_form`` from ``function(sp, *inputs)`` (``sp`` is the sympy module, which only the bridge imports)."""
    return lambda self, sp, node, *args: function(sp, *args)


def _float_input(x: np.ndarray) -> np.ndarray:
    return x if x.dtype.kind == "f" else x.astype(np.float64)


# ---- arithmetic ---------------------------------------------------------------------

@op_dataclass
class Add(Elementwise):
    """``a + b`` with broadcasting."""

    name = "add"
    sympy = "Add"
    scalar_expr = "{0} + {1}"
    python_exact = True
    ufunc = np.add
    commutative = True

    def vjp(self, node, g):
        return g, g


@op_dataclass
class Sub(Elementwise):
    """``a - b`` with broadcasting."""

    name = "sub"
    scalar_expr = "{0} - {1}"
    python_exact = True
    ufunc = np.subtract
    sympy_form = _form(lambda sp, a, b: a - b)

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        return g, (neg(g) if 1 in needed else None)


@op_dataclass
class Mul(Elementwise):
    """``a * b`` with broadcasting."""

    name = "mul"
    sympy = "Mul"
    scalar_expr = "{0} * {1}"
    python_exact = True
    ufunc = np.multiply
    commutative = True

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        a, b = node.inputs
        return (mul(g, b) if 0 in needed else None), (mul(g, a) if 1 in needed else None)


@op_dataclass
class Div(Elementwise):
    """True division ``a / b`` (integers give float64, as in NumPy); gradients ``g / b`` and ``-(g / b) * out``."""

    name = "div"
    scalar_expr = "{0} / {1}"
    domain = (1, 1.0)
    ufunc = np.true_divide
    sympy_form = _form(lambda sp, a, b: a / b)

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        a, b = node.inputs
        grad_a = div(g, b)
        # d(a/b)/db = -a/b**2 = -(a/b)/b, reusing the output
        return grad_a, (neg(mul(grad_a, node)) if 1 in needed else None)


@op_dataclass
class Neg(Elementwise):
    """``-x``."""

    name = "neg"
    scalar_expr = "-{0}"
    python_exact = True
    ufunc = np.negative
    sympy_form = _form(lambda sp, a: -a)

    def vjp(self, node, g):
        return (neg(g),)


@op_dataclass
class Pow(Elementwise):
    """``x ** y``. Conventions at ``x = 0``: d/dx is 0 when ``y == 0``; d/dy is 0 when ``y >= 0``."""

    name = "pow"
    sympy = "Pow"
    domain = (0, 1.0)
    ufunc = np.power

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        x, y = node.inputs
        grad_x = grad_y = None
        if x.dtype.kind == "f" and 0 in needed:
            # y * x**(y-1), but exactly 0 where y == 0 (0 * inf would be NaN at x == 0)
            slope = where(equal(y, 0), zeros_like(node), mul(y, pow(x, sub(y, 1))))
            grad_x = mul(g, slope)
        if y.dtype.kind == "f" and 1 in needed:
            # x**y * log(x); at x == 0 with y >= 0 the limit is 0, not NaN
            at_zero = logical_and(equal(x, 0), greater_equal(y, 0))
            safe_x = where(at_zero, ones_like(x), x)
            grad_y = mul(g, where(at_zero, zeros_like(node), mul(node, log(safe_x))))
        return grad_x, grad_y


@op_dataclass
class Square(Elementwise):
    """``x * x``; gradient ``2 x``."""

    name = "square"
    scalar_expr = "{0} * {0}"
    python_exact = True
    ufunc = np.square
    sympy_form = _form(lambda sp, a: a ** 2)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (mul(g, mul(x, 2)),)


@op_dataclass
class Abs(Elementwise):
    """``|x|``; its gradient at 0 is 0 (``sign(0) = 0``)."""

    name = "abs"
    sympy = "Abs"
    ufunc = np.absolute

    def vjp(self, node, g):
        (x,) = node.inputs
        return (mul(g, sign(x)),)


@op_dataclass
class Sign(Elementwise):
    """-1, 0 or 1 with the sign of ``x``; gradient 0."""

    name = "sign"
    sympy = "sign"
    ufunc = np.sign
    zero_gradient = True


@op_dataclass
class Maximum(Elementwise):
    """Element-wise maximum; ties split the gradient evenly."""

    name = "maximum"
    sympy = "Max"
    scalar_expr = "({0} if {0} > {1} or {0} != {0} else {1})"  # NaN and ties as np.maximum
    python_exact = True
    ufunc = np.maximum
    # not ``commutative``: on ties of signed zeros np.maximum returns its second operand (maximum(-0.0, 0.0) is
    # 0.0, maximum(0.0, -0.0) is -0.0), so swapping the operands is not exact

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        a, b = node.inputs
        share_a = tie_split_weight(greater(a, b), equal(a, b), node.dtype)
        return (mul(g, share_a) if 0 in needed else None), (mul(g, sub(1, share_a)) if 1 in needed else None)


@op_dataclass
class Minimum(Elementwise):
    """Element-wise minimum; ties split the gradient evenly."""

    name = "minimum"
    sympy = "Min"
    scalar_expr = "({0} if {0} < {1} or {0} != {0} else {1})"
    python_exact = True
    ufunc = np.minimum
    # not ``commutative``: on ties of signed zeros np.minimum returns its second operand (minimum(-0.0, 0.0) is
    # 0.0, minimum(0.0, -0.0) is -0.0), so swapping the operands is not exact

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        a, b = node.inputs
        share_a = tie_split_weight(less(a, b), equal(a, b), node.dtype)
        return (mul(g, share_a) if 0 in needed else None), (mul(g, sub(1, share_a)) if 1 in needed else None)


def tie_split_weight(wins: Tensor, ties: Tensor, dtype) -> Tensor:
    """1 where the first operand wins, 0.5 where tied, 0 elsewhere."""
    return add(cast(wins, dtype), mul(cast(ties, dtype), 0.5))


# ---- transcendental -----------------------------------------------------------------

@op_dataclass
class Exp(Elementwise):
    """``e ** x``; gradient ``out``."""

    name = "exp"
    sympy = "exp"
    domain = (0, 0.0)
    ufunc = np.exp

    def vjp(self, node, g):
        return (mul(g, node),)


@op_dataclass
class Log(Elementwise):
    """The natural logarithm; gradient ``1 / x``."""

    name = "log"
    sympy = "log"
    domain = (0, 1.0)
    ufunc = np.log

    def vjp(self, node, g):
        return (div(g, node.inputs[0]),)


@op_dataclass
class Log1p(Elementwise):
    """``log(1 + x)``, accurate near 0; gradient ``1 / (1 + x)``."""

    name = "log1p"
    domain = (0, 0.0)
    ufunc = np.log1p
    sympy_form = _form(lambda sp, a: sp.log(1 + a))

    def vjp(self, node, g):
        return (div(g, add(node.inputs[0], 1)),)


@op_dataclass
class Expm1(Elementwise):
    """``exp(x) - 1``, accurate near 0; gradient ``out + 1``."""

    name = "expm1"
    domain = (0, 0.0)
    ufunc = np.expm1
    sympy_form = _form(lambda sp, a: sp.exp(a) - 1)

    def vjp(self, node, g):
        return (mul(g, add(node, 1)),)


@op_dataclass
class Sqrt(Elementwise):
    """Square root; its gradient at 0 is inf."""

    name = "sqrt"
    sympy = "sqrt"
    domain = (0, 1.0)
    ufunc = np.sqrt

    def vjp(self, node, g):
        return (div(g, mul(node, 2)),)


@op_dataclass
class Sin(Elementwise):
    """``sin(x)``; gradient ``cos(x)``."""

    name = "sin"
    sympy = "sin"
    ufunc = np.sin

    def vjp(self, node, g):
        return (mul(g, cos(node.inputs[0])),)


@op_dataclass
class Cos(Elementwise):
    """``cos(x)``; gradient ``-sin(x)``."""

    name = "cos"
    sympy = "cos"
    ufunc = np.cos

    def vjp(self, node, g):
        return (neg(mul(g, sin(node.inputs[0]))),)


@op_dataclass
class Tanh(Elementwise):
    """``tanh(x)``; gradient ``1 - out**2`` (from the output)."""

    name = "tanh"
    sympy = "tanh"
    ufunc = np.tanh

    def vjp(self, node, g):
        # 1 - t*t from the forward value (2 ops, not 2 sigmoids): within 2 ulp of 1 absolute, and exactly 0 only
        # where tanh'(x) = sech(x)**2 is below 1.1e-16 (|x| > 19; float32: 4e-8, |x| > 9)
        return (mul(g, sub(1, square(node))),)


_erf_scalar = np.frompyfunc(math.erf, 1, 1)


@op_dataclass
class Erf(Elementwise):
    """The error function (used by the exact GELU)."""

    name = "erf"
    sympy = "erf"

    def impl(self, x):
        x = np.asarray(x)
        dtype = float_dtype(x.dtype)
        return np.asarray(_erf_scalar(x), dtype=np.float64).astype(dtype, copy=False)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (mul(g, mul(exp(neg(square(x))), 2.0 / math.sqrt(math.pi))),)


# ---- more of NumPy: trigonometric, hyperbolic, exponents and logarithms ------------------

_LN2, _LN10 = math.log(2.0), math.log(10.0)


def _rsqrt(x, out=None):
    """``1 / sqrt(x)`` (two roundings) through ``out``: NumPy has no rsqrt ufunc."""
    root = np.sqrt(x, out=out)
    return np.reciprocal(root, out=root if isinstance(root, np.ndarray) else None)


def _round(x, out=None):
    """``np.round(x)``, halves to even: ``np.rint``, except that integers stay integers."""
    return np.round(x, out=out) if x.dtype.kind in "iu" else np.rint(x, out=out)


def _opaque(function: str):
    """The SymPy form of a function SymPy lacks: an undefined function of that name (it round-trips)."""
    def sympy_form(self, sp, node, *args):
        return sp.Function(function)(*args)
    return sympy_form


@op_dataclass
class Tan(Elementwise):
    """``tan(x)``; gradient ``1 + tan(x)**2`` (from the output)."""

    name, ufunc, sympy = "tan", np.tan, "tan"

    def vjp(self, node, g):
        return (mul(g, add(square(node), 1)),)


@op_dataclass
class Arcsin(Elementwise):
    """``arcsin(x)`` on [-1, 1]; gradient ``1 / sqrt((1 - x)(1 + x))`` (no cancellation near +-1)."""

    name, ufunc, sympy, domain = "arcsin", np.arcsin, "asin", (0, 0.0)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (mul(g, rsqrt(mul(sub(1, x), add(1, x)))),)


@op_dataclass
class Arccos(Elementwise):
    """``arccos(x)`` on [-1, 1]; gradient ``-1 / sqrt((1 - x)(1 + x))``."""

    name, ufunc, sympy, domain = "arccos", np.arccos, "acos", (0, 0.0)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (neg(mul(g, rsqrt(mul(sub(1, x), add(1, x))))),)


@op_dataclass
class Arctan(Elementwise):
    """``arctan(x)``; gradient ``1 / (1 + x**2)``."""

    name, ufunc, sympy = "arctan", np.arctan, "atan"

    def vjp(self, node, g):
        return (div(g, add(square(node.inputs[0]), 1)),)


@op_dataclass
class Arctan2(Elementwise):
    """``arctan2(y, x)``, the angle of the point (x, y); gradients ``x / r**2`` and ``-y / r**2``."""

    name, ufunc, sympy = "arctan2", np.arctan2, "atan2"

    def vjp(self, node, g):
        y, x = node.inputs
        scale = div(g, add(square(y), square(x)))
        return mul(scale, x), neg(mul(scale, y))


@op_dataclass
class Sinh(Elementwise):
    """``sinh(x)``; gradient ``cosh(x)``."""

    name, ufunc, sympy, domain = "sinh", np.sinh, "sinh", (0, 0.0)

    def vjp(self, node, g):
        return (mul(g, cosh(node.inputs[0])),)


@op_dataclass
class Cosh(Elementwise):
    """``cosh(x)``; gradient ``sinh(x)``."""

    name, ufunc, sympy, domain = "cosh", np.cosh, "cosh", (0, 0.0)

    def vjp(self, node, g):
        return (mul(g, sinh(node.inputs[0])),)


@op_dataclass
class Arcsinh(Elementwise):
    """``arcsinh(x)``; gradient ``1 / sqrt(x**2 + 1)``."""

    name, ufunc, sympy = "arcsinh", np.arcsinh, "asinh"

    def vjp(self, node, g):
        return (mul(g, rsqrt(add(square(node.inputs[0]), 1))),)


@op_dataclass
class Arccosh(Elementwise):
    """``arccosh(x)`` for x >= 1; gradient ``1 / sqrt((x - 1)(x + 1))``."""

    name, ufunc, sympy, domain = "arccosh", np.arccosh, "acosh", (0, 2.0)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (mul(g, rsqrt(mul(sub(x, 1), add(x, 1)))),)


@op_dataclass
class Arctanh(Elementwise):
    """``arctanh(x)`` on (-1, 1); gradient ``1 / ((1 - x)(1 + x))``."""

    name, ufunc, sympy, domain = "arctanh", np.arctanh, "atanh", (0, 0.0)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (div(g, mul(sub(1, x), add(1, x))),)


@op_dataclass
class Exp2(Elementwise):
    """``2 ** x``; gradient ``2 ** x * log(2)`` (from the output)."""

    name, ufunc, domain = "exp2", np.exp2, (0, 0.0)
    sympy_form = _form(lambda sp, a: 2 ** a)

    def vjp(self, node, g):
        return (mul(g, mul(node, _LN2)),)


@op_dataclass
class Log2(Elementwise):
    """``log2(x)``; gradient ``1 / (x log(2))``."""

    name, ufunc, domain = "log2", np.log2, (0, 1.0)
    sympy_form = _form(lambda sp, a: sp.log(a, 2))

    def vjp(self, node, g):
        return (div(g, mul(node.inputs[0], _LN2)),)


@op_dataclass
class Log10(Elementwise):
    """``log10(x)``; gradient ``1 / (x log(10))``."""

    name, ufunc, domain = "log10", np.log10, (0, 1.0)
    sympy_form = _form(lambda sp, a: sp.log(a, 10))

    def vjp(self, node, g):
        return (div(g, mul(node.inputs[0], _LN10)),)


@op_dataclass
class Reciprocal(Elementwise):
    """``1 / x`` as NumPy's ``reciprocal`` (integers stay integers); gradient ``-1 / x**2`` (from the output)."""

    name, ufunc, domain = "reciprocal", np.reciprocal, (0, 1.0)
    sympy_form = _form(lambda sp, a: 1 / a)

    def vjp(self, node, g):
        return (neg(mul(g, square(node))),)


@op_dataclass
class Rsqrt(Elementwise):
    """``1 / sqrt(x)`` (sqrt's dtypes); gradient ``-rsqrt(x) / (2 x)`` (from the output)."""

    name, ufunc, kernel, domain = "rsqrt", np.sqrt, staticmethod(_rsqrt), (0, 1.0)
    sympy_form = _form(lambda sp, a: 1 / sp.sqrt(a))

    def vjp(self, node, g):
        return (mul(g, mul(div(node, node.inputs[0]), -0.5)),)


# ---- rounding and division with remainder ------------------------------------------------

@op_dataclass
class Floor(Elementwise):
    """The largest integer ``<= x`` (NumPy's dtype: integers stay integers); gradient 0."""

    name, ufunc, sympy, zero_gradient = "floor", np.floor, "floor", True


@op_dataclass
class Ceil(Elementwise):
    """The smallest integer ``>= x`` (integers stay integers); gradient 0."""

    name, ufunc, sympy, zero_gradient = "ceil", np.ceil, "ceiling", True


@op_dataclass
class Trunc(Elementwise):
    """``x`` rounded towards zero (integers stay integers); gradient 0."""

    name, ufunc, zero_gradient = "trunc", np.trunc, True
    sympy_form = _opaque("trunc")


@op_dataclass
class Round(Elementwise):
    """``np.round(x)``: to the nearest integer, halves to even (integers stay integers); gradient 0."""

    name, ufunc, kernel, zero_gradient = "round", np.rint, staticmethod(_round), True
    sympy_form = _opaque("round")

    def result_dtype(self, *dtypes):
        return dtypes[0] if dtypes[0].kind in "iu" else super().result_dtype(*dtypes)


@op_dataclass
class Mod(Elementwise):
    """NumPy's ``remainder``: ``x - floor(x / y) * y``, with the sign of ``y``; gradients 1 and
    ``-floor(x / y)``."""

    name, ufunc, sympy, domain = "mod", np.remainder, "Mod", (1, 1.0)

    def vjp(self, node, g):
        x, y = node.inputs
        return g, neg(mul(g, floor_divide(x, y)))


@op_dataclass
class FloorDivide(Elementwise):
    """NumPy's ``floor_divide``: ``floor(x / y)``; gradient 0."""

    name, ufunc, zero_gradient = "floor_divide", np.floor_divide, True
    sympy_form = _form(lambda sp, a, b: sp.floor(a / b))


@op_dataclass
class Logaddexp(Elementwise):
    """``log(exp(a) + exp(b))`` without overflow; gradients ``sigmoid(a - b)`` and ``sigmoid(b - a)``
    (half each where ``a == b``, infinities included)."""

    name, ufunc = "logaddexp", np.logaddexp
    sympy_form = _form(lambda sp, a, b: sp.log(sp.exp(a) + sp.exp(b)))

    def vjp(self, node, g):
        a, b = node.inputs
        tie = equal(a, b)
        return mul(g, where(tie, 0.5, sigmoid(sub(a, b)))), mul(g, where(tie, 0.5, sigmoid(sub(b, a))))


# ---- activations (stable primitives) --------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = _float_input(np.asarray(x))
    # exp of a non-positive number never overflows; both branches are then exact.
    small = np.exp(-np.abs(x))
    inverse = 1 / (1 + small)
    return np.where(x >= 0, inverse, small * inverse)


@op_dataclass
class Sigmoid(Elementwise):
    """Logistic function, finite and accurate for any finite input."""

    name = "sigmoid"
    sympy_form = _form(lambda sp, a: 1 / (1 + sp.exp(-a)))

    def impl(self, x):
        return _sigmoid(x)

    def vjp(self, node, g):
        # s * (1 - s) written as s * sigmoid(-x): 1 - s loses every digit once s rounds to 1.
        (x,) = node.inputs
        return (mul(g, mul(node, sigmoid(neg(x)))),)


@op_dataclass
class Softplus(Elementwise):
    """``log(1 + exp(x))`` without overflow; ``softplus'(0) = 0.5``."""

    name = "softplus"
    sympy_form = _form(lambda sp, a: sp.log(1 + sp.exp(a)))

    def impl(self, x):
        x = _float_input(np.asarray(x))
        return np.logaddexp(x, 0)

    def vjp(self, node, g):
        return (mul(g, sigmoid(node.inputs[0])),)


@op_dataclass
class Relu(Elementwise):
    """``max(x, 0)``; ``relu'(0) = 0``."""

    name = "relu"
    sympy_form = _form(lambda sp, a: sp.Piecewise((a, a > 0), (0, True)))

    def result_dtype(self, *dtypes):
        return dtypes[0]

    def impl(self, x):
        return np.maximum(x, np.zeros((), x.dtype))

    def vjp(self, node, g):
        (x,) = node.inputs
        return (mul(g, cast(greater(x, 0), g.dtype)),)


@op_dataclass
class LeakyRelu(Elementwise):
    name = "leaky_relu"
    alpha: float = 0.01

    def impl(self, x):
        x = _float_input(np.asarray(x))
        return np.where(x > 0, x, x * x.dtype.type(self.alpha))

    def vjp(self, node, g):
        (x,) = node.inputs
        return (where(greater(x, 0), g, mul(g, self.alpha)),)

    def sympy_form(self, sp, node, a):
        return sp.Piecewise((a, a > 0), (_sympy_number(sp, self.alpha) * a, True))


@op_dataclass
class Prelu(Elementwise):
    """Leaky ReLU with a learned slope ``alpha`` (broadcast against ``x``)."""

    name = "prelu"
    sympy_form = _form(lambda sp, a, alpha: sp.Piecewise((a, a > 0), (a * alpha, True)))

    def impl(self, x, alpha):
        dtype = self.result_dtype(np.asarray(x).dtype, np.asarray(alpha).dtype)
        return np.where(x > 0, x, x * alpha).astype(dtype, copy=False)

    def vjp(self, node, g):
        x, alpha = node.inputs
        positive = greater(x, 0)
        return where(positive, g, mul(g, alpha)), where(positive, 0.0, mul(g, x))


@op_dataclass
class Elu(Elementwise):
    name = "elu"
    alpha: float = 1.0

    def impl(self, x):
        x = _float_input(np.asarray(x))
        # expm1 only of non-positive values: no overflow in the unselected branch
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * x.dtype.type(self.alpha))

    def vjp(self, node, g):
        (x,) = node.inputs
        negative_slope = mul(exp(minimum(x, 0)), self.alpha)
        return (where(greater(x, 0), g, mul(g, negative_slope)),)

    def sympy_form(self, sp, node, a):
        return sp.Piecewise((a, a > 0), (_sympy_number(sp, self.alpha) * (sp.exp(a) - 1), True))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


@op_dataclass
class Gelu(Elementwise):
    """``x * Phi(x)``; with ``approximate=True`` the tanh approximation."""

    name = "gelu"
    approximate: bool = False

    def impl(self, x):
        x = _float_input(np.asarray(x))
        if self.approximate:
            inner = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x ** 3)
            return (0.5 * x * (1 + np.tanh(inner))).astype(x.dtype, copy=False)
        cdf = 0.5 * (1 + Erf().impl(x * (1 / math.sqrt(2.0))))
        return (x * cdf).astype(x.dtype, copy=False)

    def vjp(self, node, g):
        (x,) = node.inputs
        if self.approximate:
            t = tanh(mul(add(x, mul(pow(x, 3), _GELU_CUBIC)), _SQRT_2_OVER_PI))
            inner_slope = mul(add(mul(square(x), 3 * _GELU_CUBIC), 1), _SQRT_2_OVER_PI)
            slope = add(mul(add(t, 1), 0.5), mul(mul(mul(x, 0.5), sub(1, square(t))), inner_slope))
        else:
            cdf = mul(add(erf(mul(x, 1 / math.sqrt(2.0))), 1), 0.5)
            pdf = mul(exp(mul(square(x), -0.5)), 1 / math.sqrt(2 * math.pi))
            slope = add(cdf, mul(x, pdf))
        return (mul(g, slope),)

    def sympy_form(self, sp, node, x):
        if self.approximate:
            return x * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Float(_GELU_CUBIC) * x ** 3))) / 2
        return x * (1 + sp.erf(x / sp.sqrt(2))) / 2


@op_dataclass
class Silu(Elementwise):
    """``x * sigmoid(x)`` (also called swish)."""

    name = "silu"
    sympy_form = _form(lambda sp, a: a / (1 + sp.exp(-a)))

    def impl(self, x):
        x = _float_input(np.asarray(x))
        return x * _sigmoid(x)

    def vjp(self, node, g):
        (x,) = node.inputs
        s = sigmoid(x)
        # s + x s (1 - s), with 1 - s as sigmoid(-x) for accuracy
        return (mul(g, mul(s, add(mul(x, sigmoid(neg(x))), 1))),)


@op_dataclass
class HardTanh(Elementwise):
    """``clip(x, -1, 1)``; the gradient is 1 strictly inside (-1, 1), else 0."""

    name = "hard_tanh"
    sympy_form = _form(lambda sp, a: sp.Piecewise((-1, a <= -1), (1, a >= 1), (a, True)))

    def result_dtype(self, *dtypes):
        return np.clip(np.zeros(0, dtypes[0]), -1, 1).dtype  # NumPy's (bool gives int64)

    def impl(self, x):
        return np.clip(x, -1, 1)

    def vjp(self, node, g):
        (x,) = node.inputs
        inside = logical_and(greater(x, -1), less(x, 1))
        return (mul(g, cast(inside, g.dtype)),)


@op_dataclass
class Step(Elementwise):
    """The threshold unit: 1 where ``x > 0``, else 0 (same dtype as ``x``); gradient 0."""

    name = "step"
    zero_gradient = True
    sympy_form = _form(lambda sp, a: sp.Piecewise((1, a > 0), (0, True)))

    def result_dtype(self, *dtypes):
        return dtypes[0]

    def impl(self, x):
        return (x > 0).astype(x.dtype)


# ---- comparisons and logic -------------------------------------------------------------

@op_dataclass
class Comparison(Elementwise):
    zero_gradient = True

    def result_dtype(self, *dtypes):
        super().result_dtype(*dtypes)  # validates the input dtypes
        return np.dtype(bool)


@op_dataclass
class Equal(Comparison):
    name = "equal"
    sympy = "Eq"
    scalar_expr = "{0} == {1}"
    python_exact = True
    ufunc = np.equal
    commutative = True


@op_dataclass
class NotEqual(Comparison):
    name = "not_equal"
    sympy = "Ne"
    scalar_expr = "{0} != {1}"
    python_exact = True
    ufunc = np.not_equal
    commutative = True


@op_dataclass
class Greater(Comparison):
    name = "greater"
    sympy = "Gt"
    scalar_expr = "{0} > {1}"
    python_exact = True
    ufunc = np.greater


@op_dataclass
class GreaterEqual(Comparison):
    name = "greater_equal"
    sympy = "Ge"
    scalar_expr = "{0} >= {1}"
    python_exact = True
    ufunc = np.greater_equal


@op_dataclass
class Less(Comparison):
    name = "less"
    sympy = "Lt"
    scalar_expr = "{0} < {1}"
    python_exact = True
    ufunc = np.less


@op_dataclass
class LessEqual(Comparison):
    name = "less_equal"
    sympy = "Le"
    scalar_expr = "{0} <= {1}"
    python_exact = True
    ufunc = np.less_equal


@op_dataclass
class LogicalAnd(Comparison):
    """True where both ``a`` and ``b`` are (nonzero)."""

    name = "logical_and"
    sympy = "And"
    ufunc = np.logical_and
    commutative = True


@op_dataclass
class LogicalOr(Comparison):
    """True where ``a`` or ``b`` is true (nonzero)."""

    name, ufunc, sympy = "logical_or", np.logical_or, "Or"
    commutative = True


@op_dataclass
class LogicalXor(Comparison):
    """True where exactly one of ``a`` and ``b`` is true (nonzero)."""

    name, ufunc, sympy = "logical_xor", np.logical_xor, "Xor"
    commutative = True


@op_dataclass
class LogicalNot(Comparison):
    """True where ``x`` is false (zero)."""

    name, ufunc, sympy = "logical_not", np.logical_not, "Not"


@op_dataclass
class Isnan(Comparison):
    """True where ``x`` is NaN (a bool tensor, no gradient; integers are never NaN)."""

    name, ufunc = "isnan", np.isnan
    sympy_form = _opaque("isnan")


@op_dataclass
class Isinf(Comparison):
    """True where ``x`` is +inf or -inf."""

    name, ufunc = "isinf", np.isinf
    sympy_form = _opaque("isinf")


@op_dataclass
class Isfinite(Comparison):
    """True where ``x`` is neither NaN nor infinite."""

    name, ufunc = "isfinite", np.isfinite
    sympy_form = _opaque("isfinite")


@op_dataclass
class Where(Elementwise):
    """``cond ? a : b``; the unselected branch gets a zero gradient (never NaN)."""

    name = "where"
    scalar_expr = "({1} if {0} else {2})"
    python_exact = True
    nondiff_inputs = (0,)
    sympy_form = _form(lambda sp, cond, a, b: sp.Piecewise((a, cond), (b, True)))

    def result_dtype(self, cond, a, b):
        return np.result_type(a, b)

    def impl(self, cond, a, b):
        return np.where(cond, a, b)

    def vjp(self, node, g):
        cond, a, b = node.inputs
        zero = zeros_like(g)
        return None, where(cond, g, zero), where(cond, zero, g)


@op_dataclass
class Clip(Elementwise):
    """``minimum(maximum(x, lo), hi)``; at ``x == lo`` or ``x == hi`` the gradient is split evenly."""

    name = "clip"
    sympy_form = _form(lambda sp, a, lo, hi: sp.Min(sp.Max(a, lo), hi))

    def result_dtype(self, *dtypes):
        return np.result_type(*dtypes)

    def impl(self, x, lo, hi):
        return np.minimum(np.maximum(x, lo), hi)

    def vjp(self, node, g):
        x, lo, hi = node.inputs
        dtype = node.dtype
        above_lo = tie_split_weight(greater(x, lo), equal(x, lo), dtype)
        lower = maximum(x, lo)
        below_hi = tie_split_weight(less(lower, hi), equal(lower, hi), dtype)
        return (mul(g, mul(above_lo, below_hi)),
                mul(g, mul(sub(1, above_lo), below_hi)),
                mul(g, sub(1, below_hi)))


@op_dataclass
class Cast(Elementwise):
    """Convert to ``dtype``; the gradient flows back only between float dtypes."""

    name = "cast"
    dtype: np.dtype = np.dtype("float64")
    weak_scalars = False

    def result_dtype(self, *dtypes):
        return self.dtype

    def impl(self, x):
        return np.array(x, dtype=self.dtype, copy=True)

    def vjp(self, node, g):
        (x,) = node.inputs
        if x.dtype.kind != "f" or self.dtype.kind != "f":
            return (None,)
        return (cast(g, x.dtype),)

    def key_bytes(self, node):
        return f"cast{self.dtype.str}".encode()

    def sympy_form(self, sp, node, a):
        if node.inputs[0].dtype == np.bool_:  # (not isinstance(a, Boolean): a Symbol is one too)
            return sp.Piecewise((1, a), (0, True))
        if self.dtype.kind == "f":
            return a
        raise ValueError(f"cast to {self.dtype} has no element-wise SymPy form")


@op_dataclass
class StopGradient(Elementwise):
    """The value of ``x``, with gradient 0."""

    name = "stop_gradient"
    scalar_expr = "{0}"
    sympy_form = first_input_form
    zero_gradient = True
    view = True

    def result_dtype(self, *dtypes):
        return dtypes[0]

    def impl(self, x):
        return x


@op_dataclass
class ZerosLike(Elementwise):
    """Zeros of ``x``'s shape and dtype; gradient 0."""

    name = "zeros_like"
    zero_gradient = True
    sympy_form = _form(lambda sp, *args: sp.Integer(0))

    def result_dtype(self, *dtypes):
        return dtypes[0]

    def impl(self, x):
        return np.zeros(np.shape(x), np.asarray(x).dtype)


@op_dataclass
class OnesLike(Elementwise):
    """Ones of ``x``'s shape and dtype; gradient 0."""

    name = "ones_like"
    zero_gradient = True
    sympy_form = _form(lambda sp, *args: sp.Integer(1))

    def result_dtype(self, *dtypes):
        return dtypes[0]

    def impl(self, x):
        return np.ones(np.shape(x), np.asarray(x).dtype)


# ---- public functions -------------------------------------------------------------------

def _public(cls: type[Elementwise], *params: str) -> Callable[..., Tensor]:
    """The public function of an op class without parameters: it applies the op to its positional
    inputs (broadcast, weak Python scalars); its docstring is the class's."""
    op = cls()

    def function(*inputs) -> Tensor:
        if len(inputs) != len(params):
            raise TypeError(f"{cls.name}() takes {len(params)} positional arguments ({', '.join(params)}), "
                            f"got {len(inputs)}")
        return apply(op, *inputs)

    function.__name__ = function.__qualname__ = cls.name
    function.__doc__ = cls.__doc__
    function.__signature__ = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_ONLY) for p in params], return_annotation=Tensor)
    return function


# the functions of the ops without parameters (each documented by its class)
add, sub, mul = _public(Add, "a", "b"), _public(Sub, "a", "b"), _public(Mul, "a", "b")
div, neg, exp = _public(Div, "a", "b"), _public(Neg, "x"), _public(Exp, "x")
pow, abs = _public(Pow, "x", "y"), _public(Abs, "x")  # noqa: A001 - the contract's names
log, log1p, expm1, sqrt = _public(Log, "x"), _public(Log1p, "x"), _public(Expm1, "x"), _public(Sqrt, "x")
square, sign, sin = _public(Square, "x"), _public(Sign, "x"), _public(Sin, "x")
cos, tanh, erf, sigmoid = _public(Cos, "x"), _public(Tanh, "x"), _public(Erf, "x"), _public(Sigmoid, "x")
softplus, relu, prelu = _public(Softplus, "x"), _public(Relu, "x"), _public(Prelu, "x", "alpha")
silu, hard_tanh, step = _public(Silu, "x"), _public(HardTanh, "x"), _public(Step, "x")
maximum, minimum = _public(Maximum, "a", "b"), _public(Minimum, "a", "b")
where, logical_and = _public(Where, "cond", "a", "b"), _public(LogicalAnd, "a", "b")
stop_gradient, zeros_like = _public(StopGradient, "x"), _public(ZerosLike, "x")
ones_like = _public(OnesLike, "x")


def _number(op: str, name: str, value, hint: str = "") -> float:
    """A float parameter fixed when the node is built (a Tensor there is a TypeError, not float()'s)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}{hint}")
    return float(value)


def leaky_relu(x, alpha: float = 0.01) -> Tensor:
    """``x`` where positive, else ``alpha * x`` (a number; gc.prelu takes a tensor slope)."""
    return apply(LeakyRelu(_number("leaky_relu", "alpha", alpha, "; gc.prelu takes a tensor slope")), x)


def elu(x, alpha: float = 1.0) -> Tensor:
    """``x`` where positive, else ``alpha * (exp(x) - 1)``."""
    return apply(Elu(_number("elu", "alpha", alpha)), x)


def gelu(x, approximate: bool = False) -> Tensor:
    """``x * Phi(x)`` (Phi the normal CDF); ``approximate=True``: the tanh formula."""
    return apply(Gelu(bool(approximate)), x)


swish = silu


def clip(x, lo, hi) -> Tensor:
    """``minimum(maximum(x, lo), hi)``; either bound (not both) may be None, as in NumPy."""
    if lo is None or hi is None:
        if lo is None and hi is None:
            raise ValueError("clip: lo and hi cannot both be None")
        x = as_tensor(x)
        bound = lo if hi is None else hi
        bound_kind = bound.dtype.kind if isinstance(bound, Tensor) else np.asarray(bound).dtype.kind
        if x.dtype.kind == "f" or bound_kind in "fc":
            # a float bound makes the result float (NumPy: clip(uint8 [1, 2], 300.0, None) is
            # [300., 300.]): the missing side is then unbounded, not the integer dtype's limit
            low, high = -math.inf, math.inf
        elif x.dtype.kind in "iu":
            low, high = int(np.iinfo(x.dtype).min), int(np.iinfo(x.dtype).max)
        else:
            raise DTypeError(f"clip: a None bound needs an integer or float tensor, got {x.dtype}")
        lo = low if lo is None else lo
        hi = high if hi is None else hi
    return apply(Clip(), x, lo, hi)


def _compare(op: Comparison, a, b) -> Tensor:
    """Apply a comparison. As in NumPy 2, a Python int outside an integer tensor's range still
    compares (``uint8_x > 300`` is all False): it is then held in a wider integer or float dtype,
    which compares exactly."""
    operands = [a, b]
    strong = [t.dtype if isinstance(t, Tensor) else np.asarray(t).dtype for t in operands
              if isinstance(t, Tensor) or not isinstance(t, (bool, int, float))]
    for k, value in enumerate(operands):
        if isinstance(value, int) and not isinstance(value, bool) and strong:
            try:
                weak_constant(value, strong)
            except DTypeError:
                wide = np.int64 if -2 ** 63 <= value < 2 ** 63 else np.float64
                operands[k] = constant(np.asarray(value, dtype=wide))
    return apply(op, *operands)


def equal(a, b) -> Tensor:
    """``a == b`` element-wise (bool, no gradient)."""
    return _compare(Equal(), a, b)


def not_equal(a, b) -> Tensor:
    """``a != b`` element-wise (bool, no gradient)."""
    return _compare(NotEqual(), a, b)


def greater(a, b) -> Tensor:
    """``a > b`` element-wise (bool, no gradient)."""
    return _compare(Greater(), a, b)


def greater_equal(a, b) -> Tensor:
    """``a >= b`` element-wise (bool, no gradient)."""
    return _compare(GreaterEqual(), a, b)


def less(a, b) -> Tensor:
    """``a < b`` element-wise (bool, no gradient)."""
    return _compare(Less(), a, b)


def less_equal(a, b) -> Tensor:
    """``a <= b`` element-wise (bool, no gradient)."""
    return _compare(LessEqual(), a, b)


def cast(x, dtype) -> Tensor:
    """``x.astype(dtype)``."""
    return apply(Cast(as_dtype(dtype)), x)


# API contract section 15
tan, arcsin, arccos, arctan = _public(Tan, "x"), _public(Arcsin, "x"), _public(Arccos, "x"), _public(Arctan, "x")
arctan2 = _public(Arctan2, "y", "x")
sinh, cosh, arcsinh = _public(Sinh, "x"), _public(Cosh, "x"), _public(Arcsinh, "x")
arccosh, arctanh = _public(Arccosh, "x"), _public(Arctanh, "x")
exp2, log2, log10 = _public(Exp2, "x"), _public(Log2, "x"), _public(Log10, "x")
reciprocal, rsqrt = _public(Reciprocal, "x"), _public(Rsqrt, "x")
floor, ceil, trunc, round = _public(Floor, "x"), _public(Ceil, "x"), _public(Trunc, "x"), _public(Round, "x")  # noqa: A001
mod, floor_divide, logaddexp = _public(Mod, "x", "y"), _public(FloorDivide, "x", "y"), _public(Logaddexp, "a", "b")
isnan, isinf, isfinite = _public(Isnan, "x"), _public(Isinf, "x"), _public(Isfinite, "x")
logical_or, logical_xor = _public(LogicalOr, "a", "b"), _public(LogicalXor, "a", "b")
logical_not = _public(LogicalNot, "x")
