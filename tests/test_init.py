"""gc.init: the initializers' shapes, fans, distributions (fixed seeds) and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc as gc

RANDOM = {
    # name: (function, variance from (fan_in, fan_out), uniform?)
    "glorot_uniform": (gc.init.glorot_uniform, lambda i, o: 2.0 / (i + o), True),
    "glorot_normal": (gc.init.glorot_normal, lambda i, o: 2.0 / (i + o), False),
    "he_uniform": (gc.init.he_uniform, lambda i, o: 2.0 / i, True),
    "he_normal": (gc.init.he_normal, lambda i, o: 2.0 / i, False),
}


def test_fans_of_dense_and_convolution_shapes():
    assert gc.init.fans((784, 128)) == (784, 128)          # x @ W: (fan_in, fan_out)
    assert gc.init.fans((16, 8, 3, 3)) == (8 * 9, 16 * 9)    # conv2d kernel (O, I, kh, kw): receptive field
    assert gc.init.fans((4, 2, 5)) == (10, 20)
    assert gc.init.fans((7,)) == (7, 7)
    assert gc.init.fans(()) == (1, 1)


@pytest.mark.parametrize("name", sorted(RANDOM))
@pytest.mark.parametrize("shape", [(300, 500), (32, 16, 5, 5)], ids=["dense", "conv"])
def test_mean_and_variance_within_five_sigma(name, shape):
    build, variance, uniform = RANDOM[name]
    values = build(shape, seed=7)
    assert values.shape == shape and values.dtype == np.float64
    expected = variance(*gc.init.fans(shape))
    n = values.size
    # the sample variance's standard error: sqrt((kurtosis - 1) / n) relative; 9/5 for a uniform, 3 for a normal
    kurtosis = 9.0 / 5.0 if uniform else 3.0
    assert abs(values.mean()) < 5.0 * math.sqrt(expected / n)
    assert abs(values.var() / expected - 1.0) < 5.0 * math.sqrt((kurtosis - 1.0) / n)
    if uniform:
        limit = math.sqrt(3.0 * expected)
        assert np.abs(values).max() <= limit
        assert np.abs(values).max() > 0.999 * limit


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_distribution_passes_a_kolmogorov_smirnov_test(name):
    stats = pytest.importorskip("scipy.stats")
    build, variance, uniform = RANDOM[name]
    values = build((200, 100), seed=3).ravel()
    scale = math.sqrt(variance(200, 100))
    if uniform:
        result = stats.kstest(values, "uniform", args=(-math.sqrt(3.0) * scale, 2.0 * math.sqrt(3.0) * scale))
    else:
        result = stats.kstest(values, "norm", args=(0.0, scale))
    assert result.pvalue > 1e-4
    # and the test can fail: the uniform draws are not normal (and vice versa)
    other = stats.kstest(values, "norm", args=(0.0, scale)) if uniform else stats.kstest(
        values, "uniform", args=(-math.sqrt(3.0) * scale, 2.0 * math.sqrt(3.0) * scale))
    assert other.pvalue < 1e-6


@pytest.mark.parametrize("name", sorted(RANDOM) + ["orthogonal"])
def test_seeds(name):
    build = getattr(gc.init, name)
    np.testing.assert_array_equal(build((5, 4), seed=1), build((5, 4), seed=1))
    assert not np.array_equal(build((5, 4), seed=1), build((5, 4), seed=2))
    assert not np.array_equal(build((5, 4)), build((5, 4)))  # seed=None: fresh values
    generator = np.random.default_rng(5)
    first, second = build((5, 4), seed=generator), build((5, 4), seed=generator)
    assert not np.array_equal(first, second)  # a Generator advances
    np.testing.assert_array_equal(first, build((5, 4), seed=np.random.default_rng(5)))


@pytest.mark.parametrize("name", sorted(RANDOM) + ["orthogonal"])
def test_dtype_and_errors(name):
    build = getattr(gc.init, name)
    assert build((3, 2), seed=0, dtype="float32").dtype == np.float32
    with pytest.raises(TypeError, match="floating-point dtype"):
        build((3, 2), dtype="int64")
    with pytest.raises(ValueError, match="non-negative ints"):
        build((3, -2))
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        build(None)
    with pytest.raises(TypeError, match="seed must be None"):
        build((3, 2), seed="abc")
    assert build((0, 3), seed=0).shape == (0, 3)


def test_orthogonal_tall_wide_gain_and_kernels():
    tall = gc.init.orthogonal((50, 20), seed=0)
    np.testing.assert_allclose(tall.T @ tall, np.eye(20), atol=1e-12)
    wide = gc.init.orthogonal((20, 50), gain=2.0, seed=0)
    np.testing.assert_allclose(wide @ wide.T, 4.0 * np.eye(20), atol=1e-12)
    square = gc.init.orthogonal((16, 16), seed=1)
    np.testing.assert_allclose(square @ square.T, np.eye(16), atol=1e-12)
    kernel = gc.init.orthogonal((8, 2, 3, 3), seed=0)      # 8 rows of 18 columns: the rows are orthonormal
    flat = kernel.reshape(8, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(8), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        gc.init.orthogonal((5,))
    with pytest.raises(TypeError, match="gain must be a finite number"):
        gc.init.orthogonal((3, 3), gain=float("inf"))


def test_orthogonal_is_haar_distributed():
    # without the sign fix, QR's Q has a positive-biased diagonal; with it, each entry has mean 0
    diagonals = np.array([np.diag(gc.init.orthogonal((4, 4), seed=k)) for k in range(400)])
    assert np.all(np.abs(diagonals.mean(axis=0)) < 5.0 * 0.5 / math.sqrt(400))


def test_zeros_and_ones():
    assert gc.init.zeros((2, 3)).dtype == np.float64 and not gc.init.zeros((2, 3)).any()
    assert gc.init.ones(4, dtype="float32").dtype == np.float32
    np.testing.assert_array_equal(gc.init.ones((2,)), [1.0, 1.0])
    assert gc.init.zeros((3,), dtype="int64").dtype == np.int64
    with pytest.raises(ValueError, match="non-negative ints"):
        gc.init.zeros((1.5,))


def test_initial_values_go_into_variables():
    w = gc.variable(gc.init.he_normal((64, 32), seed=0), name="W")
    b = gc.variable(gc.init.zeros(32), name="b")
    x = gc.placeholder("x", shape=(None, 64))
    out = gc.function([x], gc.relu(x @ w + b))(np.ones((2, 64)))
    assert out.shape == (2, 32)
