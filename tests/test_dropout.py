"""gc.dropout: the mask, scaling, switching training off without recompiling, its gradient."""

import math

import numpy as np
import pytest

import graphc as gc


def test_identity_when_not_training_or_rate_zero():
    gen = gc.random.Generator(0)
    x = gc.placeholder("x", (None, 3))
    assert gc.dropout(x, 0.5, gen, training=False) is x
    assert gc.dropout(x, 0.0, gen) is x
    assert int(gen.state.value) == 0


def test_mask_scaling_and_fresh_masks():
    gen = gc.random.Generator(1)
    x = gc.placeholder("x", (None, 200))
    out = gc.dropout(x, 0.25, gen)
    fn = gc.function([x], out)
    data = np.full((50, 200), 2.0)
    first, second = fn(data), fn(data)
    assert first.shape == (50, 200)
    assert set(np.unique(first)) == {0.0, 2.0 / 0.75}
    kept = np.mean(first != 0)
    n = first.size
    assert abs(kept - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)
    assert abs(first.mean() - 2.0) < 5 * (2.0 / 0.75) * math.sqrt(0.75 * 0.25 / n)  # the expectation is kept
    assert not np.array_equal(first, second)
    assert fn(np.ones((3, 200))).shape == (3, 200)  # the mask follows the batch size at run time


def test_rate_one_drops_everything_and_float32_stays_float32():
    gen = gc.random.Generator(2)
    x = gc.placeholder("x", (4,), dtype="float32")
    out = gc.dropout(x, 1.0, gen)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(gc.function([x], out)(np.ones(4, np.float32)), np.zeros(4, np.float32))
    half = gc.function([x], gc.dropout(x, 0.5, gen))(np.ones(4, np.float32))
    assert half.dtype == np.float32 and set(np.unique(half)) <= {0.0, 2.0}


def test_training_switch_is_a_tensor_without_recompiling():
    gen = gc.random.Generator(3)
    x = gc.placeholder("x", (None, 10))
    training = gc.placeholder("training", (), dtype=bool)
    fn = gc.function([x, training], gc.dropout(x, 0.5, gen, training=training))
    data = np.arange(1.0, 41.0).reshape(4, 10)
    np.testing.assert_array_equal(fn(data, False), data)
    trained = fn(data, True)
    assert np.all((trained == 0) | (trained == 2 * data)) and np.any(trained == 0)
    mode = gc.variable(True, name="training")
    step = gc.function([x], gc.dropout(x, 0.5, gen, training=mode))
    assert np.any(step(data) == 0)
    mode.set_value(False)
    np.testing.assert_array_equal(step(data), data)


def test_gradient_uses_the_forward_mask():
    gen = gc.random.Generator(4)
    x = gc.variable(np.linspace(0.5, 2.0, 12).reshape(3, 4), name="x")
    out = gc.dropout(x, 0.4, gen)
    weights = gc.constant(np.arange(12.0).reshape(3, 4))
    loss = gc.sum(out * weights)
    gx = gc.grad(loss, x)
    value, gradient = gc.function([], [out, gx])()
    mask = value != 0
    assert mask.any() and not mask.all()
    np.testing.assert_allclose(gradient, np.where(mask, np.arange(12.0).reshape(3, 4) / 0.6, 0.0), rtol=1e-14)
    # central differences with the generator's state fixed at the analytic run's counter
    assert gc.check_grad(loss, x) < 1e-6
    training = gc.placeholder("training", (), dtype=bool)
    switched = gc.sum(gc.dropout(x, 0.4, gen, training=training) * weights)
    assert gc.check_grad(switched, x, {training: True}) < 1e-6
    assert gc.check_grad(switched, x, {training: False}) < 1e-6


def test_bad_arguments():
    gen = gc.random.Generator(0)
    x = gc.placeholder("x", (3,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gc.dropout(x, 1.5, gen)
    with pytest.raises(TypeError, match="Generator"):
        gc.dropout(x, 0.5, np.random.default_rng(0))
    with pytest.raises(gc.DTypeError, match="floating"):
        gc.dropout(gc.placeholder("i", (3,), dtype="int64"), 0.5, gen)
    with pytest.raises(gc.DTypeError, match="bool"):
        gc.dropout(x, 0.5, gen, training=gc.placeholder("t", ()))
    with pytest.raises(TypeError, match="training"):
        gc.dropout(x, 0.5, gen, training="yes")
