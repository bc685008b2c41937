"""Loading a compiled Function (pickle or gc.load) against compiling it.

Run:  python bench/bench_saving.py [--layers 8] [--width 64] [--repeat 5]

Compiling = gc.function(...) on an already built graph (optimize + lower).
Loading   = pickle.loads / gc.load of that compiled function: rebuild the
optimized graph and lower it with build_plan; no optimization runs.
Each time is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time

import numpy as np

import graphc as gc


def build(layers: int, width: int):
    """A deep MLP training step: forward, gradients of every layer, SGD updates."""
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", (None, width))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    params, h = [], x
    for k in range(layers):
        w = gc.variable(rng.normal(scale=width ** -0.5, size=(width, width)), name=f"W{k}")
        b = gc.variable(np.zeros(width), name=f"b{k}")
        params += [w, b]
        h = gc.gelu(gc.matmul(h, w) + b) if k < layers - 1 else gc.matmul(h, w) + b
    loss = gc.mean(gc.softmax_cross_entropy(h, labels)) + 1e-4 * sum(gc.sum(gc.square(p)) for p in params[::2])
    grads = gc.grad(loss, params)
    updates = {p: p - 0.1 * g for p, g in zip(params, grads)}
    return [x, labels], loss, updates


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    build_time = best(lambda: build(args.layers, args.width), args.repeat)
    inputs, loss, updates = build(args.layers, args.width)
    compile_time = best(lambda: gc.function(inputs, loss, updates=updates), args.repeat)
    fn = gc.function(inputs, loss, updates=updates)
    unoptimized = gc.function(inputs, loss, updates=updates, optimize=False)
    blob = pickle.dumps(fn)
    dumps_time = best(lambda: pickle.dumps(fn), args.repeat)
    loads_time = best(lambda: pickle.loads(blob), args.repeat)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.gcf")
        save_time = best(lambda: gc.save(fn, path), args.repeat)
        load_time = best(lambda: gc.load(path), args.repeat)
        size = os.path.getsize(path)
    loaded = pickle.loads(blob)
    batch = np.random.default_rng(1).normal(size=(32, args.width))
    targets = np.arange(32) % args.width
    assert np.isclose(loaded(batch, targets), fn(batch, targets))

    nodes_before = len(gc.to_networkx(unoptimized))
    nodes_after = len(gc.to_networkx(fn))
    print(f"MLP training step: {args.layers} layers of {args.width}, graph {nodes_before} nodes, "
          f"optimized {nodes_after} nodes")
    print(f"  build graph + grad     {build_time * 1e3:8.1f} ms")
    print(f"  compile (gc.function)  {compile_time * 1e3:8.1f} ms")
    print(f"  pickle.dumps           {dumps_time * 1e3:8.1f} ms   ({len(blob) / 1e3:.0f} kB)")
    print(f"  pickle.loads           {loads_time * 1e3:8.1f} ms   ({compile_time / loads_time:.1f}x faster "
          f"than compiling, {(build_time + compile_time) / loads_time:.1f}x faster than building + compiling)")
    print(f"  gc.save                {save_time * 1e3:8.1f} ms   ({size / 1e3:.0f} kB)")
    print(f"  gc.load                {load_time * 1e3:8.1f} ms   ({compile_time / load_time:.1f}x faster "
          f"than compiling; every node validated and re-inferred)")


if __name__ == "__main__":
    main()
