"""Shared helpers of the benchmark scripts: BLAS threads, interleaved timing, tables.

Import this module before NumPy: it pins the BLAS thread count (default 1,
``--blas-threads N`` or ``GRAPHC_BENCH_BLAS_THREADS`` to change it), because a
multi-threaded BLAS on a 2-core machine shared with other jobs turns every
matmul into a scheduling lottery. graphc and the references always run with
the same setting, in the same process, interleaved.
"""

from __future__ import annotations

import os
import sys


def _blas_threads() -> str:
    for k, arg in enumerate(sys.argv):
        if arg == "--blas-threads" and k + 1 < len(sys.argv):
            return sys.argv[k + 1]
        if arg.startswith("--blas-threads="):
            return arg.split("=", 1)[1]
    return os.environ.get("GRAPHC_BENCH_BLAS_THREADS", "1")


BLAS_THREADS = _blas_threads()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = BLAS_THREADS
if BLAS_THREADS == "1":
    # JAX (XLA) has its own thread pool: held to one thread too, so every system gets one core. The flag
    # only stops Eigen splitting a dot; XLA's CPU client sizes its pool from NPROC (else the core count)
    # and ran independent ops of one step on two threads of it (measured: 1.5x the CPU time of one thread)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    os.environ.setdefault("NPROC", "1")

import gc as _gc  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

# the graphc measured: this checkout's, or that of the source tree GRAPHC_BENCH_TREE names (a baseline
# of ``compile_time --baseline``; the scripts and helpers stay this checkout's)
sys.path.insert(0, os.environ.get("GRAPHC_BENCH_TREE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def conditions() -> str:
    """One line describing where the numbers come from."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores, "
            f"BLAS threads {BLAS_THREADS}, load average {load:.2f} at start")


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, inner: int = 1,
                warmup: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Seconds per call of each candidate; rounds visit the candidates in a shuffled order.

    Each of ``repeats`` rounds times ``inner`` back-to-back calls of every
    candidate, so a burst of load from other jobs hits all of them alike.
    The garbage collector is off while timing.
    """
    order = list(candidates)
    for name in order:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in order}
    cpu: dict[str, list[float]] = {name: [] for name in order}
    shuffle = random.Random(seed)
    enabled = _gc.isenabled()
    _gc.disable()
    try:
        for _ in range(repeats):
            shuffle.shuffle(order)
            for name in order:
                fn = candidates[name]
                start_cpu = time.process_time()
                start = time.perf_counter()
                for _ in range(inner):
                    fn()
                times[name].append((time.perf_counter() - start) / inner)
                cpu[name].append((time.process_time() - start_cpu) / inner)
    finally:
        if enabled:
            _gc.enable()
    CPU_TIMES.clear()
    CPU_TIMES.update({name: np.array(values) for name, values in cpu.items()})
    return {name: np.array(values) for name, values in times.items()}


#: the process' CPU seconds per call from the last ``interleaved`` run (with one BLAS thread,
#: this is the work done, unaffected by time spent descheduled by other jobs; process time, not
#: the calling thread's, so a peer that computes on its own worker thread, as JAX does, is counted)
CPU_TIMES: dict[str, np.ndarray] = {}


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds:8.3f} s "


def table(title: str, times: dict[str, np.ndarray], reference: str) -> list[str]:
    """Rows: median, min, max and the ratio of medians to ``reference``."""
    base = float(np.median(times[reference]))
    cpu_base = float(np.median(CPU_TIMES[reference])) if reference in CPU_TIMES else float("nan")
    lines = [title, f"  {'':26s} {'median':>11s} {'min':>11s} {'max':>11s} {'ratio':>7s}   "
                    f"{'cpu median':>11s} {'cpu ratio':>9s}"]
    for name, values in times.items():
        median = float(np.median(values))
        cpu = float(np.median(CPU_TIMES[name])) if name in CPU_TIMES else float("nan")
        lines.append(f"  {name:26s} {fmt_time(median)} {fmt_time(values.min())} {fmt_time(values.max())} "
                     f"{median / base:6.3f}x   {fmt_time(cpu)} {cpu / cpu_base:8.3f}x")
    return lines


def ratios(times: dict[str, np.ndarray], name: str, reference: str) -> tuple[float, float]:
    """(wall-clock ratio of medians, CPU-time ratio of medians) of ``name`` to ``reference``."""
    wall = float(np.median(times[name]) / np.median(times[reference]))
    cpu = float(np.median(CPU_TIMES[name]) / np.median(CPU_TIMES[reference])) if CPU_TIMES else float("nan")
    return wall, cpu


def round_ratios(name: str, reference: str) -> tuple[float, float, float]:
    """Per-round CPU-time ratios of ``name`` to ``reference`` from the last ``interleaved`` run:
    (median, 25th percentile, 75th percentile).

    Each round times the two back to back, so a ratio within one round sees the same load; its
    median over the rounds is steadier on a shared machine than the ratio of the two medians.
    """
    per_round = CPU_TIMES[name] / CPU_TIMES[reference]
    low, median, high = np.percentile(per_round, [25, 50, 75])
    return float(median), float(low), float(high)


def peers() -> list[str]:
    """Which optional peer libraries are importable."""
    import importlib.util

    return [name for name in ("jax", "pytensor", "autograd") if importlib.util.find_spec(name) is not None]
