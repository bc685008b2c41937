"""Constant folding: by the op's own impl, with a size cap, never through leaves that vary."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.passes.fold import MAX_FOLD_BYTES, fold_constants
from tests.passes.util import assert_same_values, count, ops_of, run


def test_constant_subexpressions_are_folded():
    x = gc.placeholder("x", (3,))
    c = gc.constant(np.array([1.0, 2.0, 3.0]))
    y = x * gc.exp(c * 2.0 - 1.0)
    (z,) = fold_constants([y])
    assert ops_of(z) == ["placeholder", "constant", "mul"]
    feeds = {x: np.array([1.0, -2.0, 0.5])}
    assert_same_values(run([y], feeds), run([z], feeds))
    np.testing.assert_array_equal(z.inputs[1].primitive.value, np.exp(np.array([1.0, 2.0, 3.0]) * 2.0 - 1.0))


def test_whole_graph_of_constants_becomes_one_constant():
    y = gc.sum(gc.tanh(gc.constant(np.arange(6.0).reshape(2, 3))), axis=0)
    (z,) = fold_constants([y])
    assert z.op == "constant" and z.shape == (3,) and z.dtype == y.dtype
    np.testing.assert_array_equal(z.primitive.value, np.tanh(np.arange(6.0).reshape(2, 3)).sum(0))


@pytest.mark.parametrize("dtype", ["int32", "float32", "uint8", "bool"])
def test_folding_keeps_the_dtype(dtype):
    a = gc.constant(np.array([1, 0, 1], dtype=dtype))
    y = gc.maximum(a, a)
    (z,) = fold_constants([y])
    assert z.op == "constant" and z.dtype == np.dtype(dtype)


def test_nan_and_inf_are_folded_faithfully():
    y = gc.constant(np.array([np.nan, np.inf, 1.0])) * 0.0
    (z,) = fold_constants([y])
    value = z.primitive.value
    assert np.isnan(value[0]) and np.isnan(value[1]) and value[2] == 0.0
    (w,) = fold_constants([gc.constant(1.0) / gc.constant(0.0)])
    assert w.primitive.value == np.inf


def test_size_cap_keeps_huge_results_as_nodes():
    big = gc.broadcast_to(gc.constant(1.0), (1000, 1000))
    y = gc.exp(big)
    (z,) = fold_constants([y])
    assert z.op == "exp" and count(z, "constant") == 1
    assert all(t.primitive.value.nbytes <= MAX_FOLD_BYTES for t in [z.inputs[0].inputs[0]])
    # a reduction of a big constant to a small result is folded
    (s,) = fold_constants([gc.sum(gc.constant(np.ones(10000)))])
    assert s.op == "constant" and float(s.primitive.value) == 10000.0


def test_placeholders_and_variables_are_never_folded():
    x = gc.placeholder("x", ())
    v = gc.variable(np.array(2.0), name="v")
    y = (x + 1.0) * (v * 3.0)
    (z,) = fold_constants([y])
    assert z is y


def test_custom_ops_are_not_folded():
    twice = gc.custom_op("twice", lambda a: 2 * a, lambda inputs, out, g: [g * 2.0])
    y = twice(gc.constant(np.array([1.0, 2.0])))
    (z,) = fold_constants([y])
    assert z is y


def test_an_op_failing_on_constants_is_left_for_the_executor():
    y = gc.take(gc.constant(np.arange(3.0)), gc.constant(np.array([5])))  # out of range
    (z,) = fold_constants([y])
    assert z.op == "take"
    with pytest.raises(gc.ExecutionError, match="take"):
        gc.Session().run(y)


def test_folding_in_the_pipeline_counts_in_the_report():
    x = gc.placeholder("x", ())
    _, report = gc.optimize(x * (gc.constant(2.0) + gc.constant(3.0)), report=True)
    assert report.rules["fold.constant"] == 1
