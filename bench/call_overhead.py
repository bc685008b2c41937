"""Benchmark: per-call overhead on a tiny graph, graphc vs a hand-written NumPy function.

``f(x, y, z) = (x + y) * max(y, z)`` and its three gradients, on 0-d float64
inputs, as a compiled Function and through ``Session.run`` with a feed dict (the
same graph; its signature cached after the first call). The hand-written
function computes the same four numbers with NumPy (ties of ``max`` split the
gradient evenly, as graphc's ``maximum`` does) and returns them as 0-d arrays, as graphc does.

    python bench/call_overhead.py [--repeats 300] [--inner 200]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, interleaved, peers, ratios, table

import graphc as gc


def build_graphc():
    x, y, z = (gc.placeholder(n) for n in "xyz")
    f = (x + y) * gc.maximum(y, z)
    return gc.function([x, y, z], [f, *gc.grad(f, [x, y, z])])


def build_session_run(fn):
    """``Session.run`` of the same graph (the function's fetches and placeholders), with a feed dict."""
    session = gc.Session()
    x, y, z = fn.inputs
    fetches = fn.outputs

    def run(a, b, c):
        return session.run(fetches, {x: a, y: b, z: c})

    return run


def reference(x, y, z):
    """The four numbers with NumPy, written by hand."""
    s = x + y
    m = np.maximum(y, z)
    share = (y > z) + 0.5 * (y == z)  # d max / d y: 1, 0.5 on a tie, 0
    return [np.array(s * m), np.array(m), np.array(m + s * share), np.array(s * (1.0 - share))]


def peer_functions(x, y, z) -> dict:
    found = {}
    available = peers()
    if "autograd" in available:
        try:
            import autograd
            import autograd.numpy as anp

            def fa(a, b, c):
                return (a + b) * anp.maximum(b, c)

            grads = autograd.grad(fa, (0, 1, 2))
            found["autograd"] = lambda: (fa(x, y, z), grads(x, y, z))
        except Exception as exc:  # noqa: BLE001 - a peer failing is reported, not fatal
            print(f"  (autograd skipped: {exc})")
    if "jax" in available:
        try:
            import jax
            import jax.numpy as jnp

            def fj(a, b, c):
                return (a + b) * jnp.maximum(b, c)

            both = jax.jit(jax.value_and_grad(fj, argnums=(0, 1, 2)))
            found["jax (jit)"] = lambda: jax.block_until_ready(both(x, y, z))
        except Exception as exc:  # noqa: BLE001
            print(f"  (jax skipped: {exc})")
    if "pytensor" in available:
        try:
            import pytensor
            import pytensor.tensor as pt

            a, b, c = pt.dscalar("x"), pt.dscalar("y"), pt.dscalar("z")
            out = (a + b) * pt.maximum(b, c)
            pfn = pytensor.function([a, b, c], [out, *pytensor.grad(out, [a, b, c])])
            found["pytensor"] = lambda: pfn(x, y, z)
        except Exception as exc:  # noqa: BLE001
            print(f"  (pytensor skipped: {exc})")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--inner", type=int, default=200)
    parser.add_argument("--blas-threads", default=None)
    args = parser.parse_args()
    print("call_overhead: f = (x + y) * max(y, z) and df/dx, df/dy, df/dz on 0-d float64 arrays")
    print(conditions())
    fn = build_graphc()
    print(f"graphc plan: {len(fn.plan.steps)} steps, scalar mode {fn.plan.scalar}")
    points = [(1.5, -0.25, 2.0), (0.5, 3.0, 3.0), (-1.0, 2.0, 1.0)]
    for point in points:
        arrays = [np.array(v) for v in point]
        got, want = fn(*arrays), reference(*arrays)
        for a, b in zip(got, want):
            assert type(a) is np.ndarray and a.shape == () and a == b, (point, got, want)
    print(f"results equal the reference at {len(points)} points (ties included)")
    x, y, z = (np.array(v) for v in points[0])
    run = build_session_run(fn)
    for a, b in zip(run(x, y, z), fn(x, y, z)):
        assert a == b
    candidates = {"graphc": lambda: fn(x, y, z), "graphc Session.run": lambda: run(x, y, z),
                  "numpy by hand": lambda: reference(x, y, z)}
    candidates.update(peer_functions(x, y, z))
    times = interleaved(candidates, args.repeats, inner=args.inner)
    for line in table(f"per call ({args.repeats} rounds x {args.inner} calls)", times, "numpy by hand"):
        print(line)
    wall, cpu = ratios(times, "graphc", "numpy by hand")
    print(f"summary, graphc / hand-written: wall {wall:.3f}x  cpu {cpu:.3f}x")
    wall, cpu = ratios(times, "graphc Session.run", "graphc")
    print(f"summary, Session.run / Function: wall {wall:.3f}x  cpu {cpu:.3f}x")


if __name__ == "__main__":
    main()
