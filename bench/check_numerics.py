"""Benchmark: what ``check_numerics`` costs, on and off.

``check_numerics=True`` is a separate plan option, so a default function's generated code is the
code a plan built without the option has (the script checks the two sources are identical).
Timed in the same run, interleaved:

* ``baseline``: an Executable over ``build_plan(...)`` called with no new option, i.e. the
  plan as it was built before ``check_numerics`` existed;
* ``default``: ``gc.function(...)`` as users build it (``check_numerics`` off);
* ``checked``: ``gc.function(..., check_numerics=True)``.

Two workloads: an MLP training step (784-256-10, batch 128: large arrays, where the check is
one ``np.isfinite`` pass per float step) and a tiny 0-d graph (call overhead dominates).

    python bench/check_numerics.py [--repeats 40]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, interleaved, ratios, table

import graphc as gc
from graphc.compile import build_plan
from graphc.function import Executable, Function


def mlp(check: bool):
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", (None, 784))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    w1 = gc.variable(rng.normal(scale=0.05, size=(784, 256)), name="w1")
    b1 = gc.variable(np.zeros(256), name="b1")
    w2 = gc.variable(rng.normal(scale=0.05, size=(256, 10)), name="w2")
    b2 = gc.variable(np.zeros(10), name="b2")
    loss = gc.mean(gc.softmax_cross_entropy(gc.relu(x @ w1 + b1) @ w2 + b2, labels))
    params = [w1, b1, w2, b2]
    grads = gc.grad(loss, params)
    updates = {p: p - 0.01 * g for p, g in zip(params, grads)}
    fn = gc.function([x, labels], loss, updates=updates, check_numerics=check)
    data = (rng.normal(size=(128, 784)), rng.integers(0, 10, 128))
    return fn, data


def tiny(check: bool):
    x, y = gc.placeholder("x"), gc.placeholder("y")
    f = gc.log(x * y + 1.0) * gc.exp(-x)
    fn = gc.function([x, y], [f, *gc.grad(f, [x, y])], check_numerics=check)
    return fn, (np.array(0.5), np.array(2.0))


def baseline_of(fn):
    """The function's graph lowered as before check_numerics existed (no new keyword)."""
    plan = fn.plan
    rebuilt = build_plan(plan.outputs, plan.inputs, plan.updates)
    assert rebuilt.source == plan.source, "the default plan's code changed"
    baseline = Function.__new__(Function)  # the same Function, over the rebuilt plan
    baseline.__dict__.update(fn.__dict__)
    baseline.__dict__.pop("_rebuild", None)
    baseline._executable = Executable(rebuilt)
    return baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    print(conditions())
    for label, build, inner in (("MLP training step (784-256-10, batch 128)", mlp, 3),
                                ("tiny 0-d graph, value and 2 gradients", tiny, 300)):
        default, data = build(False)
        checked, _ = build(True)
        baseline = baseline_of(default)
        assert "_check_leaves" not in default.plan.source and "_check_leaves" in checked.plan.source
        # the same values either way (the MLP variables move; compare on the tiny graph only)
        if build is tiny:
            for a, b in zip(default(*data), checked(*data)):
                np.testing.assert_array_equal(a, b)
        times = interleaved({"baseline (plan as before)": lambda f=baseline, d=data: f(*d),
                             "default (check off)": lambda f=default, d=data: f(*d),
                             "checked (check_numerics)": lambda f=checked, d=data: f(*d)},
                            repeats=args.repeats, inner=inner)
        print()
        print("\n".join(table(label, times, "baseline (plan as before)")))
        off, off_cpu = ratios(times, "default (check off)", "baseline (plan as before)")
        on, on_cpu = ratios(times, "checked (check_numerics)", "default (check off)")
        print(f"  off / baseline: {off:.3f}x (cpu {off_cpu:.3f}x); checked / off: {on:.3f}x (cpu {on_cpu:.3f}x)")


if __name__ == "__main__":
    main()
