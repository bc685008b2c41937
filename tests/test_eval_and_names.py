"""Tensor.eval, Tensor.with_name, and the names gc.grad gives gradients (d(cost)/d(wrt))."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

# ---- eval ----------------------------------------------------------------------------------

def test_eval_is_session_run():
    x = gc.placeholder("x", shape=(None, 2))
    w = gc.variable(np.array([[1.0], [2.0]]), name="w")
    y = x @ w
    batch = np.array([[1.0, 1.0], [2.0, 0.0]])
    np.testing.assert_array_equal(y.eval({x: batch}), gc.Session().run(y, {x: batch}))
    np.testing.assert_array_equal(y.eval({"x": batch}), [[3.0], [2.0]])  # feeds by name too
    assert gc.sum(w).eval() == 3.0                                         # no feeds needed
    assert w.eval()[1, 0] == 2.0 and gc.constant(4.0).eval() == 4.0
    w.set_value(np.array([[0.0], [1.0]]))
    assert gc.sum(w).eval() == 1.0                                         # the current value


def test_eval_results_are_fresh_and_errors_are_the_sessions():
    w = gc.variable(np.ones(3), name="w")
    value = w.eval()
    value[:] = 5.0                              # never the variable's storage
    assert w.value[0] == 1.0
    x = gc.placeholder("x", shape=(2,))
    with pytest.raises(gc.FeedError, match="'x'"):
        (x * 2.0).eval()
    with pytest.raises(gc.FeedError, match=r"shape \(3,\)"):
        (x * 2.0).eval({x: np.ones(3)})


def test_eval_is_installed_by_the_session_module():
    import graphc.session

    assert gc.Tensor.eval is graphc.session._tensor_eval
    assert "Session().run" in gc.Tensor.eval.__doc__


# ---- with_name -----------------------------------------------------------------------------

def test_with_name_is_the_same_value_under_a_name():
    x = gc.placeholder("x", shape=(3,))
    y = gc.exp(x)
    named = y.with_name("activation")
    assert named.name == "activation" and named is not y and y.name is None
    assert named.op == "identity" and named.inputs == (y,)
    np.testing.assert_array_equal(named.eval({x: np.zeros(3)}), np.ones(3))
    assert "'activation'" in gc.debugprint(named)
    assert "activation" in gc.to_dot(named)


# ---- gradient names ------------------------------------------------------------------------

def test_gradients_are_named_after_cost_and_wrt():
    x = gc.placeholder("x", shape=(None, 3))
    w = gc.variable(np.ones((3, 2)), name="W")
    b = gc.variable(np.zeros(2), name="b")
    loss = gc.mean(gc.square(gc.tanh(x @ w + b))).with_name("loss")
    grad_w, grad_b = gc.grad(loss, [w, b])
    assert grad_w.name == "d(loss)/d(W)" and grad_b.name == "d(loss)/d(b)"
    assert grad_w.is_gradient
    assert gc.grad(loss, w).name == "d(loss)/d(W)"             # a single wrt as well
    assert gc.grad(loss, x).name == "d(loss)/d(x)"             # placeholders have names too
    text = gc.debugprint([grad_w, grad_b])
    assert "'d(loss)/d(W)'" in text and "'d(loss)/d(b)'" in text
    dot = gc.to_dot([grad_w, grad_b])
    assert "d(loss)/d(W)" in dot and "d(loss)/d(b)" in dot
    # the name stays on the node the optimizer keeps: it shows in the compiled step too
    step = gc.function([x], loss, updates={w: w - 0.1 * grad_w, b: b - 0.1 * grad_b})
    assert "'d(loss)/d(W)'" in step.debugprint()
    assert "d(loss)/d(W)" in step.to_dot()


def test_renaming_does_not_change_the_gradient_values():
    x = gc.placeholder("x", shape=(4,))
    w = gc.variable(np.array([0.5, -1.0, 2.0, 0.0]), name="W")
    loss = gc.sum(gc.sin(w * x)).with_name("loss")
    grad_w = gc.grad(loss, w)
    x_value = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(grad_w.eval({x: x_value}), x_value * np.cos(w.value * x_value), rtol=1e-15)
    assert gc.check_grad(loss, [w], {x: x_value}) < 1e-6
    second = gc.grad(gc.sum(grad_w * grad_w).with_name("g2"), w)  # named gradients differentiate again
    assert second.name == "d(g2)/d(W)"
    expected = 2.0 * x_value * np.cos(w.value * x_value) * -x_value * x_value * np.sin(w.value * x_value)
    np.testing.assert_allclose(second.eval({x: x_value}), expected, rtol=1e-12)


def test_unnamed_costs_or_wrt_give_unnamed_gradients():
    w = gc.variable(np.ones(2), name="W")
    v = gc.variable(np.ones(2))
    unnamed_cost = gc.sum(w * v)
    assert gc.grad(unnamed_cost, w).name is None           # an unnamed cost: no name is made up
    named_cost = unnamed_cost.with_name("cost")
    assert gc.grad(named_cost, v).name is None             # an unnamed wrt
    assert gc.grad(named_cost, w).name == "d(cost)/d(W)"


def test_names_on_special_gradients():
    w = gc.variable(np.ones(2), name="W")
    other = gc.variable(np.ones(2), name="other")
    cost = gc.sum(w).with_name("cost")
    zero = gc.grad(cost, other)                               # disconnected: zeros, still named
    assert zero.name == "d(cost)/d(other)"
    np.testing.assert_array_equal(zero.eval(), [0.0, 0.0])
    itself = gc.grad(cost, cost)                              # d(cost)/d(cost) = 1
    assert itself.name == "d(cost)/d(cost)" and itself.eval() == 1.0
    already = gc.sum(w * w).with_name("square")
    assert gc.grad(already, w).name == "d(square)/d(W)"
