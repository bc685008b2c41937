"""Benchmark: what an optimizer from gc.optim costs in a training step.

An MLP 784-256-256-10 (ReLU, mean softmax cross-entropy, L2 weight decay on the
weights), one compiled step per optimizer: the hand-written SGD update
``p - lr * g`` (how graphc was used before gc.optim), ``gc.optim.sgd``,
``gc.optim.sgd`` with momentum and ``gc.optim.adam``; and, as references,
hand-written NumPy steps (``bench/reference_mlp.py``'s backward pass, then the
update in place: plain SGD, and Adam). Every candidate runs interleaved in
the same process; the table gives medians and ratios to the NumPy SGD step.
Before timing, graphc's Adam step is checked against the NumPy Adam step.

    python bench/optim_step.py [--repeats 100] [--batch 64] [--blas-threads 1]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, interleaved, ratios, table
from reference_mlp import init_params, sgd_step

import graphc as gc

SIZES = [784, 256, 256, 10]
LR, WD = 1e-3, 1e-4


def build(params, batch: int, rule: str):
    x = gc.placeholder("x", (batch, SIZES[0]))
    labels = gc.placeholder("labels", (batch,), "int64")
    variables = [gc.variable(p, name=f"{'Wb'[k % 2]}{k // 2 + 1}") for k, p in enumerate(params)]
    h = x
    for k in range(3):
        h = h @ variables[2 * k] + variables[2 * k + 1]
        if k < 2:
            h = gc.relu(h)
    loss = gc.mean(gc.softmax_cross_entropy(h, labels))
    for k in range(3):
        loss = loss + (0.5 * WD) * gc.sum(gc.square(variables[2 * k]))
    if rule == "hand-written sgd":
        updates = {v: v - LR * g for v, g in zip(variables, gc.grad(loss, variables))}
    elif rule == "gc.optim.sgd":
        updates = gc.optim.sgd(loss, variables, LR)
    elif rule == "gc.optim.sgd momentum":
        updates = gc.optim.sgd(loss, variables, LR, momentum=0.9)
    else:
        updates = gc.optim.adam(loss, variables, lr=LR)
    return gc.function([x, labels], loss, updates=updates), variables


class NumpyAdam:
    """Reference backward pass, then Adam in place (bias corrections as scalars)."""

    def __init__(self, params):
        self.params = [p.copy() for p in params]
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, x, labels, b1=0.9, b2=0.999, eps=1e-8):
        # sgd_step with lr=1 returns p - (g + wd p) for weights, p - g for biases: the total gradient
        loss, moved = sgd_step(self.params, x, labels, 1.0, WD, functional=True)
        self.t += 1
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for p, new, m, v in zip(self.params, moved, self.m, self.v):
            g = np.subtract(p, new, out=new)
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denominator = np.sqrt(v / c2)
            denominator += eps
            p -= LR * (m / c1) / denominator
        return loss


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--blas-threads", default=None, help="BLAS threads (read by bench/common.py)")
    args = parser.parse_args(argv)
    print(conditions())
    params = init_params(SIZES, np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((args.batch, SIZES[0]))
    labels = rng.integers(0, SIZES[-1], args.batch)

    adam, adam_vars = build(params, args.batch, "gc.optim.adam")
    reference = NumpyAdam(params)
    for _ in range(3):
        np.testing.assert_allclose(adam(x, labels), reference.step(x, labels), rtol=1e-10)
    for variable, value in zip(adam_vars, reference.params):
        np.testing.assert_allclose(variable.value, value, rtol=1e-9, atol=1e-12)
    print("check: gc.optim.adam and the NumPy Adam step agree over 3 steps (rtol 1e-10)")

    steps = {rule: build(params, args.batch, rule)[0]
             for rule in ("hand-written sgd", "gc.optim.sgd", "gc.optim.sgd momentum", "gc.optim.adam")}
    numpy_params = [p.copy() for p in params]
    candidates = {f"graphc {rule}": (lambda fn=fn: fn(x, labels)) for rule, fn in steps.items()}
    candidates["numpy sgd"] = lambda: sgd_step(numpy_params, x, labels, LR, WD)
    candidates["numpy adam"] = lambda: reference.step(x, labels)
    times = interleaved(candidates, repeats=args.repeats)
    print("\n".join(table(f"one training step, MLP {SIZES}, batch {args.batch}, float64", times, "numpy sgd")))
    wall, cpu = ratios(times, "graphc gc.optim.adam", "numpy adam")
    print(f"graphc adam / numpy adam: {wall:.3f}x wall, {cpu:.3f}x cpu")
    wall, cpu = ratios(times, "graphc gc.optim.sgd", "graphc hand-written sgd")
    print(f"gc.optim.sgd / hand-written sgd updates: {wall:.3f}x wall, {cpu:.3f}x cpu")


if __name__ == "__main__":
    main()
