"""What the optimizer does to a training step: the graph before and after, and its report.

``gc.grad`` appends gradient nodes mechanically: seeds of ones, broadcasts, repeated
subexpressions, casts that do nothing. ``gc.optimize(outputs, report=True)`` rewrites the graph
(pruning, constant folding, common-subexpression elimination, exact simplification,
stabilization, fusion) and returns a report of what fired. ``gc.function`` and ``gc.Session``
do this by default; ``optimize=False`` runs the graph as built.

Part 1: a 3-layer MLP step with weight decay: node counts before/after, the report, and the
        matrix products left (the 8 that backprop by hand needs).
Part 2: a loss written naively, ``-log(softmax(x))`` picked at the label: at logits of +-1000 the
        graph as built gives NaN, the optimized one gives the right finite value and gradient.

Run:  python examples/optimizer_report.py
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

import graphc as gc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import draw, out_dir  # noqa: E402


def op_counts(outputs) -> collections.Counter:
    """How many nodes of each op the graph computing ``outputs`` has (from the networkx export)."""
    return collections.Counter(op for _, op in gc.to_networkx(outputs).nodes(data="op"))


def mlp_step(sizes=(64, 32, 32, 10), lam: float = 1e-4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", shape=(None, sizes[0]))
    y = gc.placeholder("y", shape=(None,), dtype="int64")
    weights = [gc.variable(rng.normal(0, 1 / np.sqrt(a), (a, b)), name=f"W{k + 1}")
               for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    biases = [gc.variable(np.zeros(b), name=f"b{k + 1}") for k, b in enumerate(sizes[1:])]
    h = x
    for k, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        if k < len(weights) - 1:
            h = gc.relu(h)
    loss = gc.mean(gc.softmax_cross_entropy(h, y)) + lam * sum(gc.sum(gc.square(w)) for w in weights)
    params = weights + biases
    grads = gc.grad(loss, params)
    new_values = [p - 0.1 * g for p, g in zip(params, grads)]
    feed = {x: rng.normal(size=(16, sizes[0])), y: rng.integers(0, sizes[-1], 16)}
    return x, y, loss, new_values, feed


def main(out: str | None = None, picture: bool = True) -> dict:
    directory = out_dir(out)

    # ---- part 1: a training step -------------------------------------------------------------------
    x, y, loss, new_values, feed = mlp_step()
    before = [loss, *new_values]
    after, report = gc.optimize(before, report=True)
    counts_before, counts_after = op_counts(before), op_counts(after)
    print("1. the training step of a 3-layer MLP with weight decay (loss and 6 updated parameters)")
    print(f"   nodes: {sum(counts_before.values())} as built by gc.grad, {sum(counts_after.values())} optimized; "
          f"matrix products: {counts_before['matmul']} -> {counts_after['matmul']}")
    print("   the optimizer's report:")
    print("   " + str(report).replace("\n", "\n   "))

    with gc.Session(optimize=False) as plain:
        expected = plain.run(before, feed)
        got = plain.run(after, feed)          # the optimized graph, run as is
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    print("   the optimized graph computes the same loss and new parameters (to 1e-9)")
    assert sum(counts_after.values()) < sum(counts_before.values())
    assert counts_after["matmul"] == 8, counts_after["matmul"]   # 3 forward, 3 weight grads, 2 input grads
    pictures = []
    if picture:
        pictures = [draw(before, os.path.join(directory, "optimizer_before.svg")),
                    draw(after, os.path.join(directory, "optimizer_after.svg"))]

    # ---- part 2: stabilization -------------------------------------------------------------------------
    print("2. a naive cross-entropy: -mean(sum(log(softmax(z)) * one_hot(y)))")
    z = gc.placeholder("z", shape=(None, 3))
    labels = gc.placeholder("labels", shape=(None,), dtype="int64")
    naive = -gc.mean(gc.sum(gc.log(gc.softmax(z)) * gc.one_hot(labels, 3), axis=1))
    grad_z = gc.grad(naive, z)
    extreme = {z: np.array([[1000.0, -1000.0, 0.0], [0.0, 1.0, 2.0]]), labels: np.array([1, 2])}
    raw_value, raw_grad = gc.Session(optimize=False).run([naive, grad_z], extreme)
    value, gradient = gc.Session().run([naive, grad_z], extreme)
    exact = (2000.0 + np.log(np.exp(-2.0) + np.exp(-1.0) + 1.0)) / 2
    print(f"   at logits of +-1000, as built: loss {raw_value}; optimized: loss {value:.6f} "
          f"(exact {exact:.6f}), gradient finite: {bool(np.all(np.isfinite(gradient)))}")
    assert not np.isfinite(raw_value)
    assert np.isclose(value, exact, rtol=1e-12) and np.all(np.isfinite(gradient))
    return {"nodes_before": sum(counts_before.values()), "nodes_after": sum(counts_after.values()),
            "matmuls_before": counts_before["matmul"], "matmuls_after": counts_after["matmul"],
            "report": str(report), "stable_value": float(value), "naive_value": float(raw_value),
            "pictures": pictures}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="directory for the pictures (default examples/output)")
    args = parser.parse_args()
    main(out=args.out)
