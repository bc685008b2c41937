"""Per-call CPU time of the sparse cross-entropy's loss and gradient step: the NumPy backend's
``nn.sparse_cross_entropy_and_gradient`` against the numba backend's ``numba_loss.loss_and_gradient``
(the same values, checked here), 10 classes, batch 1 and 32, both dtypes.

    PYTHONPATH=$PWD /tmp/peers/bin/python bench/loss_kernel.py
"""

from __future__ import annotations

import time

import numpy as np

from graphc.compile import numba_loss
from graphc.ops import nn


def _median_us(call, calls: int = 5000, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(calls):
            call()
        times.append((time.thread_time() - start) / calls * 1e6)
    return sorted(times)[repeats // 2]


def main() -> None:
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


if __name__ == "__main__":
    main()
