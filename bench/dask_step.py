"""DataParallel on Dask: the per-step overhead over a local compiled step, and throughput.

    python bench/dask_step.py [--repeats 15] [--batch 4096]

One SGD step of an MLP (64-128-10, float64) on a batch: the local compiled ``gc.function`` step,
and ``graphc.dask.DataParallel`` on a ``LocalCluster`` with 1 and 2 worker processes (and one
in-process threaded worker), the batch cut into one chunk per worker. Prints medians, the
overhead per step (DataParallel minus local) and examples per second. No speed-up is expected
on a 2-core machine shared with other jobs: the numbers show what the cluster costs.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401 - pins BLAS threads before NumPy loads
import numpy as np

import graphc as gc


def model(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, 64))
    t = gc.placeholder("t", (None,), dtype="int64")
    W1 = gc.variable(rng.normal(size=(64, 128)) * 0.1, name="W1")
    b1 = gc.variable(np.zeros(128), name="b1")
    W2 = gc.variable(rng.normal(size=(128, 10)) * 0.1, name="W2")
    b2 = gc.variable(np.zeros(10), name="b2")
    loss = gc.mean(gc.softmax_cross_entropy(gc.relu(x @ W1 + b1) @ W2 + b2, t))
    return x, t, [W1, b1, W2, b2], loss


def sgd(grads, params, lr):
    return {p: p - lr * g for p, g in zip(params, grads)}


def median_step(step, repeats: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--blas-threads", default="1")
    args = parser.parse_args()

    import dask.array as da
    import distributed

    from graphc.dask import DataParallel

    rng = np.random.default_rng(1)
    X = rng.normal(size=(args.batch, 64))
    T = rng.integers(0, 10, args.batch)
    print(common.conditions())
    print(f"MLP 64-128-10, float64, batch {args.batch}, {args.repeats} steps per setting\n")

    x, t, params, loss = model()
    local = gc.function([x, t], loss, updates=sgd(gc.grad(loss, params), params, 0.1))
    local_time = median_step(lambda: local(X, T), args.repeats)
    rows = [("local gc.function", local_time)]
    for label, workers, processes in (("DataParallel, 1 thread worker", 1, False),
                                      ("DataParallel, 1 worker process", 1, True),
                                      ("DataParallel, 2 worker processes", 2, True)):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            x, t, params, loss = model()
            trainer = DataParallel([x, t], loss, params, optimizer=sgd, client=client, lr=0.1)
            chunk = -(-args.batch // workers)
            # the batch lives on the cluster, as data loaded there would
            Xd, Td = client.persist([da.from_array(X, chunks=(chunk, 64)), da.from_array(T, chunks=chunk)])
            rows.append((label, median_step(lambda tr=trainer, xd=Xd, td=Td: tr.step(xd, td), args.repeats)))
    print(f"  {'':34s} {'median step':>12s} {'overhead':>10s} {'examples/s':>11s}")
    for label, seconds in rows:
        print(f"  {label:34s} {seconds * 1e3:9.2f} ms {(seconds - local_time) * 1e3:7.2f} ms "
              f"{args.batch / seconds:11.0f}")


if __name__ == "__main__":
    main()
