"""gc.check_grad: agreement on right rules, loud failure on a wrong one."""

import numpy as np
import pytest

import graphc as gc


def test_passes_on_correct_gradients():
    x = gc.placeholder("x", (3,))
    w = gc.variable(np.array([0.5, -1.0, 2.0]), name="w")
    cost = gc.sum(gc.tanh(x * w) + gc.exp(-x) * w)
    error = gc.check_grad(cost, [x, w], {x: np.array([0.1, 0.2, -0.3])})
    assert 0.0 <= error < 1e-6


def test_float32_graph_is_checked_in_float64():
    x = gc.placeholder("x", (4,), dtype="float32")
    cost = gc.sum(gc.sigmoid(x) * x)
    assert gc.check_grad(cost, x, {x: np.linspace(-2, 2, 4)}) < 1e-3


def _square_forward(x):
    return x * x


def _wrong_square_grad(inputs, output, output_grad):
    (x,) = inputs
    return output_grad * x * 3.0  # should be 2x


def test_catches_a_wrong_rule_and_names_the_entry():
    wrong = gc.custom_op("wrong_square", _square_forward, _wrong_square_grad)
    x = gc.placeholder("x", (2, 2))
    cost = gc.sum(wrong(x))
    with pytest.raises(gc.GradientError, match=r"'x'.*entry \(\d, \d\)"):
        gc.check_grad(cost, x, {x: np.array([[1.0, 2.0], [3.0, 4.0]])})


def test_catches_a_subtly_wrong_rule():
    def grad(inputs, output, output_grad):
        (x,) = inputs
        return output_grad * (2.0 * x + 1e-3)

    almost = gc.custom_op("almost_square", _square_forward, grad)
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.GradientError):
        gc.check_grad(gc.sum(almost(x)), x, {x: np.array([1.0, -1.0, 0.5])})


def test_needs_a_value_for_every_input():
    x, y = gc.placeholder("x"), gc.placeholder("y")
    with pytest.raises((gc.GradientError, gc.FeedError)):
        gc.check_grad(x * y, x, {x: 1.0})


def test_returns_the_worst_relative_error():
    x = gc.placeholder("x", (2,))
    error = gc.check_grad(gc.sum(gc.square(x)), x, {x: np.array([1.0, 2.0])})
    assert error < 1e-8  # central differences are exact for quadratics up to rounding


def test_feed_dict_keyed_by_placeholder_names():
    x = gc.placeholder("x", (3,))
    assert gc.check_grad(gc.sum(gc.sin(x) * x), x, {"x": np.array([0.5, -1.0, 2.0])}) < 1e-6


def test_a_wrt_the_cost_does_not_depend_on_checks_against_zero():
    x, w = gc.placeholder("x", (3,)), gc.placeholder("w", (3, 2))
    at = {x: np.array([0.5, -1.0, 2.0])}
    assert gc.check_grad(gc.sum(x * x), [x, w], at) < 1e-6
    assert gc.check_grad(gc.sum(x * x), w, at) == 0.0
