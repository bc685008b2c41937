"""Keeping a compiled function: pickle, and graphc's safe file format.

* ``pickle.dumps(fn)`` keeps a compiled Function with its variables' current values; the loaded
  copy runs at once, without optimizing again. Use it between processes and machines you trust:
  unpickling can run arbitrary code.
* ``gc.save(fn, path)`` / ``gc.load(path)`` write and read a safe format: loading runs nothing
  from the file, accepts only graphc's built-in ops, checks a version and a checksum, and any
  malformed or tampered file raises ``gc.LoadError``. Functions holding custom Python ops are
  refused by ``gc.save`` (pickle them instead).

The script trains a small classifier for a while, keeps its training step both ways, shows that
the copies go on training exactly like the original, and shows the safe loader refusing a
tampered file.

Run:  python examples/save_load_pickle.py
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time

import numpy as np

import graphc as gc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import out_dir  # noqa: E402


def build(rng: np.random.Generator):
    x = gc.placeholder("x", shape=(None, 4))
    y = gc.placeholder("y", shape=(None,), dtype="int64")
    W = gc.variable(rng.normal(0, 0.5, (4, 3)), name="W")
    b = gc.variable(np.zeros(3), name="b")
    loss = gc.mean(gc.softmax_cross_entropy(x @ W + b, y))
    gW, gb = gc.grad(loss, [W, b])
    return x, y, W, b, loss, {W: W - 0.5 * gW, b: b - 0.5 * gb}


def batches(rng: np.random.Generator, n: int):
    for _ in range(n):
        x = rng.normal(size=(32, 4))
        yield x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)


def main(out: str | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x, y, W, b, loss, updates = build(rng)
    started = time.perf_counter()
    step = gc.function([x, y], loss, updates=updates)
    compile_ms = (time.perf_counter() - started) * 1e3
    for xb, yb in batches(rng, 50):
        step(xb, yb)
    print(f"trained 50 steps; W[0] = {np.round(W.value[0], 4)}")

    # ---- pickle -------------------------------------------------------------------------------------
    blob = pickle.dumps(step)
    started = time.perf_counter()
    unpickled = pickle.loads(blob)
    unpickle_ms = (time.perf_counter() - started) * 1e3
    print(f"pickle: {len(blob)} bytes; compiling took {compile_ms:.1f} ms, unpickling {unpickle_ms:.1f} ms")

    # ---- the safe format --------------------------------------------------------------------------
    path = os.path.join(out_dir(out), "classifier_step.gcf")
    gc.save(step, path)
    started = time.perf_counter()
    loaded = gc.load(path)
    load_ms = (time.perf_counter() - started) * 1e3
    print(f"gc.save: {os.path.getsize(path)} bytes in {path}; gc.load took {load_ms:.1f} ms")

    # the three go on training in lockstep: same batches, same losses (each has its own weights)
    losses = {"original": [], "unpickled": [], "loaded": []}
    for xb, yb in batches(np.random.default_rng(seed + 1), 20):
        for name, fn in (("original", step), ("unpickled", unpickled), ("loaded", loaded)):
            losses[name].append(float(fn(xb, yb)))
    np.testing.assert_allclose(losses["unpickled"], losses["original"], rtol=1e-12)
    np.testing.assert_allclose(losses["loaded"], losses["original"], rtol=1e-12)
    print(f"20 more steps on each copy: the losses agree step for step (last {losses['original'][-1]:.5f}),"
          " so each copy trains its own weights (shared weights would take every step three times)")
    assert losses["original"][-1] < losses["original"][0]

    # ---- what the safe loader refuses --------------------------------------------------------------
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0x01                                   # flip one bit
    tampered = os.path.join(out_dir(out), "tampered.gcf")
    with open(tampered, "wb") as handle:
        handle.write(bytes(data))
    try:
        gc.load(tampered)
        raise AssertionError("a tampered file must not load")
    except gc.LoadError as exc:
        print(f"a file with one flipped bit: gc.LoadError: {exc}")
    renamed = os.path.join(out_dir(out), "pickle_renamed.gcf")
    with open(renamed, "wb") as handle:
        handle.write(blob)
    try:
        gc.load(renamed)
        raise AssertionError("a pickle must not load through gc.load")
    except gc.LoadError as exc:
        print(f"a pickle renamed to .gcf: gc.LoadError: {exc}")

    double = gc.custom_op("double", lambda a: 2 * a, lambda inputs, out, g: [2 * g])
    with_custom = gc.function([x], double(x))
    try:
        gc.save(with_custom, os.path.join(out_dir(out), "custom.gcf"))
        raise AssertionError("gc.save must refuse custom Python ops")
    except gc.GraphcError as exc:
        print(f"gc.save of a function with a custom op: {type(exc).__name__}: {exc}")
    return {"pickle_bytes": len(blob), "saved_bytes": os.path.getsize(path), "compile_ms": compile_ms,
            "unpickle_ms": unpickle_ms, "load_ms": load_ms, "losses": losses}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="directory for the saved files (default examples/output)")
    args = parser.parse_args()
    main(out=args.out)
