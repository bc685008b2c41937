"""Benchmark: what graphc's random draws cost, against NumPy drawing the same numbers by hand.

* one small draw per call: ``gc.function([], gen.uniform((3,)))`` against a NumPy Generator's
  ``random(3)`` (the per-call overhead: counter reservation, Philox re-keying, the call);
* an MLP training step with dropout (784-256-10, batch 128, rate 0.5) against the same step
  fed a keep-mask NumPy drew (``rng.random(shape) < 0.5``), i.e. what the draw adds to a step.

    python bench/random_draws.py [--repeats 40]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, interleaved, ratios, table

import graphc as gc


def mlp_step(with_dropout: bool):
    rng = np.random.default_rng(0)
    gen = gc.random.Generator(0)
    x = gc.placeholder("x", (None, 784))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    mask = gc.placeholder("mask", (None, 256))
    w1 = gc.variable(rng.normal(scale=0.05, size=(784, 256)), name="w1")
    w2 = gc.variable(rng.normal(scale=0.05, size=(256, 10)), name="w2")
    hidden = gc.relu(x @ w1)
    hidden = gc.dropout(hidden, 0.5, gen) if with_dropout else hidden * mask / 0.5
    loss = gc.mean(gc.softmax_cross_entropy(hidden @ w2, labels))
    grads = gc.grad(loss, [w1, w2])
    inputs = [x, labels] if with_dropout else [x, labels, mask]
    step = gc.function(inputs, loss, updates={w1: w1 - 0.01 * grads[0], w2: w2 - 0.01 * grads[1]})
    data, targets = rng.normal(size=(128, 784)), rng.integers(0, 10, 128)
    if with_dropout:
        return lambda: step(data, targets)
    mask_rng = np.random.default_rng(1)
    return lambda: step(data, targets, (mask_rng.random((128, 256)) < 0.5).astype(np.float64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    print(conditions())

    gen = gc.random.Generator(0)
    draw = gc.function([], gen.uniform((3,)))
    rng = np.random.default_rng(0)
    times = interleaved({"numpy rng.random(3)": lambda: rng.random(3), "graphc draw call": draw},
                        repeats=args.repeats, inner=500)
    print()
    print("\n".join(table("one small draw per call", times, "numpy rng.random(3)")))

    times = interleaved({"mask drawn by numpy, fed": mlp_step(False), "gc.dropout in the graph": mlp_step(True)},
                        repeats=args.repeats, inner=3)
    print()
    print("\n".join(table("MLP training step with dropout (784-256-10, batch 128)", times,
                          "mask drawn by numpy, fed")))
    wall, cpu = ratios(times, "gc.dropout in the graph", "mask drawn by numpy, fed")
    print(f"  gc.dropout / numpy mask: {wall:.3f}x (cpu {cpu:.3f}x)")


if __name__ == "__main__":
    main()
