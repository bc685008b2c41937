"""Benchmark: loops (``gc.scan``): per-step overhead, the gradient of an RNN, compile time.

1. Per-step overhead of a one-node body (``h = h + x[t]`` on 0-d values): the time of a loop of
   10,010 steps minus that of 10 steps, per step; next to the same loop in plain Python/NumPy.
2. A 100-step tanh RNN (hidden 128, batch 32, inputs 64): the loss and the gradients of its three
   weights through the scan (backpropagation through time, itself a scan), against the scan's
   forward alone and against the same network unrolled in Python (graph of 100 steps); and the
   same with ReLU (whose gradient rule is a mask, where tanh's is two stable sigmoids).
3. Compile time (build, grad, optimize, lower) of that RNN and its gradient with 100 and 10,000
   steps (static shapes): the graph does not grow with the length.

    python bench/scan.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import CPU_TIMES, conditions, fmt_time, interleaved, ratios, table

import graphc as gc

HIDDEN, BATCH, INPUTS = 128, 32, 64


def per_step(repeats: int) -> list[str]:
    x = gc.placeholder("x", (None,))
    total = gc.scan(lambda xt, h: h + xt, sequences=x, outputs_info=gc.constant(0.0))
    fn = gc.function([x], total[-1])
    short, long = np.ones(10), np.ones(10_010)

    def python_loop(values=long):
        h = np.float64(0.0)
        for t in range(values.shape[0]):
            h = h + values[t]
        return h

    times = interleaved({"scan 10 steps": lambda: fn(short), "scan 10,010 steps": lambda: fn(long),
                         "python loop 10,010 steps": python_loop}, repeats=repeats)
    step = (np.median(times["scan 10,010 steps"]) - np.median(times["scan 10 steps"])) / 10_000
    cpu = (np.median(CPU_TIMES["scan 10,010 steps"]) - np.median(CPU_TIMES["scan 10 steps"])) / 10_000
    python = np.median(times["python loop 10,010 steps"]) / 10_010
    lines = table("per-step overhead, one-node body h = h + x[t] (0-d)", times, "scan 10 steps")
    lines.append(f"  => {step * 1e6:.2f} us per step wall, {cpu * 1e6:.2f} us cpu (target <= 20 us); the plain "
                 f"Python loop: {python * 1e6:.2f} us per step")
    return lines


def rnn(steps: int, unrolled: bool = False, activation=gc.tanh):
    """Placeholders, the loss and the gradients of the RNN (scan, or unrolled in Python)."""
    rng = np.random.default_rng(0)
    xs = gc.placeholder("xs", (steps, BATCH, INPUTS))
    W = gc.variable(rng.normal(0, 0.1, (INPUTS, HIDDEN)), name="W")
    U = gc.variable(np.eye(HIDDEN) * 0.5 + rng.normal(0, 0.02, (HIDDEN, HIDDEN)), name="U")
    b = gc.variable(np.zeros(HIDDEN), name="b")
    h0 = gc.constant(np.zeros((BATCH, HIDDEN)))
    if unrolled:
        h, trace = h0, []
        for t in range(steps):
            h = activation(xs[t] @ W + h @ U + b)
            trace.append(h)
        hs = gc.stack(trace, 0)
    else:
        hs = gc.scan(lambda x, h: activation(x @ W + h @ U + b), sequences=xs, outputs_info=h0)
    loss = gc.mean(gc.square(hs))
    return xs, loss, gc.grad(loss, [W, U, b])


def gradient(repeats: int, activation=gc.tanh) -> list[str]:
    xs, loss, grads = rnn(100, activation=activation)
    forward = gc.function([xs], loss)
    backward = gc.function([xs], [loss, *grads])
    uxs, uloss, ugrads = rnn(100, unrolled=True, activation=activation)
    unrolled = gc.function([uxs], [uloss, *ugrads])
    value = np.random.default_rng(1).normal(0, 1, (100, BATCH, INPUTS))
    for a, b in zip(backward(value), unrolled(value)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    times = interleaved({"scan forward": lambda: forward(value), "scan loss + gradients": lambda: backward(value),
                         "unrolled loss + gradients": lambda: unrolled(value)}, repeats=repeats)
    name = activation.__name__
    lines = table(f"100-step {name} RNN, hidden 128, batch 32 (float64)", times, "scan forward")
    wall, cpu = ratios(times, "scan loss + gradients", "scan forward")
    lines.append(f"  => gradient / forward: {wall:.2f}x wall, {cpu:.2f}x cpu (target <= 3x)")
    wall, cpu = ratios(times, "scan loss + gradients", "unrolled loss + gradients")
    lines.append(f"  => scan gradient / unrolled gradient: {wall:.2f}x wall, {cpu:.2f}x cpu (target <= 1x)")
    return lines


def compile_time(repeats: int) -> list[str]:
    def build(steps: int):
        start = time.perf_counter()
        xs, loss, grads = rnn(steps)
        gc.function([xs], [loss, *grads])
        return time.perf_counter() - start

    results = {100: [], 10_000: []}
    for _ in range(repeats):
        for steps in results:
            results[steps].append(build(steps))
    medians = {steps: float(np.median(values)) for steps, values in results.items()}
    lines = ["compile time of the RNN and its gradient (build, grad, optimize, lower), median of "
             f"{repeats}"]
    for steps, median in medians.items():
        lines.append(f"  {steps:>6d} steps: {fmt_time(median)}")
    lines.append(f"  => 10,000 / 100 steps: {medians[10_000] / medians[100]:.3f}x (target within 10 %, "
                 f"each <= 0.1 s)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--blas-threads", default=None, help="(read by common.py)")
    args = parser.parse_args()
    print(conditions())
    for part in (per_step(args.repeats), gradient(args.repeats), gradient(args.repeats, gc.relu),
                 compile_time(args.repeats)):
        print("\n".join(part))
        print()


if __name__ == "__main__":
    main()
