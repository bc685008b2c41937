"""Element-wise ops: values, static types, gradients and conventions, table-driven."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc

from .util import (
    Case,
    Spec,
    assert_static_matches,
    away_from,
    booleans,
    check_jvp,
    check_second_order,
    check_third_order,
    check_with_check_grad,
    draw,
    fixed,
    max_grad_error,
    np_erf,
    np_sigmoid,
    np_softplus,
    numeric_gradient,
    run,
    table_tests,
    uniform,
)

FLOATS = [np.float64, np.float32]


def _gelu(x):
    x = np.asarray(x)
    return (x.astype(np.float64) * 0.5 * (1 + np_erf(x.astype(np.float64) / math.sqrt(2)))).astype(x.dtype)


def _gelu_tanh(x):
    x = np.asarray(x)
    y = x.astype(np.float64)
    return (0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))).astype(x.dtype)


def _elu(alpha):
    return lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype)


def _leaky(alpha):
    return lambda x: np.where(x > 0, x, x * x.dtype.type(alpha))


def _silu(x):
    return (x * np_sigmoid(x)).astype(x.dtype)


def _step(x):
    return (x > 0).astype(x.dtype)


# (id, graphc function, NumPy reference, test points, twice differentiable)
UNARY = [
    ("neg", gc.neg, np.negative, uniform(), True),
    ("neg_operator", lambda x: -x, np.negative, uniform(), True),
    ("exp", gc.exp, np.exp, uniform(), True),
    ("log", gc.log, np.log, uniform(0.2, 3.0), True),
    ("log1p", gc.log1p, np.log1p, uniform(-0.5, 2.0), True),
    ("expm1", gc.expm1, np.expm1, uniform(), True),
    ("sqrt", gc.sqrt, np.sqrt, uniform(0.2, 3.0), True),
    ("square", gc.square, np.square, uniform(), True),
    ("abs", gc.abs, np.abs, away_from(0.0), True),
    ("abs_builtin", abs, np.abs, away_from(0.0), True),
    ("sign", gc.sign, np.sign, away_from(0.0), True),
    ("sin", gc.sin, np.sin, uniform(-3, 3), True),
    ("cos", gc.cos, np.cos, uniform(-3, 3), True),
    ("tanh", gc.tanh, np.tanh, uniform(), True),
    ("sigmoid", gc.sigmoid, np_sigmoid, uniform(-4, 4), True),
    ("softplus", gc.softplus, np_softplus, uniform(-4, 4), True),
    ("relu", gc.relu, lambda x: np.maximum(x, 0).astype(x.dtype), away_from(0.0), True),
    ("leaky_relu", gc.leaky_relu, _leaky(0.01), away_from(0.0), True),
    ("leaky_relu_0.2", lambda x: gc.leaky_relu(x, alpha=0.2), _leaky(0.2), away_from(0.0), True),
    ("elu", gc.elu, _elu(1.0), away_from(0.0), True),
    ("elu_0.5", lambda x: gc.elu(x, alpha=0.5), _elu(0.5), away_from(0.0), True),
    ("gelu", gc.gelu, _gelu, uniform(-3, 3), True),
    ("gelu_tanh", lambda x: gc.gelu(x, approximate=True), _gelu_tanh, uniform(-3, 3), True),
    ("silu", gc.silu, _silu, uniform(-4, 4), True),
    ("swish", gc.swish, _silu, uniform(-4, 4), True),
    ("hard_tanh", gc.hard_tanh, lambda x: np.clip(x, -1, 1), away_from(-1.0, 1.0), True),
    ("step", gc.step, _step, away_from(0.0), True),
    ("stop_gradient_value", gc.stop_gradient, lambda x: x.copy(), uniform(), False),
    ("zeros_like", gc.zeros_like, np.zeros_like, uniform(), False),
    ("ones_like", gc.ones_like, np.ones_like, uniform(), False),
    # API contract section 15
    ("tan", gc.tan, np.tan, uniform(-1.2, 1.2), True),
    ("arcsin", gc.arcsin, np.arcsin, uniform(-0.9, 0.9), True),
    ("arccos", gc.arccos, np.arccos, uniform(-0.9, 0.9), True),
    ("arctan", gc.arctan, np.arctan, uniform(-3, 3), True),
    ("sinh", gc.sinh, np.sinh, uniform(), True),
    ("cosh", gc.cosh, np.cosh, uniform(), True),
    ("arcsinh", gc.arcsinh, np.arcsinh, uniform(-3, 3), True),
    ("arccosh", gc.arccosh, np.arccosh, uniform(1.2, 4.0), True),
    ("arctanh", gc.arctanh, np.arctanh, uniform(-0.9, 0.9), True),
    ("exp2", gc.exp2, np.exp2, uniform(), True),
    ("log2", gc.log2, np.log2, uniform(0.2, 3.0), True),
    ("log10", gc.log10, np.log10, uniform(0.2, 3.0), True),
    ("reciprocal", gc.reciprocal, np.reciprocal, away_from(0.0, margin=0.3), True),
    ("rsqrt", gc.rsqrt, lambda x: 1 / np.sqrt(x), uniform(0.2, 3.0), True),
    ("floor", gc.floor, np.floor, away_from(-1.0, 0.0, 1.0), True),
    ("ceil", gc.ceil, np.ceil, away_from(-1.0, 0.0, 1.0), True),
    ("trunc", gc.trunc, np.trunc, away_from(-1.0, 0.0, 1.0), True),
    ("round", gc.round, np.round, away_from(-1.5, -0.5, 0.5, 1.5), True),
]

UNARY_SHAPES = [(2, 3), (), (1, 4, 1)]

NO_FINITE_DIFFERENCES = ("stop_gradient_value", "zeros_like", "ones_like")  # tested on their own below
UNARY_CASES = [Case(f"{name}{list(shape)}", fn, ref, [Spec(shape, gen)], second=second,
                    grad=name not in NO_FINITE_DIFFERENCES)
               for name, fn, ref, gen, second in UNARY for shape in UNARY_SHAPES[:1]]
UNARY_CASES += [Case(f"{name}{list(shape)}", fn, ref, [Spec(shape, gen)], second=second)
                for name, fn, ref, gen, second in UNARY for shape in UNARY_SHAPES[1:]
                if name in ("exp", "sigmoid", "softplus", "relu", "gelu", "abs", "tan", "arcsinh", "rsqrt", "round")]

# ()x(): an all-0-d graph, which the executor runs on NumPy scalars
BROADCAST_PAIRS = [((3, 1), (1, 4)), ((), (2, 3)), ((2, 1, 3), (4, 1)), ((2, 3), (2, 3)), ((3,), (2, 1)), ((), ())]

# (id, graphc function, NumPy reference, points for a, points for b)
BINARY = [
    ("add", gc.add, np.add, uniform(), uniform()),
    ("add_operator", lambda a, b: a + b, np.add, uniform(), uniform()),
    ("sub", gc.sub, np.subtract, uniform(), uniform()),
    ("sub_operator", lambda a, b: a - b, np.subtract, uniform(), uniform()),
    ("mul", gc.mul, np.multiply, uniform(), uniform()),
    ("mul_operator", lambda a, b: a * b, np.multiply, uniform(), uniform()),
    ("div", gc.div, np.true_divide, uniform(), away_from(0.0, margin=0.3)),
    ("div_operator", lambda a, b: a / b, np.true_divide, uniform(), away_from(0.0, margin=0.3)),
    ("pow", gc.pow, np.power, uniform(0.3, 2.0), uniform(-1.5, 2.5)),
    ("pow_operator", lambda a, b: a ** b, np.power, uniform(0.3, 2.0), uniform(-1.5, 2.5)),
    ("maximum", gc.maximum, np.maximum, uniform(), uniform()),
    ("minimum", gc.minimum, np.minimum, uniform(), uniform()),
    ("prelu", gc.prelu, lambda x, a: np.where(x > 0, x, x * a), away_from(0.0), uniform(0.0, 0.5)),
    # API contract section 15 (x / y stays away from the jumps of floor: |x / y| < 0.75, not near 0)
    ("arctan2", gc.arctan2, np.arctan2, away_from(0.0, margin=0.3), uniform()),
    ("mod", gc.mod, np.remainder, away_from(0.0, low=-0.9, high=0.9), uniform(1.2, 2.0)),
    ("mod_negative_divisor", gc.mod, np.remainder, away_from(0.0, low=-0.9, high=0.9), uniform(-2.0, -1.2)),
    ("floor_divide", gc.floor_divide, np.floor_divide, away_from(0.0, low=-0.9, high=0.9), uniform(1.2, 2.0)),
    ("logaddexp", gc.logaddexp, np.logaddexp, uniform(-3, 3), uniform(-3, 3)),
]

BINARY_CASES = [Case(f"{name}{list(sa)}x{list(sb)}", fn, ref, [Spec(sa, ga), Spec(sb, gb)])
                for name, fn, ref, ga, gb in BINARY for sa, sb in BROADCAST_PAIRS]

TERNARY_CASES = [
    Case("where[2,1,3]x[4,1]x[3]", gc.where, np.where,
         [Spec((2, 1, 3), booleans(), kind="bool"), Spec((4, 1)), Spec((3,))]),
    Case("where[3]x[]x[2,3]", gc.where, np.where, [Spec((3,), booleans(), kind="bool"), Spec(()), Spec((2, 3))]),
    Case("where_comparison", lambda x, y: gc.where(x > y, x * y, x - y), lambda x, y: np.where(x > y, x * y, x - y),
         [Spec((3, 1)), Spec((1, 4))]),
    Case("clip_arrays", gc.clip, np.clip,
         [Spec((2, 3), away_from(-0.8, 0.8, margin=0.05)), Spec((3,), fixed([-0.8, -0.8, -0.8])),
          Spec((2, 1), fixed([[0.8], [0.8]]))]),
    Case("clip_scalars", lambda x: gc.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5),
         [Spec((3, 4), away_from(-0.5, 0.5, margin=0.05))]),
    Case("where-0d", gc.where, np.where, [Spec((), booleans(), kind="bool"), Spec(()), Spec(())]),
    Case("clip-0d", gc.clip, np.clip, [Spec((), away_from(-1.0, 1.0)), Spec((), fixed(-1.0)), Spec((), fixed(1.0))]),
]

_SPECIAL = fixed([[np.nan, np.inf, -np.inf], [0.0, -1.5, 2.0]])
# predicates and logic: bool results, no gradient
LOGIC_CASES = [
    Case("isnan", gc.isnan, np.isnan, [Spec((2, 3), _SPECIAL)], grad=False),
    Case("isinf", gc.isinf, np.isinf, [Spec((2, 3), _SPECIAL)], grad=False),
    Case("isfinite", gc.isfinite, np.isfinite, [Spec((2, 3), _SPECIAL)], grad=False),
    Case("logical_not", gc.logical_not, np.logical_not, [Spec((2, 3), booleans(), kind="bool")], grad=False),
    Case("logical_not_floats", gc.logical_not, np.logical_not, [Spec((2, 3), fixed([[0.0, 1.0, -0.0]] * 2))],
         grad=False),
] + [Case(f"{fn.__name__}{list(sa)}x{list(sb)}", fn, ref, [Spec(sa, booleans(), kind="bool"),
                                                          Spec(sb, booleans(), kind="bool")], grad=False)
     for fn, ref in [(gc.logical_and, np.logical_and), (gc.logical_or, np.logical_or),
                     (gc.logical_xor, np.logical_xor)] for sa, sb in BROADCAST_PAIRS[:3]]
_TIES = [Spec((3, 1), fixed([[0.0], [1.0], [-1.0]])), Spec((1, 3), fixed([[1.0, 0.0, -1.0]]))]
LOGIC_CASES += [Case(fn.__name__, fn, ref, _TIES, grad=False)
                for fn, ref in [(gc.equal, np.equal), (gc.not_equal, np.not_equal), (gc.greater, np.greater),
                                (gc.greater_equal, np.greater_equal), (gc.less, np.less),
                                (gc.less_equal, np.less_equal)]]

ALL_CASES = UNARY_CASES + BINARY_CASES + TERNARY_CASES + LOGIC_CASES
SMOOTH_CASES = [c for c in ALL_CASES if c.grad and c.second]


globals().update(table_tests(
    ALL_CASES, gradient_unknown=lambda c: c in BINARY_CASES + TERNARY_CASES and "[2,3]x[2,3]" not in c.id,
    float32_second=lambda c: c.id.startswith(("exp", "tanh", "sigmoid", "mul", "div", "pow", "softplus", "gelu",
                                              "where"))))


# ---- integer and bool inputs ------------------------------------------------------------------

INT_UNARY = [
    ("floor", gc.floor, np.floor), ("ceil", gc.ceil, np.ceil), ("trunc", gc.trunc, np.trunc),
    ("round", gc.round, np.round), ("exp2", gc.exp2, np.exp2), ("log2", gc.log2, np.log2),
    ("tan", gc.tan, np.tan), ("arctan", gc.arctan, np.arctan), ("isnan", gc.isnan, np.isnan),
    ("isfinite", gc.isfinite, np.isfinite), ("logical_not", gc.logical_not, np.logical_not),
    ("neg", gc.neg, np.negative), ("abs", gc.abs, np.abs), ("square", gc.square, np.square),
    ("sign", gc.sign, np.sign), ("exp", gc.exp, np.exp), ("log", gc.log, np.log), ("sqrt", gc.sqrt, np.sqrt),
    ("sin", gc.sin, np.sin), ("relu", gc.relu, lambda x: np.maximum(x, 0)),
    ("hard_tanh", gc.hard_tanh, lambda x: np.clip(x, -1, 1)), ("step", gc.step, _step),
    ("cast_float32", lambda x: gc.cast(x, "float32"), lambda x: x.astype(np.float32)),
    ("astype_bool", lambda x: x.astype(bool), lambda x: x.astype(bool)),
    ("zeros_like", gc.zeros_like, np.zeros_like),
]

INT_DTYPES = ["int64", "int32", "uint8"]


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("name,fn,ref", INT_UNARY, ids=[u[0] for u in INT_UNARY])
def test_integer_unary(name, fn, ref, dtype):
    low = 1 if name in ("log", "sqrt", "log2") else (0 if dtype == "uint8" else -3)
    values = np.arange(low, low + 6).reshape(2, 3).astype(dtype)
    x = gc.placeholder("x", (2, 3), dtype)
    out = fn(x)
    got = run(out, {x: values})
    expected = ref(values)
    assert_static_matches(out, got)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected)


INT_BINARY = [
    ("add", gc.add, np.add), ("sub", gc.sub, np.subtract), ("mul", gc.mul, np.multiply),
    ("div", gc.div, np.true_divide), ("pow", gc.pow, np.power), ("maximum", gc.maximum, np.maximum),
    ("minimum", gc.minimum, np.minimum), ("equal", gc.equal, np.equal), ("not_equal", gc.not_equal, np.not_equal),
    ("greater", gc.greater, np.greater), ("greater_equal", gc.greater_equal, np.greater_equal),
    ("less", gc.less, np.less), ("less_equal", gc.less_equal, np.less_equal),
    ("mod", gc.mod, np.remainder), ("floor_divide", gc.floor_divide, np.floor_divide),
    ("arctan2", gc.arctan2, np.arctan2), ("logaddexp", gc.logaddexp, np.logaddexp),
    ("logical_or", gc.logical_or, np.logical_or), ("logical_xor", gc.logical_xor, np.logical_xor),
]

MIXED_DTYPES = [("int64", "int64"), ("int32", "int64"), ("int32", "float32"), ("uint8", "int8"),
                ("bool", "int32"), ("bool", "float32"), ("float32", "float64")]


@pytest.mark.parametrize("dtypes", MIXED_DTYPES, ids=["-".join(d) for d in MIXED_DTYPES])
@pytest.mark.parametrize("name,fn,ref", INT_BINARY, ids=[b[0] for b in INT_BINARY])
def test_mixed_dtype_binary(name, fn, ref, dtypes):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, size=(3, 1)).astype(dtypes[0])
    b = rng.integers(1, 4, size=(1, 4)).astype(dtypes[1])
    x, y = gc.placeholder("a", (3, 1), dtypes[0]), gc.placeholder("b", (None, 4), dtypes[1])
    out = fn(x, y)
    got = run(out, {x: a, y: b})
    expected = ref(a, b)
    assert_static_matches(out, got)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected)


def test_bool_dtype_errors():
    """Ops NumPy refuses for bool (subtract, negative) raise DTypeError at build time."""
    m = gc.placeholder("m", (3,), "bool")
    with pytest.raises(gc.DTypeError, match="sub"):
        gc.sub(m, m)
    with pytest.raises(gc.DTypeError, match="neg"):
        gc.neg(m)


# ---- weak Python scalars ------------------------------------------------------------------------

WEAK_EXPRESSIONS = [
    ("x*2.0", lambda x: x * 2.0), ("2.0*x", lambda x: 2.0 * x), ("x+1", lambda x: x + 1),
    ("1-x", lambda x: 1 - x), ("x/2", lambda x: x / 2), ("2.0**x", lambda x: 2.0 ** x),
    ("x**3", lambda x: x ** 3), ("x**0.5", lambda x: x ** 0.5),
    ("x>0.5", lambda x: x > 0.5), ("x<=1", lambda x: x <= 1), ("x*f64(2)", lambda x: x * np.float64(2)),
    ("x*array(2.0)", lambda x: x * np.array(2.0)), ("x+ones32", lambda x: x + np.ones(3, np.float32)),
    # NumPy values on the left defer to the tensor
    ("ones32+x", lambda x: np.ones(3, np.float32) + x), ("f64(2)*x", lambda x: np.float64(2) * x),
    ("f32(2)*x", lambda x: np.float32(2) * x), ("array(2.0)-x", lambda x: np.array(2.0) - x),
]


def _weak_fn(name):
    return {
        # (ndarray ** 2 takes a squaring fast path whose bool result is int8; gc.pow follows np.power)
        "x**2": (lambda x: x ** 2, lambda x: np.power(x, 2)),
        "maximum(x,0.0)": (lambda x: gc.maximum(x, 0.0), lambda x: np.maximum(x, 0.0)),
        "minimum(1,x)": (lambda x: gc.minimum(1, x), lambda x: np.minimum(1, x)),
        "where(x>1,x,0.0)": (lambda x: gc.where(x > 1, x, 0.0), lambda x: np.where(x > 1, x, 0.0)),
        "clip(x,0.5,1.5)": (lambda x: gc.clip(x, 0.5, 1.5), lambda x: np.clip(x, 0.5, 1.5)),
        "pow(x,3)": (lambda x: gc.pow(x, 3), lambda x: np.power(x, 3)),
        "equal(x,1)": (lambda x: gc.equal(x, 1), lambda x: np.equal(x, 1)),
    }[name]


WEAK_FUNCTIONS = ["x**2", "maximum(x,0.0)", "minimum(1,x)", "where(x>1,x,0.0)", "clip(x,0.5,1.5)", "pow(x,3)",
                  "equal(x,1)"]
WEAK_DTYPES = ["float32", "float64", "int32", "int64", "uint8", "bool"]


def _check_weak(graph_fn, numpy_fn, dtype):
    values = np.array([0, 1, 2]).astype(dtype)
    try:
        expected = numpy_fn(values)
    except (TypeError, OverflowError, np.exceptions.DTypePromotionError):
        with pytest.raises(gc.DTypeError):
            graph_fn(gc.placeholder("x", (3,), dtype))
        return
    x = gc.placeholder("x", (3,), dtype)
    out = graph_fn(x)
    got = run(out, {x: values})
    assert out.dtype == expected.dtype, (out.dtype, expected.dtype)
    assert_static_matches(out, got)
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize("dtype", WEAK_DTYPES)
@pytest.mark.parametrize("name,expression", WEAK_EXPRESSIONS, ids=[w[0] for w in WEAK_EXPRESSIONS])
def test_weak_scalars_operators(name, expression, dtype):
    """Python scalars follow NumPy 2's weak promotion (x32 * 2.0 stays float32)."""
    _check_weak(expression, expression, dtype)


@pytest.mark.parametrize("dtype", WEAK_DTYPES)
@pytest.mark.parametrize("name", WEAK_FUNCTIONS)
def test_weak_scalars_functions(name, dtype):
    graph_fn, numpy_fn = _weak_fn(name)
    _check_weak(graph_fn, numpy_fn, dtype)


def test_weak_scalar_out_of_range():
    x = gc.placeholder("x", (3,), "uint8")
    with pytest.raises(gc.DTypeError):
        x + 300  # NumPy 2 raises OverflowError
    with pytest.raises(gc.DTypeError):
        gc.maximum(x, -1)


OUT_OF_RANGE_COMPARISONS = [("x>300", lambda x: x > 300), ("x<-5", lambda x: x < -5),
                            ("equal(x,-1)", lambda x: gc.equal(x, -1) if isinstance(x, gc.Tensor) else x == -1),
                            ("not_equal(x,256)", lambda x: gc.not_equal(x, 256) if isinstance(x, gc.Tensor)
                             else x != 256),
                            ("2**70>x", lambda x: 2 ** 70 > x), ("x>=-2**70", lambda x: x >= -2 ** 70)]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32"])
@pytest.mark.parametrize("name,expression", OUT_OF_RANGE_COMPARISONS, ids=[c[0] for c in OUT_OF_RANGE_COMPARISONS])
def test_comparison_with_out_of_range_python_int(name, expression, dtype):
    """NumPy 2 compares integers with any Python int, in range or not."""
    values = np.array([0, 1, 100]).astype(dtype)
    x = gc.placeholder("x", (3,), dtype)
    out = expression(x)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(run(out, {x: values}), expression(values))


# ---- comparisons, where, cast: values and (no) gradients -----------------------------------------

COMPARISONS = [("equal", gc.equal, np.equal), ("not_equal", gc.not_equal, np.not_equal),
               ("greater", gc.greater, np.greater), ("greater_equal", gc.greater_equal, np.greater_equal),
               ("less", gc.less, np.less), ("less_equal", gc.less_equal, np.less_equal),
               ("operator<", lambda a, b: a < b, np.less), ("operator<=", lambda a, b: a <= b, np.less_equal),
               ("operator>", lambda a, b: a > b, np.greater), ("operator>=", lambda a, b: a >= b, np.greater_equal)]


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@pytest.mark.parametrize("name,fn,ref", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparisons(name, fn, ref, dtype):
    rng = np.random.default_rng(5)
    a = rng.integers(-2, 3, size=(3, 1)).astype(dtype)  # small integers: ties are common
    b = rng.integers(-2, 3, size=(1, 4)).astype(dtype)
    x, y = gc.placeholder("a", (3, 1), dtype), gc.placeholder("b", (1, None), dtype)
    out = fn(x, y)
    assert out.dtype == np.bool_
    got = run(out, {x: a, y: b})
    assert_static_matches(out, got)
    np.testing.assert_array_equal(got, ref(a, b))
    assert out.op == ref.__name__  # operators build the same ops: < is "less", ...
    if dtype.startswith("float"):
        # no gradient flows through a comparison: zero, and "raise" reports it disconnected
        cost = gc.sum(gc.cast(out, dtype) * 3.0)
        gx, gy = gc.grad(cost, [x, y])
        zx, zy = run([gx, gy], {x: a, y: b})
        np.testing.assert_array_equal(zx, np.zeros_like(a))
        np.testing.assert_array_equal(zy, np.zeros_like(b))
        with pytest.raises(gc.GradientError):
            gc.grad(cost, x, disconnected="raise")


def test_where_gradient_goes_to_the_selected_branch_only():
    x = gc.placeholder("x", (4,))
    # log of a negative number is NaN in the unselected branch; the gradient must not be NaN
    y = gc.where(x > 0, gc.log(gc.where(x > 0, x, 1.0)), x * 2.0)
    g = gc.grad(gc.sum(y), x)
    values = np.array([-1.0, 0.5, 2.0, -3.0])
    np.testing.assert_allclose(run(g, {x: values}), np.where(values > 0, 1 / values, 2.0))


def test_where_with_integer_branches():
    c = gc.placeholder("c", (2, 3), "bool")
    a = gc.placeholder("a", (3,), "int32")
    out = gc.where(c, a, 7)
    cv = np.array([[True, False, True], [False, False, True]])
    av = np.array([1, 2, 3], np.int32)
    got = run(out, {c: cv, a: av})
    expected = np.where(cv, av, 7)
    assert got.dtype == expected.dtype == out.dtype
    np.testing.assert_array_equal(got, expected)


CASTS = [("float64", "float32"), ("float32", "float64"), ("float64", "int32"), ("float32", "int64"),
         ("int64", "float32"), ("int32", "float64"), ("bool", "float32"), ("float64", "bool"), ("int64", "uint8")]


@pytest.mark.parametrize("source,target", CASTS, ids=[f"{s}->{t}" for s, t in CASTS])
def test_cast(source, target):
    values = np.array([[-1.7, 0.0, 2.5], [3.2, -0.4, 1.0]])
    values = (values > 0) if source == "bool" else values.astype(source)
    if source.startswith("int") and target == "uint8":
        values = np.abs(values)
    x = gc.placeholder("x", (2, None), source)
    out = gc.cast(x, target)
    same = x.astype(target)
    got, got_same = run([out, same], {x: values})
    expected = values.astype(target)
    assert out.op == "cast" and out.dtype == np.dtype(target)
    assert_static_matches(out, got)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_same, expected)
    if source.startswith("float"):
        cost = gc.sum(gc.cast(out, "float64") * 2.0)
        g = run(gc.grad(cost, x), {x: values})
        assert g.dtype == np.dtype(source)
        # a float -> float cast passes the gradient; a cast to an integer or bool carries none
        expected_grad = 2.0 if target.startswith("float") else 0.0
        np.testing.assert_array_equal(g, np.full(values.shape, expected_grad, dtype=source))


def test_cast_gradient_float32_to_float64_second_order():
    x = gc.placeholder("x", (3,), "float32")
    y = gc.cast(x, "float64")
    g = gc.grad(gc.sum(y ** 3), x)
    h = gc.grad(gc.sum(g), x)
    values = np.array([1.0, -2.0, 0.5], np.float32)
    gv, hv = run([g, h], {x: values})
    assert gv.dtype == hv.dtype == np.float32
    np.testing.assert_allclose(gv, 3 * values.astype(np.float64) ** 2, rtol=1e-6)
    np.testing.assert_allclose(hv, 6 * values.astype(np.float64), rtol=1e-6)


def test_stop_gradient():
    x = gc.placeholder("x", (3,))
    y = gc.sum(gc.stop_gradient(x * x) * x)
    g = gc.grad(y, x)
    values = np.array([1.0, 2.0, -3.0])
    np.testing.assert_allclose(run(g, {x: values}), values ** 2)  # only the outer factor is differentiated


@pytest.mark.parametrize("fn", [gc.zeros_like, gc.ones_like, gc.stop_gradient], ids=lambda f: f.__name__)
def test_zero_gradient_ops(fn):
    x = gc.placeholder("x", (3,))
    cost = gc.sum(fn(x) * 3.0)
    np.testing.assert_array_equal(run(gc.grad(cost, x), {x: np.array([1.0, -2.0, 0.5])}), np.zeros(3))
    with pytest.raises(gc.GradientError):
        gc.grad(cost, x, disconnected="raise")


# ---- gradient conventions, one by one ----------------------------------------------------------

def _grad_at(build, values, dtype="float64"):
    values = np.asarray(values, dtype=dtype)
    x = gc.placeholder("x", values.shape, dtype)
    g = gc.grad(gc.sum(build(x)), x)
    return run(g, {x: values})


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_gradient_at_zero_is_zero(dtype):
    np.testing.assert_array_equal(_grad_at(gc.relu, [-1.0, 0.0, 2.0], dtype), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_abs_gradient_at_zero_is_zero(dtype):
    np.testing.assert_array_equal(_grad_at(gc.abs, [-1.0, 0.0, 2.0], dtype), [-1.0, 0.0, 1.0])


def test_step_gradient_is_zero_everywhere():
    np.testing.assert_array_equal(_grad_at(gc.step, [-1.0, 0.0, 2.0]), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(_grad_at(gc.sign, [-1.0, 0.0, 2.0]), [0.0, 0.0, 0.0])


def test_softplus_gradient_at_zero_is_half():
    np.testing.assert_array_equal(_grad_at(gc.softplus, [0.0]), [0.5])
    np.testing.assert_array_equal(_grad_at(gc.softplus, [0.0], "float32"), [0.5])


def test_sqrt_gradient_at_zero_is_inf():
    g = _grad_at(gc.sqrt, [0.0, 4.0])
    assert g[0] == np.inf
    assert g[1] == 0.25


@pytest.mark.parametrize("fn,ref", [(gc.maximum, np.maximum), (gc.minimum, np.minimum)], ids=["maximum", "minimum"])
def test_maximum_minimum_ties_split_evenly(fn, ref):
    a_val = np.array([1.0, 2.0, 3.0, -1.0])
    b_val = np.array([1.0, 0.0, 5.0, -1.0])
    a, b = gc.placeholder("a", (4,)), gc.placeholder("b", (4,))
    ga, gb = run(gc.grad(gc.sum(fn(a, b)), [a, b]), {a: a_val, b: b_val})
    tie = a_val == b_val
    a_wins = ref(a_val, b_val) == a_val
    np.testing.assert_array_equal(ga, np.where(tie, 0.5, np.where(a_wins, 1.0, 0.0)))
    np.testing.assert_array_equal(ga + gb, np.ones(4))  # the total is preserved
    # a tensor against itself: the halves add up to the identity's gradient
    g_self = run(gc.grad(gc.sum(fn(a, a)), a), {a: a_val})
    np.testing.assert_array_equal(g_self, np.ones(4))
    # a tie against a broadcast scalar: the scalar collects the halves of every tied entry
    s = gc.placeholder("s", ())
    ga2, gs = run(gc.grad(gc.sum(fn(a, s)), [a, s]), {a: a_val, s: 1.0})
    expected_a = np.where(a_val == 1.0, 0.5, np.where(ref(a_val, 1.0) == a_val, 1.0, 0.0))
    np.testing.assert_array_equal(ga2, expected_a)
    assert gs == 4 - expected_a.sum()


def test_clip_ties_split_evenly():
    x, lo, hi = gc.placeholder("x", (5,)), gc.placeholder("lo", ()), gc.placeholder("hi", ())
    values = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    gx, glo, ghi = run(gc.grad(gc.sum(gc.clip(x, lo, hi)), [x, lo, hi]), {x: values, lo: -1.0, hi: 1.0})
    np.testing.assert_array_equal(gx, [0.0, 0.5, 1.0, 0.5, 0.0])
    assert glo == 1.5 and ghi == 1.5  # the total is preserved: 5 entries, gradient 5
    assert gx.sum() + glo + ghi == 5.0


def test_hard_tanh_gradient_is_zero_at_the_corners():
    np.testing.assert_array_equal(_grad_at(gc.hard_tanh, [-2.0, -1.0, 0.0, 1.0, 2.0]), [0.0, 0.0, 1.0, 0.0, 0.0])


@pytest.mark.parametrize("y", [0.0, 2.0, 3.0, 1.5, 2.5])
def test_pow_gradient_wrt_base_at_zero(y):
    """d/dx x**y at x = 0 is 0 for y = 0 and for y > 1 (never NaN)."""
    x_ph, y_ph = gc.placeholder("x", (2,)), gc.placeholder("y", ())
    gx, gy = gc.grad(gc.sum(x_ph ** y_ph), [x_ph, y_ph])
    gx_val, gy_val = run([gx, gy], {x_ph: np.array([0.0, 0.0]), y_ph: y})
    np.testing.assert_array_equal(gx_val, [0.0, 0.0])
    assert gy_val == 0.0  # d/dy x**y at x = 0 is 0 for y >= 0
    # with the exponent a Python scalar too
    g_scalar = run(gc.grad(gc.sum(x_ph ** y), x_ph), {x_ph: np.array([0.0, 0.0])})
    np.testing.assert_array_equal(g_scalar, [0.0, 0.0])


@pytest.mark.parametrize("y", [0.0, 0.5, 1.0, 2.0])
def test_pow_gradient_wrt_exponent_at_zero_base(y):
    x_ph, y_ph = gc.placeholder("x", ()), gc.placeholder("y", (3,))
    gy = run(gc.grad(gc.sum(gc.pow(x_ph, y_ph)), y_ph), {x_ph: 0.0, y_ph: np.full(3, y)})
    np.testing.assert_array_equal(gy, np.zeros(3))


def test_pow_gradient_at_zero_base_y_one():
    # the ordinary derivative where it exists: d/dx x**1 = 1, also at 0
    np.testing.assert_array_equal(_grad_at(lambda x: x ** 1.0, [0.0, 2.0]), [1.0, 1.0])


def test_pow_integer_exponent_tensor():
    x = gc.placeholder("x", (3,))
    n = gc.placeholder("n", (3,), "int64")
    gx = run(gc.grad(gc.sum(x ** n), x), {x: np.array([0.0, 2.0, -1.5]), n: np.array([0, 3, 2])})
    np.testing.assert_allclose(gx, [0.0, 12.0, -3.0])


# ---- stable element-wise primitives at extreme inputs ------------------------------------------

EXTREME = np.array([-1000.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1000.0])


def _stable_sigmoid_reference(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


STABLE_UNARY = [
    ("sigmoid", gc.sigmoid, _stable_sigmoid_reference,
     lambda x: _stable_sigmoid_reference(x) * _stable_sigmoid_reference(-x)),
    ("softplus", gc.softplus, lambda x: np.logaddexp(x, 0.0), _stable_sigmoid_reference),
    ("silu", gc.silu, lambda x: x * _stable_sigmoid_reference(x),
     lambda x: _stable_sigmoid_reference(x) * (1 + x * _stable_sigmoid_reference(-x))),
    ("elu", gc.elu, lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
     lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))),
    ("gelu", gc.gelu, lambda x: x * 0.5 * (1 + np_erf(x / math.sqrt(2))),
     lambda x: 0.5 * (1 + np_erf(x / math.sqrt(2))) + x * np.exp(-0.5 * np.minimum(x * x, 1e4))
     / math.sqrt(2 * math.pi)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name,fn,ref,dref", STABLE_UNARY, ids=[s[0] for s in STABLE_UNARY])
def test_stable_at_extreme_inputs(name, fn, ref, dref, dtype):
    values = EXTREME.astype(dtype)
    x = gc.placeholder("x", values.shape, dtype)
    y = fn(x)
    g = gc.grad(gc.sum(y), x)
    got, grad = run([y, g], {x: values})
    assert got.dtype == grad.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad)), (got, grad)
    tiny = np.finfo(dtype).tiny
    rtol = 1e-12 if dtype == "float64" else 1e-6
    expected = ref(values.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=tiny * 10)
    np.testing.assert_allclose(grad, dref(values.astype(np.float64)), rtol=rtol * 10, atol=tiny * 10)


def _sech2(x):
    """tanh'(x) = 1 / cosh(x)**2, written without overflow."""
    e = np.exp(-2 * np.abs(np.asarray(x, np.float64)))
    return 4 * e / (1 + e) ** 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanh_gradient_from_the_output_at_extreme_inputs(dtype):
    """g * (1 - t*t): within a few ulp of 1 absolute everywhere, exactly 0 in the saturated tails, never negative."""
    values = np.concatenate([EXTREME, [-19.0, -9.0, -0.5, 1e-8, 0.5, 9.0, 19.0, 20.0]]).astype(dtype)
    x = gc.placeholder("x", values.shape, dtype)
    got, grad = run([gc.tanh(x), gc.grad(gc.sum(gc.tanh(x)), x)], {x: values})
    assert got.dtype == grad.dtype == np.dtype(dtype)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(grad, _sech2(values), rtol=0, atol=2 * eps)
    assert np.all(grad >= 0) and np.all(grad[np.abs(values) >= 50] == 0) and grad[values == 0] == 1
    np.testing.assert_allclose(grad[np.abs(values) <= 1], _sech2(values[np.abs(values) <= 1]), rtol=8 * eps)
    y = gc.placeholder("y", (5,))
    point = {y: np.array([-1.5, -0.5, 0.3, 1.0, 2.5])}
    assert gc.check_grad(gc.sum(gc.tanh(y)), y, point) < 1e-7
    assert gc.check_grad(gc.sum(gc.grad(gc.sum(gc.tanh(y)), y)), y, point) < 1e-6  # second order


def test_sigmoid_tail_is_accurate():
    # sigmoid(-50) = 1.9e-22: no cancellation, in either dtype, and its gradient too
    for dtype in ("float64", "float32"):
        x = gc.placeholder("x", (), dtype)
        y = gc.sigmoid(x)
        value, slope = run([y, gc.grad(y, x)], {x: -50.0})
        expected = math.exp(-50) / (1 + math.exp(-50))
        assert abs(value - expected) <= 1e-6 * expected
        assert abs(slope - expected * (1 - expected)) <= 1e-6 * expected


# ---- construction errors ----------------------------------------------------------------------

@pytest.mark.parametrize("fn", [gc.add, gc.sub, gc.mul, gc.div, gc.pow, gc.maximum, gc.minimum, gc.equal,
                                gc.greater, gc.less_equal, gc.prelu],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("sa,sb", [((2, 3), (3, 2)), ((None, 3), (2, 4)), ((4,), (2, 3))])
def test_broadcast_shape_error(fn, sa, sb):
    a, b = gc.placeholder("a", sa), gc.placeholder("b", sb)
    with pytest.raises(gc.ShapeError) as info:
        fn(a, b)
    message = str(info.value)
    assert fn.__name__ in message
    from graphc.types import format_shape

    assert format_shape(sa) in message and format_shape(sb) in message


@pytest.mark.parametrize("dtype", ["float64", "float32", "int32", "uint8"])
@pytest.mark.parametrize("lo,hi", [(None, 2), (1, None), (None, 1.5), (0.5, None)])
def test_clip_with_one_bound(lo, hi, dtype):
    values = np.array([0, 1, 2, 3]).astype(dtype)
    x = gc.placeholder("x", (4,), dtype)
    out = gc.clip(x, lo, hi)
    expected = np.clip(values, lo, hi)
    got = run(out, {x: values})
    assert out.op == "clip" and got.dtype == out.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    if dtype.startswith("float"):
        g = run(gc.grad(gc.sum(out), x), {x: values + 0.25})
        inside = (values + 0.25 > (-np.inf if lo is None else lo)) & (values + 0.25 < (np.inf if hi is None else hi))
        np.testing.assert_array_equal(g, inside.astype(dtype))


def test_clip_without_bounds_is_an_error():
    with pytest.raises(ValueError):
        gc.clip(gc.placeholder("x", (2,)), None, None)


def test_where_and_clip_shape_errors():
    c = gc.placeholder("c", (2, 3), "bool")
    with pytest.raises(gc.ShapeError, match="where") as info:
        gc.where(c, gc.placeholder("a", (4,)), 0.0)
    assert "(2, 3)" in str(info.value) and "(4,)" in str(info.value)
    with pytest.raises(gc.ShapeError, match="clip") as info:
        gc.clip(gc.placeholder("x", (3,)), gc.placeholder("lo", (2,)), 1.0)
    assert "(3,)" in str(info.value) and "(2,)" in str(info.value)


def test_op_names():
    x = gc.placeholder("x", (2,))
    for name in ["exp", "log", "sigmoid", "softplus", "relu", "gelu", "silu", "hard_tanh", "step", "abs"]:
        assert getattr(gc, name)(x).op == name
    assert (x + 1).op == "add" and (x * x).op == "mul" and (x ** 2).op == "pow" and (-x).op == "neg"
    assert gc.swish(x).op == "silu"


# ---- every element-wise op over every input dtype: the static dtype is the real one ------------

ALL_DTYPES = ["bool", "int8", "uint8", "int32", "int64", "float32", "float64"]
UNARY_FUNCTIONS = ["neg", "exp", "log", "log1p", "expm1", "sqrt", "square", "abs", "sign", "sin", "cos", "tanh",
                   "sigmoid", "softplus", "relu", "leaky_relu", "elu", "gelu", "silu", "hard_tanh", "step",
                   "stop_gradient", "zeros_like", "ones_like", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh",
                   "arcsinh", "arccosh", "arctanh", "exp2", "log2", "log10", "reciprocal", "rsqrt", "floor", "ceil",
                   "trunc", "round", "isnan", "isinf", "isfinite", "logical_not"]
BINARY_FUNCTIONS = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "prelu", "equal", "not_equal",
                    "greater", "greater_equal", "less", "less_equal", "arctan2", "mod", "floor_divide", "logaddexp",
                    "logical_and", "logical_or", "logical_xor"]


def _small_values(dtype):
    return np.array([1, 0, 2]).astype(dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_static_dtype_is_real_dtype_unary(dtype):
    for name in UNARY_FUNCTIONS:
        x = gc.placeholder("x", (3,), dtype)
        try:
            y = getattr(gc, name)(x)
        except gc.DTypeError:
            continue  # refused at build time (e.g. neg of bool), as NumPy refuses it
        value = run(y, {x: _small_values(dtype)})
        assert value.dtype == y.dtype, (name, dtype, y.dtype, value.dtype)
        assert value.shape == y.shape


@pytest.mark.parametrize("dtype_a", ALL_DTYPES)
def test_static_dtype_is_real_dtype_binary(dtype_a):
    for name in BINARY_FUNCTIONS:
        for dtype_b in ALL_DTYPES:
            a, b = gc.placeholder("a", (3,), dtype_a), gc.placeholder("b", (1,), dtype_b)
            try:
                y = getattr(gc, name)(a, b)
            except gc.DTypeError:
                continue
            value = run(y, {a: _small_values(dtype_a), b: _small_values(dtype_b)[1:2]})
            assert value.dtype == y.dtype, (name, dtype_a, dtype_b, y.dtype, value.dtype)
            assert value.shape == y.shape


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.grad][::3], ids=repr)
def test_check_grad(case, dtype):
    """gc.check_grad agrees (a third of the table; float32 with its looser default tolerances)."""
    assert check_with_check_grad(case, dtype) < max_grad_error(dtype)  # the largest relative error


@pytest.mark.parametrize("name,fn,ref", [b[:3] for b in BINARY if not b[0].endswith("operator")],
                         ids=[b[0] for b in BINARY if not b[0].endswith("operator")])
def test_mixed_float_dtypes_gradient(name, fn, ref):
    """float32 op float64 is float64; each gradient comes back in its own input's dtype."""
    case = [c for c in BINARY_CASES if c.id == f"{name}[3, 1]x[1, 4]"][0]
    a_val, b_val = draw(case, np.float64)
    a_val = a_val.astype(np.float32)
    a, b = gc.placeholder("a", (3, 1), "float32"), gc.placeholder("b", (1, 4), "float64")
    out = fn(a, b)
    assert out.dtype == np.float64 == ref(a_val, b_val).dtype
    ga, gb = gc.grad(gc.sum(out), [a, b])
    ga_val, gb_val = run([ga, gb], {a: a_val, b: b_val})
    assert ga.dtype == ga_val.dtype == np.float32 and gb.dtype == gb_val.dtype == np.float64

    def total(x, y):
        return float(np.sum(ref(x, y)))

    np.testing.assert_allclose(ga_val, numeric_gradient(total, [a_val.astype(np.float64), b_val], 0), rtol=1e-5)
    np.testing.assert_allclose(gb_val, numeric_gradient(total, [a_val.astype(np.float64), b_val], 1), rtol=1e-5)


@pytest.mark.parametrize("case", SMOOTH_CASES[::4], ids=repr)
def test_third_order(case):
    """Gradients of gradients of gradients (every fourth case of the table)."""
    check_third_order(case)


@pytest.mark.parametrize("case", [c for c in SMOOTH_CASES if c in BINARY_CASES + TERNARY_CASES][::3], ids=repr)
def test_second_order_unknown_sizes(case):
    """Second order where every size is unknown at build time (run-time shape references)."""
    check_second_order(case, np.float64, unknown=True)


# ---- random broadcasting shapes, sizes known or not --------------------------------------------

@st.composite
def _broadcastable_pair(draw):
    rank = draw(st.integers(0, 3))
    full = [draw(st.integers(1, 3)) for _ in range(rank)]
    shapes = []
    for _ in range(2):
        keep = draw(st.integers(0, rank))
        shape = [size if draw(st.booleans()) else 1 for size in full[rank - keep:]]
        unknown = [draw(st.booleans()) for _ in shape]
        shapes.append((tuple(shape), tuple(None if u else s for u, s in zip(unknown, shape))))
    return shapes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=_broadcastable_pair(), op=st.sampled_from([b for b in BINARY if not b[0].endswith("operator")]))
def test_random_broadcasting(pair, op):
    """Value, static shape and gradient for random broadcastable shapes with random unknown sizes."""
    name, fn, ref, gen_a, gen_b = op
    (shape_a, static_a), (shape_b, static_b) = pair
    rng = np.random.default_rng(0)
    a_val, b_val = gen_a(rng, shape_a), gen_b(rng, shape_b)
    a, b = gc.placeholder("a", static_a), gc.placeholder("b", static_b)
    out = fn(a, b)
    ga, gb = gc.grad(gc.sum(out), [a, b])
    value, ga_val, gb_val = run([out, ga, gb], {a: a_val, b: b_val})
    np.testing.assert_allclose(value, ref(a_val, b_val), rtol=1e-12)
    assert_static_matches(out, value)

    def total(x, y):
        return float(np.sum(ref(x, y)))

    np.testing.assert_allclose(ga_val, numeric_gradient(total, [a_val, b_val], 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gb_val, numeric_gradient(total, [a_val, b_val], 1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("unknown", [False, True], ids=["known", "unknown"])
@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.grad][::2], ids=repr)
def test_jvp(case, unknown):
    """Forward mode through the op (half of the table, sizes known and unknown)."""
    check_jvp(case, unknown)


# ---- API contract section 15: conventions and hard inputs ----------------------------------------

def test_logaddexp_at_ties_and_infinities():
    a_val = np.array([1000.0, -np.inf, np.inf, 1000.0, -1e308, 3.0, 0.0])
    b_val = np.array([1000.0, -np.inf, np.inf, -1000.0, 0.0, 3.0, -745.0])
    a, b = gc.placeholder("a", (7,)), gc.placeholder("b", (7,))
    y = gc.logaddexp(a, b)
    value, ga, gb = run([y, *gc.grad(gc.sum(y), [a, b])], {a: a_val, b: b_val})
    np.testing.assert_array_equal(value, np.logaddexp(a_val, b_val))
    np.testing.assert_array_equal(ga[[0, 1, 2, 5]], 0.5)  # ties, infinite ones too: half each, not NaN
    np.testing.assert_array_equal(ga + gb, np.ones(7))
    assert ga[3] == 1.0 and gb[3] == 0.0 and gb[4] == 1.0
    assert 0 < gb[6] < 1e-300  # exp(-745): the tiny share stays accurate (not 1 - 1 = 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_inverse_trig_gradients_near_the_ends_of_the_domain(dtype):
    """(1 - x)(1 + x) instead of 1 - x*x: the gradient keeps its digits next to +-1."""
    eps = np.finfo(dtype).eps
    values = np.array([1 - 4 * eps, -1 + 4 * eps, 0.5], dtype)
    x = gc.placeholder("x", (3,), dtype)
    exact = 1 / np.sqrt((1 - values.astype(np.longdouble)) * (1 + values.astype(np.longdouble)))
    for fn, sign in ((gc.arcsin, 1), (gc.arccos, -1)):
        got = run(gc.grad(gc.sum(fn(x)), x), {x: values})
        np.testing.assert_allclose(got, sign * exact.astype(np.float64), rtol=4 * eps)
    got = run(gc.grad(gc.sum(gc.arctanh(x)), x), {x: values})
    np.testing.assert_allclose(got, (exact ** 2).astype(np.float64), rtol=4 * eps)


def test_rounding_and_remainder_follow_numpy():
    x = gc.placeholder("x", (8,))
    y = gc.placeholder("y", (8,))
    xv = np.array([2.5, -2.5, 0.5, -0.5, 1.5, -3.5, 3.5, -0.0])
    yv = np.array([1.25, -1.25, 0.3, 0.3, -2.0, 1.25, -1.25, 1.0])
    outs = [gc.round(x), gc.floor(x), gc.ceil(x), gc.trunc(x), gc.mod(x, y), gc.floor_divide(x, y)]
    refs = [np.round(xv), np.floor(xv), np.ceil(xv), np.trunc(xv), np.remainder(xv, yv), np.floor_divide(xv, yv)]
    for got, want in zip(run(outs, {x: xv, y: yv}), refs):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # -0.0 where NumPy gives it
    gx, gy = run(gc.grad(gc.sum(gc.mod(x, y)), [x, y]), {x: xv, y: yv})
    np.testing.assert_array_equal(gx, np.ones(8))
    np.testing.assert_array_equal(gy, -np.floor_divide(xv, yv))
    zero = run(gc.grad(gc.sum(gc.round(x) + gc.floor_divide(x, y)), x), {x: xv, y: yv})
    np.testing.assert_array_equal(zero, np.zeros(8))
    ints = gc.placeholder("i", (3,), "int64")
    assert gc.round(ints).dtype == gc.floor(ints).dtype == np.int64 and gc.tan(ints).dtype == np.float64


@pytest.mark.parametrize(("value", "lo", "hi"), [
    (np.array([1, 2], np.uint8), 300.0, None), (np.array([1, 2], np.uint8), None, -0.5),
    (-5, 1e308, None), (np.array([3, -7], np.int64), None, 2.5), (np.array([1, 2], np.uint8), np.float32(300), None),
    (np.array([1, 200], np.uint8), 7, None), (np.array([1.5, -3.0], np.float32), None, 0.25)])
def test_clip_with_one_bound_follows_numpy(value, lo, hi):
    # issue 15.5b: an integer tensor with a float bound and None was clipped at the integer dtype's
    # limit (clip(uint8 [1, 2], 300.0, None) gave [255, 255]; NumPy gives [300., 300.])
    expected = np.clip(np.asarray(value), lo, hi) if not isinstance(value, int) else np.clip(value, lo, hi)
    got = gc.Session().run(gc.clip(value, lo, hi))
    assert got.dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got, expected)
