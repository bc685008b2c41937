"""Benchmark: the compile phase alone (``build_plan`` + ``Executable``), in CPU time, against another checkout.

The graphs of ``bench/compile_time.py`` (the chain of N element-wise ops and its gradient, the
MLP training step) are built and optimized once; then only the compile phase is timed, in
process CPU time (``time.process_time``: less sensitive than wall time to other jobs on a
shared machine), median of ``--repeats``. With ``--against DIR`` the same measurement runs
alternately on the graphc of DIR (e.g. an export of an older commit) and on this checkout,
each in a fresh process, ``--rounds`` times, and the same-run ratios are printed. When the
compiler has named stages (``graphc.compile.STAGES``), the CPU time of each stage per step is
printed too.

    python bench/compile_stages.py [--sizes 100,1000,4000] [--repeats 5] [--against DIR --rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common  # noqa: F401 - sets BLAS threads before NumPy loads; puts this checkout first on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(sizes: list[int], repeats: int) -> dict:
    """{graph: median CPU seconds of the compile phase}, plus {"stages": {stage: us per step}}."""
    import gc as pygc

    from compile_time import chain_graph, mlp_graph

    import graphc as gc
    import graphc.compile as compiler
    from graphc.function import Executable
    from graphc.passes import optimize_tensors

    def timed(outputs, inputs, updates=()) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            Executable(compiler.build_plan(outputs, inputs, updates))
            times.append(time.process_time() - start)
        return statistics.median(times)

    result: dict = {}
    for n in sizes:
        x, cost = chain_graph(n)
        optimized = optimize_tensors([cost, gc.grad(cost, [x])[0]])
        result[f"chain N={n}"] = timed(optimized, [x])
    (x, labels), variables, loss = mlp_graph()
    grads = gc.grad(loss, variables)
    optimized = optimize_tensors([loss] + [v - 0.01 * g for v, g in zip(variables, grads)])
    updates = list(zip(variables, optimized[1:]))
    result["MLP step"] = timed(optimized[:1], [x, labels], updates)
    stages = getattr(compiler, "STAGES", None)
    if stages and sizes:
        from graphc.compile.plan import Options, Program

        x, cost = chain_graph(sizes[-1])
        optimized = optimize_tensors([cost, gc.grad(cost, [x])[0]])
        per_stage: dict[str, list[float]] = {}
        for _ in range(repeats):
            pygc.disable()
            program = Program(tuple(optimized), (x,), (), Options(), compile_graph=compiler.compile_inner)
            for stage in stages:
                start = time.process_time()
                program = stage(program)
                per_stage.setdefault(stage.__name__, []).append(time.process_time() - start)
            pygc.enable()
        steps = len(program.plan.steps)
        result["stages"] = {name: statistics.median(t) * 1e6 / steps for name, t in per_stage.items()}
        result["stages_steps"] = steps
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,4000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", default=None, help="another checkout's root directory")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--blas-threads", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.worker is not None:
        sys.path.insert(0, args.worker)  # that checkout's graphc, not this one's
        print(json.dumps(measure(sizes, args.repeats)))
        return
    print("compile_stages: the compile phase alone, CPU time (medians)")
    print(common.conditions())
    roots = ([("other", args.against)] if args.against else []) + [("this", ROOT)]
    runs: dict[str, list[dict]] = {label: [] for label, _ in roots}
    for _ in range(args.rounds if args.against else 1):
        for label, root in roots:
            out = subprocess.run([sys.executable, __file__, "--worker", root, "--sizes", args.sizes,
                                  "--repeats", str(args.repeats)], check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": root}).stdout
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    graphs = [k for k in runs["this"][0] if not k.startswith("stages")]
    for graph in graphs:
        line = f"  {graph:14s} this {statistics.median(r[graph] for r in runs['this']) * 1e3:9.2f} ms"
        if args.against:
            ratios = [t[graph] / o[graph] for t, o in zip(runs["this"], runs["other"])]
            line += (f"   other {statistics.median(r[graph] for r in runs['other']) * 1e3:9.2f} ms"
                     f"   this/other per round {', '.join(f'{q:.2f}' for q in ratios)}"
                     f" (median {statistics.median(ratios):.2f})")
        print(line)
    if "stages" in runs["this"][-1]:
        stages = runs["this"][-1]["stages"]
        print(f"  stages (chain, {runs['this'][-1]['stages_steps']} steps), us per step: "
              + ", ".join(f"{name} {us:.1f}" for name, us in stages.items()))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
