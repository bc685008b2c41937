"""Every rule of every pass fires on its own small example, and the example's values are kept."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ops.shape import broadcast_like, sum_to
from graphc.passes import FUSING_PIPELINE, fold, prune, simplify, stabilize
from graphc.passes.core import _rule_name
from tests.passes.util import assert_same_values, run

x = gc.placeholder("x", (3, 4))
v = gc.placeholder("v", (4,))
u = gc.placeholder("u", (None, 4))
labels = gc.placeholder("labels", (3,), "int64")
label = gc.placeholder("label", (), "int64")

EXAMPLES = {
    "prune.identity": lambda: gc.exp(x.with_name("y")),
    "prune.composite": lambda: gc.exp(gc.layer_norm(x)),
    "simplify.conv2d_columns": lambda: gc.conv2d(gc.reshape(x, (1, 1, 3, 4)), gc.reshape(v, (1, 1, 2, 2))),
    "simplify.conv2d_weight_grad_columns": lambda: gc.grad(
        gc.sum(gc.conv2d(gc.reshape(u, (1, 1, 5, 4)), gc.reshape(x[:2, :2], (1, 1, 2, 2)), stride=(2, 1)) ** 2), x),
    "prune.stop_gradient_twice": lambda: gc.stop_gradient(gc.stop_gradient(x)),
    "stabilize.log_softmax": lambda: gc.log(gc.softmax(x)),
    "stabilize.softmax": lambda: gc.exp(x) / gc.sum(gc.exp(x), axis=1, keepdims=True),
    "stabilize.logsumexp": lambda: gc.log(gc.sum(gc.exp(x), axis=1)),
    "stabilize.log_sigmoid": lambda: gc.log(gc.sigmoid(x)),
    "stabilize.log_one_minus_sigmoid": lambda: gc.log1p(-gc.sigmoid(x)),
    "stabilize.softplus": lambda: gc.log(1.0 + gc.exp(x)),
    "stabilize.log1p": lambda: gc.log(x * x + 1.0),
    "stabilize.one_minus_sigmoid": lambda: 1.0 - gc.sigmoid(x),
    "stabilize.expm1": lambda: gc.exp(x) - 1.0,
    "stabilize.sigmoid": lambda: 1.0 / (1.0 + gc.exp(-x)),
    "stabilize.cross_entropy": lambda: gc.sum(gc.one_hot(labels, 4) * gc.log_softmax(x), axis=1),
    "stabilize.nll": lambda: gc.log_softmax(x)[gc.constant(np.arange(3)), labels],
    "stabilize.nll_take": lambda: gc.take(gc.log_softmax(v), label),
    "stabilize.where_safe_branch": lambda: gc.where(x > 0, gc.sqrt(x), 0.0),
    "simplify.mul_one": lambda: x * 1.0,
    "simplify.mul_minus_one": lambda: x * -1.0,
    "simplify.neg_times_neg": lambda: (-x) / (-gc.exp(x)),
    "simplify.div_one": lambda: x / 1.0,
    "simplify.add_zero": lambda: x + (-0.0),
    "simplify.add_neg": lambda: x + (-v),
    "simplify.add_self": lambda: gc.exp(x) + gc.exp(x) * 1.0,
    "simplify.sub_zero": lambda: x - 0.0,
    "simplify.sub_neg": lambda: x - (-v),
    "simplify.pow_small": lambda: x ** 2.0,
    "simplify.neg_neg": lambda: gc.neg(-x),
    "simplify.reshape_noop": lambda: gc.reshape(gc.reshape(x, (12,)), (3, 4)),
    "simplify.reshape_chain": lambda: gc.reshape(gc.reshape(x, (12,)), (2, 6)),
    "simplify.transpose_identity": lambda: gc.transpose(x, (0, 1)),
    "simplify.transpose_transpose": lambda: x.T.T,
    "simplify.broadcast_noop": lambda: gc.broadcast_to(x, (3, 4)),
    "simplify.broadcast_chain": lambda: gc.broadcast_to(gc.broadcast_to(v, (3, 4)), (2, 3, 4)),
    "simplify.sum_of_broadcast": lambda: sum_to(gc.broadcast_to(v, (3, 4)), v),
    "simplify.sum_nothing": lambda: gc.sum(gc.reshape(x, (3, 1, 4)), axis=1),
    "simplify.shape_noop": lambda: broadcast_like(gc.tanh(u + v), u),
    "simplify.cast_noop": lambda: gc.cast(x, "float64"),
    "simplify.where_same": lambda: gc.where(x > v, x, x),
    "simplify.where_constant": lambda: gc.where(gc.constant(True), x, v),
    "simplify.fill_like": lambda: gc.ones_like(x) * x,
    "simplify.scalar_constant": lambda: x * gc.constant(np.full((3, 4), 3.0)),
    "fold.constant": lambda: x * (gc.constant(2.0) + gc.constant(1.0)),
    "fuse.group": lambda: gc.tanh(x * v + 1.0),
    "cse.merge": lambda: gc.tanh(x) * gc.tanh(x),
    "cse.commutative_order": lambda: (x * v) - (v * x),
}

ALL_RULES = sorted({_rule_name(r) for module in (prune, stabilize, simplify, fold)
                    for rules in module.RULES.values() for r in rules} | {"fuse.group", "cse.merge",
                                                                        "cse.commutative_order"})


def test_the_catalog_covers_every_rule():
    assert sorted(EXAMPLES) == ALL_RULES


@pytest.mark.parametrize("rule", ALL_RULES)
def test_rule_fires_and_keeps_values(rule):
    y = EXAMPLES[rule]()
    out, report = gc.optimize(y, report=True, pipeline=FUSING_PIPELINE)
    assert report.rules.get(rule, 0) >= 1, report.rules
    assert out.shape == y.shape and out.dtype == y.dtype
    rng = np.random.default_rng(0)
    feeds = {x: rng.uniform(-2, 2, (3, 4)), v: rng.uniform(-2, 2, 4), u: rng.uniform(-2, 2, (5, 4)),
             labels: np.array([0, 3, 1]), label: 2}
    present = {t for t in gc.tensor.toposort([y]) if t.op == "placeholder"}
    feeds = {k: value for k, value in feeds.items() if k in present}
    assert_same_values(run([y], feeds), run([out], feeds), rtol=1e-12)
