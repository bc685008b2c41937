"""Benchmark: how long graphc takes to build, differentiate, optimize and compile.

1. The MLP training step of ``bench/mlp_step.py`` (784-256-256-10, batch 32).
2. A chain of N element-wise ops on a 1,000-vector and the gradient of its sum,
   N = 100, 1,000, 10,000; the growth exponent is the slope of a least-squares
   fit of log(time) against log(N).
3. Issue 16's chain of N *blocks* of 5 element-wise ops on a 1,000-vector, each block
   ``h = exp(sin(tanh(h) * 0.9 + 0.1))`` (tanh, multiply by a constant, add a constant,
   sin, exp: a unary op with a reused forward value, two constant binaries, two
   transcendentals; values stay in [1/e, e]), and the gradient of its sum. Each size runs
   in its own subprocess (``--blocks``, default 100,1000,10000; add 30000 by hand), so
   the peak memory (``ru_maxrss`` minus the process' size after ``import graphc``) is
   that size's alone; phases (CPU time of the process): build, grad, optimize, compile
   (lowering to the plan), first run. ``--block-repeats R`` runs every size R times, each
   in a fresh subprocess, in interleaved rounds (all sizes, then again), and reports each
   phase's minimum over the R runs: one run's exponent swings by +-0.1 under load, the
   minima's far less. The growth exponent of each phase is fitted over the sizes (from
   those minima), and given between the two largest sizes too ("last pair"), where the
   cost per node no longer fits in the caches. ``--baseline DIR`` also runs every size
   with the graphc of the source tree ``DIR`` (e.g. ``git worktree add /tmp/before main``),
   in the same rounds, for a before -> after comparison under the same load.

Each phase is timed separately (build, grad, optimize, compile = lowering to
the plan) and the total is their sum; each configuration runs ``--repeats``
times on a fresh graph and the median is reported. The compiled chain is run
once and checked against NumPy.

    python bench/compile_time.py [--repeats 7] [--sizes 100,1000,10000] [--blocks 100,1000,10000,30000]
    python bench/compile_time.py --blocks-only --blocks 1000,10000   # only part 3
    python bench/compile_time.py --blocks-only --blocks 1000,10000,30000 --block-repeats 3 [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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
from graphc.tensor import toposort

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


BLOCK_OPS = ("tanh", "mul 0.9", "add 0.1", "sin", "exp")
BLOCK_PHASES = ("build", "grad", "optimize", "compile", "first run")


def block_graph(n: int):
    """Issue 16's chain: ``n`` blocks of the 5 element-wise ops ``BLOCK_OPS``, and the sum."""
    x = gc.placeholder("x", (1000,))
    h = x
    for _ in range(n):
        h = gc.exp(gc.sin(gc.tanh(h) * 0.9 + 0.1))
    return x, gc.sum(h)


def block_numpy(x: np.ndarray, n: int) -> float:
    h = x
    for _ in range(n):
        h = np.exp(np.sin(np.tanh(h) * 0.9 + 0.1))
    return float(np.sum(h))


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def time_blocks(n: int) -> dict:
    """One fresh N-block graph through every phase (run in a process of its own: see ``--one-block``);
    phases in CPU seconds of this process (the machine is shared: wall time counts other jobs)."""
    clock = time.process_time
    base = _rss_bytes()
    t0 = clock()
    x, cost = block_graph(n)
    t1 = clock()
    (g,) = gc.grad(cost, [x])
    t2 = clock()
    optimized = optimize_tensors([cost, g])
    t3 = clock()
    plan = build_plan(optimized, [x], [])
    executable = Executable(plan)
    t4 = clock()
    value = np.linspace(-1, 1, 1000)
    result_cost, result_grad = executable.execute_args((value,))
    t5 = clock()
    nodes = len(toposort([cost, g]))
    assert abs(float(result_cost) - block_numpy(value, n)) <= 1e-9 * abs(block_numpy(value, n))
    assert result_grad.shape == (1000,) and np.all(np.isfinite(result_grad))
    return {"build": t1 - t0, "grad": t2 - t1, "optimize": t3 - t2, "compile": t4 - t3, "first run": t5 - t4,
            "total": t5 - t0, "peak": _rss_bytes() - base, "rss": _rss_bytes(), "nodes": nodes,
            "steps": len(plan.steps), "graphc": os.path.dirname(os.path.dirname(os.path.abspath(gc.__file__)))}


def run_blocks_in_subprocess(n: int, tree: str | None = None) -> dict:
    """``time_blocks(n)`` in a fresh process, importing graphc from the source tree ``tree`` if given."""
    script = os.path.abspath(__file__)
    env = dict(os.environ)
    env.pop("GRAPHC_BENCH_TREE", None)
    if tree is not None:
        env["GRAPHC_BENCH_TREE"] = os.path.abspath(tree)
    done = subprocess.run([sys.executable, script, "--one-block", str(n)], capture_output=True, text=True,
                          check=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if tree is not None and os.path.realpath(result["graphc"]) != os.path.realpath(tree):
        raise RuntimeError(f"the baseline run imported graphc from {result['graphc']}, not from {tree}")
    return result


def exponent(sizes: list[int], values: list[float]) -> float:
    """Slope of the least-squares line through (log size, log value)."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


BLOCK_KEYS = (*BLOCK_PHASES, "total")


def block_report(sizes: list[int], repeats: int = 1, baseline: str | None = None) -> None:
    """The block chain's table: per size, each phase's minimum over ``repeats`` fresh processes (and
    the same for the graphc of ``baseline``, in the same interleaved rounds), then the exponents."""
    trees = {"": None} if baseline is None else {"baseline": baseline, "this tree": None}
    print(f"block chain ({' -> '.join(BLOCK_OPS)} per block, 1000-vector, its sum and the gradient); "
          f"one subprocess per size and run, CPU time, minimum of {repeats} run(s) per size")
    runs: dict[tuple[str, int], list[dict]] = {(label, n): [] for label in trees for n in sizes}
    for _ in range(repeats):  # interleaved rounds: a burst of load hits every size and tree alike
        for n in sizes:
            for label, tree in trees.items():
                runs[label, n].append(run_blocks_in_subprocess(n, tree))
    for label in trees:
        if label:
            print(f"  {label}:")
        print(f"  {'blocks':>7s} {'nodes':>7s} " + " ".join(f"{k:>11s}" for k in BLOCK_KEYS)
              + f" {'ms/block':>9s} {'peak MB':>8s}")
        rows = []
        for n in sizes:
            done = runs[label, n]
            r = {key: min(d[key] for d in done) for key in (*BLOCK_KEYS, "peak")}
            r["nodes"] = done[0]["nodes"]
            rows.append(r)
            if n == sizes[0] and label:
                print(f"  (graphc from {done[0]['graphc']})")
            print(f"  {n:7d} {r['nodes']:7d} " + " ".join(fmt_time(r[k]) for k in BLOCK_KEYS)
                  + f" {r['total'] / n * 1e3:9.3f} {r['peak'] / 2**20:8.1f}", flush=True)
        if len(sizes) > 1:
            print("  growth exponent per phase (fit over all sizes): " + ", ".join(
                f"{k} {exponent(sizes, [r[k] for r in rows]):.3f}" for k in BLOCK_KEYS))
        if len(sizes) > 2:
            print(f"  growth exponent, last pair {sizes[-2]} -> {sizes[-1]}: " + ", ".join(
                f"{k} {exponent(sizes[-2:], [r[k] for r in rows[-2:]]):.3f}" for k in BLOCK_KEYS))
        targets = {1000: 0.5, 10000: 5.0, 30000: 15.0}
        notes = [f"N={n}: {r['total']:.2f} s (target <= {targets[n]} s)" for n, r in zip(sizes, rows)
                 if n in targets]
        print("  block summary: " + "; ".join(notes))


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
    parser.add_argument("--blocks", default="100,1000,10000", help="block-chain sizes (each in a subprocess)")
    parser.add_argument("--blocks-only", action="store_true", help="only the block chain")
    parser.add_argument("--block-repeats", type=int, default=1,
                        help="fresh processes per block-chain size; each phase's minimum is reported")
    parser.add_argument("--baseline", default=None,
                        help="a graphc source tree to time in the same rounds (before -> after)")
    parser.add_argument("--one-block", type=int, default=None, help=argparse.SUPPRESS)  # the subprocess' job
    parser.add_argument("--blas-threads", default=None)
    args = parser.parse_args()
    if args.one_block is not None:
        result = time_blocks(args.one_block)
        print(json.dumps(result))
        return
    if args.blocks_only:
        print(conditions())
        block_report([int(s) for s in args.blocks.split(",")], args.block_repeats, args.baseline)
        return
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
    block_report([int(s) for s in args.blocks.split(",")], args.block_repeats, args.baseline)


if __name__ == "__main__":
    main()
