"""Reductions: sum mean max min prod logsumexp over axis/keepdims, table-driven."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import graphc as gc

from .util import (
    Case,
    Spec,
    assert_static_matches,
    away_from,
    booleans,
    check_gradient,
    check_jvp,
    check_second_order,
    check_third_order,
    check_unknown_sizes,
    check_value,
    check_with_check_grad,
    fixed,
    max_grad_error,
    numeric_gradient,
    run,
    table_tests,
    uniform,
)

FLOATS = [np.float64, np.float32]


def np_logsumexp(x, axis=None, keepdims=False):
    x = np.asarray(x)
    peak = np.max(x, axis=axis, keepdims=True)
    result = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    if not keepdims:
        result = np.squeeze(result, axis=axis) if axis is not None else result.reshape(())
    return result


def _prod_points(rng, shape):
    # away from 0 (prod's second derivative divides by x), both signs
    magnitude = rng.uniform(0.5, 1.5, size=shape)
    return magnitude * np.where(rng.random(size=shape) < 0.3, -1.0, 1.0)


REDUCTIONS = [
    ("sum", gc.sum, np.sum, uniform()),
    ("mean", gc.mean, np.mean, uniform()),
    ("max", gc.max, np.max, uniform()),
    ("min", gc.min, np.min, uniform()),
    ("prod", gc.prod, np.prod, _prod_points),
    ("logsumexp", gc.logsumexp, np_logsumexp, uniform(-3, 3)),
]

AXES = [None, 0, -1, 1, (0, 2), (2, 0), (), (0, 1, 2)]


def _case(name, fn, ref, gen, shape, axis, keepdims):
    return Case(f"{name}{list(shape)}-axis={axis}-keepdims={keepdims}",
                lambda x: fn(x, axis=axis, keepdims=keepdims),
                lambda x: ref(x, axis=axis, keepdims=keepdims), [Spec(shape, gen)])


KEEPDIMS_AXES = [None, 1, (0, 2), ()]

CASES = [_case(name, fn, ref, gen, (2, 3, 4), axis, keepdims)
         for name, fn, ref, gen in REDUCTIONS for axis in AXES for keepdims in (False, True)
         if not keepdims or axis in KEEPDIMS_AXES]
CASES += [_case(name, fn, ref, gen, (), None, False) for name, fn, ref, gen in REDUCTIONS]
CASES += [_case(name, fn, ref, gen, (5,), 0, False) for name, fn, ref, gen in REDUCTIONS]

# method forms on Tensor
METHODS = [
    Case("x.sum(axis=1)", lambda x: x.sum(axis=1), lambda x: x.sum(axis=1), [Spec((2, 3))]),
    Case("x.mean(keepdims)", lambda x: x.mean(axis=0, keepdims=True), lambda x: x.mean(axis=0, keepdims=True),
         [Spec((2, 3))]),
    Case("x.max()", lambda x: x.max(), lambda x: x.max(), [Spec((2, 3))]),
    Case("x.min(axis=(0,1))", lambda x: x.min(axis=(0, 1)), lambda x: x.min(axis=(0, 1)), [Spec((2, 3))]),
    Case("x.prod(axis=-1)", lambda x: x.prod(axis=-1), lambda x: x.prod(axis=-1), [Spec((2, 3), _prod_points)]),
    # reductions composed with broadcasting
    Case("sum(a*b,axis=0)", lambda a, b: gc.sum(a * b, axis=0), lambda a, b: np.sum(a * b, axis=0),
         [Spec((3, 1)), Spec((1, 4))]),
    Case("mean(a-b)", lambda a, b: gc.mean(a - b), lambda a, b: np.mean(a - b), [Spec((3, 1)), Spec((4,))]),
    # shapes the executor lowers specially (a dot product, an L2 penalty, a squared error)
    Case("sum(square(x))", lambda x: gc.sum(gc.square(x)), lambda x: np.sum(np.square(x)), [Spec((3, 4))]),
    Case("0.5*sum(x*x)*0.01", lambda x: 0.5 * gc.sum(x * x) * 0.01, lambda x: 0.5 * np.sum(x * x) * 0.01,
         [Spec((3, 4))]),
    Case("mean(square(a-b),axis=1)", lambda a, b: gc.mean(gc.square(a - b), axis=1),
         lambda a, b: np.mean(np.square(a - b), axis=1), [Spec((3, 4)), Spec((3, 4))]),
]

ALL = CASES + METHODS


# (mean's count and the broadcast back are decided at run time with unknown sizes)
globals().update(table_tests(
    ALL, gradient_unknown=lambda c: "keepdims=True" not in c.id,
    second=lambda c: "keepdims=False" not in c.id or "axis=(0, 2)" in c.id,
    float32_second=lambda c: c in CASES and "axis=-1-keepdims=False" in c.id))


# ---- integer and bool inputs --------------------------------------------------------------------

INT_REDUCTIONS = [("sum", gc.sum, np.sum), ("mean", gc.mean, np.mean), ("max", gc.max, np.max),
                  ("min", gc.min, np.min), ("prod", gc.prod, np.prod), ("logsumexp", gc.logsumexp, np_logsumexp)]


@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
@pytest.mark.parametrize("name,fn,ref", INT_REDUCTIONS, ids=[r[0] for r in INT_REDUCTIONS])
def test_integer_inputs(name, fn, ref, dtype, axis):
    values = np.array([[1, 0, 3], [2, 2, 1]]).astype(dtype)
    x = gc.placeholder("x", (2, None), dtype)
    out = fn(x, axis=axis)
    got = run(out, {x: values})
    expected = np.asarray(ref(values.astype(np.float64) if name == "logsumexp" else values, axis=axis))
    assert_static_matches(out, got)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected)


# ---- conventions --------------------------------------------------------------------------------

TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, -1.0], [-5.0, 4.0, 0.0, 4.0]])


def _tie_shares(values, pick, axis):
    """Evenly split gradient: 1/count on every entry equal to the extremum, computed with NumPy."""
    extreme = pick(values, axis=axis, keepdims=True)
    winners = (values == extreme).astype(np.float64)
    return winners / np.sum(winners, axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
@pytest.mark.parametrize("name,fn,pick", [("max", gc.max, np.max), ("min", gc.min, np.min)], ids=["max", "min"])
def test_extremum_ties_split_evenly(name, fn, pick, axis, dtype):
    values = (TIES if name == "max" else -TIES).astype(dtype)
    x = gc.placeholder("x", values.shape, dtype)
    out = fn(x, axis=axis)
    g = run(gc.grad(gc.sum(out), x), {x: values})
    expected = _tie_shares(values, pick, axis)
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    # the total gradient is preserved: one unit per reduced result
    n_results = np.asarray(pick(values, axis=axis)).size
    np.testing.assert_allclose(g.sum(), n_results, rtol=1e-6)


def test_max_all_equal_splits_over_all():
    x = gc.placeholder("x", (2, 2))
    g = run(gc.grad(gc.max(x), x), {x: np.full((2, 2), 7.0)})
    np.testing.assert_array_equal(g, np.full((2, 2), 0.25))


@pytest.mark.parametrize("values", [[0.0, 2.0, 3.0], [0.0, 0.0, 3.0], [2.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
def test_prod_gradient_with_zeros(values):
    """The gradient of prod is the product of the other entries, also where x has zeros."""
    values = np.array(values)
    x = gc.placeholder("x", (3,))
    g = run(gc.grad(gc.prod(x), x), {x: values})
    expected = np.array([np.prod(np.delete(values, i)) for i in range(3)])
    np.testing.assert_array_equal(g, expected)


def test_prod_gradient_with_zeros_along_axis():
    values = np.array([[0.0, 2.0, 3.0], [1.0, 4.0, 0.5]])
    x = gc.placeholder("x", (2, 3))
    g = run(gc.grad(gc.sum(gc.prod(x, axis=1) * np.array([1.0, 2.0])), x), {x: values})
    expected = np.array([[np.prod(np.delete(row, i)) * w for i in range(3)] for row, w in zip(values, [1.0, 2.0])])
    np.testing.assert_allclose(g, expected)


@pytest.mark.parametrize("name,fn,ref", [("sum", gc.sum, np.sum), ("max", gc.max, np.max),
                                         ("prod", gc.prod, np.prod), ("mean", gc.mean, np.mean)],
                         ids=["sum", "max", "prod", "mean"])
def test_empty_inputs(name, fn, ref):
    """Reducing the non-empty axis of an empty array gives an empty result, and an empty gradient."""
    x = gc.placeholder("x", (0, 3))
    y = fn(x, axis=1)
    values = np.ones((0, 3))
    got, g = run([y, gc.grad(gc.sum(y), x)], {x: values})
    np.testing.assert_array_equal(got, ref(values, axis=1))
    assert got.shape == y.shape == (0,) and g.shape == (0, 3)



@pytest.mark.parametrize("shape,axis", [((2, 0), 1), ((2, 0), None), ((0,), None), ((3, 0, 2), (1, 2))])
def test_prod_over_an_empty_axis(shape, axis):
    """prod of nothing is 1; its gradient is empty (the exclusive products have no entries)."""
    x = gc.placeholder("x", shape)
    y = gc.prod(x, axis=axis)
    values = np.ones(shape)
    for optimize in (False, True):
        got, g = gc.Session(optimize=optimize).run([y, gc.grad(gc.sum(y), x)], {x: values})
        np.testing.assert_array_equal(got, np.prod(values, axis=axis))
        assert g.shape == shape


# ---- logsumexp at extreme inputs ----------------------------------------------------------------

LSE_EXTREMES = [
    ([1000.0, 1000.0], 1000.0 + np.log(2.0), [0.5, 0.5]),
    ([-1000.0, -1000.0], -1000.0 + np.log(2.0), [0.5, 0.5]),
    ([1000.0, -1000.0, 0.0], 1000.0, [1.0, 0.0, 0.0]),
    ([-1000.0, 0.0], 0.0, [0.0, 1.0]),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("values,value,slope", LSE_EXTREMES)
def test_logsumexp_stable(values, value, slope, dtype):
    values = np.array(values, dtype)
    x = gc.placeholder("x", values.shape, dtype)
    y = gc.logsumexp(x)
    got, g = run([y, gc.grad(y, x)], {x: values})
    assert got.dtype == g.dtype == np.dtype(dtype)
    assert np.isfinite(got) and np.all(np.isfinite(g))
    np.testing.assert_allclose(got, value, rtol=1e-7)
    np.testing.assert_allclose(g, slope, rtol=1e-6, atol=1e-30)


def test_logsumexp_rows_stable_keepdims():
    values = np.array([[1000.0, 999.0], [-1000.0, -1001.0]])
    x = gc.placeholder("x", (2, None))
    y = gc.logsumexp(x, axis=1, keepdims=True)
    got = run(y, {x: values})
    assert got.shape == (2, 1) and y.shape == (2, 1)
    np.testing.assert_allclose(got[:, 0], values[:, 0] + np.log1p(np.exp(-1.0)), rtol=1e-12)


# ---- construction errors ------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [gc.sum, gc.mean, gc.max, gc.min, gc.prod, gc.logsumexp], ids=lambda f: f.__name__)
def test_axis_errors(fn):
    x = gc.placeholder("x", (2, 3))
    with pytest.raises(gc.ShapeError, match=fn.__name__):
        fn(x, axis=2)
    with pytest.raises(gc.ShapeError, match=fn.__name__):
        fn(x, axis=(0, 0))
    with pytest.raises(gc.ShapeError):
        fn(x, axis=(1, -1))


def test_op_names():
    x = gc.placeholder("x", (2,))
    for name in ["sum", "mean", "max", "min", "prod", "logsumexp"]:
        assert getattr(gc, name)(x).op == name


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ALL[::3], ids=repr)
def test_check_grad(case, dtype):
    """gc.check_grad agrees (a third of the table; float32 with its looser default tolerances)."""
    assert check_with_check_grad(case, dtype) < max_grad_error(dtype)  # the largest relative error


@pytest.mark.parametrize("case", ALL[::4], ids=repr)
def test_third_order(case):
    """Gradients of gradients of gradients (every fourth case of the table)."""
    check_third_order(case)


@pytest.mark.parametrize("case", ALL[::3], ids=repr)
def test_second_order_unknown_sizes(case):
    """Second order where every size is unknown at build time (run-time shape references)."""
    check_second_order(case, np.float64, unknown=True)


@pytest.mark.parametrize("unknown", [False, True], ids=["known", "unknown"])
@pytest.mark.parametrize("case", ALL[::2], ids=repr)
def test_jvp(case, unknown):
    """Forward mode through the op (half of the table, sizes known and unknown)."""
    check_jvp(case, unknown)


@st.composite
def _reduction_spec(draw):
    shape = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 3))))
    if draw(st.booleans()) or not shape:
        axis = None
    else:
        axes = draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                             unique_by=lambda a: a % len(shape)))
        axis = axes[0] if len(axes) == 1 and draw(st.booleans()) else tuple(axes)
    unknown = tuple(None if draw(st.booleans()) else s for s in shape)
    return shape, unknown, axis, draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_reduction_spec(), reduction=st.sampled_from(REDUCTIONS))
def test_random_reductions(spec, reduction):
    """Random shapes, axes (negative, unordered) and keepdims, sizes known or not."""
    shape, unknown, axis, keepdims = spec
    name, fn, ref, gen = reduction
    values = gen(np.random.default_rng(6), shape)
    expected = np.asarray(ref(values, axis=axis, keepdims=keepdims))
    w = np.random.default_rng(7).uniform(0.5, 1.5, expected.shape)
    for declared in (shape, unknown):
        x = gc.placeholder("x", declared)
        out = fn(x, axis=axis, keepdims=keepdims)
        g = gc.grad(gc.sum(out * w), x)
        got, g_val = run([out, g], {x: values})
        assert_static_matches(out, got)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        numeric = numeric_gradient(lambda v: float(np.sum(ref(v, axis=axis, keepdims=keepdims) * w)), [values], 0)
        np.testing.assert_allclose(g_val, numeric, rtol=1e-6, atol=1e-8)


def _exact_prod_hessian(row: np.ndarray) -> np.ndarray:
    n = len(row)
    return np.array([[0.0 if i == j else np.prod([row[k] for k in range(n) if k not in (i, j)])
                      for j in range(n)] for i in range(n)])


@pytest.mark.parametrize("rows", [[[0.0], [0.0]], [[0.0, 2.0, 3.0], [0.0, 0.0, 5.0]],
                                  [[0.0, 0.0, 0.0], [1.5, -2.0, 0.5]], [[0.0, 0.0, 0.0, 7.0], [0.0, 1.0, 1.0, 1.0]]])
def test_second_derivative_of_prod_is_finite_and_exact_at_zeros(rows):
    # issue 15.5d: d2 prod / dx2 at a zero entry was NaN (the rule divided by x)
    data = np.array(rows)
    x = gc.placeholder("x", data.shape)
    v = gc.placeholder("v", data.shape)
    total = gc.prod(x)  # over everything
    hvp = gc.grad(gc.sum(gc.grad(total, x) * v), x)
    per_row = gc.prod(x, axis=1)
    hessian = gc.hessian(gc.sum(per_row * np.arange(1.0, data.shape[0] + 1)), x)
    direction = np.arange(1.0, data.size + 1).reshape(data.shape)
    got_hvp, got_hessian = gc.Session().run([hvp, hessian], {x: data, v: direction})
    flat = data.reshape(-1)
    np.testing.assert_allclose(got_hvp.reshape(-1), _exact_prod_hessian(flat) @ direction.reshape(-1), atol=1e-12)
    for r, row in enumerate(data):
        block = got_hessian[r, :, r, :]
        np.testing.assert_allclose(block, (r + 1) * _exact_prod_hessian(row), atol=1e-12)
    assert np.all(np.isfinite(got_hessian))


def test_third_derivative_of_prod_away_from_zeros():
    x = gc.placeholder("x", (2, 3))
    v = gc.placeholder("v", (2, 3))
    hvp = gc.grad(gc.sum(gc.grad(gc.sum(gc.prod(x, axis=0) ** 2), x) * v), x)
    point = {x: np.array([[0.5, -1.5, 2.0], [1.25, 0.75, -0.5]]), v: np.array([[1.0, -2.0, 0.5], [0.3, 0.2, 1.0]])}
    assert gc.check_grad(gc.sum(hvp * hvp), [x, v], point) < 1e-5


# ---- section 15: var std norm any all argmax argmin cumsum cumprod ------------------------------

def _more(name, build, ref, shape=(2, 3, 4), gen=None, kind="f", **options):
    return Case(name, build, ref, [Spec(shape, gen or uniform(), kind=kind)], **options)


def np_norm(x, ord=2, axis=None, keepdims=False):  # noqa: A002
    return np.linalg.vector_norm(x, ord=ord, axis=axis, keepdims=keepdims)


def _stat_cases():
    cases = []
    for name, fn, ref in (("var", gc.var, np.var), ("std", gc.std, np.std)):
        for axis, ddof, keepdims in ((None, 0, False), (1, 0, False), (-1, 1, True), ((0, 2), 1, False),
                                     ((2, 0), 0, True)):
            cases.append(_more(f"{name}-axis={axis}-ddof={ddof}-keepdims={keepdims}",
                               lambda x, f=fn, a=axis, d=ddof, k=keepdims: f(x, axis=a, ddof=d, keepdims=k),
                               lambda x, r=ref, a=axis, d=ddof, k=keepdims: r(x, axis=a, ddof=d, keepdims=k)))
        cases.append(_more(f"{name}-1d", fn, ref, shape=(5,)))
    for ord_ in (1, 2, np.inf):
        gen = away_from(0.0) if ord_ != 2 else uniform()
        for axis, keepdims in ((None, False), (1, False), (-1, True), ((0, 2), False)):
            cases.append(_more(f"norm-ord={ord_}-axis={axis}-keepdims={keepdims}",
                               lambda x, o=ord_, a=axis, k=keepdims: gc.norm(x, o, a, k),
                               lambda x, o=ord_, a=axis, k=keepdims: np_norm(x, o, a, k), gen=gen))
    cases.append(_more("norm-matrix-is-a-vector", gc.norm, lambda x: np_norm(x), shape=(3, 4)))
    for name, fn, ref in (("cumsum", gc.cumsum, np.cumsum), ("cumprod", gc.cumprod, np.cumprod)):
        gen = _prod_points if name == "cumprod" else uniform()
        for axis in (None, 0, 1, -1):
            cases.append(_more(f"{name}-axis={axis}", lambda x, f=fn, a=axis: f(x, axis=a),
                               lambda x, r=ref, a=axis: r(x, axis=a), gen=gen))
        cases.append(_more(f"{name}-1d-long", lambda x, f=fn: f(x, 0), lambda x, r=ref: r(x, 0), shape=(13,),
                           gen=gen))
    # cumprod is a polynomial: exact gradients at zeros, checked against finite differences there
    zeros = np.array([[0.0, 1.5, -2.0, 0.5, 0.0], [1.2, 0.0, 0.0, -0.7, 2.0], [0.9, -1.1, 1.3, 0.0, 0.4]])
    cases.append(_more("cumprod-zeros-axis=1", lambda x: gc.cumprod(x, 1), lambda x: np.cumprod(x, 1),
                       shape=zeros.shape, gen=fixed(zeros)))
    cases.append(_more("cumprod-zeros-axis=0", lambda x: gc.cumprod(x, 0), lambda x: np.cumprod(x, 0),
                       shape=zeros.shape, gen=fixed(zeros)))
    return cases


MORE_DIFF = _stat_cases()

MORE_NONDIFF = [
    _more(f"{name}-axis={axis}-keepdims={keepdims}", lambda x, f=fn, a=axis, k=keepdims: f(x, axis=a, keepdims=k),
          lambda x, r=ref, a=axis, k=keepdims: r(x, axis=a, keepdims=k))
    for name, fn, ref in (("argmax", gc.argmax, np.argmax), ("argmin", gc.argmin, np.argmin))
    for axis, keepdims in ((None, False), (None, True), (1, False), (-1, True), (0, False))
] + [
    _more(f"{name}-{kind}-axis={axis}", lambda x, f=fn, a=axis: f(x, axis=a, keepdims=a == 1),
          lambda x, r=ref, a=axis: r(x, axis=a, keepdims=a == 1), gen=gen, kind=kind)
    for name, fn, ref in (("any", gc.any, np.any), ("all", gc.all, np.all))
    for kind, gen in (("bool", booleans()), ("f", fixed(np.arange(24.0).reshape(2, 3, 4) % 5)))
    for axis in (None, 1, (0, 2), -1)
] + [
    _more("argmax-ties-first", lambda x: gc.argmax(x, 1), lambda x: np.argmax(x, 1), shape=TIES.shape,
          gen=fixed(TIES)),
    _more("argmin-ties-first", lambda x: gc.argmin(x, 0), lambda x: np.argmin(x, 0), shape=TIES.shape,
          gen=fixed(-TIES)),
    _more("argmax-int", lambda x: gc.argmax(x, -1), lambda x: np.argmax(x, -1), shape=(2, 3),
          gen=fixed([[1, 7, 7], [3, 0, 3]]), kind="int32"),
    _more("cumsum-bool", lambda x: gc.cumsum(x, 1), lambda x: np.cumsum(x, 1), shape=(2, 3), gen=booleans(),
          kind="bool"),
    _more("cumprod-int32", gc.cumprod, np.cumprod, shape=(2, 3), gen=fixed([[1, 2, 3], [4, -5, 6]]), kind="int32"),
    _more("var-int", lambda x: gc.var(x, 1), lambda x: np.var(x, 1), shape=(2, 3),
          gen=fixed([[1, 2, 4], [4, -5, 6]]), kind="int64"),
    _more("norm-int-inf", lambda x: gc.norm(x, np.inf, 1), lambda x: np_norm(x, np.inf, 1), shape=(2, 3),
          gen=fixed([[1, -9, 4], [4, -5, 6]]), kind="int8"),
]

MORE_ALL = MORE_DIFF + MORE_NONDIFF


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", MORE_ALL, ids=repr)
def test_more_value(case, dtype):
    check_value(case, dtype)


@pytest.mark.parametrize("case", MORE_ALL, ids=repr)
def test_more_unknown_sizes(case):
    check_unknown_sizes(case)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", MORE_DIFF, ids=repr)
def test_more_gradient(case, dtype):
    check_gradient(case, dtype)


@pytest.mark.parametrize("case", MORE_DIFF, ids=repr)
def test_more_gradient_unknown_sizes(case):
    check_gradient(case, np.float64, unknown=True)


@pytest.mark.parametrize("case", [c for c in MORE_DIFF if c.second], ids=repr)
def test_more_second_order(case):
    check_second_order(case, np.float64)


@pytest.mark.parametrize("case", [c for c in MORE_DIFF if c.second][::2], ids=repr)
def test_more_second_order_unknown_sizes_and_third_order(case):
    check_second_order(case, np.float64, unknown=True)
    check_third_order(case)


@pytest.mark.parametrize("case", MORE_DIFF[::2], ids=repr)
def test_more_jvp_and_check_grad(case):
    check_jvp(case, unknown=True)
    assert check_with_check_grad(case, np.float64) < 1e-5


def test_std_and_var_at_a_constant_input():
    """std's gradient at zero spread is 0 (its minimum-norm subgradient), never NaN, to any order;
    var's is 0 there too (its true value)."""
    x = gc.placeholder("x", (2, None))
    values = np.full((2, 3), 0.1)  # 0.1 * 3 / 3 != 0.1 in floating point: a spread of 1e-17, or 0
    values[1] = 5.0
    for fn in (gc.std, gc.var):
        y = gc.sum(fn(x, axis=1) * np.array([1.0, 2.0]))
        g = gc.grad(y, x)
        h = gc.grad(gc.sum(g * g) + gc.sum(g), x)
        got_y, got_g, got_h = run([y, g, h], {x: values})
        assert got_y < 1e-15
        assert np.all(np.isfinite(got_g)) and np.all(np.abs(got_g) <= 1.0), (fn, got_g)
        assert np.all(np.isfinite(got_h)), (fn, got_h)
        np.testing.assert_array_equal(got_g[1], 0.0)
    z = gc.placeholder("z", (4,))
    np.testing.assert_array_equal(run(gc.grad(gc.std(z, ddof=1), z), {z: np.full(4, -3.0)}), np.zeros(4))


@pytest.mark.parametrize("ord_", [1, 2, np.inf])
def test_norm_at_zero(ord_):
    """norm's gradient at 0 is exactly 0 (no NaN), also second order; the value is 0."""
    x = gc.placeholder("x", (2, 3))
    y = gc.sum(gc.norm(x, ord_, axis=1) * np.array([1.0, 3.0]))
    g = gc.grad(y, x)
    h = gc.grad(gc.sum(g * np.arange(6.0).reshape(2, 3)), x)
    values = np.array([[0.0, 0.0, 0.0], [0.0, -0.0, 0.0]])
    got_y, got_g, got_h = run([y, g, h], {x: values})
    assert got_y == 0.0
    np.testing.assert_array_equal(got_g, np.zeros((2, 3)))
    np.testing.assert_array_equal(got_h, np.zeros((2, 3)))


def test_norm_extremes_and_ties():
    x = gc.placeholder("x", (None,))
    y = gc.norm(x)
    big = np.array([3e200, -4e200])
    got, g = run([y, gc.grad(y, x)], {x: big})
    np.testing.assert_allclose(got, 5e200, rtol=1e-15)  # np.linalg.vector_norm overflows to inf here
    np.testing.assert_allclose(g, [0.6, -0.8], rtol=1e-15)
    tiny = np.array([3e-200, 4e-200])
    np.testing.assert_allclose(run(y, {x: tiny}), 5e-200, rtol=1e-15)  # and underflows to 0 here
    f = gc.placeholder("f", (2, 2), "float32")
    rows = np.array([[3e30, -4e30], [3e-30, 4e-30]], np.float32)
    got = run(gc.norm(f, axis=1), {f: rows})
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [5e30, 5e-30], rtol=1e-6)
    np.testing.assert_array_equal(run(gc.norm(x), {x: np.array([np.inf, 1.0])}), np.inf)
    for order in (1, 2, np.inf):  # NaN is kept in the value and in the gradient (the zero guard does not hide it)
        value, grad = run([gc.norm(x, order), gc.grad(gc.norm(x, order), x)], {x: np.array([np.nan, 1.0])})
        assert np.isnan(value) and np.isnan(grad[0])
    assert np.all(np.isnan(run(gc.grad(gc.std(x), x), {x: np.array([np.nan, 1.0])})))
    ties = np.array([-2.0, 1.0, 2.0, 2.0])
    np.testing.assert_array_equal(run(gc.grad(gc.norm(x, np.inf), x), {x: ties}), [-1 / 3, 0.0, 1 / 3, 1 / 3])
    np.testing.assert_array_equal(run(gc.grad(gc.norm(x, 1), x), {x: np.array([-2.0, 0.0, 3.0])}), [-1, 0, 1])
    empty = run([gc.norm(x), gc.norm(x, 1), gc.norm(x, np.inf)], {x: np.zeros(0)})
    assert [float(v) for v in empty] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("values", [[0.0, 2.0, 3.0, 4.0], [2.0, 0.0, 0.0, 3.0], [1.0, 2.0, 3.0, 0.0],
                                    [0.0, 0.0, 0.0, 0.0], [-0.0, 1e10, 0.0, 5.0]])
def test_cumprod_gradient_with_zeros_is_exact(values):
    """The gradient never divides by x: exact at zeros (out / x would give 0/0 there)."""
    values = np.array(values)
    x = gc.placeholder("x", (4,))
    w = np.array([1.0, -2.0, 0.5, 3.0])
    g = run(gc.grad(gc.sum(gc.cumprod(x) * w), x), {x: values})
    expected = [sum(w[i] * np.prod(np.delete(values[:i + 1], k)) for i in range(k, 4)) for k in range(4)]
    np.testing.assert_allclose(g, expected, rtol=1e-14)


def test_cumprod_second_order_at_zeros():
    """The Hessian of a cumprod is exact at zeros too (a polynomial: compare with the analytic one)."""
    values = np.array([0.0, 2.0, 0.0, 3.0])
    x = gc.placeholder("x", (4,))
    hess = run(gc.hessian(gc.sum(gc.cumprod(x)), x), {x: values})
    expected = np.zeros((4, 4))
    for j in range(4):
        for k in range(4):
            if j != k:  # d2/dxj dxk of sum_i prod_{m<=i} x_m
                expected[j, k] = sum(np.prod(np.delete(values[:i + 1], [j, k])) for i in range(max(j, k), 4))
    np.testing.assert_array_equal(hess, expected)


@pytest.mark.parametrize("shape,axis", [((7,), 0), ((300, 9), 1), ((9, 300), 0), ((3, 5, 4), 1), ((2, 0), 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_both_evaluation_orders(shape, axis, reverse):
    """linear_scan (cumprod's gradient) doubles on narrow inputs and steps along wide ones: both
    give the recurrence s_k = a_k s_{k-1} + b_k, and so does its gradient."""
    from graphc.ops.cumulative import LinearScan

    rng = np.random.default_rng(3)
    a, b = rng.uniform(-1.2, 1.2, shape), rng.normal(size=shape)
    expected = np.zeros(shape)
    state = np.zeros(np.delete(shape, axis))
    steps = range(shape[axis])
    for k in (reversed(steps) if reverse else steps):
        state = np.take(a, k, axis) * state + np.take(b, k, axis)
        expected[(slice(None),) * axis + (k,)] = state
    op = LinearScan(axis, reverse)
    np.testing.assert_allclose(op.impl(a, b), expected, rtol=1e-10, atol=1e-12)
    if 0 not in shape and shape[axis] < 20:
        ta, tb = gc.placeholder("a", shape), gc.placeholder("b", shape)
        w = rng.uniform(0.5, 1.5, shape)
        ga, gb = run(gc.grad(gc.sum(op(ta, tb) * w), [ta, tb]), {ta: a, tb: b})
        ref = lambda u, v: float(np.sum(LinearScan(axis, reverse).impl(u, v) * w))  # noqa: E731
        np.testing.assert_allclose(ga, numeric_gradient(ref, [a, b], 0), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gb, numeric_gradient(ref, [a, b], 1), rtol=1e-6, atol=1e-8)


def test_cumulative_empty_and_large_axes():
    x = gc.placeholder("x", (2, 0))
    y = gc.cumprod(x, 1)
    got, g = run([y, gc.grad(gc.sum(y), x)], {x: np.zeros((2, 0))})
    assert got.shape == g.shape == (2, 0)
    long = np.random.default_rng(0).uniform(0.9, 1.1, 1000)
    z = gc.placeholder("z", (None,))
    out, gz = run([gc.cumprod(z), gc.grad(gc.sum(gc.cumprod(z)), z)], {z: long})
    np.testing.assert_allclose(out, np.cumprod(long), rtol=1e-12)
    expected = np.array([np.sum(np.cumprod(long)[k:]) / long[k] for k in range(1000)])  # no zeros here
    np.testing.assert_allclose(gz, expected, rtol=1e-11)
    s = gc.placeholder("s", ())
    assert gc.cumsum(s).shape == (1,)  # axis=None flattens, as in NumPy
    np.testing.assert_array_equal(run(gc.cumsum(s), {s: 2.0}), [2.0])


def test_var_is_two_pass():
    """Data far from zero keeps its small spread (one pass, E[x^2] - E[x]^2, would give 0 or worse)."""
    x = gc.placeholder("x", (4,))
    values = 1e9 + np.array([0.0, 1.0, 2.0, 3.0])
    got = run([gc.var(x), gc.std(x, ddof=1), gc.grad(gc.var(x), x)], {x: values})
    assert got[0] == 1.25 and got[1] == np.sqrt(5 / 3)
    np.testing.assert_array_equal(got[2], [-0.75, -0.25, 0.25, 0.75])


@pytest.mark.filterwarnings("ignore:Degrees of freedom")
def test_var_std_empty_and_small_samples():
    """Like NumPy: the variance of nothing is NaN, and n <= ddof gives inf or NaN."""
    x = gc.placeholder("x", (2, None))
    got = run([gc.var(x, axis=1), gc.std(x, axis=1, ddof=1)], {x: np.zeros((2, 0))})
    assert np.all(np.isnan(got[0])) and np.all(np.isnan(got[1]))
    one = run([gc.var(x, axis=1, ddof=1)], {x: np.ones((2, 1))})[0]
    assert np.all(np.isnan(one))


def test_more_errors():
    x = gc.placeholder("x", (2, 3))
    for fn in (gc.var, gc.std, gc.norm, gc.any, gc.all, gc.argmax, gc.argmin, gc.cumsum, gc.cumprod):
        with pytest.raises(gc.ShapeError, match=fn.__name__):
            fn(x, axis=2)
    with pytest.raises(gc.ShapeError, match="argmax"):
        gc.argmax(x, axis=(0, 1))
    with pytest.raises(gc.ShapeError, match="argmax.*empty"):
        gc.argmax(gc.placeholder("e", (2, 0)), axis=1)
    assert gc.argmax(gc.placeholder("e", (0, 2)), axis=1).shape == (0,)
    with pytest.raises(gc.ShapeError, match="cumsum"):
        gc.cumsum(gc.placeholder("s", ()), axis=0)
    with pytest.raises(TypeError, match="ddof"):
        gc.var(x, ddof=0.5)
    with pytest.raises(TypeError, match="ord"):
        gc.norm(x, ord="fro")
    with pytest.raises(ValueError, match="ord must be 1, 2 or inf"):
        gc.norm(x, ord=3)
    assert gc.norm(x, None).primitive == gc.norm(x, 2.0).primitive
    assert [gc.argmax(x).dtype, gc.any(x).dtype, gc.var(gc.cast(x, "int32")).dtype] == \
        [np.int64, np.bool_, np.float64]


MORE_REDUCTIONS = [
    ("var", lambda x, axis, keepdims: gc.var(x, axis, 0, keepdims), lambda x, axis, keepdims: np.var(
        x, axis, keepdims=keepdims)),
    ("std-ddof1", lambda x, axis, keepdims: gc.std(x, axis, 1, keepdims), lambda x, axis, keepdims: np.std(
        x, axis, ddof=1, keepdims=keepdims)),
    ("norm2", lambda x, axis, keepdims: gc.norm(x, 2, axis, keepdims), lambda x, axis, keepdims: np_norm(
        x, 2, axis, keepdims)),
    ("norm1", lambda x, axis, keepdims: gc.norm(x, 1, axis, keepdims), lambda x, axis, keepdims: np_norm(
        x, 1, axis, keepdims)),
    ("norm-inf", lambda x, axis, keepdims: gc.norm(x, np.inf, axis, keepdims), lambda x, axis, keepdims: np_norm(
        x, np.inf, axis, keepdims)),
]


@pytest.mark.filterwarnings("ignore:Degrees of freedom")  # std with ddof=1 of one entry: NaN, as in NumPy
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_reduction_spec(), reduction=st.sampled_from(MORE_REDUCTIONS))
def test_random_more_reductions(spec, reduction):
    """var, std and norm over random shapes, axes (negative, unordered) and keepdims, sizes known or not."""
    shape, unknown, axis, keepdims = spec
    name, fn, ref = reduction
    values = away_from(0.0, margin=0.2)(np.random.default_rng(6), shape)
    with np.errstate(all="ignore"):
        expected = np.asarray(ref(values, axis, keepdims))
    assume(np.all(np.isfinite(expected)))
    w = np.random.default_rng(7).uniform(0.5, 1.5, expected.shape)
    for declared in (shape, unknown):
        x = gc.placeholder("x", declared)
        out = fn(x, axis, keepdims)
        got, g_val = run([out, gc.grad(gc.sum(out * w), x)], {x: values})
        assert_static_matches(out, got)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        numeric = numeric_gradient(lambda v: float(np.sum(ref(v, axis, keepdims) * w)), [values], 0)
        np.testing.assert_allclose(g_val, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore:Degrees of freedom")
@pytest.mark.parametrize("sizes", ["static", "run time"])
def test_var_and_std_with_ddof_past_the_count_divide_by_zero_as_numpy_does(sizes):
    # np.var clamps n - ddof at 0, so the value is inf; the gradient must not be finite either
    x = gc.placeholder("x", (3,) if sizes == "static" else (None,))
    feeds = {x: np.arange(3.0)}
    assert gc.var(x, ddof=5).eval(feeds) == np.inf
    grads = gc.Session().run([gc.grad(gc.var(x, ddof=5), x), gc.grad(gc.std(x, ddof=4), x)], feeds)
    assert not np.isfinite(grads[0]).any() and not np.isfinite(grads[1]).any()
