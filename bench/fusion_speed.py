"""Element-wise fusion on NumPy: fused vs unfused chains over 1e6-element arrays.

Run:  python bench/fusion_speed.py [n] [repeats]     (n defaults to 1e6)

Each variant runs the same optimized graph (``DEFAULT_PIPELINE``, or
``FUSING_PIPELINE`` which adds the ``fuse`` pass) through ``graphc.compile.build_plan``:

* ``unfused, no reuse``   every step allocates a fresh result (the naive executor)
* ``unfused``             the executor's own ``out=`` buffer reuse across steps
* ``fused, expanded``     fused nodes expanded back into steps by the executor (the default)
* ``fused, kernel``       fused nodes run as one ``Fused.impl`` call (in place inside the kernel)

Times are the best of several calls, in milliseconds.

Backends:  python bench/fusion_speed.py --backends [n ...] [--repeats R]   (n defaults to 1e5 1e6 1e7)

Chains of 5-10 element-wise ops, each timed three ways in the same run, interleaved
(``bench/common.py``): NumPy by hand (ufuncs with ``out=`` into one temporary, the
result returned fresh), ``gc.function(...)`` and ``gc.function(..., backend="numba")``
(skipped when numba does not import). Medians and ratios of medians to NumPy by hand;
the numba column's first call (its kernels' compilation) is reported apart. The
three results are checked bit-identical.

ulps:  python bench/fusion_speed.py --ulps   (numba's exp, log, tanh, ... against NumPy's, in ulp)
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


# ---- backends: NumPy by hand vs graphc (numpy) vs graphc (numba) ---------------------------------

def _hand_chains():
    """(name, graph builder, NumPy by hand) for chains of 5-10 element-wise ops over x, w, m."""
    def arithmetic(x, w, m):  # ((x*w + 1)*0.5 - w)*2 + x: 6 ops
        t = np.multiply(x, w)
        np.add(t, 1.0, out=t)
        np.multiply(t, 0.5, out=t)
        np.subtract(t, w, out=t)
        np.multiply(t, 2.0, out=t)
        return np.add(t, x, out=t)

    def update(x, w, m):  # w - 0.01*(0.9*m + x + 1e-4*w): 7 ops
        t = np.multiply(m, 0.9)
        np.add(t, x, out=t)
        u = np.multiply(w, 1e-4)
        np.add(t, u, out=t)
        np.multiply(t, 0.01, out=t)
        return np.subtract(w, t, out=t)

    def polynomial(x, w, m):  # Horner, degree 5: 10 ops
        t = np.multiply(x, 0.1)
        for c in (0.2, 0.3, 0.4, 0.5):
            np.add(t, c, out=t)
            np.multiply(t, x, out=t)
        return np.add(t, 0.6, out=t)

    def select(x, w, m):  # where(x > w, sqrt(|x|), w*w) - max(x, 0)*0.5: 8 ops
        t = np.absolute(x)
        np.sqrt(t, out=t)
        u = np.multiply(w, w)
        t = np.where(np.greater(x, w), t, u)
        np.maximum(x, 0.0, out=u)
        np.multiply(u, 0.5, out=u)
        return np.subtract(t, u, out=t)

    def gelu(x, w, m):  # 0.5*x*(1 + tanh(0.79788456*(x + 0.044715*x*x*x))): 9 ops, tanh not compiled
        t = np.multiply(x, 0.044715)
        np.multiply(t, x, out=t)
        np.multiply(t, x, out=t)
        np.add(t, x, out=t)
        np.multiply(t, 0.79788456, out=t)
        np.tanh(t, out=t)
        np.add(t, 1.0, out=t)
        np.multiply(t, x, out=t)
        return np.multiply(t, 0.5, out=t)

    return [
        ("arithmetic (6 ops)", lambda x, w, m: ((x * w + 1.0) * 0.5 - w) * 2.0 + x, arithmetic),
        ("update w-lr*(..) (7 ops)", lambda x, w, m: w - 0.01 * (0.9 * m + x + 1e-4 * w), update),
        ("polynomial (10 ops)",
         lambda x, w, m: ((((x * 0.1 + 0.2) * x + 0.3) * x + 0.4) * x + 0.5) * x + 0.6, polynomial),
        ("where/sqrt/max (8 ops)",
         lambda x, w, m: gc.where(x > w, gc.sqrt(gc.abs(x)), w * w) - gc.maximum(x, 0.0) * 0.5, select),
        ("gelu, tanh (9 ops)",
         lambda x, w, m: 0.5 * x * (1.0 + gc.tanh(0.79788456 * (x + 0.044715 * x * x * x))), gelu),
    ]


def backends(sizes: list[int], repeats: int) -> None:
    from common import CPU_TIMES, conditions, interleaved

    try:
        import numba  # noqa: F401
        have_numba = True
    except ImportError:
        have_numba = False
    print(conditions() + ("" if have_numba else "; numba not installed: no numba column"))
    print(f"{'chain':<26}{'n':>10}{'by hand':>11}{'graphc':>11}{'numba':>11}{'graphc/hand':>13}"
          f"{'numba/hand':>12}{'cpu: graphc':>13}{'numba':>8}{'numba 1st call':>16}")
    for n in sizes:
        rng = np.random.default_rng(0)
        feeds = [rng.normal(size=n) for _ in range(3)]
        x, w, m = (gc.placeholder(name, (n,)) for name in "xwm")
        for name, build, hand in _hand_chains():
            y = build(x, w, m)
            candidates = {"hand": lambda hand=hand, feeds=feeds: hand(*feeds), "graphc": gc.function([x, w, m], y)}
            first = float("nan")
            if have_numba:
                compiled = gc.function([x, w, m], y, backend="numba")
                start = time.perf_counter()
                compiled(*feeds)
                first = time.perf_counter() - start
                candidates["numba"] = compiled
            results = {key: fn(*feeds) if key != "hand" else fn() for key, fn in candidates.items()}
            for key, value in results.items():
                assert np.array_equal(value, results["hand"], equal_nan=True), (name, key)
            calls = {key: (fn if key == "hand" else (lambda fn=fn, feeds=feeds: fn(*feeds)))
                     for key, fn in candidates.items()}
            times = {key: float(np.median(v)) for key, v in interleaved(calls, repeats, warmup=1).items()}
            cpu = {key: float(np.median(v)) for key, v in CPU_TIMES.items()}
            numba_time, numba_cpu = times.get("numba", float("nan")), cpu.get("numba", float("nan"))
            print(f"{name:<26}{n:>10.0e}{times['hand'] * 1e3:>9.3f}ms{times['graphc'] * 1e3:>9.3f}ms"
                  f"{numba_time * 1e3:>9.3f}ms{times['graphc'] / times['hand']:>12.2f}x"
                  f"{numba_time / times['hand']:>11.2f}x{cpu['graphc'] / cpu['hand']:>12.2f}x"
                  f"{numba_cpu / cpu['hand']:>7.2f}x{first:>14.2f} s")
    print(f"(float64; medians of {repeats} interleaved rounds; ratios of medians to NumPy by hand, of wall-clock "
          f"time and of the calling thread's CPU time)")


def ulps(n: int = 1_000_000) -> None:
    """Max ulp distance of numba's transcendental functions from NumPy's ufuncs (why they are not compiled)."""
    import numba

    rng = np.random.default_rng(0)
    print(f"numba {numba.__version__}, numpy {np.__version__}; {n:,} normal(0, 3) inputs (log, sqrt: |x| + 1e-3)")
    for name in ("exp", "log", "log1p", "expm1", "tanh", "sin", "cos", "arctan", "sqrt", "absolute"):
        row = []
        for dtype, bits in ((np.float64, np.int64), (np.float32, np.int32)):
            a = (rng.normal(size=n) * 3).astype(dtype)
            if name in ("log", "log1p", "sqrt"):
                a = np.abs(a) + dtype(1e-3)
            namespace = {"np": np}
            exec(f"def k(a, out):\n    for i in range(a.shape[0]):\n        out[i] = np.{name}(a[i])\n",
                 namespace)  # noqa: S102
            out = np.empty_like(a)
            numba.njit(error_model="numpy")(namespace["k"])(a, out)
            want = getattr(np, name)(a)
            row.append(int(np.max(np.abs(out.view(bits).astype(np.int64) - want.view(bits)))))
        print(f"  {name:9s} float64 {row[0]} ulp   float32 {row[1]} ulp")


if __name__ == "__main__" and "--ulps" in sys.argv:
    ulps()
elif __name__ == "__main__" and "--backends" in sys.argv:
    args = [a for a in sys.argv[1:] if a != "--backends"]
    rounds = 15
    if "--repeats" in args:
        k = args.index("--repeats")
        rounds = int(args[k + 1])
        del args[k:k + 2]
    backends([int(float(a)) for a in args] or [100_000, 1_000_000, 10_000_000], rounds)
elif __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else N, int(sys.argv[2]) if len(sys.argv) > 2 else 15)
