"""Benchmark: a long plan as a step table against the same plan as one generated function.

Plans of more than ``graphc.compile.table.TABLE_STEPS`` steps run their lines as a step table
(no ``compile()``), and from the second call on each call compiles the next ``PIECE_LINES``
lines into a piece of code (``Tiers``). For the block chain of ``bench/compile_time.py`` (N
blocks of ``h = exp(sin(tanh(h) * 0.9 + 0.1))`` and the gradient of ``sum(h)``), this prints
the process CPU time of ``build_plan`` both ways, the first calls of the table, and the steady
call once every piece is compiled against the one generated function (interleaved rounds of two
calls each, in a shuffled order; per-round ratios). The results are checked bit for bit first.

    python bench/table_call.py [--rounds 15] [--cases 200x1000,1000x1000,1000x100,200x100000]
"""

from __future__ import annotations

import argparse
import random
import time

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from chain_call import chain_graph
from common import conditions

from graphc.compile import build_plan, table
from graphc.passes import optimize_tensors


def chain(n: int, size: int):
    x, cost, grad = chain_graph(n, size)
    return x, optimize_tensors([cost, grad])


def cpu(call) -> tuple[object, float]:
    start = time.process_time()
    result = call()
    return result, time.process_time() - start


def case(n: int, size: int, rounds: int) -> None:
    x, outputs = chain(n, size)
    tabled, table_build = cpu(lambda: build_plan(outputs, [x]))
    saved, table.TABLE_STEPS = table.TABLE_STEPS, 10**9
    try:
        generated, code_build = cpu(lambda: build_plan(outputs, [x]))
    finally:
        table.TABLE_STEPS = saved
    assert tabled.source.startswith("# a step table"), "not a table: raise N"
    value = np.linspace(-1, 1, size)
    first, first_time = cpu(lambda: tabled.run((value,), ()))
    for a, b in zip(first, generated.run((value,), ())):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), "the table's values differ"
    calls = [cpu(lambda: tabled.run((value,), ()))[1] for _ in range(3)]
    warm = 4
    while tabled.run.tiers.pending:
        tabled.run((value,), ())
        warm += 1
    ratios, times = [], {"table": [], "code": []}
    for _ in range(rounds):
        order = [("table", tabled), ("code", generated)]
        random.shuffle(order)
        got = {}
        for name, plan in order:
            _, seconds = cpu(lambda run=plan.run: (run((value,), ()), run((value,), ())))
            got[name] = seconds / 2
            times[name].append(seconds / 2)
        ratios.append(got["table"] / got["code"])
    print(f"N = {n} blocks, {size}-vector, {len(tabled.steps)} steps: build_plan table {table_build * 1e3:.0f} ms, "
          f"code {code_build * 1e3:.0f} ms; first call {first_time * 1e3:.1f} ms, calls 2-4 (each compiling a "
          f"piece) {', '.join(f'{c * 1e3:.1f}' for c in calls)} ms; all code after {warm} calls")
    print(f"    steady call: pieces {np.median(times['table']) * 1e3:.2f} ms, one function "
          f"{np.median(times['code']) * 1e3:.2f} ms, per-round ratio median {np.median(ratios):.3f} "
          f"(quartiles {np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cases", default="200x1000,1000x1000,1000x100,200x100000")
    args = parser.parse_args()
    print(conditions())
    for item in args.cases.split(","):
        n, size = (int(v) for v in item.split("x"))
        case(n, size, args.rounds)


if __name__ == "__main__":
    main()
