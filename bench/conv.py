"""Benchmark: conv2d layers, forward and forward + backward, graphc vs hand-written NumPy (and PyTorch).

Every layer is float32, batch 32, "same"-style padding (k // 2). The candidates run interleaved
in one process (``common.interleaved``):

* **graphc**: ``gc.function([x, w], y)`` and ``gc.function([x, w, gy], [y, dw, dx])`` with
  ``dx, dw = gc.vjp(y, [x, w], gy)`` (the cotangent is fed, so nothing but the convolution runs);
* **numpy**: the same algorithm written by hand as well as I can (below): pad; the windows of the
  padded input copied once into (N, C*k*k, H'*W') matrices (a strided view and one
  ``ascontiguousarray``; graphc's ``np.copyto`` into its buffer copies the same way), shared by
  the forward (W times them, per sample, with ``matmul``) and the weight gradient (gy times them
  transposed, per sample, summed over the batch); the input gradient as one ``matmul`` giving
  every window's contribution and ``kh * kw`` strided slice additions straight into ``x``'s
  shape. These beat ``einsum`` over the window view, which picks worse memory orders (the weight
  gradient by 1.6-1.8x). graphc's optimized plan makes the same NumPy calls, some into buffers it
  keeps, its input gradient a block of samples at a time as "numpy, blocked" does (its outputs are
  checked bit for bit against these);
* **numpy, per op** (forward+backward only): the same, but the weight gradient copies the windows
  again, as graphc's unoptimized ops do (each forms the windows it multiplies): what sharing gains;
* **numpy, blocked** (forward+backward only): the "numpy" reference with the input gradient made a
  block of samples at a time, as graphc's (``numpy_input_grad_blocked``), and for stride 1 overlap-added
  by shifted whole planes instead of 2-D slices (``_input_grad_runs``), as graphc's:
  the best hand-written form of graphc's algorithm, which graphc should match;
* **numpy, kept buffers**: the "numpy" reference with all its temporaries (the padded input, the
  window columns, the per-sample weight-gradient products, the input gradient's window
  contributions) allocated once, before timing, and written with ``out=`` / ``np.copyto`` at every
  call, as graphc's compiled conv steps keep theirs of 32 MiB or more and the padded input
  (``Op.compiled_impl``, ``graphc.ops.conv.KEEP_MIN_BYTES``); the returned arrays are fresh, as
  everyone's. "numpy" is NumPy as a user writes it, fresh arrays at every call, whose pages fault
  in (and are zeroed) at every call above glibc's 32 MiB mmap threshold: this column shows how
  much of graphc's lead is that;
* **torch**: ``torch.nn.functional.conv2d`` and ``torch.autograd.grad`` on the CPU, with as many
  threads as BLAS (one by default; when PyTorch is installed; run with /tmp/peers/bin/python).

Before timing, graphc's outputs are checked against the references' bit for bit (and PyTorch's to
float32 tolerances). Each candidate's minor page faults per call (``resource.getrusage``) are
counted over a few calls after the timing.

Ratios are reported as the median over the rounds of the per-round CPU-time ratio (each round
times the candidates back to back in a shuffled order), which a burst of load from other jobs
shifts less than a ratio of medians; the quartiles show the spread.

    python bench/conv.py [--repeats 31] [--blas-threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import resource

import common  # noqa: F401 - sets BLAS threads before NumPy loads
import numpy as np
from common import BLAS_THREADS, CPU_TIMES, conditions, interleaved, round_ratios, table
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
    n, o = gy.shape[:2]
    return _overlap_add(np.matmul(w.reshape(o, -1).T, gy.reshape(n, o, -1)), gy, w, x_shape, s, p)


def numpy_input_grad_blocked(gy, w, x_shape, s, p, block_bytes=3 << 20):
    """dx as ``numpy_input_grad``, a block of samples at a time (as graphc does since 2026-12-04, see
    ``graphc.ops.conv.CONTRIBUTION_BLOCK_BYTES``): each block's contributions (at most ``block_bytes``,
    at least one sample) made into one buffer and overlap-added into its samples of dx while cached; for
    stride 1 by shifted whole planes (``_input_grad_runs``), as graphc since 2026-12-04."""
    n, o, ho, wo = gy.shape
    c, k = w.shape[1], w.shape[2]
    dtype = np.result_type(gy, w)
    block = max(1, min(n, block_bytes // (c * k * k * ho * wo * dtype.itemsize)))
    if s == 1 and wo == x_shape[3]:
        return _input_grad_runs(gy, w, x_shape, p, block, block_bytes)
    buffer = np.empty((block, c * k * k, ho * wo), dtype)
    dx = np.empty(x_shape, dtype)
    weights, gy_rows = w.reshape(o, -1).T, gy.reshape(n, o, -1)
    for start in range(0, n, block):
        stop = min(n, start + block)
        contributions = np.matmul(weights, gy_rows[start:stop], out=buffer[:stop - start])
        _overlap_add(contributions, gy[start:stop], w, (stop - start,) + x_shape[1:], s, p, dx[start:stop])
    return dx


def _input_grad_runs(gy, w, x_shape, p, block, block_bytes):
    """``numpy_input_grad_blocked`` for stride 1 where the windows are as many as x's columns (W' = W), as
    graphc's (``graphc.ops.conv._input_grad_by_runs``): the GEMM writes each block's contributions as rows
    of H'*W entries with zeros between them (``gap``, set once a call), so that kernel offset (i, j)'s plane
    is one addition of whole planes of dx, shifted by (i - p) * W + (j - p) entries (reading the zeros where
    it leaves the row; NumPy adds whole contiguous planes at about half the cost of partial rows, a third of
    2-D slices); the contributions such a shift carries over a row's left or right edge are set to zero
    first (adding 0.0 to a sum that starts from zeros changes nothing: the same bits). Where a sample's
    contributions do not fit a block, only the parts inside the planes, with no gaps, as graphc's. The views
    of the buffer are made once a call (``np.ndarray`` on it), as graphc's: ``as_strided`` per block costs
    about 3.5 us a view."""
    n, o, ho, wo = gy.shape
    c, k = w.shape[1], w.shape[2]
    h, wd = x_shape[2:]
    dtype = np.result_type(gy, w)
    rows, size = c * k * k, dtype.itemsize
    offsets = [(i, j) for i in range(k) for j in range(k)]
    shifts = [(i - p) * wd + (j - p) for i, j in offsets]
    # whole planes where a sample's contributions fit a block (as graphc: beyond, the runs inside the planes)
    if rows * ho * wo * size <= block_bytes:
        ranges = [(0, h * wd)] * len(shifts)
    else:
        ranges = [(max(0, shift), min(h * wd, ho * wo + shift)) for shift in shifts]
    gap = max(0, max(max(shift - lo, hi - shift - ho * wo) for shift, (lo, hi) in zip(shifts, ranges)))
    pitch = ho * wo + gap
    flat = np.empty(gap + block * rows * pitch, dtype)
    np.ndarray((block * rows + 1, gap), dtype, flat, 0, (pitch * size, size))[...] = 0
    dx = np.empty(x_shape, dtype)
    weights, gy_rows = w.reshape(o, -1).T, gy.reshape(n, o, -1)
    sample, channel = rows * pitch * size, k * k * pitch * size
    products = np.ndarray((block, rows, ho * wo), dtype, flat, gap * size, (sample, pitch * size, size))
    cols = np.ndarray((block, c, k, k, ho, wo), dtype, flat, gap * size,
                      (sample, channel, k * pitch * size, pitch * size, wo * size, size))
    parts = [np.ndarray((block, c, hi - lo), dtype, flat, (gap + (i * k + j) * pitch - shift + lo) * size,
                        (sample, channel, size)) for (i, j), shift, (lo, hi) in zip(offsets, shifts, ranges)]
    for start in range(0, n, block):
        stop = min(n, start + block)
        b = stop - start
        np.matmul(weights, gy_rows[start:stop], out=products[:b])
        for j in range(k):
            if j < p:
                cols[:b, :, :, j, :, :p - j] = 0
            elif j > p:
                cols[:b, :, :, j, :, wd - (j - p):] = 0
        target = dx[start:stop].reshape(b, c, h * wd)
        target[...] = 0
        for part, (lo, hi) in zip(parts, ranges):
            target[:, :, lo:hi] += part[:b]
    return dx


def _overlap_add(contributions, gy, w, x_shape, s, p, dx=None):
    """dx from every window's contribution (N, C*k*k, H'*W'): k*k strided slice additions into zeros
    (``dx`` zeroed, if given)."""
    n, o, ho, wo = gy.shape
    c, k = w.shape[1], w.shape[2]
    cols = contributions.reshape(n, c, k, k, ho, wo)
    if dx is None:
        dx = np.zeros(x_shape, np.result_type(gy, w))
    else:
        dx[...] = 0
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


def numpy_forward_backward(x, w, gy, s, p, input_grad=numpy_input_grad):
    """(y, dx, dw) of y = conv2d(x, w) with cotangent gy. The forward and the weight gradient share one
    copy of the windows (as graphc's optimized plan does: ``conv2d_columns`` feeding ``conv2d_gemm``
    and ``conv2d_weight_grad_gemm``); dx by ``input_grad`` (None: not computed)."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o, k = w.shape[0], w.shape[2]
    n, _, ho, wo = gy.shape
    columns = _columns(xp, k, s, ho, wo)
    del xp  # the columns hold all the later steps need
    y = np.matmul(w.reshape(o, -1), columns).reshape(n, o, ho, wo)
    dw = np.matmul(gy.reshape(n, o, -1), columns.swapaxes(1, 2)).sum(axis=0).reshape(w.shape)
    del columns
    return y, None if input_grad is None else input_grad(gy, w, x.shape, s, p), dw


def numpy_forward_backward_blocked(x, w, gy, s, p):
    """``numpy_forward_backward`` with the input gradient a block of samples at a time."""
    y, _, dw = numpy_forward_backward(x, w, gy, s, p, input_grad=None)
    return y, numpy_input_grad_blocked(gy, w, x.shape, s, p), dw


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


class KeptNumpy:
    """The "numpy" reference with its large temporaries allocated once (for one layer's shapes) and
    written with ``out=`` at every call; the same NumPy calls on the same values, so the same bits."""

    def __init__(self, x_shape, w_shape, s, p, dtype):
        n, c, h, wd = x_shape
        o, _, k, _ = w_shape
        self.s, self.p, self.k = s, p, k
        self.ho, self.wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
        self.xp = np.zeros((n, c, h + 2 * p, wd + 2 * p), dtype)  # the border stays zero: only the middle is written
        self.columns = np.empty((n, c * k * k, self.ho * self.wo), dtype)
        self.per_sample = np.empty((n, o, c * k * k), dtype)
        self.contributions = np.empty((n, c * k * k, self.ho * self.wo), dtype)

    def _columns(self, x):
        p, s, k = self.p, self.s, self.k
        n, c, h, wd = x.shape
        self.xp[:, :, p:p + h, p:p + wd] = x
        sn, sc, sh, sw = self.xp.strides
        view = as_strided(self.xp, (n, c, k, k, self.ho, self.wo), (sn, sc, sh, sw, sh * s, sw * s), writeable=False)
        np.copyto(self.columns.reshape(view.shape), view)
        return self.columns

    def forward(self, x, w):
        o = w.shape[0]
        return np.matmul(w.reshape(o, -1), self._columns(x)).reshape(x.shape[0], o, self.ho, self.wo)

    def forward_backward(self, x, w, gy):
        n, o = gy.shape[:2]
        columns = self._columns(x)
        y = np.matmul(w.reshape(o, -1), columns).reshape(n, o, self.ho, self.wo)
        np.matmul(gy.reshape(n, o, -1), columns.swapaxes(1, 2), out=self.per_sample)
        dw = self.per_sample.sum(axis=0).reshape(w.shape)
        np.matmul(w.reshape(o, -1).T, gy.reshape(n, o, -1), out=self.contributions)
        return y, _overlap_add(self.contributions, gy, w, x.shape, self.s, self.p), dw


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


def faults_per_call(fn, calls: int = 3) -> float:
    """Minor page faults per call of ``fn`` (after the timing: its steady state)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def measure_layer(rng, layer, repeats: int, have_torch: bool) -> dict:
    """Check one layer's numbers, then time forward and forward+backward of every candidate."""
    k, s, c_in, c_out, size = layer
    p = k // 2
    x = rng.standard_normal((BATCH, c_in, size, size)).astype(DTYPE)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(DTYPE)
    fwd, fwd_bwd = graphc_functions(k, s, c_in, c_out, size, p)
    gy = rng.standard_normal(fwd(x, w).shape).astype(DTYPE)
    kept = KeptNumpy(x.shape, w.shape, s, p, DTYPE)
    # the same numbers first (graphc's second call: it runs in the buffers its first call kept)
    fwd_bwd(x, w, gy)
    ours, ref = fwd_bwd(x, w, gy), numpy_forward_backward(x, w, gy, s, p)
    ours = [ours[0], ours[2], ours[1]]  # (y, dx, dw) like the others
    for a, b, c, d, e in zip(ours, ref, numpy_forward_backward_per_op(x, w, gy, s, p), kept.forward_backward(x, w, gy),
                             numpy_forward_backward_blocked(x, w, gy, s, p)):
        np.testing.assert_array_equal(a, b)  # the same NumPy calls on the same arrays: the same bits
        np.testing.assert_array_equal(b, c)
        np.testing.assert_array_equal(b, d)
        np.testing.assert_array_equal(b, e)
    np.testing.assert_array_equal(fwd(x, w), kept.forward(x, w))
    np.testing.assert_array_equal(fwd(x, w), ref[0])
    fwd_candidates = {"graphc": lambda: fwd(x, w), "numpy": lambda: numpy_forward(x, w, s, p),
                      "numpy, kept buffers": lambda: kept.forward(x, w)}
    both_candidates = {"graphc": lambda: fwd_bwd(x, w, gy), "numpy": lambda: numpy_forward_backward(x, w, gy, s, p),
                       "numpy, per op": lambda: numpy_forward_backward_per_op(x, w, gy, s, p),
                       "numpy, blocked": lambda: numpy_forward_backward_blocked(x, w, gy, s, p),
                       "numpy, kept buffers": lambda: kept.forward_backward(x, w, gy)}
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
        row[what] = {name: float(np.median(CPU_TIMES[name])) for name in times}
        row[what + " faults"] = {name: faults_per_call(fn) for name, fn in candidates.items()}
        faults = row[what + " faults"]
        print("  minor page faults per call: " + ", ".join(f"{name} {n:.0f}" for name, n in faults.items()))
        # per-round CPU-time ratios of graphc to each other candidate: (median, 25th, 75th percentile)
        row[what + " rounds"] = {name: round_ratios("graphc", name) for name in times if name != "graphc"}
    return row


def _summary(results: list[dict]) -> None:
    print("\nsummary: graphc / each candidate, the median of the per-round CPU-time ratios [quartiles]; CPU medians;"
          " minor page faults per call:")
    for row in results:
        print(f"  {row['layer']}:")
        for what in ("forward", "forward+backward"):
            rounds = row[what + " rounds"]
            parts = [f"{name} {median:.3f}x [{low:.3f}-{high:.3f}]" for name, (median, low, high) in rounds.items()]
            cpu = ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in row[what].items())
            faults = ", ".join(f"{name} {n:.0f}" for name, n in row[what + " faults"].items())
            print(f"    {what}: graphc / " + "; ".join(parts) + f"\n      cpu: {cpu}\n      faults: {faults}")
    for what in ("forward", "forward+backward"):
        medians = [row[what + " rounds"]["numpy"][0] for row in results]
        print(f"{what}, graphc / numpy per-layer medians: {', '.join(f'{m:.3f}' for m in medians)}; largest "
              f"{max(medians):.3f}x")


def main(repeats: int = 31, quick: bool = False) -> list[dict]:
    print(conditions())
    have_torch = importlib.util.find_spec("torch") is not None
    if have_torch:
        import torch

        torch.set_num_threads(int(BLAS_THREADS))
        try:
            torch.set_num_interop_threads(int(BLAS_THREADS))
        except RuntimeError:  # (only before any inter-op work; nothing here uses it)
            pass
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    else:
        print("torch: not installed (run with /tmp/peers/bin/python, or pip install torch, for its column)")
    rng = np.random.default_rng(0)
    results = [measure_layer(rng, layer, repeats, have_torch) for layer in (LAYERS[:2] if quick else LAYERS)]
    _summary(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--blas-threads", default=None, help="BLAS threads (read by bench/common.py)")
    parser.add_argument("--quick", action="store_true", help="only the first two layers")
    args = parser.parse_args()
    main(args.repeats, args.quick)
