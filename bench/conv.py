"""Benchmark: conv2d layers, forward and forward + backward, graphc vs hand-written NumPy (and PyTorch).

Every layer is float32, batch 32, "same"-style padding (k // 2). Three candidates run interleaved
in one process (``common.interleaved``):

* **graphc**: ``gc.function([x, w], y)`` and ``gc.function([x, w, gy], [y, dw, dx])`` with
  ``dx, dw = gc.vjp(y, [x, w], gy)`` (the cotangent is fed, so nothing but the convolution runs);
* **numpy**: the same algorithm written by hand as well as I can (below): pad, windows of the
  padded input as a strided view contracted with the weights by ``einsum``; the weight gradient
  as the same windows contracted with ``gy``; the input gradient as one ``einsum`` giving every
  window's contribution and ``kh * kw`` strided slice additions straight into ``x``'s shape;
* **torch**: ``torch.nn.functional.conv2d`` and ``torch.autograd.grad`` on the CPU with one
  thread (when PyTorch is installed).

Before timing, graphc's outputs are checked against the reference's (and PyTorch's).

    python bench/conv.py [--repeats 15] [--blas-threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import BLAS_THREADS, conditions, interleaved, ratios, table
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

def _windows(xp, k, s, ho, wo):
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, (n, c, ho, wo, k, k), (sn, sc, sh * s, sw * s, sh, sw), writeable=False)


def numpy_forward(x, w, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[2]
    ho, wo = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    return np.einsum("nchwij,ocij->nohw", _windows(xp, k, s, ho, wo), w, optimize=True)


def numpy_forward_backward(x, w, gy, s, p):
    """(y, dx, dw) of y = conv2d(x, w) with cotangent gy."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[2]
    ho, wo = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    view = _windows(xp, k, s, ho, wo)
    y = np.einsum("nchwij,ocij->nohw", view, w, optimize=True)
    dw = np.einsum("nchwij,nohw->ocij", view, gy, optimize=True)
    cols = np.einsum("nohw,ocij->ijnchw", gy, w, optimize=True)
    dx = np.zeros(x.shape, np.result_type(gy, w))
    h, wd = x.shape[2:]
    for i in range(k):
        # rows i + s*o - p that land inside x (the rest would be padding: never formed)
        r0 = max(0, -((i - p) // s)) if i < p else 0
        r1 = min(ho, (h - 1 - i + p) // s + 1)
        for j in range(k):
            c0 = max(0, -((j - p) // s)) if j < p else 0
            c1 = min(wo, (wd - 1 - j + p) // s + 1)
            top, left = i + s * r0 - p, j + s * c0 - p
            dx[:, :, top:top + s * (r1 - r0 - 1) + 1:s, left:left + s * (c1 - c0 - 1) + 1:s] += \
                cols[i, j, :, :, r0:r1, c0:c1]
    return y, dx, dw


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
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))  # float32 sums
    fwd_candidates = {"graphc": lambda: fwd(x, w), "numpy": lambda: numpy_forward(x, w, s, p)}
    both_candidates = {"graphc": lambda: fwd_bwd(x, w, gy), "numpy": lambda: numpy_forward_backward(x, w, gy, s, p)}
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
        if "torch" in times:
            row[what + " vs torch"] = ratios(times, "graphc", "torch")
    return row


def main(repeats: int = 15, quick: bool = False) -> list[dict]:
    print(conditions())
    have_torch = importlib.util.find_spec("torch") is not None
    if have_torch:
        import torch

        print(f"torch {torch.__version__}, {int(BLAS_THREADS)} thread(s)")
    else:
        print("torch: not installed (pip install torch==2.13.0 for its column)")
    rng = np.random.default_rng(0)
    results = [measure_layer(rng, layer, repeats, have_torch) for layer in (LAYERS[:2] if quick else LAYERS)]
    print("\nsummary (graphc / numpy, wall and CPU medians; graphc / torch wall):")
    for row in results:
        parts = []
        for what in ("forward", "forward+backward"):
            wall, cpu = row[what + " ratio"]
            torch_part = f", {row[what + ' vs torch'][0]:.1f}x torch" if what + " vs torch" in row else ""
            parts.append(f"{what} {wall:.3f}x (cpu {cpu:.3f}x){torch_part}")
        print(f"  {row['layer']}: " + "; ".join(parts))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--blas-threads", default=None, help="BLAS threads (read by bench/common.py)")
    parser.add_argument("--quick", action="store_true", help="only the first two layers")
    args = parser.parse_args()
    main(args.repeats, args.quick)
