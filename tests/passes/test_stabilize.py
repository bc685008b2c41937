"""Stabilization: every hand-written fragile pattern, its value and its gradient at logits of +-1000."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.passes.stabilize import stabilize
from graphc.tensor import toposort
from tests.passes.util import count, ops_of, run

LOGITS = np.array([[1000.0, -1000.0, 0.0, 3.0], [-1000.0, -999.0, 1000.0, 1000.0]])


def _log_softmax(v):
    shifted = v - v.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _softplus(v):
    return np.logaddexp(v, 0)


def _sigmoid(v):
    return np.exp(-np.logaddexp(0, -v))


# name: (naive builder, stable builder, the op the stable form contains, reference value)
CASES = {
    "log_softmax": (lambda x: gc.log(gc.softmax(x)), lambda x: gc.log_softmax(x), "log_softmax", _log_softmax),
    "log_softmax_by_hand": (lambda x: gc.log(gc.exp(x) / gc.sum(gc.exp(x), axis=-1, keepdims=True)),
                            lambda x: gc.log_softmax(x), "log_softmax", _log_softmax),
    "logsumexp": (lambda x: gc.log(gc.sum(gc.exp(x), axis=-1)), lambda x: gc.logsumexp(x, axis=-1), "logsumexp",
                  lambda v: np.log(np.exp(v - v.max(-1, keepdims=True)).sum(-1)) + v.max(-1)),
    "log_sigmoid": (lambda x: gc.log(gc.sigmoid(x)), lambda x: -gc.softplus(-x), "softplus",
                    lambda v: -_softplus(-v)),
    "log_one_minus_sigmoid": (lambda x: gc.log(1.0 - gc.sigmoid(x)), lambda x: -gc.softplus(x), "softplus",
                              lambda v: -_softplus(v)),
    "log1p_one_minus_sigmoid": (lambda x: gc.log1p(-gc.sigmoid(x)), lambda x: -gc.softplus(x), "softplus",
                                lambda v: -_softplus(v)),
    "one_minus_sigmoid_times_x": (lambda x: (1.0 - gc.sigmoid(x)) * x, lambda x: gc.sigmoid(-x) * x, "sigmoid",
                                  lambda v: _sigmoid(-v) * v),
    "sigmoid_cross_entropy_by_hand": (
        lambda x: -(0.3 * gc.log(gc.sigmoid(x)) + 0.7 * gc.log(1.0 - gc.sigmoid(x))),
        lambda x: gc.sigmoid_cross_entropy(x, gc.constant(np.full(LOGITS.shape, 0.3))), "softplus",
        lambda v: 0.3 * _softplus(-v) + 0.7 * _softplus(v)),
    "softplus": (lambda x: gc.log(1.0 + gc.exp(x)), gc.softplus, "softplus", _softplus),
    "softplus_right": (lambda x: gc.log(gc.exp(x) + 1.0), gc.softplus, "softplus", _softplus),
    "softplus_log1p": (lambda x: gc.log1p(gc.exp(x)), gc.softplus, "softplus", _softplus),
    "sigmoid_by_hand": (lambda x: 1.0 / (1.0 + gc.exp(-x)), gc.sigmoid, "sigmoid", _sigmoid),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stabilized_value_structure_and_gradient_at_1000(name):
    naive_of, stable_of, stable_op, reference = CASES[name]
    x = gc.placeholder("x", LOGITS.shape)
    naive = naive_of(x)
    w = gc.constant(np.linspace(-1.0, 1.0, naive.size).reshape(naive.shape))
    cost = gc.sum(naive * w)
    grad = gc.grad(cost, x)  # the grad driver differentiates the stabilized form
    (stable,) = stabilize([naive])
    assert stable_op in ops_of(stable)
    assert count(stable, "log") == 0 and stable.shape == naive.shape and stable.dtype == naive.dtype
    expected_grad = run([gc.grad(gc.sum(stable_of(x) * w), x)], {x: LOGITS})[0]
    for optimize in (False, True):
        value, g = run([naive, grad], {x: LOGITS}, optimize=optimize)
        if optimize:
            np.testing.assert_allclose(value, reference(LOGITS), rtol=1e-12, atol=1e-300)
        assert np.all(np.isfinite(g)), g
        np.testing.assert_allclose(g, expected_grad, rtol=1e-12, atol=1e-300)


def test_naive_value_is_repaired_only_when_optimized():
    x = gc.placeholder("x", LOGITS.shape)
    naive = gc.log(gc.softmax(x))
    assert np.isinf(run([naive], {x: LOGITS})[0]).any()  # as built: log(0) = -inf
    assert np.isfinite(run([naive], {x: LOGITS}, optimize=True)[0]).all()


def test_log1p_and_expm1_at_tiny_and_huge_inputs():
    x = gc.placeholder("x", (4,))
    values = np.array([1e-20, -1e-17, 1000.0, -1000.0])
    y1, y2 = gc.log(1.0 + x), gc.exp(x) - 1.0
    z1, z2 = stabilize([y1, y2])
    assert z1.op == "log1p" and z2.op == "expm1"
    (z3,) = stabilize([gc.exp(x) + (-1.0)])
    assert z3.op == "expm1"
    (z4,) = stabilize([gc.log(1.0 - x)])
    assert z4.op == "log1p" and z4.inputs[0].op == "neg"
    tiny = {x: np.array([1e-20, -1e-17, 0.5, -0.5])}
    np.testing.assert_allclose(run([z4], tiny)[0], np.log1p(-tiny[x]), rtol=1e-15)
    small = values.copy()
    small[2:] = [0.5, -0.5]
    a, b = run([y1, y2], {x: small}, optimize=True)
    np.testing.assert_allclose(a, np.log1p(small), rtol=1e-15)
    np.testing.assert_allclose(b, np.expm1(small), rtol=1e-15)
    g1, g2 = gc.grad(gc.sum(y1), x), gc.grad(gc.sum(y2), x)
    r1, r2 = run([g1, g2], {x: values})
    np.testing.assert_allclose(r1[:2], 1 / (1 + values[:2]), rtol=1e-15)
    assert np.isfinite(r1).all() and r2[3] == 0.0 and np.isinf(r2[2])  # exp(1000) really is inf


def test_negative_log_likelihood_by_hand_becomes_cross_entropy():
    x = gc.placeholder("x", LOGITS.shape)
    labels = gc.placeholder("labels", (2,), "int64")
    rows = gc.constant(np.arange(2))
    naive = gc.mean(-gc.log(gc.softmax(x))[rows, labels])
    g = gc.grad(naive, x)
    (stable,) = stabilize([naive])
    assert "softmax_cross_entropy" in ops_of(stable) and "getitem" not in ops_of(stable)
    feed = {x: LOGITS, labels: np.array([1, 3])}
    expected = -_log_softmax(LOGITS)[[0, 1], [1, 3]].mean()
    probs = np.exp(_log_softmax(LOGITS))
    onehot = np.eye(4)[[1, 3]]
    for optimize in (False, True):
        value, grad = run([naive, g], feed, optimize=optimize)
        if optimize:
            np.testing.assert_allclose(value, expected, rtol=1e-12)
        np.testing.assert_allclose(grad, (probs - onehot) / 2, rtol=1e-12, atol=1e-300)



@pytest.mark.parametrize(("logits", "probs"), [((2, 1), (2, 4)), ((2, 4), (2, 1)), ((2, None), (2, 4))])
def test_cross_entropy_by_hand_broadcast_along_the_classes_keeps_its_gradient(logits, probs):
    # sum(p * log_softmax(x)) with p or x broadcast along the class axis is not a cross-entropy
    # primitive (whose labels match the logits along that axis): left as it is, values and gradients agree
    x = gc.placeholder("x", logits)
    p = gc.placeholder("p", probs)
    cost = -gc.sum(gc.sum(p * gc.log_softmax(x), axis=1))
    (stable,) = stabilize([cost])
    if logits != probs:
        assert "softmax_cross_entropy" not in ops_of(stable)
    r = np.random.default_rng(0)
    xv = r.standard_normal((2, logits[1] or 4))
    pv = r.random((2, probs[1]))
    lsm = _log_softmax(xv)
    expected_gp = -np.broadcast_to(lsm, np.broadcast_shapes(lsm.shape, pv.shape)).sum(1, keepdims=True) \
        if probs[1] == 1 else -np.broadcast_to(lsm, pv.shape)
    full = np.broadcast_to(pv, np.broadcast_shapes(xv.shape, pv.shape))
    expected_gx = -(full - full.sum(1, keepdims=True) * np.exp(lsm))
    if logits[1] == 1:  # log_softmax over one class is 0 whatever x is
        expected_gx = np.zeros_like(xv)
    gx, gp = gc.grad(cost, [x, p])
    for optimize in (False, True):
        got_gx, got_gp = run([gx, gp], {x: xv, p: pv}, optimize=optimize)
        np.testing.assert_allclose(got_gp, expected_gp, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got_gx, expected_gx, rtol=1e-12, atol=1e-15)


def test_one_hot_cross_entropy_by_hand():
    x = gc.placeholder("x", LOGITS.shape)
    labels = gc.placeholder("labels", (2,), "int64")
    naive = -gc.sum(gc.one_hot(labels, 4) * gc.log(gc.softmax(x)), axis=-1)
    g = gc.grad(gc.sum(naive), x)
    (stable,) = stabilize([naive])
    assert "softmax_cross_entropy" in ops_of(stable)
    feed = {x: LOGITS, labels: np.array([0, 2])}
    expected = -_log_softmax(LOGITS)[[0, 1], [0, 2]]
    value, grad = run([naive, g], feed, optimize=True)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert np.isfinite(run([g], feed)[0]).all()
    np.testing.assert_allclose(grad, np.exp(_log_softmax(LOGITS)) - np.eye(4)[[0, 2]], atol=1e-300)


@pytest.mark.parametrize("branch, point", [
    (lambda x: gc.sqrt(x), 0.0),
    (lambda x: gc.log(x), -1.0),
    (lambda x: 1.0 / x, 0.0),
    (lambda x: 2.0 * gc.log(x) + 1.0, 0.0),
    (lambda x: x ** 0.5, 0.0),
])
def test_where_unselected_branch_does_not_poison_the_gradient(branch, point):
    x = gc.placeholder("x", (3,))
    y = gc.where(x > 0, branch(x), gc.constant(0.0))
    g = gc.grad(gc.sum(y), x)
    values = np.array([point, 4.0, -2.0])
    for optimize in (False, True):
        value, grad = run([y, g], {x: values}, optimize=optimize)
        assert value[0] == 0.0 and value[2] == 0.0
        assert np.all(np.isfinite(grad)) and grad[0] == 0.0 and grad[2] == 0.0
    expected = run([gc.grad(gc.sum(branch(x)), x)], {x: np.array([1.0, 4.0, 1.0])})[0][1]
    np.testing.assert_allclose(grad[1], expected, rtol=1e-12)


def test_where_overflowing_exp_branch_at_1000():
    x = gc.placeholder("x", (3,))
    y = gc.where(x < 100.0, gc.exp(x), x)  # exp(1000) = inf where not selected
    g = gc.grad(gc.sum(y), x)
    value, grad = run([y, g], {x: np.array([1000.0, 0.0, -1000.0])})
    np.testing.assert_allclose(value, [1000.0, 1.0, 0.0])
    np.testing.assert_allclose(grad, [1.0, 1.0, 0.0])


def test_where_with_inf_constant_branch_keeps_value_and_gradient():
    x = gc.placeholder("x", (3,))
    y = gc.where(x > 0, x * 2.0, gc.constant(np.inf))
    g = gc.grad(gc.sum(gc.where(x > 0, y, 0.0)), x)
    value, grad = run([y, g], {x: np.array([1.0, -1.0, 2.0])}, optimize=True)
    assert np.isinf(value[1])
    np.testing.assert_allclose(grad, [2.0, 0.0, 2.0])


def test_gradient_with_respect_to_an_intermediate_is_not_rewritten_away():
    x = gc.placeholder("x", (4,))
    s = gc.softmax(x)
    cost = gc.sum(gc.log(s))
    gs, gx = gc.grad(cost, [s, x])
    value = np.array([0.1, 0.2, -0.3, 1.0])
    got_s, got_x = run([gs, gx], {x: value}, optimize=True)
    p = np.exp(_log_softmax(value))
    np.testing.assert_allclose(got_s, 1 / p, rtol=1e-12)
    np.testing.assert_allclose(got_x, 1 - 4 * p, rtol=1e-12, atol=1e-15)


def test_stabilize_changes_nothing_without_patterns():
    x = gc.placeholder("x", (3,))
    y = gc.log(x) + gc.exp(x) * 2.0
    (z,) = stabilize([y])
    assert z is y


@pytest.mark.parametrize("form", ["ellipsis", "slice_negative", "one_example", "take", "negated_first"])
def test_picked_log_softmax_forms_become_cross_entropy(form):
    x2 = gc.placeholder("x2", LOGITS.shape)
    x1 = gc.placeholder("x1", (4,))
    label = gc.placeholder("label", (), "int64")
    rows, labels = gc.constant(np.arange(2)), gc.placeholder("labels", (2,), "int64")
    build = {
        "ellipsis": (lambda: -gc.log(gc.softmax(x2))[..., 2], x2, lambda lp: -lp[:, 2]),
        "slice_negative": (lambda: -gc.log(gc.softmax(x2))[:, -1], x2, lambda lp: -lp[:, -1]),
        "one_example": (lambda: -gc.log(gc.softmax(x1))[label], x1, lambda lp: -lp[1]),
        "take": (lambda: -gc.take(gc.log(gc.softmax(x1)), label), x1, lambda lp: -lp[1]),
        "negated_first": (lambda: (-gc.log(gc.softmax(x2)))[rows, labels], x2, lambda lp: -lp[[0, 1], [3, 0]]),
    }
    make, x, reference = build[form]
    naive = make()
    feeds = {x2: LOGITS, x1: LOGITS[1], label: 1, labels: np.array([3, 0])}
    feeds = {k: v for k, v in feeds.items() if k in set(toposort([naive]))}
    (stable,) = stabilize([naive])
    assert "softmax_cross_entropy" in ops_of(stable) and "log" not in ops_of(stable)
    value = run([naive], feeds, optimize=True)[0]
    value_lp = _log_softmax(feeds[x])
    np.testing.assert_allclose(value, reference(value_lp), rtol=1e-12)
    grad = run([gc.grad(gc.sum(naive), x)], feeds)[0]
    assert np.isfinite(grad).all()
    expected = run([gc.grad(gc.sum(stable), x)], feeds)[0]
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-300)


def _ops_with_domain_guards():
    from graphc.op import REGISTRY

    return sorted(name for name, cls in REGISTRY.items()
                  if cls.__module__.startswith("graphc.") and cls.elementwise and cls.domain is not None)


@pytest.mark.parametrize("name", _ops_with_domain_guards())
def test_every_declared_domain_guard_keeps_where_gradients_clean(name):
    """where(x == safe, f(x), 0): the unselected entries (outside f's domain, or overflowing) give 0, not NaN."""
    from graphc.op import REGISTRY

    cls = REGISTRY[name]
    position, safe = cls.domain
    x = gc.placeholder("x", (5,))
    other = gc.constant(1.5)
    try:
        branch = cls()(x)
        assert position == 0
    except (TypeError, ValueError, gc.ShapeError):
        branch = cls()(*[x if k == position else other for k in range(2)])
    y = gc.where(gc.equal(x, safe), branch, 0.0)
    g = gc.grad(gc.sum(y), x)
    values = np.array([-2.0, 0.0, 1000.0, safe, -1000.0])
    with np.errstate(all="ignore"):
        got = gc.Session().run(g, {x: values})
    assert np.all(np.isfinite(got)), (name, got)
    np.testing.assert_array_equal(got[values != safe], 0.0)
    plain = gc.Session().run(gc.grad(gc.sum(branch), x), {x: np.full(5, safe)})
    np.testing.assert_array_equal(got[values == safe], plain[0])  # the selected entries keep their gradient
