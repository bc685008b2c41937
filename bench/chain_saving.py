"""Saving and loading a compiled Function of a long chain of element-wise nodes: linear growth?

Run:  python bench/chain_saving.py [--sizes 1000 10000 100000] [--repeat 1] [--optimize] [--clock cpu]

The chain is ``x -> sin -> cos -> ... -> sum`` with N element-wise nodes (the ops cycle through
sin, cos, tanh, exp, log1p, abs so the optimizer cannot fold or merge them). It is compiled with
``optimize=False`` by default (the optimizer's own cost is measured by bench/optimizer_scaling.py),
then for each size: ``gc.save`` + ``gc.load`` of the file and ``pickle.dumps`` + ``pickle.loads``
of the Function. Each time is the best of --repeat runs; the growth exponent between consecutive
sizes is ``log(t2 / t1) / log(n2 / n1)`` (1.0 is linear). The loaded function's result is checked
bit for bit against the original's.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.setrecursionlimit(10_000)  # the default: a recursive walk of a long chain would fail, not cheat

import graphc as gc  # noqa: E402

OPS = (gc.sin, gc.cos, gc.tanh, gc.exp, gc.log1p, gc.abs)


def chain(n: int):
    x = gc.placeholder("x", (8,))
    h = x
    for k in range(n):
        h = OPS[k % len(OPS)](h)
    return x, gc.sum(h)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def best(fn, repeat: int, clock=time.perf_counter) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = clock()
        result = fn()
        times.append(clock() - start)
    return min(times), result


def measure(n: int, path: str, repeat: int, optimize: bool, clock=time.perf_counter) -> tuple:
    """(n, save, load, dumps, loads seconds, file bytes, pickle bytes) for the chain of ``n`` nodes."""
    x, y = chain(n)
    fn = gc.function([x], y, optimize=optimize)
    value = np.linspace(0.1, 0.9, 8)
    expected = fn(value)
    save, _ = best(lambda: gc.save(fn, path), repeat, clock)
    load, loaded = best(lambda: gc.load(path), repeat, clock)
    dumps, blob = best(lambda: pickle.dumps(fn), repeat, clock)
    loads, unpickled = best(lambda: pickle.loads(blob), repeat, clock)
    assert loaded(value).tobytes() == expected.tobytes() == unpickled(value).tobytes()
    return n, save, load, dumps, loads, os.path.getsize(path), len(blob)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--optimize", action="store_true", help="compile with the optimizer on")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time, or this process's CPU time (steadier on a loaded machine)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {args.clock} time, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for n in args.sizes:
            rows.append(measure(n, os.path.join(directory, "chain.gcf"), args.repeat, args.optimize,
                                CLOCK[args.clock]))
            n, save, load, dumps, loads, size, pickled = rows[-1]
            print(f"  N = {n:>7}: save {save:7.3f} s, load {load:7.3f} s, save + load {save + load:7.3f} s | "
                  f"pickle dumps {dumps:7.3f} s, loads {loads:7.3f} s | file {size / 1e6:.1f} MB, "
                  f"pickle {pickled / 1e6:.1f} MB", flush=True)
    for (n1, *t1), (n2, *t2) in zip(rows, rows[1:]):
        growth = [math.log(b / a) / math.log(n2 / n1) for a, b in zip(t1[:4], t2[:4])]
        print(f"  growth exponent {n1} -> {n2}: save {growth[0]:.2f}, load {growth[1]:.2f}, "
              f"dumps {growth[2]:.2f}, loads {growth[3]:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
