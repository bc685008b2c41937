"""Section 15's ordering, scan and shape ops: a graphc value + gradient call against NumPy's forward.

Run:  python bench/section15.py [--rows 64] [--cols 4096] [--repeats 15]

For each op, ``graphc fwd+grad`` is one call of a compiled ``gc.function`` returning the op's
value and the gradient of ``sum(op(x) * w)`` with respect to ``x``; ``numpy fwd`` is the NumPy
function alone (the floor: a gradient costs at least one more pass). The cumprod rows also time
``linear_scan``'s recursive doubling (log2(n) vectorized steps, what cumprod's gradient uses)
against the same recurrence as a Python loop over the axis.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401 - pins BLAS threads before NumPy loads
import numpy as np
from common import conditions, interleaved, table

import graphc as gc
from graphc.ops.cumulative import LinearScan


def sequential_scan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """s_k = a_k s_{k-1} + b_k along the last axis, one step at a time."""
    out = np.empty_like(b)
    state = np.zeros(b.shape[:-1])
    for k in range(b.shape[-1]):
        state = a[..., k] * state + b[..., k]
        out[..., k] = state
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--blas-threads", default="1")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = rng.uniform(0.99, 1.01, (args.rows, args.cols))
    w = rng.uniform(0.5, 1.5, data.shape)
    x = gc.placeholder("x", (None, args.cols))
    ops = {
        "cumprod": (lambda t: gc.cumprod(t, axis=1), lambda v: np.cumprod(v, axis=1)),
        "cumsum": (lambda t: gc.cumsum(t, axis=1), lambda v: np.cumsum(v, axis=1)),
        "sort": (gc.sort, np.sort),
        "top_k(16) values": (lambda t: gc.top_k(t, 16)[0], lambda v: -np.sort(-v)[:, :16]),
        "norm(axis=1)": (lambda t: gc.norm(t, axis=1), lambda v: np.linalg.vector_norm(v, axis=1)),
        "std(axis=1)": (lambda t: gc.std(t, axis=1), lambda v: np.std(v, axis=1)),
        "tile(1,2)": (lambda t: gc.tile(t, (1, 2)), lambda v: np.tile(v, (1, 2))),
        "roll(7,axis=1)": (lambda t: gc.roll(t, 7, 1), lambda v: np.roll(v, 7, 1)),
    }
    print(conditions())
    print(f"x: {data.shape} float64, {args.repeats} interleaved rounds")
    for name, (build, reference) in ops.items():
        out = build(x)
        weights = w if out.shape[-1] == args.cols else np.ones(1)
        fn = gc.function([x], [out, gc.grad(gc.sum(out * weights), x)])
        candidates = {"numpy fwd": lambda r=reference: r(data), "graphc fwd+grad": lambda f=fn: f(data)}
        if name == "cumprod":
            scan = LinearScan(1).impl
            candidates["linear_scan doubling"] = lambda s=scan: s(data, w)
            candidates["linear_scan python loop"] = lambda: sequential_scan(data, w)
            np.testing.assert_allclose(scan(data, w), sequential_scan(data, w), rtol=1e-9)
        print("\n".join(table(name, interleaved(candidates, args.repeats), "numpy fwd")))


if __name__ == "__main__":
    main()
