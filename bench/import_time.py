"""How long ``import graphc`` takes on top of NumPy's import, in fresh processes.

Run:  python bench/import_time.py [--runs 15]

Each run starts two fresh interpreters, alternating which goes first: one times
``import numpy`` alone, the other ``import numpy`` and then ``import graphc``
(both with ``perf_counter`` inside the process, so interpreter start-up is not
counted). The extra time of a run is the second process's ``import graphc``
time; the report gives the median over the runs, and NumPy's own import time
for scale. ``python -X importtime -c 'import graphc'`` says where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NUMPY_ONLY = ("import time; t0 = time.perf_counter(); import numpy; "
              "print(time.perf_counter() - t0)")
NUMPY_THEN_GRAPHC = ("import time; t0 = time.perf_counter(); import numpy; t1 = time.perf_counter(); "
                     "import graphc; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)")


def _run(code: str) -> list[float]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return [float(x) for x in out.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    numpy_alone, numpy_first, graphc_extra = [], [], []
    _run(NUMPY_THEN_GRAPHC)  # warm the file-system cache and the .pyc files
    for k in range(args.runs):
        pair = [NUMPY_ONLY, NUMPY_THEN_GRAPHC] if k % 2 == 0 else [NUMPY_THEN_GRAPHC, NUMPY_ONLY]
        for code in pair:
            times = _run(code)
            if code is NUMPY_ONLY:
                numpy_alone.append(times[0])
            else:
                numpy_first.append(times[0])
                graphc_extra.append(times[1])
    print(f"python {sys.version.split()[0]}, {args.runs} runs, load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print(f"  import numpy                      median {statistics.median(numpy_alone) * 1e3:7.1f} ms")
    print(f"  import numpy (graphc's process)   median {statistics.median(numpy_first) * 1e3:7.1f} ms")
    print(f"  import graphc on top of numpy     median {statistics.median(graphc_extra) * 1e3:7.1f} ms "
          f"(min {min(graphc_extra) * 1e3:.1f}, max {max(graphc_extra) * 1e3:.1f})")


if __name__ == "__main__":
    main()
