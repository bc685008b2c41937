"""Benchmark: conv2d layers, forward and forward + backward, graphc vs hand-written NumPy (and PyTorch).

Every layer is float32, batch 32, "same"-style padding (k // 2). The candidates run interleaved
in one process (``common.interleaved``):

* **graphc**: ``gc.function([x, w], y)`` and ``gc.function([x, w, gy], [y, dw, dx])`` with
  ``dx, dw = gc.vjp(y, [x, w], gy)`` (the cotangent is fed, so nothing but the convolution runs);
* **numpy**: the same algorithm written by hand as well as I can (below): pad; the windows of the
  padded input copied once into (N, C*k*k, H'*W') matrices (a strided view and one
  ``ascontiguousarray``), shared by the forward (W times them, per sample, with ``matmul``) and
  the weight gradient (gy times them transposed, per sample, summed over the batch); the input
  gradient as one ``matmul`` giving every window's contribution and ``kh * kw`` strided slice
  additions straight into ``x``'s shape. These beat ``einsum`` over the window view, which picks
  worse memory orders (the weight gradient by 1.6-1.8x). graphc's optimized plan makes the very
  same NumPy calls (its outputs are checked bit for bit against these);
* **numpy, per op** (forward+backward only): the same, but the weight gradient copies the windows
  again, as graphc's unoptimized ops do (each forms the windows it multiplies): what sharing gains;
* **torch**: ``torch.nn.functional.conv2d`` and ``torch.autograd.grad`` on the CPU with one
  thread (when PyTorch is installed).

Before timing, graphc's outputs are checked against the reference's (and PyTorch's).

Ratios are reported as the median over the rounds of the per-round CPU-time ratio (each round
times the candidates back to back in a shuffled order), which a burst of load from other jobs
shifts less than a ratio of medians; the quartiles show the spread.

    python bench/conv.py [--repeats 31] [--blas-threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import BLAS_THREADS, conditions, interleaved, ratios, round_ratios, table
from numpy.lib.stride_tricks import as_strided

import graphc as gc

#: (kernel, stride, in channels, out channels, height = width)
LAYERS = [
    (3, 1, 16, 32, 28),
    (3, 2, 32, 64, 28),
    (5, 1, 16, 32, 28),
    (5, 2, 32, 64, 28),
    (3, 1, 32, 64, 56),
    (3, 2, 64, 64, 56),
    (5, 1, 16, 16, 56),
]
BATCH = 32
DTYPE = np.float32


# ---- the hand-written NumPy reference ------------------------------------------------------------

def _columns(xp, k, s, ho, wo):
    """The windows of the padded input copied into (N, C*k*k, H'*W') matrices (rows of the copy run
    along the input's rows)."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    view = as_strided(xp, (n, c, k, k, ho, wo), (sn, sc, sh, sw, sh * s, sw * s), writeable=False)
    return np.ascontiguousarray(view).reshape(n, c * k * k, ho * wo)


def numpy_forward(x, w, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o, k = w.shape[0], w.shape[2]
    ho, wo = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    return np.matmul(w.reshape(o, -1), _columns(xp, k, s, ho, wo)).reshape(x.shape[0], o, ho, wo)


def numpy_weight_grad(xp, gy, k, s):
    """dW: per sample, gy (O, H'*W') times the windows transposed, summed over the batch."""
    n, o, ho, wo = gy.shape
    per_sample = np.matmul(gy.reshape(n, o, -1), _columns(xp, k, s, ho, wo).swapaxes(1, 2))
    return per_sample.sum(axis=0).reshape(o, xp.shape[1], k, k)


def numpy_input_grad(gy, w, x_shape, s, p):
    """dx: every window's contribution at once (W^T times gy, per sample), then k*k strided slice
    additions straight into x's shape (the entries that would land on padding are never formed)."""
    n, o, ho, wo = gy.shape
    c, k = w.shape[1], w.shape[2]
    cols = np.matmul(w.reshape(o, -1).T, gy.reshape(n, o, -1)).reshape(n, c, k, k, ho, wo)
    dx = np.zeros(x_shape, np.result_type(gy, w))
    h, wd = x_shape[2:]
    for i in range(k):
        # rows i + s*o - p that land inside x (the rest would be padding: never formed)
        r0 = max(0, -((i - p) // s)) if i < p else 0
        r1 = min(ho, (h - 1 - i + p) // s + 1)
        for j in range(k):
            c0 = max(0, -((j - p) // s)) if j < p else 0
            c1 = min(wo, (wd - 1 - j + p) // s + 1)
            top, left = i + s * r0 - p, j + s * c0 - p
            dx[:, :, top:top + s * (r1 - r0 - 1) + 1:s, left:left + s * (c1 - c0 - 1) + 1:s] += \
                cols[:, :, i, j, r0:r1, c0:c1]
    return dx


def numpy_forward_backward(x, w, gy, s, p):
    """(y, dx, dw) of y = conv2d(x, w) with cotangent gy. The forward and the weight gradient share one
    copy of the windows (as graphc's optimized plan does: ``conv2d_columns`` feeding ``conv2d_gemm``
    and ``conv2d_weight_grad_gemm``)."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o, k = w.shape[0], w.shape[2]
    n, _, ho, wo = gy.shape
    columns = _columns(xp, k, s, ho, wo)
    del xp  # the columns hold all the later steps need
    y = np.matmul(w.reshape(o, -1), columns).reshape(n, o, ho, wo)
    dw = np.matmul(gy.reshape(n, o, -1), columns.swapaxes(1, 2)).sum(axis=0).reshape(w.shape)
    del columns
    return y, numpy_input_grad(gy, w, x.shape, s, p), dw


def numpy_forward_backward_per_op(x, w, gy, s, p):
    """The same, but the weight gradient copies the windows again (as graphc's ops do unoptimized:
    each kernel forms the windows it multiplies); reported as its own column."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o, k = w.shape[0], w.shape[2]
    ho, wo = gy.shape[2:]
    y = np.matmul(w.reshape(o, -1), _columns(xp, k, s, ho, wo)).reshape(x.shape[0], o, ho, wo)
    dw = numpy_weight_grad(xp, gy, k, s)
    del xp  # not needed by the input gradient
    return y, numpy_input_grad(gy, w, x.shape, s, p), dw


# ---- graphc and PyTorch ---------------------------------------------------------------------------

def graphc_functions(k, s, c_in, c_out, size, p):
    x = gc.placeholder("x", (BATCH, c_in, size, size), DTYPE)
    w = gc.placeholder("w", (c_out, c_in, k, k), DTYPE)
    y = gc.conv2d(x, w, stride=s, padding=p)
    gy = gc.placeholder("gy", y.shape, DTYPE)
    dx, dw = gc.vjp(y, [x, w], gy)
    # outputs in the reference's order: the executor then computes dw right after y (both read the
    # padded input's windows) and dx last
    return gc.function([x, w], y), gc.function([x, w, gy], [y, dw, dx])


def torch_functions(s, p):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(BLAS_THREADS))

    def forward(x, w):
        with torch.no_grad():
            return F.conv2d(x, w, stride=s, padding=p)

    def forward_backward(x, w, gy):
        x = x.detach().requires_grad_(True)
        w = w.detach().requires_grad_(True)
        y = F.conv2d(x, w, stride=s, padding=p)
        dx, dw = torch.autograd.grad(y, [x, w], gy)
        return y, dx, dw

    return forward, forward_backward


def measure_layer(rng, layer, repeats: int, have_torch: bool) -> dict:
    """Check one layer's numbers, then time forward and forward+backward of every candidate."""
    k, s, c_in, c_out, size = layer
    p = k // 2
    x = rng.standard_normal((BATCH, c_in, size, size)).astype(DTYPE)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(DTYPE)
    fwd, fwd_bwd = graphc_functions(k, s, c_in, c_out, size, p)
    gy = rng.standard_normal(fwd(x, w).shape).astype(DTYPE)
    # the same numbers first
    ours, ref = fwd_bwd(x, w, gy), numpy_forward_backward(x, w, gy, s, p)
    ours = [ours[0], ours[2], ours[1]]  # (y, dx, dw) like the others
    for a, b, c in zip(ours, ref, numpy_forward_backward_per_op(x, w, gy, s, p)):
        np.testing.assert_array_equal(a, b)  # the same NumPy calls on the same arrays: the same bits
        np.testing.assert_array_equal(b, c)
    fwd_candidates = {"graphc": lambda: fwd(x, w), "numpy": lambda: numpy_forward(x, w, s, p)}
    both_candidates = {"graphc": lambda: fwd_bwd(x, w, gy), "numpy": lambda: numpy_forward_backward(x, w, gy, s, p),
                       "numpy, per op": lambda: numpy_forward_backward_per_op(x, w, gy, s, p)}
    if have_torch:
        import torch

        t_fwd, t_both = torch_functions(s, p)
        tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        for a, b in zip(ours, t_both(tx, tw, tgy)):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-3, atol=1e-4 * float(np.abs(a).max()))
        fwd_candidates["torch"] = lambda: t_fwd(tx, tw)
        both_candidates["torch"] = lambda: t_both(tx, tw, tgy)
    macs = BATCH * c_out * c_in * k * k * ((size + 2 * p - k) // s + 1) ** 2
    label = f"{k}x{k} stride {s}, {c_in}->{c_out} channels, {size}x{size}, batch {BATCH} ({macs / 1e6:.0f} M MACs)"
    row = {"layer": label}
    for what, candidates in (("forward", fwd_candidates), ("forward+backward", both_candidates)):
        times = interleaved(candidates, repeats=repeats, warmup=2)
        print("\n".join(table(f"{what}: {label}", times, "numpy")), flush=True)
        row[what] = {name: float(np.median(t)) for name, t in times.items()}
        row[what + " ratio"] = ratios(times, "graphc", "numpy")
        row[what + " rounds"] = round_ratios("graphc", "numpy")
        if "numpy, per op" in times:
            row[what + " vs per op"] = round_ratios("graphc", "numpy, per op")
        if "torch" in times:
            row[what + " vs torch"] = ratios(times, "graphc", "torch")
    return row


def main(repeats: int = 31, quick: bool = False) -> list[dict]:
    print(conditions())
    have_torch = importlib.util.find_spec("torch") is not None
    if have_torch:
        import torch

        print(f"torch {torch.__version__}, {int(BLAS_THREADS)} thread(s)")
    else:
        print("torch: not installed (pip install torch==2.13.0 for its column)")
    rng = np.random.default_rng(0)
    results = [measure_layer(rng, layer, repeats, have_torch) for layer in (LAYERS[:2] if quick else LAYERS)]
    print("\nsummary: graphc / numpy as the median of the per-round CPU-time ratios [quartiles], then the"
          " ratio of the CPU medians and of the wall medians; graphc / torch wall:")
    for row in results:
        parts = []
        for what in ("forward", "forward+backward"):
            wall, cpu = row[what + " ratio"]
            median, low, high = row[what + " rounds"]
            torch_part = f", {row[what + ' vs torch'][0]:.1f}x torch" if what + " vs torch" in row else ""
            shared_part = (f", {row[what + ' vs per op'][0]:.3f}x numpy per op"
                           if what + " vs per op" in row else "")
            parts.append(f"{what} {median:.3f}x [{low:.3f}-{high:.3f}] (cpu {cpu:.3f}x, wall {wall:.3f}x)"
                         f"{shared_part}{torch_part}")
        print(f"  {row['layer']}:\n    " + "\n    ".join(parts))
    worst = max(row["forward+backward rounds"][0] for row in results)
    print(f"forward+backward, largest per-layer median round ratio: {worst:.3f}x")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--blas-threads", default=None, help="BLAS threads (read by bench/common.py)")
    parser.add_argument("--quick", action="store_true", help="only the first two layers")
    args = parser.parse_args()
    main(args.repeats, args.quick)
