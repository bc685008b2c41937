"""Benchmark: one SGD step of an MLP 784-256-256-10, graphc vs hand-written NumPy.

The step: forward with ReLU, mean softmax cross-entropy against integer
labels plus L2 weight decay ``wd / 2 * sum(W ** 2)`` (weights only), the
gradients of every weight and bias, and the SGD update ``p - lr * grad``.
graphc runs it as one compiled function with ``updates`` (atomic, the default;
and "graphc in place", ``inplace_updates=True``); the reference is
``bench/reference_mlp.py``. Both start from the same parameters; after one
step their losses and new parameters must agree.

    python bench/mlp_step.py [--repeats 200] [--blas-threads 1]
    python bench/mlp_step.py --own-process [--runs 5] [--steps 200] [--batches 1,32,256]

``--own-process`` runs each candidate alone in a fresh Python process, as a user
runs a training loop: nothing else shares its heap, so the allocator's handling
of the large arrays freed and allocated each step (glibc returns freed memory to
the system, and fresh memory costs page faults on first touch) is the
candidate's own. The runs alternate between the candidates (``--runs`` of each,
in a shuffled order per round, so load from other jobs hits all alike); each
child warms up, then times ``--steps`` calls and reports its median wall time
per step, its CPU time per step and its minor page faults per step
(``resource.getrusage``). The table shows the medians over the runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import time

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import conditions, fmt_time, interleaved, peers, ratios, table
from reference_mlp import init_params, sgd_step

import graphc as gc

SIZES = [784, 256, 256, 10]
LR, WD = 0.01, 1e-4


def build_graphc_step(sizes: list[int], batch: int | None, dtype, params: list[np.ndarray], lr: float = LR,
                      wd: float = WD, optimize: bool = True, inplace_updates: bool = False,
                      backend: str = "numpy"):
    """(function, variables): ``function(x, labels)`` returns the loss and applies the SGD update.

    ``batch=None`` declares the batch size unknown, as users often do."""
    x = gc.placeholder("x", (batch, sizes[0]), dtype)
    labels = gc.placeholder("labels", (batch,), "int64")
    variables = [gc.variable(p, name=f"{'Wb'[k % 2]}{k // 2 + 1}") for k, p in enumerate(params)]
    n = len(sizes) - 1
    h = x
    for k in range(n):
        h = h @ variables[2 * k] + variables[2 * k + 1]
        if k < n - 1:
            h = gc.relu(h)
    loss = gc.mean(gc.softmax_cross_entropy(h, labels))
    for k in range(n):
        loss = loss + (0.5 * wd) * gc.sum(gc.square(variables[2 * k]))
    grads = gc.grad(loss, variables)
    updates = [(v, v - lr * g) for v, g in zip(variables, grads)]
    return gc.function([x, labels], loss, updates=updates, optimize=optimize,
                       inplace_updates=inplace_updates, backend=backend), variables


def data(batch: int, dtype, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], batch)


def check_equal(batch: int, dtype, inplace_updates: bool = False) -> float:
    """One step from the same start: graphc's loss and parameters against the reference's."""
    params = init_params(SIZES, dtype)
    fn, variables = build_graphc_step(SIZES, batch, dtype, params, inplace_updates=inplace_updates)
    x, labels = data(batch, dtype)
    loss = float(fn(x, labels))
    ref_loss, ref_params = sgd_step([p.copy() for p in params], x, labels, LR, WD)
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 2e-4
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    worst = 0.0
    for v, p in zip(variables, ref_params):
        np.testing.assert_allclose(v.value, p, rtol=rtol, atol=rtol * 1e-2)
        worst = max(worst, float(np.max(np.abs(v.value - p))))
    return worst


def check_numba_identical(batch: int, dtype, steps: int = 3) -> None:
    """``backend="numba"``'s losses and new parameters bit for bit the NumPy backend's, over a few steps."""
    params = init_params(SIZES, dtype)
    (fn, variables), (fn_numba, variables_numba) = (build_graphc_step(SIZES, batch, dtype, params, backend=b)
                                                    for b in ("numpy", "numba"))
    x, labels = data(batch, dtype)
    for _ in range(steps):
        if np.asarray(fn(x, labels)).tobytes() != np.asarray(fn_numba(x, labels)).tobytes() or any(
                v.value.tobytes() != w.value.tobytes() for v, w in zip(variables, variables_numba)):
            raise AssertionError(f'backend="numba" differs from the NumPy backend (batch {batch}, {dtype})')


def peer_steps(batch: int, dtype, x, labels) -> dict:
    """Steps of any installed peer library (same model), keyed by name.

    Each peer starts from the reference's parameters; its first step's new parameters are checked
    against the reference's (a peer computing in another precision or another model is refused)."""
    found = _peer_steps(batch, dtype, x, labels)
    _, expected = sgd_step(init_params(SIZES, dtype), x, labels, LR, WD)
    rtol = 1e-9 if np.dtype(dtype) == np.float64 else 1e-3
    for name, step in list(found.items()):
        new = [np.asarray(p) for p in step()]
        if any(p.dtype != e.dtype or not np.allclose(p, e, rtol=rtol, atol=rtol * 1e-2)
               for p, e in zip(new, expected)):
            print(f"  ({name} skipped: its step differs from the reference's)")
            del found[name]
    return found


def _peer_steps(batch: int, dtype, x, labels) -> dict:
    found = {}
    available = peers()
    if "autograd" in available:
        try:
            import autograd
            import autograd.numpy as anp

            def loss_fn(ps):
                h = x
                for k in range(3):
                    h = anp.dot(h, ps[2 * k]) + ps[2 * k + 1]
                    if k < 2:
                        h = anp.maximum(h, 0)
                h = h - anp.max(h, axis=1, keepdims=True)
                logp = h - anp.log(anp.sum(anp.exp(h), axis=1, keepdims=True))
                ce = -anp.mean(logp[anp.arange(batch), labels])
                return ce + 0.5 * WD * sum(anp.sum(ps[2 * k] ** 2) for k in range(3))

            grad_fn = autograd.grad(loss_fn)
            state = {"p": init_params(SIZES, dtype)}

            def autograd_step():
                g = grad_fn(state["p"])
                state["p"] = [p - LR * gp for p, gp in zip(state["p"], g)]
                return state["p"]

            found["autograd"] = autograd_step
        except Exception as exc:  # noqa: BLE001 - a peer failing is reported, not fatal
            print(f"  (autograd skipped: {exc})")
    if "jax" in available:
        try:
            import jax
            import jax.numpy as jnp

            # float64 needs JAX's x64 mode (without it JAX silently computes in float32)
            jax.config.update("jax_enable_x64", np.dtype(dtype) == np.float64)

            def jloss(ps, xb, yb):
                h = xb
                for k in range(3):
                    h = h @ ps[2 * k] + ps[2 * k + 1]
                    if k < 2:
                        h = jax.nn.relu(h)
                logp = jax.nn.log_softmax(h)
                ce = -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
                return ce + 0.5 * WD * sum(jnp.sum(ps[2 * k] ** 2) for k in range(3))

            # the loss too, as every other candidate returns it (jax.grad alone lets XLA drop the
            # forward softmax's log and the three sums of squares)
            @jax.jit
            def jstep(ps, xb, yb):
                loss, g = jax.value_and_grad(jloss)(ps, xb, yb)
                return loss, [p - LR * gp for p, gp in zip(ps, g)]

            jstate = {"p": [jnp.asarray(p) for p in init_params(SIZES, dtype)]}
            jx, jy = jnp.asarray(x), jnp.asarray(labels)

            def jax_step():
                loss, jstate["p"] = jstep(jstate["p"], jx, jy)
                float(loss)
                return jstate["p"]

            found["jax (jit)"] = jax_step
        except Exception as exc:  # noqa: BLE001
            print(f"  (jax skipped: {exc})")
    if "pytensor" in available:
        try:
            import pytensor
            import pytensor.tensor as pt

            # constants of the step's own dtype, so that float32 stays float32
            lr, half_wd = np.asarray(LR, dtype), np.asarray(0.5 * WD, dtype)
            tx, ty = pt.matrix("x", dtype=str(np.dtype(dtype))), pt.lvector("y")
            shared = [pytensor.shared(p) for p in init_params(SIZES, dtype)]
            h = tx
            for k in range(3):
                h = pt.dot(h, shared[2 * k]) + shared[2 * k + 1]
                if k < 2:
                    h = pt.maximum(h, 0)
            logp = pt.special.log_softmax(h, axis=1)
            cost = -pt.mean(logp[pt.arange(batch), ty]) + half_wd * sum(pt.sum(shared[2 * k] ** 2)
                                                                          for k in range(3))
            grads = pytensor.grad(cost, shared)
            pfn = pytensor.function([tx, ty], cost, updates=[(s, s - lr * g) for s, g in zip(shared, grads)])
            pfn.trust_input = True

            def pytensor_step():
                pfn(x, labels)
                return [s.get_value(borrow=True) for s in shared]

            found["pytensor"] = pytensor_step
        except Exception as exc:  # noqa: BLE001
            print(f"  (pytensor skipped: {exc})")
    return found


OWN_PROCESS_KINDS = ("graphc", "graphc in place", "numpy reference")
#: added where numba imports: graphc with ``backend="numba"`` (fused element-wise kernels)
NUMBA_KIND = "graphc numba"
#: with ``--unknown-batch``: graphc with the batch size declared None, beside the others
UNKNOWN_BATCH_KIND = "graphc, batch None"


def own_process_child(kind: str, batch: int, dtype: str, steps: int, warmup: int = 20) -> dict:
    """One candidate alone in this process: per-step median wall time, CPU time and minor faults."""
    params = init_params(SIZES, dtype)
    x, labels = data(batch, dtype)
    if kind == "numpy reference":
        def step(p=params, x=x, labels=labels):
            return sgd_step(p, x, labels, LR, WD)
    elif kind not in OWN_PROCESS_KINDS + (UNKNOWN_BATCH_KIND, NUMBA_KIND):
        step = peer_steps(batch, dtype, x, labels)[kind]
    else:
        known = None if kind == UNKNOWN_BATCH_KIND else batch
        fn, _ = build_graphc_step(SIZES, known, dtype, params, inplace_updates=(kind == "graphc in place"),
                                  backend="numba" if kind == NUMBA_KIND else "numpy")

        def step(fn=fn, x=x, labels=labels):
            return fn(x, labels)
    for _ in range(warmup):
        step()
    import gc as collector

    collector.disable()
    times = []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu_before = time.process_time()
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_before) / steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / steps
    return {"kind": kind, "wall": float(np.median(times)), "cpu": cpu, "faults": faults}


def run_own_process(kind: str, batch: int, dtype: str, steps: int) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, "--batches", str(batch),
               "--dtypes", dtype, "--steps", str(steps), "--blas-threads", common.BLAS_THREADS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=here)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def own_process(args) -> None:
    """Each candidate in fresh processes, alternating; medians over ``args.runs`` runs each."""
    print(f"mlp_step --own-process: MLP {'-'.join(map(str, SIZES))}, one fresh process per run, "
          f"{args.runs} runs per candidate, {args.steps} timed steps per run")
    print(conditions())
    shuffle = random.Random(0)
    kinds = OWN_PROCESS_KINDS + ((UNKNOWN_BATCH_KIND,) if args.unknown_batch else ())
    kinds += (NUMBA_KIND,) if importlib.util.find_spec("numba") is not None else ()
    x, labels = data(1, "float64")
    kinds += tuple(peer_steps(1, "float64", x, labels))  # the peers that import and agree
    summary = []
    for batch in map(int, args.batches.split(",")):
        for dtype in args.dtypes.split(","):
            check_equal(batch, dtype)
            check_equal(batch, dtype, inplace_updates=True)
            if NUMBA_KIND in kinds:
                check_numba_identical(batch, dtype)
            results: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for _ in range(args.runs):
                order = list(kinds)
                shuffle.shuffle(order)
                for kind in order:
                    results[kind].append(run_own_process(kind, batch, dtype, args.steps))
            med = {kind: {key: float(np.median([r[key] for r in rs])) for key in ("wall", "cpu", "faults")}
                   for kind, rs in results.items()}
            base = med["numpy reference"]
            print(f"batch {batch}, {dtype} (results equal the reference; medians of {args.runs} processes)")
            print(f"  {'':18s} {'wall/step':>11s} {'ratio':>7s} {'cpu/step':>11s} {'ratio':>7s} "
                  f"{'faults/step':>11s}   wall ratio per run")
            for kind in kinds:
                m = med[kind]
                runs = " ".join(f"{r['wall'] / base['wall']:.2f}" for r in results[kind])
                print(f"  {kind:18s} {fmt_time(m['wall'])} {m['wall'] / base['wall']:6.3f}x "
                      f"{fmt_time(m['cpu'])} {m['cpu'] / base['cpu']:6.3f}x {m['faults']:11.1f}   {runs}")
            summary.append((batch, dtype, med))
    print("summary, own process, graphc / reference (medians; wall, process CPU time):")
    for batch, dtype, med in summary:
        ref = med["numpy reference"]
        g, gi = med["graphc"], med["graphc in place"]
        print(f"  batch {batch:4d} {dtype:8s} wall {g['wall'] / ref['wall']:.3f}x  cpu {g['cpu'] / ref['cpu']:.3f}x"
              f"   in place: wall {gi['wall'] / ref['wall']:.3f}x  cpu {gi['cpu'] / ref['cpu']:.3f}x   "
              f"faults/step {g['faults']:.0f} / {gi['faults']:.0f} / {ref['faults']:.0f}"
              + (f"   batch None: wall {med[UNKNOWN_BATCH_KIND]['wall'] / ref['wall']:.3f}x  "
                 f"cpu {med[UNKNOWN_BATCH_KIND]['cpu'] / ref['cpu']:.3f}x" if UNKNOWN_BATCH_KIND in med else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="timed rounds per configuration")
    parser.add_argument("--blas-threads", default=None, help="BLAS threads (read by bench/common.py)")
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--own-process", action="store_true",
                        help="each candidate in fresh processes (default batches then 1,32,256)")
    parser.add_argument("--runs", type=int, default=5, help="own-process runs per candidate")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per own-process run")
    parser.add_argument("--unknown-batch", action="store_true",
                        help="own process: also graphc with the batch size declared None")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(own_process_child(args.child, int(args.batches), args.dtypes, args.steps)))
        return
    if args.own_process:
        if args.batches == "32,256" and "--batches" not in " ".join(sys.argv):
            args.batches = "1,32,256"
        own_process(args)
        return
    print(f"mlp_step: MLP {'-'.join(map(str, SIZES))}, ReLU, mean softmax cross-entropy, L2 {WD}, SGD lr {LR}")
    print(conditions())
    summary = []
    for batch in map(int, args.batches.split(",")):
        for dtype in args.dtypes.split(","):
            worst = max(check_equal(batch, dtype), check_equal(batch, dtype, inplace_updates=True))
            params = init_params(SIZES, dtype)
            fn, _ = build_graphc_step(SIZES, batch, dtype, params)
            fn_inplace, _ = build_graphc_step(SIZES, batch, dtype, params, inplace_updates=True)
            ref_params = [p.copy() for p in params]
            x, labels = data(batch, dtype)
            candidates = {
                "graphc": lambda fn=fn, x=x, labels=labels: fn(x, labels),
                "graphc in place": lambda fn=fn_inplace, x=x, labels=labels: fn(x, labels),
                "numpy reference": lambda p=ref_params, x=x, labels=labels: sgd_step(p, x, labels, LR, WD),
            }
            if importlib.util.find_spec("numba") is not None:
                check_numba_identical(batch, dtype)
                fn_numba, _ = build_graphc_step(SIZES, batch, dtype, params, backend="numba")
                candidates["graphc numba"] = lambda fn=fn_numba, x=x, labels=labels: fn(x, labels)
            candidates.update(peer_steps(batch, dtype, x, labels))
            inner = 5 if batch <= 32 else 2
            times = interleaved(candidates, args.repeats, inner=inner)
            title = (f"batch {batch}, {dtype}  (results equal the reference: max |diff| of new parameters "
                     f"{worst:.1e}; {args.repeats} rounds x {inner} calls)")
            for line in table(title, times, "numpy reference"):
                print(line)
            summary.append((batch, dtype) + ratios(times, "graphc", "numpy reference")
                           + ratios(times, "graphc in place", "numpy reference"))
    print("summary, graphc / reference (medians; wall clock, process CPU time):")
    for batch, dtype, wall, cpu, wall_inplace, cpu_inplace in summary:
        print(f"  batch {batch:4d} {dtype:8s} wall {wall:.3f}x  cpu {cpu:.3f}x   "
              f"in place: wall {wall_inplace:.3f}x  cpu {cpu_inplace:.3f}x")


if __name__ == "__main__":
    main()
