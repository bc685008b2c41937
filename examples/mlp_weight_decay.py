"""The "Deep Learning" book's example of back-propagation (section 6.5.7): a one-hidden-layer MLP
with ReLU, cross-entropy and weight decay.

    H = relu(X W1),  logits = H W2,  J = cross_entropy(logits, y) + lam * (sum(W1^2) + sum(W2^2))

The cost reaches W1 along two paths: through the cross-entropy (back through W2, the ReLU and
the first matmul: X^T G) and through the weight-decay term (2 lam W1). graphc's gradient of W1 is
a single ``add`` node joining exactly those two paths. This script finds that node in the
networkx export, prints both paths, checks the gradient against the hand-derived formula, draws
the gradient graph (when Graphviz is installed) and trains the model for a few steps.

Run:  python examples/mlp_weight_decay.py
"""

from __future__ import annotations

import argparse
import os
import sys

import networkx as nx
import numpy as np

import graphc as gc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import draw, out_dir  # noqa: E402


def make_data(n: int, rng: np.random.Generator):
    """Three Gaussian clouds in 2-D, labels 0..2."""
    centers = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
    labels = rng.integers(0, 3, n)
    return centers[labels] + rng.normal(0, 0.8, (n, 2)), labels.astype(np.int64)


def gradient_paths(graph: nx.DiGraph, node: int) -> list[dict]:
    """For each input of ``node``: the gradient ops feeding it (walking back through gradient nodes only)
    and the placeholders and variables those ops read directly."""
    paths = []
    for parent in sorted(graph.predecessors(node)):
        seen, stack, ops, leaves = set(), [parent], [], []
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            attrs = graph.nodes[current]
            if attrs["kind"] in ("placeholder", "variable"):
                leaves.append(attrs["name"])
            elif attrs["is_gradient"]:
                ops.append(attrs["op"])
                stack.extend(sorted(graph.predecessors(current), reverse=True))
        paths.append({"head": graph.nodes[parent]["op"], "ops": ops, "reads": sorted(leaves)})
    return paths


def main(steps: int = 200, hidden: int = 16, lam: float = 1e-3, lr: float = 0.2, seed: int = 0,
         out: str | None = None, picture: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    X = gc.placeholder("X", shape=(None, 2))
    y = gc.placeholder("y", shape=(None,), dtype="int64")
    W1 = gc.variable(rng.normal(0, 0.5, (2, hidden)), name="W1")
    W2 = gc.variable(rng.normal(0, 0.5, (hidden, 3)), name="W2")

    H = gc.relu(X @ W1)
    cross_entropy = gc.mean(gc.softmax_cross_entropy(H @ W2, y))
    decay = lam * (gc.sum(gc.square(W1)) + gc.sum(gc.square(W2)))
    J = cross_entropy + decay
    grad_W1, grad_W2 = gc.grad(J, [W1, W2])

    # --- the two paths, read from the graph export (the graph as gc.grad built it) ---------------
    graph = gc.to_networkx(grad_W1)
    (out_node,) = [k for k, attrs in graph.nodes(data=True) if attrs["outputs"]]
    print(f"grad W1 is a {graph.nodes[out_node]['op']!r} node with {graph.in_degree(out_node)} inputs:")
    paths = gradient_paths(graph, out_node)
    for k, path in enumerate(paths):
        via = "cross-entropy" if "one_hot" in path["ops"] else "weight decay"
        print(f"  path {k + 1} ({via}): ends in {path['head']!r}, {len(path['ops'])} gradient ops "
              f"[{', '.join(path['ops'][:6])}{', ...' if len(path['ops']) > 6 else ''}]"
              + f", reads {', '.join(path['reads'])}")
    assert graph.nodes[out_node]["op"] == "add" and len(paths) == 2
    kinds = sorted("cross-entropy" if "one_hot" in p["ops"] else "weight decay" for p in paths)
    assert kinds == ["cross-entropy", "weight decay"], kinds
    decay_path = next(p for p in paths if "one_hot" not in p["ops"])
    assert decay_path["reads"] == ["W1"], "the weight-decay path is 2 lam W1: it reads W1 and nothing else"

    # --- the same gradient by hand -----------------------------------------------------------------
    X_v, y_v = make_data(64, rng)
    g1, g2, j = gc.Session().run([grad_W1, grad_W2, J], {X: X_v, y: y_v})
    Z = X_v @ W1.value
    H_v = np.maximum(Z, 0)
    logits = H_v @ W2.value
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    G = (P - np.eye(3)[y_v]) / len(y_v)                        # d cross-entropy / d logits
    G_H = (G @ W2.value.T) * (Z > 0)                           # back through W2 and the ReLU
    np.testing.assert_allclose(g1, X_v.T @ G_H + 2 * lam * W1.value, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(g2, H_v.T @ G + 2 * lam * W2.value, rtol=1e-10, atol=1e-14)
    print("grad W1 == X^T G_H + 2 lam W1 and grad W2 == H^T G + 2 lam W2, as derived by hand")

    directory = out_dir(out)
    drawn = draw(grad_W1, os.path.join(directory, "mlp_weight_decay_grad_W1.svg")) if picture else None

    # --- and it trains ---------------------------------------------------------------------------------
    step = gc.function([X, y], J, updates={W1: W1 - lr * grad_W1, W2: W2 - lr * grad_W2})
    losses = [float(step(*make_data(64, rng))) for _ in range(steps)]
    print(f"training: J = {losses[0]:.4f} at the first step, {np.mean(losses[-10:]):.4f} over the last ten")
    assert np.mean(losses[-10:]) < 0.5 * losses[0]
    return {"paths": paths, "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:])),
            "initial_cost": float(j), "picture": drawn}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default=None, help="directory for the picture (default examples/output)")
    args = parser.parse_args()
    main(steps=args.steps, out=args.out)
