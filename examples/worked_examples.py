"""The classic backpropagation worked examples, computed symbolically by graphc and checked by hand.

1. ``f(x, y, z) = (x + y) * max(y, z)`` at ``(1, 2, 0)``: the value 6 and the gradient (2, 5, 0).
2. One SGD step of a sigmoid neuron ``s = sigmoid(w x + b)`` with the squared loss ``0.5 (s - t)^2``.
3. A Jacobian: a coffee shop whose two prices decide three numbers (cups sold, cakes sold, revenue).
4. The window score ``s = u^T f(W x + b)`` and every gradient of it, against the hand-derived formulas.

Each part prints what it computes, asserts it, and draws its forward + gradient graph
(gradient nodes in red) when Graphviz's ``dot`` is installed.

Run:  python examples/worked_examples.py
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import graphc as gc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import draw, out_dir  # noqa: E402


def max_gate(directory: str, picture: bool = True) -> dict:
    """(x + y) * max(y, z): an add gate spreads the gradient, a max gate routes it to the winner."""
    print("1. f(x, y, z) = (x + y) * max(y, z)")
    x, y, z = gc.placeholder("x"), gc.placeholder("y"), gc.placeholder("z")
    f = (x + y) * gc.maximum(y, z)
    grads = gc.grad(f, [x, y, z])
    value, gradient = gc.Session().run([f, grads], {x: 1.0, y: 2.0, z: 0.0})
    print(f"   f(1, 2, 0) = {value:g}; (df/dx, df/dy, df/dz) = ({', '.join(f'{g:g}' for g in gradient)})")
    print("   y feeds both factors, so its gradient adds up two paths: max(y, z) + (x + y) = 2 + 3 = 5;")
    print("   z lost the max, so no gradient reaches it")
    assert value == 6.0
    assert tuple(float(g) for g in gradient) == (2.0, 5.0, 0.0)
    drawn = draw([f, *grads], os.path.join(directory, "max_gate.svg")) if picture else None
    return {"value": float(value), "grad": tuple(float(g) for g in gradient), "picture": drawn}


def sigmoid_neuron(directory: str, picture: bool = True) -> dict:
    """One gradient step for w and b of a single sigmoid unit."""
    print("2. a sigmoid neuron s = sigmoid(w*x + b), loss 0.5*(s - t)^2, one SGD step with lr = 0.01")
    x, t = gc.placeholder("x"), gc.placeholder("t")
    w, b = gc.variable(0.4, name="w"), gc.variable(0.1, name="b")
    s = gc.sigmoid(w * x + b)
    loss = 0.5 * gc.square(s - t)
    grad_w, grad_b = gc.grad(loss, [w, b])
    lr = 0.01
    step = gc.function([x, t], [s, loss, grad_w, grad_b], updates={w: w - lr * grad_w, b: b - lr * grad_b})
    s0, loss0, gw, gb = (float(v) for v in step(0.5, 0.8))

    # the same numbers by hand: dL/ds = s - t, ds/dz = s (1 - s), dz/dw = x, dz/db = 1
    z = 0.4 * 0.5 + 0.1
    s_hand = 1.0 / (1.0 + np.exp(-z))
    delta = (s_hand - 0.8) * s_hand * (1.0 - s_hand)
    print(f"   s = {s0:.6f}, loss = {loss0:.6f}, dL/dw = {gw:.6f}, dL/db = {gb:.6f}")
    print(f"   after the step: w = {float(w.value):.8f}, b = {float(b.value):.8f}")
    assert np.isclose(s0, s_hand) and np.isclose(gw, delta * 0.5) and np.isclose(gb, delta)
    assert np.isclose(float(w.value), 0.4 - lr * delta * 0.5) and 0.40027 < float(w.value) < 0.40028
    assert float(w.value) > 0.4, "s < t, so the step must raise w"
    drawn = draw([loss, grad_w, grad_b], os.path.join(directory, "sigmoid_neuron.svg")) if picture else None
    return {"s": s0, "loss": loss0, "grad_w": gw, "grad_b": gb, "w": float(w.value), "b": float(b.value),
            "picture": drawn}


def coffee_shop(directory: str, picture: bool = True) -> dict:
    """A map from two prices to three quantities, and its 3x2 Jacobian."""
    print("3. a coffee shop: prices (coffee, cake) -> (cups sold, cakes sold, revenue)")
    prices = gc.placeholder("prices", shape=(2,))
    coffee, cake = prices[0], prices[1]
    cups = 120.0 * gc.exp(-0.3 * coffee)                  # dearer coffee, fewer cups
    cakes = 60.0 - 10.0 * cake + 5.0 * coffee             # dearer coffee sends people to cake
    revenue = coffee * cups + cake * cakes
    outputs = gc.stack([cups, cakes, revenue], axis=0)    # shape (3,)
    jac = gc.jacobian(outputs, prices)                    # shape (3, 2)
    at = np.array([3.0, 2.5])
    values, jacobian = gc.Session().run([outputs, jac], {prices: at})

    pc, pk = at
    cups_v = 120.0 * np.exp(-0.3 * pc)
    by_hand = np.array([
        [-0.3 * cups_v, 0.0],
        [5.0, -10.0],
        [cups_v - 0.3 * pc * cups_v + 5.0 * pk, 60.0 - 20.0 * pk + 5.0 * pc],
    ])
    np.set_printoptions(precision=3, suppress=True)
    print(f"   at prices {at}: cups {values[0]:.2f}, cakes {values[1]:.2f}, revenue {values[2]:.2f}")
    print("   Jacobian (rows: cups, cakes, revenue; columns: d/d coffee price, d/d cake price):")
    print("   " + str(jacobian).replace("\n", "\n   "))
    np.testing.assert_allclose(jacobian, by_hand, rtol=1e-12)
    assert jacobian.shape == (3, 2)
    drawn = draw(jac, os.path.join(directory, "coffee_jacobian.svg")) if picture else None
    return {"values": values, "jacobian": jacobian, "by_hand": by_hand, "picture": drawn}


def window_score(directory: str, picture: bool = True, seed: int = 0) -> dict:
    """s = u^T f(W x + b) with f = sigmoid: the gradients for u, W, b and the window x."""
    print("4. the window score s = u^T f(W x + b), f = sigmoid, a window of 5 words x 4 dimensions")
    rng = np.random.default_rng(seed)
    n_in, n_hidden = 5 * 4, 8
    x = gc.placeholder("x", shape=(n_in,))
    W = gc.variable(rng.normal(0, 0.3, (n_hidden, n_in)), name="W")
    b = gc.variable(np.zeros(n_hidden), name="b")
    u = gc.variable(rng.normal(0, 0.3, n_hidden), name="u")
    a = gc.sigmoid(W @ x + b)
    s = gc.dot(u, a)
    grads = gc.grad(s, [u, W, b, x])
    window = rng.normal(size=n_in)
    score, (gu, gW, gb, gx) = gc.Session().run([s, grads], {x: window})

    # by hand: delta = u * f'(z) is the error signal at the hidden layer
    a_v = 1.0 / (1.0 + np.exp(-(W.value @ window + b.value)))
    delta = u.value * a_v * (1.0 - a_v)
    np.testing.assert_allclose(gu, a_v, rtol=1e-12)                       # ds/du = a
    np.testing.assert_allclose(gb, delta, rtol=1e-12)                     # ds/db = delta
    np.testing.assert_allclose(gW, np.outer(delta, window), rtol=1e-12)   # ds/dW = delta x^T
    np.testing.assert_allclose(gx, W.value.T @ delta, rtol=1e-12)         # ds/dx = W^T delta
    print(f"   s = {score:.6f}; ds/du = a, ds/db = delta = u * f'(z), ds/dW = delta x^T, ds/dx = W^T delta:"
          " all equal to the hand-derived formulas")
    error = gc.check_grad(s, [u, W, b, x], {x: window})
    print(f"   gc.check_grad against finite differences: largest relative error {error:.1e}")
    drawn = draw([s, *grads], os.path.join(directory, "window_score.svg")) if picture else None
    return {"score": float(score), "check_grad_error": error, "picture": drawn}


def main(out: str | None = None, picture: bool = True) -> dict:
    directory = out_dir(out)
    return {"max_gate": max_gate(directory, picture), "sigmoid_neuron": sigmoid_neuron(directory, picture),
            "coffee_shop": coffee_shop(directory, picture), "window_score": window_score(directory, picture)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="directory for the pictures (default examples/output)")
    args = parser.parse_args()
    main(out=args.out)
