"""Network ops: softmax, log_softmax, the cross-entropies; values, gradients and stability at +-1000."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

from .util import (
    Case,
    Spec,
    check_jvp,
    check_second_order,
    check_third_order,
    check_with_check_grad,
    fixed,
    max_grad_error,
    np_log_softmax,
    np_sigmoid,
    np_softmax,
    run,
    table_tests,
    uniform,
)

FLOATS = [np.float64, np.float32]


def np_sparse_xent(logits, labels, axis=-1):
    log_probs = np_log_softmax(logits, axis)
    picked = np.take_along_axis(log_probs, np.expand_dims(labels, axis), axis=axis)
    return -np.squeeze(picked, axis)


def np_dense_xent(logits, labels, axis=-1):
    return -np.sum(labels * np_log_softmax(logits, axis), axis=axis)


def np_sigmoid_xent(logits, targets):
    s = np_sigmoid(logits)
    return -targets * np.log(s) - (1 - targets) * np.log(1 - s)


def probabilities(rng, shape):
    """Rows (along the last axis) that sum to 1."""
    raw = rng.uniform(0.1, 1.0, size=shape)
    return raw / raw.sum(axis=-1, keepdims=True)


def probabilities_axis0(rng, shape):
    raw = rng.uniform(0.1, 1.0, size=shape)
    return raw / raw.sum(axis=0, keepdims=True)


def _labels(values, dtype="int64"):
    values = np.asarray(values)
    return Spec(values.shape, fixed(values), kind=dtype)


CASES = [
    Case("softmax", gc.softmax, np_softmax, [Spec((3, 4), uniform(-3, 3))]),
    Case("softmax-axis0", lambda x: gc.softmax(x, axis=0), lambda x: np_softmax(x, 0), [Spec((3, 4))]),
    Case("softmax-axis1-3d", lambda x: gc.softmax(x, 1), lambda x: np_softmax(x, 1), [Spec((2, 3, 4))]),
    Case("softmax-1d", gc.softmax, np_softmax, [Spec((5,))]),
    Case("log_softmax", gc.log_softmax, np_log_softmax, [Spec((3, 4), uniform(-3, 3))]),
    Case("log_softmax-axis0", lambda x: gc.log_softmax(x, axis=0), lambda x: np_log_softmax(x, 0), [Spec((3, 4))]),
    Case("log_softmax-axis-2-3d", lambda x: gc.log_softmax(x, -2), lambda x: np_log_softmax(x, -2),
         [Spec((2, 3, 4))]),
    Case("sce-int-labels", gc.softmax_cross_entropy, np_sparse_xent, [Spec((4, 5)), _labels([0, 4, 2, 2])]),
    Case("sce-int32-labels-3d", gc.softmax_cross_entropy, np_sparse_xent,
         [Spec((2, 3, 4)), _labels([[0, 3, 1], [2, 2, 0]], "int32")]),
    Case("sce-int-labels-axis1", lambda x, y: gc.softmax_cross_entropy(x, y, axis=1),
         lambda x, y: np_sparse_xent(x, y, 1), [Spec((2, 5, 3)), _labels([[0, 4, 1], [2, 2, 3]])]),
    Case("sce-int-labels-axis0", lambda x, y: gc.softmax_cross_entropy(x, y, axis=0),
         lambda x, y: np_sparse_xent(x, y, 0), [Spec((3, 2)), _labels([2, 0], "uint8")]),
    Case("sce-int-labels-broadcast", gc.softmax_cross_entropy,
         lambda x, y: np_sparse_xent(x, np.broadcast_to(y, x.shape[:-1])), [Spec((4, 5)), _labels([3])]),
    Case("sce-int-labels-broadcast-axis0", lambda x, y: gc.softmax_cross_entropy(x, y, axis=0),
         lambda x, y: np_sparse_xent(x, np.broadcast_to(y, x.shape[1:]), 0), [Spec((3, 4)), _labels([1])]),
    Case("sce-probabilities", gc.softmax_cross_entropy, np_dense_xent,
         [Spec((4, 5)), Spec((4, 5), probabilities)]),
    Case("sce-probabilities-3d", gc.softmax_cross_entropy, np_dense_xent,
         [Spec((2, 3, 4)), Spec((2, 3, 4), probabilities)]),
    Case("sce-probabilities-axis0", lambda x, y: gc.softmax_cross_entropy(x, y, axis=0),
         lambda x, y: np_dense_xent(x, y, 0), [Spec((3, 4)), Spec((3, 4), probabilities_axis0)]),
    # a small classifier: the executor's relu-mask and cross-entropy kernels inside a real gradient
    Case("mlp-relu-sce", lambda x, w, b, y: gc.softmax_cross_entropy(gc.relu(x @ w + b), y),
         lambda x, w, b, y: np_sparse_xent(np.maximum(x @ w + b, 0), y),
         [Spec((4, 3)), Spec((3, 5)), Spec((5,)), _labels([0, 4, 2, 2])]),
    Case("mlp-tanh-sce-probabilities", lambda x, w, p: gc.softmax_cross_entropy(gc.tanh(x @ w), p),
         lambda x, w, p: np_dense_xent(np.tanh(x @ w), p), [Spec((4, 3)), Spec((3, 5)), Spec((4, 5), probabilities)]),
    Case("sigmoid_cross_entropy", gc.sigmoid_cross_entropy, np_sigmoid_xent,
         [Spec((3, 4), uniform(-4, 4)), Spec((3, 4), uniform(0, 1))]),
    Case("sigmoid_cross_entropy-broadcast", gc.sigmoid_cross_entropy, np_sigmoid_xent,
         [Spec((3, 1), uniform(-4, 4)), Spec((4,), uniform(0, 1))]),
    Case("sigmoid_cross_entropy-scalar-target", lambda x: gc.sigmoid_cross_entropy(x, 0.25),
         lambda x: np_sigmoid_xent(x, x.dtype.type(0.25)), [Spec((2, 3), uniform(-4, 4))]),
    Case("sigmoid_cross_entropy-int-targets", gc.sigmoid_cross_entropy,
         lambda x, t: np_sigmoid_xent(x, t.astype(x.dtype)), [Spec((2, 3), uniform(-4, 4)),
                                                               _labels([[0, 1, 1], [1, 0, 0]])]),
]


globals().update(table_tests(CASES, float32_second=lambda c: c.id in (
    "softmax", "log_softmax", "sce-int-labels", "sce-probabilities", "sigmoid_cross_entropy")))


def test_output_dtypes():
    x32 = gc.placeholder("x", (2, 3), "float32")
    assert gc.softmax(x32).dtype == np.float32
    assert gc.log_softmax(x32).dtype == np.float32
    assert gc.softmax_cross_entropy(x32, gc.placeholder("y", (2,), "int64")).dtype == np.float32
    assert gc.softmax_cross_entropy(x32, gc.placeholder("p", (2, 3), "float32")).dtype == np.float32
    assert gc.sigmoid_cross_entropy(x32, 1.0).dtype == np.float32
    assert gc.sigmoid_cross_entropy(x32, gc.placeholder("t", (2, 3), "int64")).dtype == np.float32
    assert gc.softmax_cross_entropy(x32, gc.placeholder("y", (2,), "int64")).shape == (2,)


def test_sparse_and_dense_agree():
    logits = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0]])
    labels = np.array([2, 0])
    x = gc.placeholder("x", (2, 3))
    sparse = gc.softmax_cross_entropy(x, labels)
    dense = gc.softmax_cross_entropy(x, np.eye(3)[labels])
    (s, d, gs, gd) = run([sparse, dense, gc.grad(gc.sum(sparse), x), gc.grad(gc.sum(dense), x)], {x: logits})
    np.testing.assert_allclose(s, d, rtol=1e-14)
    np.testing.assert_allclose(gs, gd, rtol=1e-14)
    np.testing.assert_allclose(gs, np_softmax(logits) - np.eye(3)[labels], rtol=1e-12)


def test_labels_carry_no_gradient():
    x = gc.placeholder("x", (2, 3))
    y = gc.placeholder("y", (2,), "int64")
    with pytest.raises(gc.DTypeError):
        gc.grad(gc.sum(gc.softmax_cross_entropy(x, y)), y)



@pytest.mark.parametrize(("logits", "labels"), [((3, 1), (3, 4)), ((3, 4), (3, 1)), ((3, 4), (1, 4)),
                                                 ((None, 4), (1, 4)), ((None, 1), (None, 4))])
def test_probability_labels_never_broadcast(logits, labels):
    # probabilities have the logits' shape: along the class axis the gradient rules (softmax *
    # sum(labels) - labels, -log_softmax) would be wrong, and over the batch one row would silently
    # stand for every example (issue 15.5a); a static 1 against an unknown size is a broadcast too
    with pytest.raises(gc.ShapeError, match="must have the logits' shape"):
        gc.softmax_cross_entropy(gc.placeholder("x", logits), gc.placeholder("p", labels))


@pytest.mark.parametrize(("logits", "labels"), [((3, 1), (3, 4)), ((3, 4), (3, 1))])
def test_an_unknown_class_count_is_checked_at_run_time(logits, labels):
    x = gc.placeholder("x", (logits[0], None))
    p = gc.placeholder("p", (labels[0], None))
    loss = gc.softmax_cross_entropy(x, p)
    with pytest.raises(gc.ExecutionError, match="must have the logits' shape"):
        gc.Session().run(loss, {x: np.zeros(logits), p: np.full(labels, 0.25)})


@pytest.mark.parametrize("optimize", [True, False])
def test_probability_labels_of_unknown_batch_are_not_broadcast_at_run_time(optimize):
    # issue 15.5a at run time: labels (None, 3) fed one row for logits of four rows broadcast silently
    x, p = gc.placeholder("x", (None, 3)), gc.placeholder("p", (None, 3))
    loss = gc.softmax_cross_entropy(x, p)
    fn = gc.function([x, p], [loss, gc.grad(gc.sum(loss), x)], optimize=optimize)
    with pytest.raises(gc.ExecutionError, match="no broadcasting over the batch"):
        fn(np.zeros((4, 3)), np.full((1, 3), 1 / 3))
    value, _ = fn(np.zeros((2, 3)), np.full((2, 3), 1 / 3))
    np.testing.assert_allclose(value, [np.log(3.0)] * 2)


@pytest.mark.parametrize("batch", [3, None])
def test_float_labels_of_the_batch_shape_say_to_use_an_integer_dtype(batch):
    # issue 15.5a: labels (None,) float with logits (None, 3) were taken as probabilities broadcast
    # over the batch ([3.2958, 3.2958, 3.2958] at batch 3, no error)
    x, y = gc.placeholder("x", (batch, 3)), gc.placeholder("y", (batch,))
    with pytest.raises(gc.DTypeError, match="class indices need an integer dtype"):
        gc.softmax_cross_entropy(x, y)
    with pytest.raises(gc.DTypeError, match="class indices need an integer dtype"):
        gc.softmax_cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(gc.ShapeError, match="must have the logits' shape"):
        gc.softmax_cross_entropy(x, gc.placeholder("p", (2, batch, 3)))


# ---- stability at +-1000 -------------------------------------------------------------------------

BIG = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0], [-1000.0, -1000.0, -1000.0]])
# by hand: the row maxima are 1000, 1000, -1000; log-sum-exp 1000, 1000 + log 2, -1000 + log 3
BIG_LOG_SOFTMAX = np.array([[0.0, -2000.0, -1000.0], [-2000.0 - np.log(2), -np.log(2), -np.log(2)],
                            [-np.log(3)] * 3])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_log_softmax_extreme_logits(dtype):
    x = gc.placeholder("x", (3, 3), dtype)
    w = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [1.0, 1.0, -2.0]])
    s, ls = gc.softmax(x), gc.log_softmax(x)
    gs = gc.grad(gc.sum(s * w), x)
    gls = gc.grad(gc.sum(ls * w), x)
    values = run([s, ls, gs, gls], {x: BIG.astype(dtype)})
    for v in values:
        assert v.dtype == np.dtype(dtype) and np.all(np.isfinite(v))
    probs = np.exp(BIG_LOG_SOFTMAX)
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(values[0], probs, rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(values[1], BIG_LOG_SOFTMAX, rtol=rtol)
    # J^T w for softmax: p * (w - sum(w p)); for log_softmax: w - p * sum(w)
    np.testing.assert_allclose(values[2], probs * (w - np.sum(w * probs, axis=1, keepdims=True)), rtol=rtol,
                               atol=1e-6)
    np.testing.assert_allclose(values[3], w - probs * w.sum(axis=1, keepdims=True), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_cross_entropy_extreme_logits(dtype):
    labels = np.array([1, 0, 2])
    x = gc.placeholder("x", (3, 3), dtype)
    sparse = gc.softmax_cross_entropy(x, labels)
    dense = gc.softmax_cross_entropy(x, np.eye(3, dtype=dtype)[labels])
    soft = np.array([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5], [0.2, 0.3, 0.5]], dtype)
    smooth = gc.softmax_cross_entropy(x, soft)
    outputs = [sparse, dense, smooth, gc.grad(gc.sum(sparse), x), gc.grad(gc.sum(dense), x),
               gc.grad(gc.sum(smooth), x)]
    values = run(outputs, {x: BIG.astype(dtype)})
    for v in values:
        assert v.dtype == np.dtype(dtype) and np.all(np.isfinite(v)), v
    expected_loss = -BIG_LOG_SOFTMAX[np.arange(3), labels]  # [2000, 2000 + log 2, log 3]
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(values[0], expected_loss, rtol=rtol)
    np.testing.assert_allclose(values[1], expected_loss, rtol=rtol)
    np.testing.assert_allclose(values[2], -np.sum(soft * BIG_LOG_SOFTMAX, axis=1), rtol=rtol)
    probs = np.exp(BIG_LOG_SOFTMAX)
    np.testing.assert_allclose(values[3], probs - np.eye(3)[labels], rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(values[4], probs - np.eye(3)[labels], rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(values[5], probs - soft, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_cross_entropy_extreme_logits(dtype):
    logits = np.array([1000.0, 1000.0, -1000.0, -1000.0, 1000.0, 0.0, -30.0])
    targets = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0])
    x = gc.placeholder("x", (7,), dtype)
    t = gc.placeholder("t", (7,), dtype)
    loss = gc.sigmoid_cross_entropy(x, t)
    gx, gt = gc.grad(gc.sum(loss), [x, t])
    values = run([loss, gx, gt], {x: logits.astype(dtype), t: targets.astype(dtype)})
    for v in values:
        assert v.dtype == np.dtype(dtype) and np.all(np.isfinite(v)), v
    # by hand: loss = max(x, 0) - x t + log(1 + exp(-|x|)); at 0 that is log 2; at -30, t=1: log1p(e^-30) + 30
    expected = np.array([1000.0, 0.0, 1000.0, 0.0, 500.0, np.log(2.0), 30.0 + np.log1p(np.exp(-30.0))])
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(values[0], expected, rtol=rtol)
    sig = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.5, np.exp(-30.0) / (1 + np.exp(-30.0))])
    np.testing.assert_allclose(values[1], sig - targets, rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(values[2], -logits, rtol=rtol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_cross_entropy_gradient_of_confident_answers(dtype):
    # t = 1 at x = 30 (and t = 0 at x = -30): the gradient is -sigmoid(-30) (sigmoid(-30)), 9.4e-14,
    # to full relative precision, not the remains of 1 - 0.99999999999990641
    x = gc.placeholder("x", (2,), dtype)
    t = gc.placeholder("t", (2,), dtype)
    g = run(gc.grad(gc.sum(gc.sigmoid_cross_entropy(x, t)), x), {x: np.array([30.0, -30.0]), t: np.array([1.0, 0.0])})
    tail = np.exp(-30.0) / (1 + np.exp(-30.0))
    np.testing.assert_allclose(g, [-tail, tail], rtol=1e-12 if dtype == "float64" else 1e-6)


def test_sigmoid_cross_entropy_tail_accuracy():
    # t = 0 and x = -40: the loss is log1p(exp(-40)) = 4.2e-18, which a naive 1 - sigmoid would zero
    x = gc.placeholder("x", ())
    loss = gc.sigmoid_cross_entropy(x, 0.0)
    value, slope = run([loss, gc.grad(loss, x)], {x: -40.0})
    expected = np.log1p(np.exp(-40.0))
    assert abs(value - expected) <= 1e-12 * expected
    assert abs(slope - np.exp(-40.0) / (1 + np.exp(-40.0))) <= 1e-12 * expected


# ---- construction errors ------------------------------------------------------------------------

def test_errors():
    x = gc.placeholder("x", (4, 5))
    with pytest.raises(gc.ShapeError, match="softmax_cross_entropy"):
        gc.softmax_cross_entropy(x, gc.placeholder("y", (5,), "int64"))
    with pytest.raises(gc.ShapeError, match="softmax_cross_entropy"):
        gc.softmax_cross_entropy(x, gc.placeholder("y", (4, 5), "int64"))
    with pytest.raises(gc.ShapeError, match="softmax_cross_entropy"):
        gc.softmax_cross_entropy(x, 1)  # one label for every row: say so with the right shape
    with pytest.raises(gc.ShapeError, match="softmax_cross_entropy"):
        gc.softmax_cross_entropy(x, gc.placeholder("p", (4, 6)))
    with pytest.raises(gc.ShapeError, match="softmax_cross_entropy"):
        gc.softmax_cross_entropy(x, gc.placeholder("p", (2, 4, 5)))
    with pytest.raises(gc.DTypeError, match="softmax_cross_entropy"):
        gc.softmax_cross_entropy(x, gc.placeholder("b", (4, 5), "bool"))
    with pytest.raises(gc.DTypeError, match="softmax"):
        gc.softmax(gc.placeholder("i", (3,), "int64"))
    with pytest.raises(gc.DTypeError, match="log_softmax"):
        gc.log_softmax(gc.placeholder("i", (3,), "int32"))
    with pytest.raises(gc.ShapeError, match="softmax"):
        gc.softmax(x, axis=2)
    with pytest.raises(gc.ShapeError, match="sigmoid_cross_entropy"):
        gc.sigmoid_cross_entropy(x, gc.placeholder("t", (3,)))


def test_op_names():
    x = gc.placeholder("x", (2, 3))
    assert gc.softmax(x).op == "softmax" and gc.log_softmax(x).op == "log_softmax"
    assert gc.softmax_cross_entropy(x, [0, 1]).op == "softmax_cross_entropy"
    assert gc.sigmoid_cross_entropy(x, x).op == "sigmoid_cross_entropy"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES[::3], ids=repr)
def test_check_grad(case, dtype):
    """gc.check_grad agrees (a third of the table; float32 with its looser default tolerances)."""
    assert check_with_check_grad(case, dtype) < max_grad_error(dtype)  # the largest relative error


@pytest.mark.parametrize("bad", [-1, 3])
def test_out_of_range_labels_fail_at_run_time(bad):
    x = gc.placeholder("x", (2, 3))
    y = gc.placeholder("y", (2,), "int64")
    loss = gc.softmax_cross_entropy(x, y)
    with pytest.raises(gc.ExecutionError, match="softmax_cross_entropy"):
        run(loss, {x: np.zeros((2, 3)), y: np.array([0, bad])})


@pytest.mark.parametrize("case", CASES[::4], ids=repr)
def test_third_order(case):
    """Gradients of gradients of gradients (every fourth case of the table)."""
    check_third_order(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_second_order_unknown_sizes(case):
    """Second order where every size is unknown at build time (run-time shape references)."""
    check_second_order(case, np.float64, unknown=True)


@pytest.mark.parametrize("unknown", [False, True], ids=["known", "unknown"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_jvp(case, unknown):
    """Forward mode through the op (half of the table, sizes known and unknown)."""
    check_jvp(case, unknown)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_probability_labels_with_logits_whose_spread_overflows(dtype):
    # issue 15.5c: x - max(x) overflows to -inf for logits [0, -big, big]; a zero label times it was NaN
    big = np.finfo(dtype).max * 0.95
    x, p = gc.placeholder("x", (None, 3), dtype), gc.placeholder("p", (None, 3), dtype)
    loss = gc.softmax_cross_entropy(x, p)
    gx = gc.grad(gc.sum(loss), x)
    logits = np.array([[0.0, -big, big], [0.0, -big, big], [1.0, 2.0, 3.0]], dtype)
    labels = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], dtype)
    value, slope = gc.Session().run([loss, gx], {x: logits, p: labels})
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(slope))
    assert value[0] == 0.0
    np.testing.assert_allclose(value[1], 0.5 * big, rtol=1e-6)  # -0.5 * (0 - big) - 0.5 * (big - big)
    np.testing.assert_allclose(slope[0], [0.0, 0.0, 0.0], atol=0)
    np.testing.assert_allclose(slope[1], [-0.5, 0.0, 0.5], rtol=1e-6)
    shifted = logits[2] - logits[2].max()
    reference = -np.sum(labels[2] * (shifted - np.log(np.sum(np.exp(shifted)))))
    np.testing.assert_allclose(value[2], reference, rtol=1e-6)


def test_integer_labels_of_a_known_batch_unify_with_unknown_logits():
    # issue 15.6: labels of static shape (3,) with logits (None, 4) were refused at build time
    x, y = gc.placeholder("x", (None, 4)), gc.placeholder("y", (3,), "int64")
    loss = gc.softmax_cross_entropy(x, y)
    assert loss.shape == (3,)
    slope = gc.grad(gc.sum(loss), x)
    logits = np.arange(12.0).reshape(3, 4) / 7
    for optimize in (True, False):
        fn = gc.function([x, y], [loss, slope], optimize=optimize)
        value, grad = fn(logits, np.array([0, 3, 1]))
        np.testing.assert_allclose(value, np_sparse_xent(logits, np.array([0, 3, 1])), rtol=1e-12)
        assert grad.shape == (3, 4)
        with pytest.raises(gc.ExecutionError, match=r"labels of shape \(3,\) for logits of shape \(5, 4\)"):
            fn(np.zeros((5, 4)), np.array([0, 1, 2]))
    with pytest.raises(gc.ShapeError, match="integer labels must have shape"):
        gc.softmax_cross_entropy(gc.placeholder("x", (2, 4)), y)


def test_batches_of_different_sizes_are_a_clear_execution_error():
    # issue 15.7: NumPy's "shape mismatch: indexing arrays could not be broadcast" leaked
    x, y = gc.placeholder("x", (None, 4)), gc.placeholder("y", (None,), "int64")
    fn = gc.function([x, y], gc.softmax_cross_entropy(x, y))
    with pytest.raises(gc.ExecutionError, match="fed from batches of different sizes"):
        fn(np.zeros((5, 4)), np.array([0, 1, 2]))


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint64"])
def test_the_one_reduction_label_range_check_is_the_two_reduction_one(dtype):
    from graphc.ops.nn import _out_of_range

    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    for depth in (1, 10, 127):
        candidates = [np.array([], dtype), np.array([0], dtype), np.array([depth - 1], dtype),
                      np.array([depth], dtype) if depth <= info.max else np.array([0], dtype),
                      np.array([info.min, 0], dtype), np.array([info.max], dtype),
                      rng.integers(max(info.min, -3), min(info.max, depth + 2), 40).astype(dtype),
                      np.arange(24, dtype=dtype).reshape(4, 6)[:, 1] % depth]  # a strided view
        for labels in candidates:
            want = bool(labels.size) and bool(labels.min() < 0 or labels.max() >= depth)
            assert _out_of_range(labels, depth) == want, (labels, depth)
