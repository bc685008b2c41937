"""The numba backend's sparse cross-entropy loss and gradient (``graphc/compile/numba_loss.py``): bit for bit
the NumPy backend's values and errors. Skipped without numba (an optional extra)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compile import numba_loss
from graphc.compile.lowering import LossAndGradient
from graphc.ops import nn

pytest.importorskip("numba")


def _loss_and_gradient(classes: int, dtype: str, labels_dtype: str, backend: str, batch: int | None = None):
    z = gc.placeholder("z", (batch, classes), dtype)
    labels = gc.placeholder("labels", (batch,), labels_dtype)
    loss = gc.mean(gc.softmax_cross_entropy(z, labels))
    (grad,) = gc.grad(loss, [z])
    return gc.function([z, labels], [loss, grad], backend=backend)


def _outcome(fn, logits, labels):
    """The function's results, or its error's type and message (a tuple)."""
    try:
        with np.errstate(all="ignore"):
            return list(fn(logits, labels))
    except gc.ExecutionError as exc:
        return type(exc), str(exc)


def _assert_same_outcome(fast, slow, logits, labels) -> None:
    got, want = _outcome(fast, logits, labels), _outcome(slow, logits, labels)
    if isinstance(want, tuple):  # the same error, naming the loss node and its line
        assert got == want
        return
    for a, b in zip(got, want, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (a, b)


def _wild(rng, shape, dtype: str) -> np.ndarray:
    """Logits of NaN (of other signs and payloads), +-inf, +-0, huge, subnormal and ordinary values."""
    tiny = np.finfo(dtype).smallest_subnormal
    bits = {"float64": (0x7FF8000000000001, 0xFFF8000000000ABC), "float32": (0x7FC00001, 0xFFC00ABC)}[dtype]
    nans = np.array(bits, f"u{np.dtype(dtype).itemsize}").view(dtype)
    odd = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e308, 3e38, tiny, -tiny, 1.5, -40.0])
    with np.errstate(over="ignore"):
        logits = rng.choice(odd, shape).astype(dtype)
    if logits.size:
        logits.flat[rng.integers(0, logits.size, 2 * len(nans))] = np.tile(nans, 2)
    return logits


def _zero_maxima(rng, shape, dtype: str) -> np.ndarray:
    """Rows whose maximum is +0 or -0 (NumPy's maximum picks either, in its own order), or -inf."""
    return rng.choice(np.array([-0.0, 0.0, -1.0, -np.inf], dtype), shape)


def test_the_numba_plan_runs_the_numba_step():
    for backend, impl in (("numba", numba_loss.loss_and_gradient), ("numpy", nn.sparse_cross_entropy_and_gradient)):
        steps = [n.primitive for n in _loss_and_gradient(10, "float32", "int64", backend).plan.steps]
        assert [type(op) for op in steps].count(LossAndGradient) == 1
        assert [op.impl for op in steps if type(op) is LossAndGradient] == [impl]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("classes", "labels_dtype"), [(1, "uint8"), (2, "int32"), (10, "uint8"), (1000, "int64")])
def test_values_are_the_numpy_backends_bit_for_bit(rng, dtype, classes, labels_dtype):
    fast, slow = (_loss_and_gradient(classes, dtype, labels_dtype, backend) for backend in ("numba", "numpy"))
    for batch in (0, 1, 2, 32, 1000):
        labels = rng.integers(0, classes, batch).astype(labels_dtype)
        shape = (batch, classes)
        for logits in (rng.standard_normal(shape).astype(dtype) * 30, _wild(rng, shape, dtype),
                       _zero_maxima(rng, shape, dtype), np.full(shape, -0.0, dtype), np.full(shape, 7.0, dtype)):
            _assert_same_outcome(fast, slow, logits, labels)
            _assert_same_outcome(fast, slow, np.asfortranarray(logits), labels)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("labels_dtype", ["int64", "int32", "uint8"])
def test_bad_labels_raise_the_numpy_backends_error(rng, dtype, labels_dtype):
    fast, slow = (_loss_and_gradient(10, dtype, labels_dtype, backend) for backend in ("numba", "numpy"))
    logits = rng.standard_normal((5, 10)).astype(dtype)
    bad_values = (10, 200) if labels_dtype == "uint8" else (10, -1, -(2 ** 31))
    for bad in bad_values:
        for row in (0, 4):
            labels = np.array([1, 2, 3, 4, 5], labels_dtype)
            labels[row] = bad
            labels[2] = bad_values[-1]  # the first bad one in the message
            _assert_same_outcome(fast, slow, logits, labels)
    assert isinstance(_outcome(fast, logits, np.array([0, 1, 10, 2, 3], labels_dtype)), tuple)


def test_batches_that_differ_and_a_static_batch_are_the_numpy_backends(rng):
    fast, slow = (_loss_and_gradient(4, "float64", "int64", backend) for backend in ("numba", "numpy"))
    for logits, labels in ((rng.standard_normal((3, 4)), np.array([0, 1])), (rng.standard_normal((3, 4)), [2]),
                           (rng.standard_normal((1, 4)), np.array([0, 3, 2]))):
        _assert_same_outcome(fast, slow, logits, labels)
    fast, slow = (_loss_and_gradient(10, "float32", "int64", backend, batch=32) for backend in ("numba", "numpy"))
    for logits in (rng.standard_normal((32, 10)).astype("float32"), _wild(rng, (32, 10), "float32")):
        _assert_same_outcome(fast, slow, logits, rng.integers(0, 10, 32))


def test_the_function_alone_matches_numpys_on_arrays_no_plan_makes(rng):
    # float16 logits, a label view with strides, a batch of labels that differs: NumPy's way, the same values
    for logits, labels in ((rng.standard_normal((6, 3)).astype("float16"), np.arange(6) % 3),
                           (rng.standard_normal((6, 3)), (np.arange(12) % 3)[::2]),
                           (rng.standard_normal((1, 3)), np.arange(3))):
        got, want = numba_loss.loss_and_gradient(logits, labels), nn.sparse_cross_entropy_and_gradient(logits, labels)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_function_matches_numpys_over_many_shapes(rng, dtype):
    # rows whose maximum is a zero of either sign, -inf or +inf rows, subnormals, huge values: the kernel's
    # maxima, found in its own order, give NumPy's results
    tiny = np.finfo(dtype).smallest_subnormal
    pools = (np.array([-0.0, 0.0, -1.0, -np.inf]), np.array([-0.0, 0.0, -1.0, -np.inf, np.inf, 2.0, -3e38, 1e308]),
             np.array([tiny, -tiny, 0.0, -0.0]))
    for classes in [*range(1, 40), 64, 127, 128, 129, 257, 1031]:
        for rows in (1, 3, 17):
            labels = rng.integers(0, classes, rows).astype("int16")
            for pool in pools:
                with np.errstate(over="ignore"):
                    logits = rng.choice(pool, (rows, classes)).astype(dtype)
                with np.errstate(all="ignore"):
                    got = numba_loss.loss_and_gradient(logits, labels)
                    want = nn.sparse_cross_entropy_and_gradient(logits, labels)
                for a, b in zip(got, want, strict=True):
                    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (classes, rows, pool)
