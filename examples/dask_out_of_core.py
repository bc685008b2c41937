"""Train on more data than the workers may hold: graphc on a Dask cluster, out of core.

    python examples/dask_out_of_core.py [--fast]

Needs the dask extra: ``pip install -e ".[dask]"``.

1. Writes a synthetic classification data set to a temporary directory as one ``.npy`` file per
   chunk, larger in total than the memory budget it gives its two workers.
2. Builds a lazy ``dask.array`` over the files: each chunk is read by the worker that needs it.
3. Trains a small MLP with ``graphc.dask.DataParallel`` over a ``LocalCluster`` of 2 worker
   processes (each step: the gradients of two chunks on the workers, summed on the cluster, the
   update applied here), visiting the chunks in a seeded random order each epoch.
4. Evaluates the trained model on all of the data with ``graphc.dask.to_dask`` (one compiled
   graphc function per chunk) and prints throughput and the workers' peak memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import graphc as gc

FEATURES, CLASSES, HIDDEN = 64, 4, 64


def write_dataset(directory: str, chunks: int, rows: int, seed: int = 0) -> list[tuple[str, str]]:
    """``chunks`` pairs of files (features, labels); labels follow a fixed random teacher, with noise."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(FEATURES, CLASSES))
    files = []
    for k in range(chunks):
        x = rng.normal(size=(rows, FEATURES))
        scores = x @ teacher / np.sqrt(FEATURES) + 0.3 * rng.normal(size=(rows, CLASSES))
        t = np.argmax(scores, axis=1).astype(np.int64)
        paths = (os.path.join(directory, f"x{k:04d}.npy"), os.path.join(directory, f"t{k:04d}.npy"))
        np.save(paths[0], x)
        np.save(paths[1], t)
        files.append(paths)
    return files


def lazy_arrays(files: list[tuple[str, str]], rows: int):
    """Dask arrays over the files, one chunk per file, read on the workers."""
    import dask
    import dask.array as da

    load = dask.delayed(np.load, pure=True)
    X = da.concatenate([da.from_delayed(load(x), (rows, FEATURES), np.float64) for x, _ in files])
    T = da.concatenate([da.from_delayed(load(t), (rows,), np.int64) for _, t in files])
    return X, T


def peak_memory_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(fast: bool = False, seed: int = 0) -> dict:
    import dask.array as da
    import distributed

    from graphc.dask import DataParallel, to_dask

    chunks, rows = (8, 2048) if fast else (40, 65536)
    budget = "300MiB" if fast else "400MiB"  # per worker; the data set is larger than both together
    epochs = 3 if fast else 2
    x = gc.placeholder("x", (None, FEATURES))
    t = gc.placeholder("t", (None,), dtype="int64")
    W1 = gc.variable(gc.init.he_normal((FEATURES, HIDDEN), seed=seed + 1), name="W1")
    b1 = gc.variable(gc.init.zeros(HIDDEN), name="b1")
    W2 = gc.variable(gc.init.glorot_uniform((HIDDEN, CLASSES), seed=seed + 2), name="W2")
    b2 = gc.variable(gc.init.zeros(CLASSES), name="b2")
    logits = gc.relu(x @ W1 + b1) @ W2 + b2
    loss = gc.mean(gc.softmax_cross_entropy(logits, t))

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        files = write_dataset(directory, chunks, rows, seed)
        data_mib = chunks * rows * (FEATURES + 1) * 8 / 2**20
        print(f"wrote {chunks} chunks, {chunks * rows:,} examples, {data_mib:.0f} MiB "
              f"in {time.perf_counter() - start:.1f} s; worker memory budget {budget} each")
        X, T = lazy_arrays(files, rows)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=budget,
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            trainer = DataParallel([x, t], loss, [W1, b1, W2, b2], optimizer=gc.optim.adam, client=client, lr=0.03)
            order_rng = np.random.default_rng(seed)
            start = time.perf_counter()
            losses = []
            for epoch in range(epochs):
                order = order_rng.permutation(chunks // 2)  # a batch is two neighbouring chunks
                for k in order:
                    losses.append(trainer.step(X[2 * k * rows:(2 * k + 2) * rows], T[2 * k * rows:(2 * k + 2) * rows]))
                print(f"epoch {epoch + 1}: mean loss {np.mean(losses[-len(order):]):.4f}")
            train_seconds = time.perf_counter() - start
            examples = epochs * chunks * rows
            print(f"trained on {examples:,} examples in {train_seconds:.1f} s "
                  f"({examples / train_seconds:,.0f} examples/s)")

            start = time.perf_counter()
            lazy_logits = to_dask(logits, {x: X})  # batch-parallel: one compiled function per chunk
            accuracy = float((da.argmax(lazy_logits, axis=1) == T).mean().compute())
            eval_seconds = time.perf_counter() - start
            print(f"evaluated {chunks * rows:,} examples with to_dask in {eval_seconds:.1f} s: "
                  f"accuracy {accuracy:.3f}")
            peaks = client.run(peak_memory_mib)
            print("workers' peak memory: " + ", ".join(f"{mib:.0f} MiB" for mib in peaks.values()))
    assert losses[-1] < losses[0], "training did not lower the loss"
    return {"losses": losses, "accuracy": accuracy, "data_mib": data_mib, "peak_mib": max(peaks.values()),
            "budget_mib": int(budget[:-3])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a small data set (a few seconds)")
    main(fast=parser.parse_args().fast)
