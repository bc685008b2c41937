"""How the optimizer's time grows with the graph: chains of 100, 1,000, 10,000 (and 100,000) ops.

Run:  python bench/optimizer_scaling.py [--big]

Each chain mixes what the passes act on: foldable constants, ``x * 1``,
double negations, twins for CSE, a stabilizable ``log(1 + exp(.))``, and plain
element-wise work; the gradient of its sum is appended (so the graph is about
three times the chain). Prints the best-of-3 time of ``gc.optimize`` per size,
the nodes before/after, and the exponent ``k`` of a least-squares fit
``time ~ nodes**k`` (1.0 is linear).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc


def chain(n_ops: int) -> list[gc.Tensor]:
    x = gc.placeholder("x", (8,))
    y = x
    for made in range(n_ops // 4):  # each step builds about four op nodes
        k = made % 6
        if k == 0:
            y = y * (gc.constant(0.5) + gc.constant(0.25))  # folds
        elif k == 1:
            y = gc.neg(gc.neg(y)) * 1.0  # simplifies
        elif k == 2:
            y = gc.tanh(y) + gc.tanh(y)  # twins
        elif k == 3:
            y = gc.log(1.0 + gc.exp(y * 0.01))  # stabilizes to softplus
        elif k == 4:
            y = gc.sin(y) + 0.0 - 0.1
        else:
            y = gc.square(gc.cos(y - 0.1)) * 0.5
    return [y, gc.grad(gc.sum(y), x)]


def measure(n_ops: int, repeats: int = 3) -> tuple[int, int, float]:
    outputs = chain(n_ops)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        optimized, report = gc.optimize(outputs, report=True)
        best = min(best, time.perf_counter() - start)
    return report.nodes_before, report.nodes_after, best


def main(sizes=(100, 1_000, 10_000)) -> None:
    rows = [(n, *measure(n)) for n in sizes]
    print(f"{'chain ops':>10}{'nodes before':>14}{'nodes after':>13}{'seconds':>10}{'us/node':>9}")
    for n, before, after, seconds in rows:
        print(f"{n:>10}{before:>14}{after:>13}{seconds:>10.4f}{seconds / before * 1e6:>9.1f}")
    nodes = np.log([r[1] for r in rows])
    times = np.log([r[3] for r in rows])
    exponent = np.polyfit(nodes, times, 1)[0]
    print(f"fitted exponent k in time ~ nodes**k: {exponent:.2f}")


if __name__ == "__main__":
    main((100, 1_000, 10_000, 100_000) if "--big" in sys.argv else (100, 1_000, 10_000))
