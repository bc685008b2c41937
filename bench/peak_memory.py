"""Benchmark: peak resident memory of one training step of a deep MLP.

An MLP of depth 20 (19 hidden layers of width 1024, input 1024, 10 classes),
batch 512, float32, ReLU, mean softmax cross-entropy, L2 weight decay, one SGD
step. Each candidate runs in its own fresh process, which reports its peak
resident set size (``ru_maxrss``) after the step, and its peak before the
step (imports, parameters and data in place), so the table shows both the
whole-process peak and what the step itself adds on top.

Candidates: graphc (atomic updates: every new value goes into its own buffer
and all are installed when the step succeeds), graphc with the opt-in
``inplace_updates=True`` (each new value written into the variable's storage
once nothing needs the old value), the hand-written NumPy reference updating
in place, and the same reference returning new arrays (the semantics graphc's
default updates have).

    python bench/peak_memory.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import common  # noqa: F401 - sets BLAS threads before NumPy loads

DEPTH, WIDTH, BATCH, CLASSES = 20, 1024, 512, 10
SIZES = [WIDTH] * DEPTH + [CLASSES]
HERE = os.path.dirname(os.path.abspath(__file__))


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child(kind: str) -> dict:
    import numpy as np
    from reference_mlp import sgd_step

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH)

    def layer(k: int):
        fan_in, fan_out = SIZES[k], SIZES[k + 1]
        w = (rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        return w, np.zeros(fan_out, np.float32)

    if kind in ("graphc", "graphc in place"):
        import graphc as gc

        variables = []
        for k in range(DEPTH):
            w, b = layer(k)
            variables += [gc.variable(w, name=f"W{k}"), gc.variable(b, name=f"b{k}")]
            del w, b  # the variables hold their own copies
        xp = gc.placeholder("x", (BATCH, SIZES[0]), "float32")
        lp = gc.placeholder("labels", (BATCH,), "int64")
        h = xp
        for k in range(DEPTH):
            h = h @ variables[2 * k] + variables[2 * k + 1]
            if k < DEPTH - 1:
                h = gc.relu(h)
        loss = gc.mean(gc.softmax_cross_entropy(h, lp))
        for k in range(DEPTH):
            loss = loss + 0.5e-4 * gc.sum(gc.square(variables[2 * k]))
        grads = gc.grad(loss, variables)
        fn = gc.function([xp, lp], loss, updates=[(v, v - 0.01 * g) for v, g in zip(variables, grads)],
                         inplace_updates=(kind == "graphc in place"))
        before = _maxrss_mib()
        value = float(fn(x, labels))
    else:
        params = []
        for k in range(DEPTH):
            params += list(layer(k))
        before = _maxrss_mib()
        value, new = sgd_step(params, x, labels, 0.01, 1e-4, functional=(kind == "numpy functional"))
        del new
    return {"kind": kind, "before": before, "peak": _maxrss_mib(), "loss": value}


def run_child(kind: str) -> dict:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind], capture_output=True,
                          text=True, timeout=600, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blas-threads", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    import numpy as np
    from common import conditions

    weights = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:])) * 4 / 2 ** 20
    print(f"peak_memory: MLP depth {DEPTH}, width {WIDTH}, batch {BATCH}, float32, one SGD step "
          f"(parameters {weights:.1f} MiB); one fresh process per measurement")
    print(conditions())
    kinds = ["graphc", "graphc in place", "numpy in place", "numpy functional"]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            results[kind].append(run_child(kind))
    losses = [r["loss"] for rs in results.values() for r in rs]
    assert np.allclose(losses, losses[0], rtol=1e-4), losses
    print(f"losses agree: {losses[0]:.6f}")
    base = float(np.median([r["peak"] for r in results["numpy in place"]]))
    base_step = float(np.median([r["peak"] - r["before"] for r in results["numpy in place"]]))
    print(f"  {'':18s} {'peak RSS':>10s} {'ratio':>7s} {'added by step':>14s} {'ratio':>7s}")
    for kind in kinds:
        peak = float(np.median([r["peak"] for r in results[kind]]))
        step = float(np.median([r["peak"] - r["before"] for r in results[kind]]))
        print(f"  {kind:18s} {peak:7.1f} MiB {peak / base:6.3f}x {step:11.1f} MiB {step / base_step:6.3f}x")


if __name__ == "__main__":
    main()
