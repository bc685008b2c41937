"""Benchmark: the call wrapper's own cost on a function updating six tiny variables.

``fn(p)`` returns ``sum(p)`` and updates six variables of 4 elements, ``v -> v + p``:
the NumPy work is a few microseconds, so the wrapper (feed check, six locks, variable
reads, six update installs) is most of the call. Timed against the plan's ``run``
called directly with the variables' values read by hand (which computes the same values
but installs nothing); the difference is the wrapper's cost.

    python bench/call_wrapper.py [--repeats 200] [--inner 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions

import graphc as gc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--inner", type=int, default=200)
    parser.add_argument("--blas-threads", default=None)
    args = parser.parse_args()
    print(conditions())
    variables = [gc.variable(np.zeros(4), name=f"v{k}") for k in range(6)]
    p = gc.placeholder("p", (4,))
    fn = gc.function([p], gc.sum(p), updates=[(v, v + p) for v in variables])
    run, value = fn.plan.run, np.ones(4)
    order = fn.plan.variables
    direct = run((value,), tuple([v._value for v in order]))  # the values the call installs
    assert fn(value) == direct[0] == 4.0
    for variable, (updated, _), new in zip(order, fn.plan.updates, direct[1:]):
        assert variable is updated and np.array_equal(variable.value, new), (variable.value, new)
    print("results equal the plan's own (the loss and the six new values)")
    candidates = {"fn(p)": lambda: fn(value),
                  "plan.run": lambda: run((value,), tuple([v._value for v in order]))}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, call in candidates.items():
            start = time.perf_counter_ns()
            for _ in range(args.inner):
                call()
            times[name].append((time.perf_counter_ns() - start) / args.inner / 1000)
    for name, values in times.items():
        print(f"  {name:10s} median {statistics.median(values):7.2f} us  min {min(values):7.2f} us")
    wrapper = statistics.median([a - b for a, b in zip(times["fn(p)"], times["plan.run"])])
    print(f"summary, the wrapper (median of per-round differences): {wrapper:.2f} us per call")


if __name__ == "__main__":
    main()
