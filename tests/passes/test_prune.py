"""Pruning: only what the outputs need; no-op nodes removed; optimized graphs stay differentiable."""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.passes.prune import prune
from graphc.tensor import toposort
from tests.passes.util import assert_same_values, count, ops_of, run


def test_identity_nodes_are_removed():
    x = gc.placeholder("x", (3,))
    y = gc.exp(x.with_name("renamed")).with_name("out")
    (z,) = prune([y])
    assert "identity" not in ops_of(z) and z.op == "exp"


def test_only_what_the_outputs_need_remains():
    x = gc.placeholder("x", (None, 4))
    w = gc.variable(np.ones((4, 2)), name="w")
    loss = gc.sum(gc.tanh(gc.matmul(x, w)))
    gw = gc.grad(loss, w)  # the matmul rule builds the input gradient too; nothing needs it
    (z,) = prune([gw])
    assert count(z, "matmul") == 2  # forward, weight gradient
    assert not any(t.is_gradient and t.shape == x.shape for t in toposort([z]))


def test_stop_gradient_is_kept_and_collapsed():
    x = gc.placeholder("x", (2,))
    y = gc.sum(gc.stop_gradient(gc.stop_gradient(x)) * x)
    (z,) = prune([y])
    assert count(z, "stop_gradient") == 1
    g = gc.grad(z, x)
    np.testing.assert_allclose(run([g], {x: np.array([1.0, 3.0])})[0], [1.0, 3.0])


def test_an_optimized_graph_can_be_differentiated_again():
    x = gc.placeholder("x", (3,))
    y = gc.sum(gc.log(gc.softmax(x * 1.0)) * gc.constant(np.array([1.0, 2.0, 3.0])))
    z = gc.optimize(y)
    g1, g2 = gc.grad(y, x), gc.grad(z, x)
    feeds = {x: np.array([1000.0, -1000.0, 0.5])}
    assert_same_values(run([g1], feeds), run([g2], feeds))
    assert np.isfinite(run([g2], feeds)[0]).all()
