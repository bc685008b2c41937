"""Ordering: sort argsort top_k (and the take_along_axis gather behind top_k's values), table-driven:
values against NumPy, static types with unknown sizes, gradients to third order, ties and NaN."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc

from .util import (
    Case,
    Spec,
    check_gradient,
    check_jvp,
    check_second_order,
    check_third_order,
    check_unknown_sizes,
    check_value,
    check_with_check_grad,
    fixed,
    run,
)

FLOATS = [np.float64, np.float32]


def np_top_k(x, k):
    """Reference: the k largest along the last axis, largest first, ties by lower index (NaN largest)."""
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[-1]), x.shape), -np.nan_to_num(x, nan=np.inf)), axis=-1)
    indices = order[..., :k].astype(np.int64)
    return np.take_along_axis(x, indices, -1), indices


def _case(name, build, ref, shape, gen=None, kind="f"):
    return Case(name, build, ref, [Spec(shape, gen, kind=kind)] if gen else [Spec(shape, kind=kind)])


DIFF = [
    _case("sort", gc.sort, np.sort, (3, 5)),
    _case("sort(axis=0)", lambda x: gc.sort(x, 0), lambda x: np.sort(x, 0), (4, 2, 3)),
    _case("sort(axis=1)-3d", lambda x: gc.sort(x, axis=1), lambda x: np.sort(x, axis=1), (2, 4, 3)),
    _case("sort(axis=None)", lambda x: gc.sort(x, None), lambda x: np.sort(x, None), (3, 4)),
    _case("sort-1d", gc.sort, np.sort, (7,)),
    _case("top_k(2)", lambda x: gc.top_k(x, 2)[0], lambda x: np_top_k(x, 2)[0], (3, 5)),
    _case("top_k(1)-3d", lambda x: gc.top_k(x, 1)[0], lambda x: np_top_k(x, 1)[0], (2, 3, 4)),
    _case("top_k(n)", lambda x: gc.top_k(x, 6)[0], lambda x: np_top_k(x, 6)[0], (6,)),
    _case("top_k(0)", lambda x: gc.top_k(x, 0)[0], lambda x: np_top_k(x, 0)[0], (2, 3)),
]

TIES = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, -1.0, 2.0, 5.0], [np.nan, 4.0, 0.0, 4.0, np.nan]])

NONDIFF = [
    _case("argsort", gc.argsort, lambda x: np.argsort(x, kind="stable"), (3, 5)),
    _case("argsort(axis=0)", lambda x: gc.argsort(x, 0), lambda x: np.argsort(x, 0, kind="stable"), (4, 3)),
    _case("argsort(axis=None)", lambda x: gc.argsort(x, None), lambda x: np.argsort(x, None, kind="stable"), (2, 3)),
    _case("top_k(3)-indices", lambda x: gc.top_k(x, 3)[1], lambda x: np_top_k(x, 3)[1], (4, 6)),
    _case("sort-int", gc.sort, np.sort, (2, 4), fixed([[3, -1, 3, 0], [9, 9, 2, 1]]), kind="int32"),
    _case("top_k-uint8", lambda x: gc.top_k(x, 2)[1], lambda x: np_top_k(x.astype(np.int64), 2)[1], (2, 4),
          fixed([[3, 255, 3, 0], [0, 0, 2, 1]]), kind="uint8"),
    _case("argsort-bool", gc.argsort, lambda x: np.argsort(x, kind="stable"), (7,),
          fixed([True, False, True, True, False, False, True]), kind="bool"),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", DIFF + NONDIFF, ids=repr)
def test_value(case, dtype):
    check_value(case, dtype)


@pytest.mark.parametrize("case", DIFF + NONDIFF, ids=repr)
def test_unknown_sizes(case):
    check_unknown_sizes(case)


@pytest.mark.parametrize("dtype", FLOATS)
def test_ties_keep_input_order_and_nan_is_largest(dtype):
    """The three ops agree with NumPy's stable sort: tied entries in input order, NaN sorted last."""
    data = TIES.astype(dtype)
    x = gc.placeholder("x", (3, None), dtype)
    values, indices = gc.top_k(x, 3)
    got = run([gc.sort(x), gc.argsort(x), values, indices], {x: data})
    expected = [np.sort(data), np.argsort(data, kind="stable"), *np_top_k(data, 3)]
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[3], [[1, 2, 4], [4, 0, 1], [0, 4, 1]])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", DIFF, ids=repr)
def test_gradient(case, dtype):
    check_gradient(case, dtype)


@pytest.mark.parametrize("case", DIFF, ids=repr)
def test_higher_orders(case):
    """Second order (sizes known and unknown), third order, forward mode and gc.check_grad."""
    check_gradient(case, np.float64, unknown=True)
    check_second_order(case, np.float64)
    check_second_order(case, np.float64, unknown=True)
    check_third_order(case)
    check_jvp(case, unknown=True)
    assert check_with_check_grad(case, np.float64) < 1e-5


def test_top_k_gradient_goes_to_the_chosen_entries():
    """Ties: the lower index is chosen (also across the k-th place), and only it receives gradient."""
    x = gc.placeholder("x", (None, None))
    values, indices = gc.top_k(x, 2)
    assert values.shape == indices.shape == (None, 2)
    w = np.array([[10.0, 1.0], [20.0, 2.0]])
    g = gc.grad(gc.sum(values * w), x)
    data = np.array([[1.0, 3.0, 3.0, 3.0], [5.0, 0.0, 5.0, 5.0]])
    got_v, got_i, got_g = run([values, indices, g], {x: data})
    np.testing.assert_array_equal(got_i, [[1, 2], [0, 2]])
    np.testing.assert_array_equal(got_v, [[3.0, 3.0], [5.0, 5.0]])
    np.testing.assert_array_equal(got_g, [[0.0, 10.0, 1.0, 0.0], [20.0, 0.0, 2.0, 0.0]])


def test_sort_gradient_follows_the_stable_permutation():
    x = gc.placeholder("x", (4,))
    g = run(gc.grad(gc.sum(gc.sort(x) * np.array([1.0, 2.0, 3.0, 4.0])), x), {x: np.array([2.0, 1.0, 2.0, 0.0])})
    np.testing.assert_array_equal(g, [3.0, 2.0, 4.0, 1.0])  # the tied 2.0s: the first takes position 2


def test_static_types_and_errors():
    x = gc.placeholder("x", (3, None))
    assert gc.top_k(x, 5)[0].shape == (3, 5) and gc.top_k(x, 5)[1].dtype == np.int64
    assert gc.sort(x, None).shape == (None,) and gc.argsort(x, 0).shape == (3, None)
    assert [gc.sort(x).op, gc.argsort(x).op, gc.top_k(x, 1)[1].op] == ["sort", "argsort", "top_k"]
    with pytest.raises(gc.ExecutionError, match="top_k"):
        run(gc.top_k(x, 5)[0], {x: np.zeros((3, 4))})
    with pytest.raises(gc.ShapeError, match="top_k.*shape \\(3, 4\\)"):
        gc.top_k(gc.placeholder("y", (3, 4)), 5)
    with pytest.raises(gc.ShapeError, match="top_k"):
        gc.top_k(gc.placeholder("s", ()), 1)
    with pytest.raises(gc.ShapeError, match="top_k"):
        gc.top_k(x, -1)
    with pytest.raises(TypeError, match="top_k"):
        gc.top_k(x, 1.0)
    for fn in (gc.sort, gc.argsort):
        with pytest.raises(gc.ShapeError, match=fn.__name__):
            fn(x, 2)
        with pytest.raises(gc.ShapeError, match=fn.__name__):
            fn(gc.placeholder("s", ()))
    # the indices carry no gradient: only the direct factor x contributes
    data = np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
    order = gc.cast(gc.argsort(x), "float64")
    np.testing.assert_array_equal(run(gc.grad(gc.sum(order * x), x), {x: data}), [[1, 0], [0, 1], [0, 1]])
    chosen = gc.cast(gc.top_k(x, 2)[1], "float64")
    np.testing.assert_array_equal(run(gc.grad(gc.sum(chosen * x), x), {x: data}), [[0, 1], [1, 0], [0, 1]])


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.integers(0, 3), max_size=2), size=st.integers(0, 9), data=st.data(),
       dtype=st.sampled_from(["float64", "float32", "int16", "uint8", "bool"]))
def test_random_top_k_matches_a_stable_sort(batch, size, data, dtype):
    """top_k selects in O(n) (a partition) and orders only the k chosen: the same indices as a full
    stable descending sort, with many ties, NaN, and empty batches or rows."""
    k = data.draw(st.integers(0, size))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    values = rng.integers(0, 4, size=(*batch, size)).astype(dtype)
    if dtype.startswith("float"):
        values[rng.random(values.shape) < 0.2] = np.nan
    x = gc.placeholder("x", (None,) * len(batch) + (None,), dtype)
    got_values, got_indices = run(list(gc.top_k(x, k)), {x: values})
    expected_values, expected_indices = np_top_k(values.astype(np.float64), k)
    np.testing.assert_array_equal(got_indices, expected_indices)
    np.testing.assert_array_equal(got_values, expected_values.astype(dtype))


def test_empty_axes():
    x = gc.placeholder("x", (2, None))
    values = np.zeros((2, 0))
    y, order, (top, chosen) = gc.sort(x), gc.argsort(x, 0), gc.top_k(x, 0)
    got = run([y, order, top, chosen, gc.grad(gc.sum(gc.sort(x) * 2.0), x)], {x: values})
    assert [a.shape for a in got] == [(2, 0)] * 5
    assert got[1].dtype == got[3].dtype == np.int64
