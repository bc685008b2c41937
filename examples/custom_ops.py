"""Your own ops: an activation written in SymPy, and a layer with a hand-written backward pass.

1. ``gc.elementwise`` turns a SymPy formula into an element-wise op. Here: Mish,
   ``x * tanh(softplus(x))``. SymPy derives the derivative, so the op has a gradient (of any
   order) without anyone writing one.
2. ``gc.custom_op`` wraps a NumPy forward with a symbolic backward: RMS normalisation,
   ``y = x / sqrt(mean(x^2) + eps)`` over the last axis, whose backward
   ``(g - y * mean(g * y)) / r`` is built from graphc ops (so it can be differentiated again).

Both are verified with ``gc.check_grad`` (central finite differences), then used together in a
small network that learns to fit a curve.

Run:  python examples/custom_ops.py
"""

from __future__ import annotations

import argparse

import numpy as np
import sympy

import graphc as gc

EPS = 1e-6

# ---- 1. an activation from a SymPy formula ------------------------------------------------------------
mish = gc.elementwise("mish", lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x))))


# ---- 2. a layer with its own backward ------------------------------------------------------------------
def _rms(x):
    """r = sqrt(mean(x^2) + eps) over the last axis, as a graph (used by the backward)."""
    return gc.sqrt(gc.mean(gc.square(x), axis=-1, keepdims=True) + EPS)


def rms_norm_forward(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS)


def rms_norm_grad(inputs, output, output_grad):
    """d(x / r)^T g = (g - y * mean(g * y)) / r, with y = x / r: one gradient per input."""
    (x,) = inputs
    y, g = output, output_grad
    return [(g - y * gc.mean(g * y, axis=-1, keepdims=True)) / _rms(x)]


rms_norm = gc.custom_op("rms_norm", rms_norm_forward, rms_norm_grad)


def main(steps: int = 1500, hidden: int = 24, lr: float = 0.05, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    # --- Mish: values, first and second derivatives ---
    x = gc.placeholder("x", shape=(None,))
    points = np.linspace(-4, 4, 9)
    values = gc.Session().run(mish(x), {x: points})
    np.testing.assert_allclose(values, points * np.tanh(np.log1p(np.exp(points))), rtol=1e-12)
    mish_error = gc.check_grad(gc.sum(mish(x)), x, {x: points})
    d1 = gc.grad(gc.sum(mish(x)), x)
    mish2_error = gc.check_grad(gc.sum(d1), x, {x: points})          # the derivative, differentiated again
    print(f"mish(x) = x tanh(log(1 + e^x)) from SymPy: values match NumPy; check_grad error "
          f"{mish_error:.1e} (first derivative), {mish2_error:.1e} (second)")

    # --- RMS norm: forward, backward, and the backward differentiated again ---
    v = gc.placeholder("v", shape=(None, 5))
    batch = rng.normal(size=(3, 5))
    weights = rng.normal(size=(3, 5))
    cost = gc.sum(rms_norm(v) * weights)
    norm_error = gc.check_grad(cost, v, {v: batch})
    norm2_error = gc.check_grad(gc.sum(gc.square(gc.grad(cost, v))), v, {v: batch})
    print(f"rms_norm (NumPy forward, symbolic backward): check_grad error {norm_error:.1e}; "
          f"its gradient differentiated again: {norm2_error:.1e}")

    # --- both in a network: fit y = sin(3x) + x/2 ---
    xs = gc.placeholder("xs", shape=(None, 1))
    ys = gc.placeholder("ys", shape=(None, 1))
    W1 = gc.variable(rng.normal(0, 1.0, (1, hidden)), name="W1")
    b1 = gc.variable(rng.normal(0, 1.0, hidden), name="b1")
    W2 = gc.variable(rng.normal(0, 1 / np.sqrt(hidden), (hidden, 1)), name="W2")
    b2 = gc.variable(np.zeros(1), name="b2")
    prediction = mish(rms_norm(xs @ W1 + b1)) @ W2 + b2
    loss = gc.mean(gc.square(prediction - ys))
    params = [W1, b1, W2, b2]
    network_error = gc.check_grad(loss, params, {xs: rng.uniform(-2, 2, (8, 1)), ys: rng.normal(size=(8, 1))})
    grads = gc.grad(loss, params)
    step = gc.function([xs, ys], loss, updates={p: p - lr * g for p, g in zip(params, grads)})
    losses = []
    for _ in range(steps):
        inputs = rng.uniform(-2, 2, (64, 1))
        losses.append(float(step(inputs, np.sin(3 * inputs) + inputs / 2)))
    final = float(np.mean(losses[-50:]))
    print(f"a network using both (check_grad error {network_error:.1e}) fits sin(3x) + x/2: "
          f"mean squared error {np.mean(losses[:10]):.3f} -> {final:.4f}")

    assert max(mish_error, mish2_error, norm_error, norm2_error, network_error) < 1e-4
    assert final < 0.3 * np.mean(losses[:10])
    return {"mish_error": mish_error, "mish2_error": mish2_error, "norm_error": norm_error,
            "norm2_error": norm2_error, "network_error": network_error,
            "first_loss": float(np.mean(losses[:10])), "final_loss": final}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    main(steps=args.steps)
