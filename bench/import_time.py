"""How long ``import graphc`` takes on top of NumPy's import, in fresh processes.

Run:  python bench/import_time.py [--runs 15] [--no-bytecode-cache] [--checkouts DIR ...]

Each run starts fresh interpreters in turn (the order rotates from run to run):
one times ``import numpy`` alone, and for each checkout (default: this one) one
imports NumPy and then times ``import graphc`` from that checkout (timed inside
the process, so interpreter start-up is not counted). The report gives the
medians over the runs of the wall and CPU time; CPU time is the steadier figure
on a loaded machine. Several checkouts (``--checkouts /work/main .``) compare a
change with its base in the same runs.

By default graphc's ``.pyc`` files are written to a private cache and used, as
after an install; ``--no-bytecode-cache`` compiles graphc from source at each
import (``PYTHONDONTWRITEBYTECODE=1``; NumPy keeps its installed ``.pyc`` files).
``python -X importtime -c 'import graphc'`` says where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUMPY_ONLY = ("import time; t0, c0 = time.perf_counter(), time.process_time(); import numpy; "
              "print(time.perf_counter() - t0, time.process_time() - c0)")
NUMPY_THEN_GRAPHC = ("import time; import numpy; t0, c0 = time.perf_counter(), time.process_time(); "
                     "import graphc; print(time.perf_counter() - t0, time.process_time() - c0)")


def _run(code: str, env: dict) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    wall, cpu = (float(x) for x in out.stdout.split())
    return wall, cpu


def _environment(checkout: str, bytecode: bool, cache: str) -> dict:
    """The child's environment: graphc from ``checkout``; with ``bytecode`` its ``.pyc`` files go to
    (and come from) a private cache, without it graphc is compiled from source at each import."""
    env = dict(os.environ, PYTHONPATH=checkout)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:6.1f} ms (min {min(values) * 1e3:6.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="compile graphc from source at every import (PYTHONDONTWRITEBYTECODE=1)")
    parser.add_argument("--checkouts", nargs="+", default=[ROOT], help="graphc checkouts to compare")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    checkouts = [os.path.abspath(c) for c in args.checkouts]
    with tempfile.TemporaryDirectory() as cache:
        jobs = [("import numpy", NUMPY_ONLY, _environment(checkouts[0], True, cache))]
        for k, checkout in enumerate(checkouts):
            env = _environment(checkout, not args.no_bytecode_cache, os.path.join(cache, str(k)))
            jobs.append((f"import graphc ({checkout})", NUMPY_THEN_GRAPHC, env))
            _run(NUMPY_THEN_GRAPHC, env)  # warm the file-system cache (and write the .pyc files)
        wall: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
        for r in range(args.runs):
            for label, code, env in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
                w, c = _run(code, env)
                wall[label].append(w)
                cpu[label].append(c)
    cached = "compiled from source" if args.no_bytecode_cache else "from .pyc files"
    print(f"python {sys.version.split()[0]}, {args.runs} runs, graphc {cached}, "
          f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    for label, _, _ in jobs:
        print(f"  {label}\n      wall {_ms(wall[label])}, CPU {_ms(cpu[label])}")


if __name__ == "__main__":
    main()
