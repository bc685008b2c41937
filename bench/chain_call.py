"""Benchmark: a steady call of issue 16's block chain and its gradient, graphc vs NumPy by hand.

The chain is ``bench/compile_time.py``'s: N blocks of ``h = exp(sin(tanh(h) * 0.9 + 0.1))``
on a vector, and the gradient of ``sum(h)``. graphc compiles ``[cost, gradient]`` once
(optimized, as ``gc.function`` does by default); the reference is the forward pass keeping
what the backward pass reads (each block's ``tanh``, the sine's argument and the ``exp``
value) and the backward pass written by hand, reusing those forward values
(``exp' = exp``, ``sin' = cos``, ``tanh' = 1 - t*t``), in place where a value dies. Both run
in one process, interleaved (``common.interleaved``); the results are checked equal first.

    python bench/chain_call.py [--repeats 41] [--blocks 10,100] [--sizes 1000,100000]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, interleaved, round_ratios, table

import graphc as gc


def chain_graph(n: int, size: int) -> tuple[gc.Tensor, gc.Tensor, gc.Tensor]:
    """The placeholder ``x``, ``cost = sum(h)`` of N blocks and the gradient of ``cost`` by ``x``."""
    x = gc.placeholder("x", (size,))
    h = x
    for _ in range(n):
        h = gc.exp(gc.sin(gc.tanh(h) * 0.9 + 0.1))
    cost = gc.sum(h)
    (grad,) = gc.grad(cost, [x])
    return x, cost, grad


def graphc_chain(n: int, size: int):
    x, cost, grad = chain_graph(n, size)
    return gc.function([x], [cost, grad])


def numpy_chain(x: np.ndarray, n: int) -> tuple[np.floating, np.ndarray]:
    kept = []
    h = x
    for _ in range(n):
        t = np.tanh(h)
        a = t * 0.9
        a += 0.1
        h = np.exp(np.sin(a))
        kept.append((t, a, h))
    cost = np.sum(h)
    g = np.ones_like(x)
    for t, a, e in reversed(kept):
        g *= e
        g *= np.cos(a)
        g *= 0.9
        np.multiply(t, t, out=t)
        np.subtract(1.0, t, out=t)
        g *= t
    return cost, g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--blocks", default="10,100")
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--blas-threads", default="1", help="BLAS threads (read by bench/common.py)")
    args = parser.parse_args()
    print("chain_call: steady calls of N blocks exp(sin(tanh(h) * 0.9 + 0.1)) and the gradient of sum(h)")
    print(conditions())
    summary = []
    for size in (int(s) for s in args.sizes.split(",")):
        for n in (int(b) for b in args.blocks.split(",")):
            fn = graphc_chain(n, size)
            x = np.linspace(-1.0, 1.0, size)
            cost, grad = fn(x)
            ref_cost, ref_grad = numpy_chain(x, n)
            np.testing.assert_allclose(cost, ref_cost, rtol=1e-12)
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-300)
            inner = max(1, 20_000 // (n * size // 100 + 1))
            times = interleaved({"graphc": lambda fn=fn, x=x: fn(x),
                                 "numpy by hand": lambda x=x, n=n: numpy_chain(x, n)},
                                args.repeats, inner=inner)
            for line in table(f"N = {n} blocks, {size}-vector ({len(fn.plan.steps)} plan steps)", times,
                              "numpy by hand"):
                print(line)
            median, low, high = round_ratios("graphc", "numpy by hand")
            summary.append(f"  N = {n:5d}, size {size:7d}: {median:.3f}x [{low:.3f}-{high:.3f}]")
    print("summary, graphc / numpy by hand, median of per-round CPU ratios [quartiles]:")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
