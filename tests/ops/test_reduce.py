"""Reductions: sum mean max min prod logsumexp over axis/keepdims, table-driven."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc

from .util import (
    Case,
    Spec,
    assert_static_matches,
    check_jvp,
    check_second_order,
    check_third_order,
    check_with_check_grad,
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
    assert check_with_check_grad(case, dtype) >= 0.0


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
