"""Element-wise fusion on NumPy: fused vs unfused chains over 1e6-element arrays.

Run:  python bench/fusion_speed.py [n] [repeats]     (n defaults to 1e6)

Each variant runs the same optimized graph (``DEFAULT_PIPELINE``, or
``FUSING_PIPELINE`` which adds the ``fuse`` pass) through ``graphc.compile.build_plan``:

* ``unfused, no reuse``   every step allocates a fresh result (the naive executor)
* ``unfused``             the executor's own ``out=`` buffer reuse across steps
* ``fused, expanded``     fused nodes expanded back into steps by the executor (the default)
* ``fused, kernel``       fused nodes run as one ``Fused.impl`` call (in place inside the kernel)

Times are the best of several calls, in milliseconds.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.compile import build_plan
from graphc.passes.pipeline import CANONICAL_PASSES, DEFAULT_PIPELINE, FUSING_PIPELINE, optimize_tensors

N = 1_000_000


def chains(x, w):
    """Named element-wise chains (the kind a model's activations and gradients are made of)."""
    return {
        "gelu-like (8 ops)": (0.5 * x * (1.0 + gc.tanh(0.79788456 * (x + 0.044715 * x * x * x)))),
        "affine+tanh+scale (6 ops)": (gc.tanh(x * w + 0.5) * 0.5 + 0.5) * x,
        "cheap arithmetic (6 ops)": ((x * w + 1.0) * 0.5 - w) * 2.0 + x,
        "exp/log chain (5 ops)": gc.log(gc.exp(gc.sin(x)) + 1.0) * w - x,
        "sgd update w - lr*(g + wd*w)": w - 0.01 * (x + 1e-4 * w),
    }


def best_of(run, feeds, repeats: int) -> float:
    run(feeds, ())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(feeds, ())
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(n: int = N, repeats: int = 15) -> None:
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", (n,))
    w = gc.placeholder("w", (n,))
    feeds = (rng.normal(size=n), rng.normal(size=n))
    print(f"{'chain':<32}{'unfused,no reuse':>18}{'unfused':>10}{'fused,expanded':>16}{'fused,kernel':>14}")
    for name, y in chains(x, w).items():
        plain = optimize_tensors([y], DEFAULT_PIPELINE)
        fused = optimize_tensors([y], FUSING_PIPELINE)
        assert any(t.op == "fused" for t in fused[0].inputs) or fused[0].op == "fused", name
        variants = [
            build_plan(plain, [x, w], reuse_buffers=False).run,
            build_plan(plain, [x, w]).run,
            build_plan(fused, [x, w]).run,
            build_plan(fused, [x, w], expand_fused=False).run,
        ]
        results = [v(feeds, ())[0] for v in variants]
        for r in results[1:]:
            np.testing.assert_allclose(r, results[0], rtol=1e-12)
        times = [best_of(v, feeds, repeats) for v in variants]
        print(f"{name:<32}{times[0]:>18.2f}{times[1]:>10.2f}{times[2]:>16.2f}{times[3]:>14.2f}")
    print(f"(n = {n:,} float64; best of {repeats}; ms per call; canonical passes: "
          f"{[name for name, _ in CANONICAL_PASSES]})")


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else N, int(sys.argv[2]) if len(sys.argv) > 2 else 15)
