"""Per-call CPU time of the sparse cross-entropy's loss and gradient step: the NumPy backend's
``nn.sparse_cross_entropy_and_gradient`` against the numba backend's ``numba_loss.loss_and_gradient``
(the same values, checked here), 10 classes, batch 1 and 32, both dtypes; then the whole numba MLP step of
``bench/mlp_step.py`` built twice in this process, with each of the two as its loss step, timed interleaved
(CPU per step, median of the rounds; the same results).

    PYTHONPATH=$PWD /tmp/peers/bin/python bench/loss_kernel.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401 - pins BLAS threads before NumPy loads
import numpy as np
from mlp_step import SIZES, build_graphc_step, data
from reference_mlp import init_params

from graphc.compile import lowering, numba_loss
from graphc.ops import nn


def _median_us(call, calls: int = 5000, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(calls):
            call()
        times.append((time.thread_time() - start) / calls * 1e6)
    return sorted(times)[repeats // 2]


def _steps(rounds: int) -> None:
    for dtype in ("float32", "float64"):
        for batch in (1, 32):
            steps = {}
            for name, impl in (("numpy loss", nn.sparse_cross_entropy_and_gradient),
                               ("numba loss", numba_loss.loss_and_gradient)):
                lowering.LOSS_AND_GRADIENT["numba"] = impl
                fn, _ = build_graphc_step(SIZES, batch, dtype, init_params(SIZES, dtype), backend="numba")
                steps[name] = fn
            lowering.LOSS_AND_GRADIENT["numba"] = numba_loss.loss_and_gradient
            x, labels = data(batch, dtype)
            losses = [np.asarray(fn(x, labels)).tobytes() for fn in steps.values()]  # (also the warm-up)
            assert losses[0] == losses[1]
            times = {name: [] for name in steps}
            for _ in range(rounds):
                for name, fn in steps.items():
                    start = time.thread_time()
                    for _ in range(100):
                        fn(x, labels)
                    times[name].append((time.thread_time() - start) / 100 * 1e6)
            medians = {name: sorted(t)[rounds // 2] for name, t in times.items()}
            before, after = medians.values()
            print(f"step {dtype} batch {batch:2d}: " + ", ".join(f"{n} {t:6.1f} us" for n, t in medians.items())
                  + f" ({after - before:+.1f} us, {after / before:.3f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        for batch in (1, 32):
            logits, labels = rng.standard_normal((batch, 10)).astype(dtype), rng.integers(0, 10, batch)
            for a, b in zip(nn.sparse_cross_entropy_and_gradient(logits, labels),
                            numba_loss.loss_and_gradient(logits, labels), strict=True):
                assert a.tobytes() == b.tobytes()
            numpy_us = _median_us(lambda z=logits, y=labels: nn.sparse_cross_entropy_and_gradient(z, y))
            numba_us = _median_us(lambda z=logits, y=labels: numba_loss.loss_and_gradient(z, y))
            print(f"{dtype} batch {batch:2d}: numpy {numpy_us:5.2f} us, numba {numba_us:5.2f} us "
                  f"({numba_us / numpy_us:.2f}x)")
    _steps(args.rounds)


if __name__ == "__main__":
    main()
