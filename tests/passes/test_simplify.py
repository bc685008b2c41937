"""Exact simplification: one test per rule (structure before/after, values at extreme inputs)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.passes.simplify import simplify
from graphc.tensor import toposort
from tests.passes.util import assert_same_values, count, ops_of, run

EXTREMES = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e-308, 2.5, -3.0])


def _x(shape=(9,), dtype="float64"):
    return gc.placeholder("x", shape, dtype)


def _feed(y):
    """Extreme values for every (9,) placeholder of ``y``'s graph (shifted per placeholder), random otherwise."""
    feeds = {}
    for k, p in enumerate(t for t in toposort([y]) if t.op == "placeholder"):
        if p.shape == (9,):
            value = np.roll(EXTREMES, k)
        else:
            value = np.random.default_rng(k).uniform(-3, 3, size=tuple(3 if s is None else s for s in p.shape))
        with np.errstate(over="ignore"):
            feeds[p] = value.astype(p.dtype)
    return feeds


def _check(y, x, *, removed=(), kept=(), same_node=None):
    """Simplify ``y``; check what went, what stayed, and the values on extreme inputs (sign of zero included)."""
    (z,) = simplify([y])
    assert z.shape == y.shape and z.dtype == y.dtype
    for op in removed:
        assert count(z, op) < count(y, op), (op, ops_of(z))
    for op in kept:
        assert count(z, op) == count(y, op), (op, ops_of(z))
    if same_node is not None:
        assert z is same_node
    feeds = _feed(y)
    assert_same_values(run([y], feeds), run([z], feeds))
    return z


def test_mul_by_one_both_sides():
    x = _x()
    _check(x * 1.0, x, same_node=x)
    _check(1.0 * x, x, same_node=x)
    _check(x * gc.constant(np.ones(9)), x, same_node=x)


def test_mul_by_one_keeps_a_broadcast():
    x = _x((3,))
    y = x * gc.constant(np.ones((2, 3)))
    z = _check(y, x, kept=["mul"])
    assert z.shape == (2, 3)


def test_mul_by_one_keeps_the_dtype():
    x = _x((3,), "float32")
    y = x * gc.constant(np.ones(3))  # float32 * float64 array -> float64
    z = _check(y, x, kept=["mul"])
    assert z.dtype == np.float64
    i = gc.placeholder("i", (3,), "int32")
    (w,) = simplify([i * 1.0])  # weak float scalar: int32 * 1.0 -> float64
    assert w.dtype == np.float64 and w.op == "mul"


def test_mul_minus_one_and_div():
    x = _x()
    _check(x * -1.0, x, removed=["mul"])
    assert _check(x / 1.0, x, same_node=x) is x
    z = _check(x / -1.0, x, removed=["div"])
    assert z.op == "neg"


def test_add_and_sub_zero():
    x = _x()
    _check(x + (-0.0), x, same_node=x)
    _check(-0.0 + x, x, same_node=x)
    _check(x - 0.0, x, same_node=x)
    _check(gc.cast(x, "int64") + 0, gc.cast(x, "int64"))


def test_adding_positive_zero_is_kept_for_floats():
    # -0.0 + 0.0 is +0.0: dropping the addition would turn the sign of a zero around
    x = _x()
    (z,) = simplify([x + 0.0])
    assert z.op == "add"
    out = run([z], {x: np.full(x.shape, -0.0)})[0]
    assert not np.signbit(out).any()
    y = x + gc.constant(np.zeros((2, 9)))
    assert _check(y, x, kept=["add"]).shape == (2, 9)


def test_subtracting_negative_zero_is_kept_for_floats():
    # -0.0 - (-0.0) is +0.0: dropping the subtraction would turn the sign of a zero around
    x = _x()
    (z,) = simplify([x - (-0.0)])
    assert z.op == "sub"
    out = run([z], {x: np.full(x.shape, -0.0)})[0]
    assert not np.signbit(out).any()
    assert _check(gc.cast(x, "int64") - 0, gc.cast(x, "int64")).op == "cast"


def test_never_folds_x_times_zero_x_minus_x_x_over_x():
    x = _x()
    for y in (x * 0.0, x - x, x / x, 0.0 * x):
        (z,) = simplify([y])
        assert z is y
        values = run([z], _feed(z))[0]
        assert np.isnan(values).any()  # NaN * 0, inf - inf, inf / inf


def test_pow_one_and_two():
    x = _x()
    _check(x ** 1.0, x, same_node=x)
    z = _check(x ** 2.0, x, removed=["pow"])
    assert z.op == "square"
    _check(x ** 3.0, x, kept=["pow"])


def test_double_negation_and_negated_operands():
    x, y = _x(), gc.placeholder("y", (9,))
    _check(gc.neg(gc.neg(x)), x, same_node=x)
    z = _check(x + (-y), x, removed=["neg", "add"])
    assert z.op == "sub"
    z = _check(x - (-y), x, removed=["neg", "sub"])
    assert z.op == "add"
    z = _check((-x) * (-y), x, removed=["neg"])
    assert z.op == "mul"


def test_transposes():
    x = _x((2, 3, 4))
    _check(gc.transpose(gc.transpose(x, (1, 2, 0)), (2, 0, 1)), x, same_node=x)
    z = _check(gc.transpose(gc.transpose(x, (1, 0, 2)), (0, 2, 1)), x, removed=["transpose"])
    assert z.op == "transpose" and z.shape == (3, 4, 2)
    _check(gc.transpose(x, (0, 1, 2)), x, same_node=x)
    _check(x.T.T, x, same_node=x)


def test_reshape_chains():
    x = _x((2, 3, 4))
    _check(gc.reshape(gc.reshape(x, (6, 4)), (2, 3, 4)), x, same_node=x)
    z = _check(gc.reshape(gc.reshape(x, (6, 4)), (4, 6)), x, removed=["reshape"])
    assert z.inputs[0] is x
    _check(gc.squeeze(gc.expand_dims(x, 1), 1), x, same_node=x)
    z = _check(gc.reshape(gc.expand_dims(x, 0), (24,)), x, removed=["expand_dims"])
    assert z.inputs[0] is x
    unknown = gc.placeholder("u", (None, 3))
    (w,) = simplify([gc.reshape(gc.reshape(unknown, (-1,)), (-1, 3))])
    assert w is unknown


def test_broadcast_to_same_shape_and_chains():
    x = _x((3, 4))
    _check(gc.broadcast_to(x, (3, 4)), x, same_node=x)
    v = _x((4,))
    z = _check(gc.broadcast_to(gc.broadcast_to(v, (3, 4)), (2, 3, 4)), v, removed=["broadcast_to"])
    assert z.inputs[0] is v


def test_sum_of_broadcast():
    v = _x((4,))
    y = gc.sum(gc.broadcast_to(v, (3, 4)), axis=0)
    z = _check(y, v, removed=["broadcast_to", "sum"])
    assert z.op == "add" and z.inputs[0].op == "mul"  # v * 3 + 0.0: np.sum turns -0.0 into +0.0
    # summing over an axis the broadcast did not create is kept
    w = _x((3, 1))
    _check(gc.sum(gc.broadcast_to(w, (3, 4)), axis=0), w, kept=["sum"])
    # NaN and inf go through: n copies of inf sum to inf, of NaN to NaN
    e = gc.placeholder("e", (9,))
    y = gc.sum(gc.broadcast_to(e, (5, 9)), axis=0)
    _check(y, e, removed=["sum"])


def test_sum_of_broadcast_keeps_integer_sums_exact_and_skips_small_ints():
    i = gc.placeholder("i", (4,), "int8")
    y = gc.sum(gc.broadcast_to(i, (3, 4)), axis=0)  # int8 sums to int64: not x * 3 in int8
    (z,) = simplify([y])
    assert z.op == "sum"


def test_sum_over_nothing_or_size_one():
    x = _x((3, 1))
    z = _check(gc.sum(x, axis=1), x, removed=["sum"])
    assert z.op == "add" and z.inputs[0].op == "reshape"  # + 0.0: np.sum turns -0.0 into +0.0
    z = _check(gc.sum(x, axis=1, keepdims=True), x, removed=["sum"])
    assert z.inputs[0] is x
    i = gc.placeholder("i", (3, 1), "int64")
    _check(gc.sum(i, axis=1, keepdims=True), i, same_node=i)  # integers have no signed zero


def test_sub_zero_keeps_the_sign_of_zero():
    """x - 0.0 -> x is exact; x - (-0.0) is x + 0.0, which turns -0.0 into +0.0: kept."""
    x = _x()
    _check(x - 0.0, x, same_node=x)
    _check(x - gc.constant(-0.0), x, kept=["sub"])
    (z,) = simplify([x - gc.constant(-0.0)])
    assert np.signbit(run([z], {x: np.full(9, -0.0)})[0]).sum() == 0  # -0.0 - (-0.0) is +0.0


def test_casts():
    x = _x()
    _check(gc.cast(x, "float64"), x, same_node=x)
    f = _x((9,), "float32")
    _check(gc.cast(gc.cast(f, "float64"), "float32"), f, same_node=f)
    # a narrowing round trip rounds: kept
    _check(gc.cast(gc.cast(x, "float32"), "float64"), x, kept=["cast"])


def test_where_same_branches_and_constant_conditions():
    x, y = _x(), gc.placeholder("y", (9,))
    _check(gc.where(x > y, x, x), x, same_node=x)
    _check(gc.where(gc.constant(True), x, y), x, same_node=x)
    _check(gc.where(gc.constant(np.zeros(9, bool)), y, x), x, same_node=x)
    mixed = gc.constant(np.arange(9) % 2 == 0)
    _check(gc.where(mixed, x, y), x, kept=["where"])


def test_zeros_and_ones_like_become_constants():
    x = _x((3, 4))
    z = _check(gc.zeros_like(x) + gc.ones_like(x), x, removed=["zeros_like", "ones_like"])
    assert "placeholder" not in ops_of(z)
    unknown = gc.placeholder("u", (None, 4))
    (w,) = simplify([gc.ones_like(unknown)])
    assert w.op == "ones_like"


def test_x_plus_x_doubles():
    x = _x()
    z = _check(x + x, x, removed=["add"])
    assert z.op == "mul"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rules_keep_float32(dtype):
    x = _x((9,), dtype)
    y = gc.reshape(gc.reshape(gc.neg(-(x * 1.0 - 0.0)), (3, 3)), (9,)) / 1.0
    (z,) = simplify([y])
    assert z is x and z.dtype == np.dtype(dtype)


def test_simplify_is_idempotent_and_returns_same_objects_when_nothing_applies():
    x = _x()
    y = gc.exp(x) * gc.tanh(x)
    (z,) = simplify([y])
    assert z is y


def test_integer_round_trips_through_float_are_kept_when_lossy():
    big = gc.placeholder("big", (2,), "int64")
    y = gc.cast(gc.cast(big, "float64"), "int64")  # 2**53 + 1 does not survive
    (z,) = simplify([y])
    assert z.op == "cast"
    values = {big: np.array([2**53 + 1, -3])}
    assert_same_values(run([y], values), run([z], values))
    small = gc.placeholder("small", (2,), "int32")
    (w,) = simplify([gc.cast(gc.cast(small, "float64"), "int32")])
    assert w is small
    (v,) = simplify([gc.cast(gc.cast(small, "float32"), "int32")])
    assert v.op == "cast"


def test_negation_identities_with_mixed_integer_dtypes_are_kept():
    f = gc.placeholder("f", (2,))
    i = gc.placeholder("i", (2,), "int64")
    y = f + (-i)  # -(int64 min) wraps before the float addition
    (z,) = simplify([y])
    assert z is y
    values = {f: np.array([0.0, 1.0]), i: np.array([np.iinfo(np.int64).min, 3])}
    assert_same_values(run([y], values), run([z], values))


def test_sum_to_and_broadcast_like_of_a_tensor_already_that_shape_at_run_time():
    x = gc.placeholder("x", (None, 4))
    b = gc.placeholder("b", (4,))
    h = gc.tanh(x + b)  # the run-time shape of x (b cannot widen it)
    g = gc.exp(h) * 2.0
    from graphc.ops.shape import broadcast_like, sum_to

    y = sum_to(g, x)
    z = _check(y, x, removed=["sum_to"])
    assert z is not y and z.op == "mul"
    w = _check(broadcast_like(g, h), x, removed=["broadcast_like"])
    assert w.op == "mul"
    # a broadcast between two unknown sizes is kept: (?, 1) * (?, 4) may be wider than either
    c = gc.placeholder("c", (None, 1))
    kept = sum_to(c * x, x)
    (k,) = simplify([kept])
    assert k.op == "sum_to"


def test_uniform_constant_arrays_become_scalars():
    x = _x((3, 4))
    y = x * gc.constant(np.full((3, 4), 0.5)) + gc.constant(np.full((4,), 2.0, dtype="float32"))
    z = _check(y, x)
    assert all(t.ndim == 0 for t in toposort([z]) if t.op == "constant")
    assert z.dtype == np.float64
    f = _x((3, 4), "float32")
    w = _check(f * gc.constant(np.full((3, 4), 0.5)), f)  # float32 * float64 array -> float64, kept
    assert w.dtype == np.float64
    # a constant that sets the output's shape is kept
    v = _x((4,))
    (u,) = simplify([v * gc.constant(np.full((3, 4), 0.5))])
    assert u.shape == (3, 4) and any(t.ndim == 2 for t in toposort([u]) if t.op == "constant")
