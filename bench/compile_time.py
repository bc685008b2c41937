"""Benchmark: how long graphc takes to build, differentiate, optimize and compile.

1. The MLP training step of ``bench/mlp_step.py`` (784-256-256-10, batch 32).
2. A chain of N element-wise ops on a 1,000-vector and the gradient of its sum,
   N = 100, 1,000, 10,000; the growth exponent is the slope of a least-squares
   fit of log(time) against log(N).

Each phase is timed separately (build, grad, optimize, compile = lowering to
the plan) and the total is their sum; each configuration runs ``--repeats``
times on a fresh graph and the median is reported. The compiled chain is run
once and checked against NumPy.

    python bench/compile_time.py [--repeats 7] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, fmt_time
from reference_mlp import init_params

import graphc as gc
from graphc.compile import build_plan
from graphc.function import Executable
from graphc.passes import optimize_tensors

CHAIN_OPS = ("tanh", "scale", "shift", "sin")


def chain_graph(n: int):
    x = gc.placeholder("x", (1000,))
    h = x
    for k in range(n):
        kind = CHAIN_OPS[k % len(CHAIN_OPS)]
        if kind == "tanh":
            h = gc.tanh(h)
        elif kind == "scale":
            h = h * 1.01
        elif kind == "shift":
            h = h + 0.1
        else:
            h = gc.sin(h)
    cost = gc.sum(h)
    return x, cost


def chain_numpy(x: np.ndarray, n: int) -> np.ndarray:
    h = x
    for k in range(n):
        kind = CHAIN_OPS[k % len(CHAIN_OPS)]
        h = np.tanh(h) if kind == "tanh" else h * 1.01 if kind == "scale" else h + 0.1 if kind == "shift" \
            else np.sin(h)
    return np.sum(h)


MLP_PARAMS = init_params([784, 256, 256, 10], "float64")  # the random initial values are not timed


def mlp_graph(batch: int = 32):
    sizes = [784, 256, 256, 10]
    params = MLP_PARAMS
    x = gc.placeholder("x", (batch, sizes[0]))
    labels = gc.placeholder("labels", (batch,), "int64")
    variables = [gc.variable(p) for p in params]
    h = x
    for k in range(3):
        h = h @ variables[2 * k] + variables[2 * k + 1]
        if k < 2:
            h = gc.relu(h)
    loss = gc.mean(gc.softmax_cross_entropy(h, labels))
    for k in range(3):
        loss = loss + 0.5e-4 * gc.sum(gc.square(variables[2 * k]))
    return (x, labels), variables, loss


def time_phases(kind: str, n: int = 0) -> dict[str, float]:
    """Seconds of each phase for one fresh graph."""
    t0 = time.perf_counter()
    if kind == "mlp":
        inputs, variables, loss = mlp_graph()
        wrt = variables
    else:
        x, loss = chain_graph(n)
        inputs, wrt = (x,), [x]
    t1 = time.perf_counter()
    grads = gc.grad(loss, wrt)
    t2 = time.perf_counter()
    if kind == "mlp":
        outputs, updates = [loss], [(v, v - 0.01 * g) for v, g in zip(variables, grads)]
    else:
        outputs, updates = [loss, grads[0]], []
    roots = outputs + [new for _, new in updates]
    optimized = optimize_tensors(roots)
    t3 = time.perf_counter()
    plan = build_plan(optimized[:len(outputs)], list(inputs),
                      [(v, new) for (v, _), new in zip(updates, optimized[len(outputs):])])
    Executable(plan)
    t4 = time.perf_counter()
    return {"build": t1 - t0, "grad": t2 - t1, "optimize": t3 - t2, "compile": t4 - t3, "total": t4 - t0,
            "steps": len(plan.steps), "_plan": plan}


def median_phases(kind: str, n: int, repeats: int) -> dict[str, float]:
    runs = [time_phases(kind, n) for _ in range(repeats)]
    result = {key: float(np.median([r[key] for r in runs])) for key in runs[0] if key != "_plan"}
    result["_plan"] = runs[-1]["_plan"]
    return result


def row(label: str, phases: dict) -> str:
    return (f"  {label:22s} " + " ".join(fmt_time(phases[k]) for k in ("build", "grad", "optimize", "compile",
                                                                         "total")) + f" {int(phases['steps']):7d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--blas-threads", default=None)
    args = parser.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))  # graphc must not need more
    print("compile_time: build + grad + optimize + compile (medians of fresh graphs)")
    print(conditions())
    header = f"  {'':22s} " + " ".join(f"{k:>11s}" for k in ("build", "grad", "optimize", "compile", "total"))
    print(header + f" {'steps':>7s}")
    mlp = median_phases("mlp", 0, args.repeats)
    print(row("MLP step (batch 32)", mlp))
    sizes = [int(s) for s in args.sizes.split(",")]
    totals = []
    for n in sizes:
        phases = median_phases("chain", n, args.repeats if n < 10000 else max(3, args.repeats // 2))
        totals.append(phases["total"])
        print(row(f"chain N={n}", phases))
        plan = phases["_plan"]
        value = np.linspace(-1, 1, 1000)
        cost, grad = plan.run((value,), ())
        np.testing.assert_allclose(cost, chain_numpy(value, n), rtol=1e-9)
        assert grad.shape == (1000,) and np.all(np.isfinite(grad))
    slope = float(np.polyfit(np.log(sizes), np.log(totals), 1)[0]) if len(sizes) > 1 else float("nan")
    print(f"chain results checked against NumPy; fitted growth exponent (total vs N): {slope:.3f}")
    summary = [f"MLP step compiles in {mlp['total'] * 1e3:.1f} ms (target <= 50 ms)",
               f"chain exponent {slope:.3f} (target <= 1.15)"]
    if 1000 in sizes:
        summary.append(f"N=1000 in {totals[sizes.index(1000)]:.3f} s (target <= 1 s)")
    print("summary: " + "; ".join(summary))


if __name__ == "__main__":
    main()
