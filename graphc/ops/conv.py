"""Convolutional ops: pad, conv2d, conv2d_transpose, max_pool2d, avg_pool2d.

Layouts follow PyTorch: inputs are NCHW, conv2d weights OIHW (``(O, C/groups, kh, kw)``),
conv2d_transpose weights ``(C_in, C_out/groups, kh, kw)``; outputs have PyTorch's sizes and
numbers.

How they compute (all NumPy, no im2col copy of the input):

* the windows of an (already padded) input are a read-only strided view of shape
  ``(N, C, H', W', kh, kw)``; a convolution contracts it with the weights by ``einsum``;
* the gradient of a window view (the input gradient of a convolution, a transposed
  convolution, the pools' input gradients) is an *overlap-add*: one contraction gives every
  window's contribution, and ``kh * kw`` strided slice additions put them in place (no
  ``np.add.at``); a convolution's makes and adds them a block of samples at a time, in one
  buffer that stays in the cache (``CONTRIBUTION_BLOCK_BYTES``), and with unit strides and "same"
  widths adds each offset's plane as one shifted run of the flattened planes (``_overlap_add_runs``);
* the weight gradient is a correlation of the input's windows with the output gradient;
* a compiled step keeps its large temporaries (the windows' copy, the per-sample products, the
  padded input; ``KEEP_MIN_BYTES``) from call to call instead of allocating them again
  (``Op.compiled_impl``, ``graphc.op.kept_buffer``): the same values, no page faults.

The op set is closed under differentiation, so gradients of every order are graph tensors::

    conv2d(x, w)            -> d/dx conv2d_input_grad(g, w; x)    d/dw conv2d_weight_grad(x, g; w)
    conv2d_input_grad(g, w) -> d/dg conv2d(pad(h), w)              d/dw conv2d_weight_grad(pad(h), g; w)
    conv2d_weight_grad(x, g)-> d/dx conv2d_input_grad(g, h; x)    d/dg conv2d(x, h)
    conv2d_transpose(x, w)  -> d/dx conv2d(h, w)                   d/dw conv2d_weight_grad(h, x; w)
    max_pool2d(x)           -> max_pool2d_grad(x, y, g)   -> max_pool2d_gather(x, y, h) -> max_pool2d_grad ...
    avg_pool2d(x)           -> avg_pool2d_grad(g; x)      -> avg_pool2d(h)
    pad(x)                  -> a slice of g (getitem); under a convolution, conv2d_input_grad with
                               that padding, which overlap-adds straight into x's shape

(``; ref`` marks a non-differentiable input that only gives the result's shape at run time,
so unknown sizes work.) Padding of a convolution is a separate ``pad`` node: the weight
gradient then reuses the padded input instead of padding it again.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from graphc.errors import DTypeError, GradientError, ShapeError
from graphc.op import Op, apply, as_tensor, kept_buffer, op_dataclass
from graphc.ops.shape import getitem
from graphc.tensor import Tensor
from graphc.types import format_shape

# ---- parameter checks -----------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _pair(op: str, what: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as a pair of Python ints."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{op}: {what} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ShapeError(f"{op}: {what} must be at least {minimum}, got {value!r}")
    return pair


def _groups(op: str, value) -> int:
    if not _is_int(value):
        raise TypeError(f"{op}: groups must be an int, got {value!r}")
    if value < 1:
        raise ShapeError(f"{op}: groups must be at least 1, got {value!r}")
    return int(value)


def _check_pair_field(op: str, what: str, value, minimum: int) -> None:
    """Validate a dataclass field (also what gc.load rebuilds from a file)."""
    if not (isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value)):
        raise TypeError(f"{op}: {what} must be a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ShapeError(f"{op}: {what} must be at least {minimum}, got {value!r}")


def _float_dtype(op: str, *tensors: Tensor) -> np.dtype:
    for t in tensors:
        if t.dtype.kind != "f":
            raise DTypeError(f"{op}: inputs must be floating point, got {', '.join(str(u.dtype) for u in tensors)}")
    return np.result_type(*(t.dtype for t in tensors))


def _rank4(op: str, what: str, t: Tensor, layout: str) -> None:
    if t.ndim != 4:
        raise ShapeError(f"{op}: {what} must be 4-D {layout}, got shape {format_shape(t.shape)}")


def _window_count(op: str, size, kernel, stride: int, dilation: int, shapes: str, axis: str):
    """Output size along one axis of windows over ``size`` (already padded), or None if unknown."""
    if size is None or kernel is None:
        return None
    span = dilation * (kernel - 1) + 1
    if span > size:
        raise ShapeError(f"{op}: the kernel ({kernel} with dilation {dilation}, spanning {span}) is larger than "
                         f"the padded input ({size}) along {axis}: {shapes}")
    return (size - span) // stride + 1


# ---- NumPy kernels --------------------------------------------------------------------------------

#: a compiled conv step keeps its temporaries of at least this many bytes from call to call (see
#: ``Op.compiled_impl``). Larger requests get fresh pages from malloc at every call (glibc maps them
#: anew above its largest mmap threshold, 32 MiB), which fault in and are zeroed page by page: a
#: kept buffer saves that. Smaller ones come from memory the last call freed, often still in the
#: cache (32 MiB of L3 here), where a kept buffer would be memory of its own: measured 1-4 % slower
#: on the 28x28 layers of bench/conv.py
KEEP_MIN_BYTES = 32 << 20


def _workspace(kept: dict | None, slot: str, shape: tuple, dtype) -> np.ndarray:
    """``kept``'s buffer for ``slot`` if it is large enough to keep (``KEEP_MIN_BYTES``), else a new array."""
    if kept is not None and math.prod(shape) * np.dtype(dtype).itemsize < KEEP_MIN_BYTES:
        kept = None
    return kept_buffer(kept, slot, shape, dtype)


def _windows(xp: np.ndarray, kernel, stride, dilation, out_hw, groups: int = 1) -> np.ndarray:
    """Read-only view of the windows of ``xp`` (N, C, Hp, Wp): (N, C, H', W', kh, kw), or with
    ``groups > 1`` (N, G, C/G, H', W', kh, kw)."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    tail_shape = (out_hw[0], out_hw[1], kernel[0], kernel[1])
    tail_strides = (sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1])
    if groups == 1:
        return as_strided(xp, (n, c) + tail_shape, (sn, sc) + tail_strides, writeable=False)
    return as_strided(xp, (n, groups, c // groups) + tail_shape, (sn, sc * (c // groups), sc) + tail_strides,
                      writeable=False)


def _columns(xp: np.ndarray, kernel, stride, dilation, out_hw, groups: int, kept: dict | None = None) -> np.ndarray:
    """The windows of ``xp`` (N, C, Hp, Wp) copied into the matrices the contractions multiply:
    (N, G, C/G * kh * kw, H', W'), in ``kept``'s buffer (see ``kept_buffer``). The copy runs along the
    windows' rows (stride ``stride[1]``), the order in which the input is laid out."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    shape = (n, groups, c // groups, kernel[0], kernel[1], out_hw[0], out_hw[1])
    strides = (sn, sc * (c // groups), sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    view = as_strided(xp, shape, strides, writeable=False)
    cols_shape = (n, groups, shape[2] * shape[3] * shape[4]) + shape[5:]
    if kept is None or math.prod(cols_shape) * xp.dtype.itemsize < KEEP_MIN_BYTES:
        # fresh memory: NumPy's own copy, measured 3-4 % faster in a compiled step than np.empty + np.copyto
        # (bench/conv.py's 3x3 16->32 28x28 layer: 0.88 against 0.91 ms; the same copy, the same values).
        # Always a copy: a 1x1 window's view is C-contiguous already (np.ascontiguousarray would return it),
        # and the plan may write into the input's buffer while the columns are still read
        return view.copy().reshape(cols_shape)
    cols = kept_buffer(kept, "columns", cols_shape, xp.dtype)
    np.copyto(cols.reshape(shape), view)
    return cols


def _out_hw(op: str, padded_hw, kernel, stride, dilation) -> tuple[int, int]:
    result = []
    for size, k, s, d, axis in zip(padded_hw, kernel, stride, dilation, ("height", "width")):
        span = d * (k - 1) + 1
        if span > size:
            raise ValueError(f"{op}: the kernel (spanning {span}) is larger than the padded input ({size}) "
                             f"along {axis}")
        result.append((size - span) // s + 1)
    return result[0], result[1]


def _clip(base: int, stride: int, count: int, size: int):
    """Of the positions ``base + stride * o`` (o < count), those in [0, size): (o_start, o_stop, first) or None."""
    first_o = 0 if base >= 0 else (-base + stride - 1) // stride
    last_o = min(count - 1, (size - 1 - base) // stride)
    if first_o > last_o:
        return None
    return first_o, last_o + 1, base + stride * first_o


def _overlap_add(parts, shape, kernel, stride, dilation, dtype, offset=(0, 0), out=None) -> np.ndarray:
    """The adjoint of the window view: zeros of ``shape`` (N, C, H, W) plus, for every kernel offset
    (i, j), ``parts(i, j)`` (N, C, H', W') added at rows ``i*d + s*k - offset[0]`` and columns
    ``j*d + s*l - offset[1]``. ``offset`` is the padding the windows were taken over: entries that
    fall into it are dropped, so no padded buffer is made and cropped. Written into ``out`` (of
    ``shape`` and ``dtype``, its contents ignored) if given.

    An offset whose block no earlier offset has touched is written as ``part + 0.0`` into the
    uninitialized output, and only the entries no such block covers are zeroed first: the values of
    zeros plus every part in the same order (``0.0 + a`` is ``a + 0.0``, signed zeros and NaNs
    included), with one pass over the output less (see ``_overlap_plan``)."""
    computed = {(0, 0): parts(0, 0)}  # (the first offset's part gives the windows' count)
    ho, wo = computed[0, 0].shape[-2:]
    blocks, zeros = _overlap_plan(tuple(shape[2:]), (ho, wo), tuple(kernel), tuple(stride), tuple(dilation),
                                  tuple(offset))
    if zeros is None:
        if out is None:
            out = np.zeros(shape, dtype)
        else:
            out[...] = 0
    else:
        if out is None:
            out = np.empty(shape, dtype)
        if zeros.any():
            out[:, :, zeros] = 0
    for i, j, rows, cols, first in blocks:
        part = computed.pop((i, j)) if (i, j) in computed else parts(i, j)
        part = part[..., rows[0]:rows[1], cols[0]:cols[1]]
        target = out[:, :, rows[2], cols[2]]
        if first:
            np.add(part, 0.0, out=target)
        else:
            target += part
    return out


@functools.lru_cache(maxsize=256)
def _overlap_plan(size, out_hw, kernel, stride, dilation, offset):
    """The overlap-add's blocks, in order: (i, j, (r0, r1, rows of the output), (c0, c1, columns), first),
    ``first`` when no earlier block touches any of its entries; and the (H, W) mask of the entries to
    zero before (those no first block covers), or None: zero the whole output and add every block (when
    that mask would cover more than an eighth of the entries: a masked assignment costs more per entry)."""
    height, width = size
    touched = np.zeros(size, bool)
    covered = np.zeros(size, bool)
    blocks = []
    for i in range(kernel[0]):
        rows = _clip(i * dilation[0] - offset[0], stride[0], out_hw[0], height)
        for j in range(kernel[1]):
            cols = _clip(j * dilation[1] - offset[1], stride[1], out_hw[1], width)
            if rows is None or cols is None:
                continue
            (r0, r1, top), (c0, c1, left) = rows, cols
            block = (slice(top, top + stride[0] * (r1 - r0 - 1) + 1, stride[0]),
                     slice(left, left + stride[1] * (c1 - c0 - 1) + 1, stride[1]))
            first = not touched[block].any()
            touched[block] = True
            if first:
                covered[block] = True
            blocks.append((i, j, (r0, r1, block[0]), (c0, c1, block[1]), first))
    zeros = ~covered
    zeros.setflags(write=False)  # (shared by every call of this geometry)
    return tuple(blocks), (None if 8 * int(zeros.sum()) > zeros.size else zeros)


def _check_channels(op: str, channels: int, weight_shape, groups: int, what: str = "input") -> None:
    if channels % groups or weight_shape[1] * groups != channels or weight_shape[0] % groups:
        raise ValueError(f"{op}: {what} with {channels} channels does not match weights of shape "
                         f"{tuple(weight_shape)} with groups={groups}")


def _correlate(xp, w, stride, dilation, groups, kept=None):
    """Cross-correlation of the padded input (N, C, Hp, Wp) with w (O, C/G, kh, kw)."""
    _check_channels("conv2d", xp.shape[1], w.shape, groups)
    kernel = w.shape[2:]
    out_hw = _out_hw("conv2d", xp.shape[2:], kernel, stride, dilation)
    return _columns_times_weights(_columns(xp, kernel, stride, dilation, out_hw, groups, kept), w, out_hw)


def _columns_times_weights(cols, w, out_hw):
    """The correlation from the window columns (N, G, C/G*kh*kw, H'*W'): (G, O/G, C/G*kh*kw) times them,
    which comes out in NCHW order, contiguous."""
    n, groups = cols.shape[:2]
    o = w.shape[0]
    out = np.matmul(w.reshape(groups, o // groups, -1), cols.reshape(n, groups, -1, out_hw[0] * out_hw[1]))
    return out.reshape(n, o, *out_hw).astype(np.result_type(cols, w), copy=False)


def _correlate_transpose(g, w, stride, dilation, groups, padded_hw, padding=(0, 0, 0, 0), kept=None):
    """The adjoint of ``_correlate`` in its input: (N, O, H', W') -> (N, C, Hp, Wp), or with ``padding``
    (top, bottom, left, right) straight into (N, C, Hp - top - bottom, Wp - left - right). The windows'
    contributions go, a block of samples at a time (``CONTRIBUTION_BLOCK_BYTES``), into ``kept``'s buffer
    (see ``_workspace``)."""
    o, cg = w.shape[:2]
    if g.shape[1] != o or o % groups:
        raise ValueError(f"conv2d_transpose: input with {g.shape[1]} channels does not match weights of shape "
                         f"{tuple(w.shape)} with groups={groups}")
    kernel = w.shape[2:]
    n, _, ho, wo = g.shape
    for size, k, s, d, out in zip(padded_hw, kernel, stride, dilation, (ho, wo)):
        if d * (k - 1) + s * (out - 1) + 1 > size:
            raise ValueError(f"conv2d_transpose: {out} windows of kernel {k} (stride {s}, dilation {d}) do not fit "
                             f"in an output of size {size}")
    dtype = np.result_type(g, w)
    top, bottom, left, right = padding
    out = np.empty((n, groups * cg, padded_hw[0] - top - bottom, padded_hw[1] - left - right), dtype)
    # every window's contribution, (N, G, C/G*kh*kw, H'*W'): one GEMM per sample and group that reads the
    # gradient as it is laid out (N, O, H'*W') and writes each offset's plane with contiguous rows. Made
    # and overlap-added a block of samples at a time into one buffer, which stays in the cache between
    # the two (the whole batch's would go out to memory and back: kh*kw times the input's size). Each
    # sample's GEMM and sums are the same as the whole batch's: the same values.
    block = _sample_block(n, groups * cg * kernel[0] * kernel[1] * ho * wo * dtype.itemsize)
    weights = w.reshape(groups, o // groups, -1).swapaxes(-1, -2)
    g = g.reshape(n, groups, o // groups, ho * wo)
    if stride == (1, 1) and wo == out.shape[3]:
        # unit strides and windows as many as the output's columns ("same" padding): the rows' pitch is the
        # output's, so every kernel offset's plane lands on the output as one shifted run
        _input_grad_by_runs(g, weights, out, tuple(kernel), tuple(dilation), (top, left), ho, block, kept)
        return out
    buffer = _workspace(kept, "contributions", (block, groups, cg * kernel[0] * kernel[1], ho * wo), dtype)
    for start in range(0, n, block):
        stop = min(n, start + block)
        cols = np.matmul(weights, g[start:stop], out=buffer[:stop - start])
        cols = cols.reshape(stop - start, groups * cg, kernel[0], kernel[1], ho, wo)
        _overlap_add(functools.partial(_offset_plane, cols), (stop - start,) + out.shape[1:],
                     kernel, stride, dilation, dtype, (top, left), out[start:stop])
    return out


def _input_grad_by_runs(g, weights, out, kernel, dilation, offset, rows, block, kept) -> None:
    """``_correlate_transpose``'s blocks where its strides are 1 and the windows as many as ``out``'s columns:
    each block's contributions (the same GEMM, its rows of ``H' * W`` entries ``gap`` entries apart in one
    buffer, the gaps zero) overlap-added into ``out`` by ``_overlap_add_runs``. ``g`` is (N, G, O/G, H'*W),
    ``weights`` (G, C/G*kh*kw, O/G). The views of the buffer are made once a call: every block reuses it
    from its start (``as_strided`` costs about 3.5 us a view, 11 a block).

    Whole planes (``_runs_plan``'s ``whole``) where a sample's contributions fit a block
    (``CONTRIBUTION_BLOCK_BYTES``); larger ones add the runs' parts inside the plane, with no gaps: measured
    on the 3x3 32->64 and 5x5 16->16 56x56 layers of bench/conv.py (3.6 and 5 MB a sample), whole planes
    took 6 and 13 % longer than such runs, against 11-26 % less time where a sample fits (28x28 and 40x40)."""
    n, groups = g.shape[:2]
    c, height, width = out.shape[1:]
    planes = c * kernel[0] * kernel[1]  # (a sample's rows of contributions)
    whole = planes * rows * width * out.dtype.itemsize <= CONTRIBUTION_BLOCK_BYTES
    plan = _runs_plan((height, width), (rows, width), kernel, dilation, offset, whole)
    gap = plan[2]
    pitch = rows * width + gap
    flat = _workspace(kept, "contributions", (gap + block * planes * pitch,), out.dtype)
    size = flat.itemsize
    # the gaps: before every row, and after the last (the GEMM writes only the rows)
    np.ndarray((block * planes + 1, gap), flat.dtype, flat, 0, (pitch * size, size))[...] = 0
    products = np.ndarray((block, groups, planes // groups, rows * width), flat.dtype, flat, gap * size,
                          (planes * pitch * size, planes // groups * pitch * size, pitch * size, size))
    views = _runs_views(flat, gap, pitch, (block, c) + tuple(kernel) + (rows, width), height, plan)
    for start in range(0, n, block):
        stop = min(n, start + block)
        np.matmul(weights, g[start:stop], out=products[:stop - start])
        _overlap_add_runs(views, out[start:stop], plan)


def _runs_views(flat: np.ndarray, gap: int, pitch: int, shape: tuple, height: int, plan) -> tuple:
    """The views of ``flat`` that ``_overlap_add_runs`` reads: the contributions of kernel offset (i, j) to
    sample s and channel c, the ``H' * W`` entries from ``gap + ((s*C + c)*kh*kw + i*kw + j) * pitch``, as
    (N, C, kh, kw, H', W) (``shape``); and for each of ``plan``'s additions, the (N, C, height * W) entries it
    adds to the flattened output planes (its rows shifted, reaching into the ``gap`` entries around them)."""
    n, c, kh, kw, rows, width = shape
    size = flat.itemsize
    sample, channel = c * kh * kw * pitch * size, kh * kw * pitch * size
    planes = np.ndarray(shape, flat.dtype, flat, gap * size,
                        (sample, channel, kw * pitch * size, pitch * size, width * size, size))
    parts = tuple(np.ndarray((n, c, stop - start), flat.dtype, flat,
                             (gap + (i * kw + j) * pitch - shift + start) * size, (sample, channel, size))
                  for i, j, shift, _, start, stop in plan[0])
    return planes, parts


def _overlap_add_runs(views: tuple, out: np.ndarray, plan) -> None:
    """``_overlap_add`` of unit strides where the windows are as many as ``out``'s columns, into ``out``
    (N, C, H, W), of the contributions that ``views`` (``_runs_views``' of a buffer whose gaps are zero; its
    first N samples) give; ``plan`` is ``_runs_plan``'s. It writes into the buffer.

    Offset (i, j) moves its plane by ``(i*d - top) * W + (j*d - left)`` entries of the flattened plane,
    so each offset is one addition of whole output planes, whose parts run into the zeros of the gaps where
    they would leave the plane: NumPy's additions of whole contiguous planes cost half those of partial
    rows (and a third of those of 2-D slices: bench/conv.py's 3x3 16->32 28x28 layer's overlap-add measured
    2.35 ms by slices, 1.7 ms by partial runs, 1.3 ms this way). A shifted plane also carries the contributions
    whose column falls off the output's left or right edge into the row beside it; those are set to zero
    first. A zero adds ``+ 0.0``, which changes no sum: the sums start from ``0.0`` (or ``part + 0.0``), and
    such a sum is never ``-0.0`` (``x + 0.0`` is ``x`` for every other ``x``, NaNs and infinities included).
    Each entry gets its parts in the order of ``_overlap_add``: the same bits (where two NaNs meet, IEEE 754
    leaves open which one a sum returns, and NumPy's loops differ). The first offset is written as
    ``part + 0.0`` into the uninitialized output."""
    adds, wraps, _ = plan
    n, c, height, width = out.shape
    planes, parts = views
    planes = planes[:n]
    for j, columns in wraps:
        planes[:, :, :, j, :, columns] = 0
    target = out.reshape(n, c, height * width)
    if not adds:
        target[...] = 0
    for (_, _, _, first, start, stop), part in zip(adds, parts):
        if first:
            np.add(part[:n], 0.0, out=target[:, :, start:stop])
            target[:, :, :start] = 0
            target[:, :, stop:] = 0
        else:
            target[:, :, start:stop] += part[:n]


@functools.lru_cache(maxsize=256)
def _runs_plan(size, out_hw, kernel, dilation, offset, whole=True):
    """``_overlap_add_runs``' additions, in ``_overlap_add``'s order: (i, j, shift, first, start, stop) for the
    offsets whose plane reaches the output (the entries ``start:stop`` of a flattened output plane take those
    ``start - shift:stop - shift`` of the offset's row: the whole plane, or with ``whole`` false only the entries
    inside the row); (j, columns) for each offset column ``j`` whose shift carries ``columns`` of the planes
    off the output's edge; and the gap the additions need around each row (the entries they read past it)."""
    (height, width), rows = size, out_hw[0]
    adds, wraps, gap = [], [], 0
    for j in range(kernel[1]):
        shift = j * dilation[1] - offset[1]
        if 0 < abs(shift) < width:
            wraps.append((j, slice(0, -shift) if shift < 0 else slice(width - shift, width)))
    for i in range(kernel[0]):
        down = i * dilation[0] - offset[0]
        for j in range(kernel[1]):
            right = j * dilation[1] - offset[1]
            shift = down * width + right
            start, stop = (0, height * width) if whole else (max(0, shift), min(height * width, rows * width + shift))
            if -rows < down < height and abs(right) < width and start < stop:
                adds.append((i, j, shift, not adds, start, stop))
                gap = max(gap, shift - start, stop - shift - rows * width)
    return tuple(adds), tuple(wraps), gap


#: the input gradient's window contributions are made and overlap-added in blocks of samples of at most
#: this many bytes (at least one sample): about the L2 cache (2 MiB a core here), with the block's slice
#: of the input gradient beside it, so the block is still cached when it is added up. Measured on the
#: 28x28 layers of bench/conv.py: 2-4 MiB best, 1 MiB loses to the k*k slice additions per block,
#: 8-16 MiB to the cache misses (the 56x56 layers' samples are larger: a block of one each)
CONTRIBUTION_BLOCK_BYTES = 3 << 20


def _sample_block(n: int, sample_bytes: int) -> int:
    """How many samples of ``sample_bytes`` of contributions each go into a block (at least 1, at most ``n``)."""
    return max(1, min(n, CONTRIBUTION_BLOCK_BYTES // max(sample_bytes, 1)))


def _offset_plane(cols: np.ndarray, i: int, j: int) -> np.ndarray:
    """Kernel offset (i, j)'s contributions of ``cols`` (N, C, kh, kw, H', W'): (N, C, H', W')."""
    return cols[:, :, i, j]


def _weight_grad(xp, g, kernel, stride, dilation, groups, kept=None):
    """Correlation of the padded input's windows with the output gradient: (O, C/G, kh, kw)."""
    n, c = xp.shape[:2]
    o = g.shape[1]
    if c % groups or o % groups:
        raise ValueError(f"conv2d_weight_grad: {c} input and {o} output channels are not divisible by "
                         f"groups={groups}")
    out_hw = g.shape[2:]
    for size, k, s, d, out in zip(xp.shape[2:], kernel, stride, dilation, out_hw):
        if d * (k - 1) + s * (out - 1) + 1 > size:
            raise ValueError(f"conv2d_weight_grad: {out} windows of kernel {k} (stride {s}, dilation {d}) do not "
                             f"fit in an input of size {size}")
    return _weight_grad_from_columns(_columns(xp, kernel, stride, dilation, out_hw, groups, kept), g,
                                     (o, c // groups) + tuple(kernel), kept)


def _weight_grad_from_columns(cols, g, weight_shape, kept=None):
    """(O, C/G, kh, kw) from the window columns (N, G, C/G*kh*kw, H'*W') and the output gradient (the
    per-sample products in ``kept``'s buffer, see ``kept_buffer``)."""
    n, groups = cols.shape[:2]
    o = g.shape[1]
    cols = cols.reshape(n, groups, -1, g.shape[2] * g.shape[3])
    per_sample = _workspace(kept, "per sample", (n, groups, o // groups, cols.shape[2]), np.result_type(g, cols))
    np.matmul(g.reshape(n, groups, o // groups, -1), cols.swapaxes(-1, -2), out=per_sample)
    # (N, G, O/G, C/G*kh*kw) summed over the batch: one small array, where a single contraction over
    # N*H'*W' would first copy the output gradient into (N*H'*W', O) order
    return per_sample.sum(axis=0).reshape(weight_shape).astype(np.result_type(cols, g), copy=False)


# ---- pad -----------------------------------------------------------------------------------------


def _check_pad_width(op: str, pad_width) -> None:
    if not isinstance(pad_width, tuple) or not all(
            isinstance(p, tuple) and len(p) == 2 and all(_is_int(v) for v in p) for p in pad_width):
        raise TypeError(f"{op}: pad_width must be a tuple of (before, after) int pairs, got {pad_width!r}")
    if any(v < 0 for p in pad_width for v in p):
        raise ShapeError(f"{op}: pad widths must be non-negative, got {pad_width!r}")


@op_dataclass
class Pad(Op):
    """``np.pad(x, pad_width, constant_values=value)``; the gradient is the matching slice of ``g``."""

    name = "pad"
    keeps_value = True  # a padded input the plan does not return is a buffer kept from call to call
    pad_width: tuple = ()
    value: float = 0.0

    def __post_init__(self):
        _check_pad_width(self.name, self.pad_width)
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise TypeError(f"pad: value must be a number, got {self.value!r}")

    def infer(self, x):
        if len(self.pad_width) != x.ndim:
            raise ShapeError(f"pad: {len(self.pad_width)} (before, after) pairs for an input of shape "
                             f"{format_shape(x.shape)}")
        if x.dtype.kind not in "biuf":
            raise DTypeError(f"pad: unsupported dtype {x.dtype}")
        shape = tuple(None if s is None else s + b + a for s, (b, a) in zip(x.shape, self.pad_width))
        return shape, x.dtype

    def impl(self, x):
        return np.pad(x, self.pad_width, mode="constant", constant_values=self.value)

    def compiled_impl(self, compile_graph, returned=True):
        """Where the plan does not return the padded array, ``impl`` into a buffer kept from call to
        call (``kept_buffer``): a convolution's padded input is made at every step."""
        return self.impl if returned else functools.partial(self.pad_into, {})

    def pad_into(self, kept: dict, x: np.ndarray) -> np.ndarray:
        """``impl`` written into ``kept``'s buffer: the same values as ``np.pad``'s (its border, the value
        as a float64 scalar cast to the dtype, made when the buffer is; the input copied into the middle).
        The border of a kept buffer is written once: nothing but this step writes into it (``keeps_value``),
        and this step only into the middle, which a buffer of the same shape puts in the same place. Kept
        whatever its size (unlike the convolutions' temporaries, ``KEEP_MIN_BYTES``): the border's strided
        fill is what it saves (0.15 of 0.3 ms on the 28x28 layers of bench/conv.py). Not for an input
        ``np.pad`` would pad in Fortran order, nor for integers (np.pad's own casts then)."""
        shape = tuple(n + b + a for n, (b, a) in zip(x.shape, self.pad_width))
        if x.dtype.kind != "f" or x.flags.fnc:
            return self.impl(x)
        out = kept_buffer(kept, "value", shape, x.dtype, fill=np.float64(self.value))
        out[tuple(slice(b, b + n) for n, (b, _) in zip(x.shape, self.pad_width))] = x
        return out

    def vjp(self, node, g):
        (x,) = node.inputs
        if g.op == "sum_to" and g.inputs[0].op == "conv2d_input_grad" and g.inputs[0].inputs[2] is node:
            g = g.inputs[0]  # the driver's no-op sum over unknown sizes: the gradient has the padded shape
        inner = g.primitive
        if (isinstance(inner, Conv2dInputGrad) and inner.padding == (0, 0, 0, 0) and g.inputs[2] is node
                and len(self.pad_width) == 4 and self.pad_width[:2] == ((0, 0), (0, 0))):
            # the padded input of a convolution: its input gradient is overlap-added straight into x's
            # shape, instead of into the padded shape and then sliced (and copied)
            (top, bottom), (left, right) = self.pad_width[2:]
            grad, weights, _ = g.inputs
            return (inner.input_grad(grad, weights, x, (top, bottom, left, right)),)
        index = tuple(slice(b, -a if a else None) for b, a in self.pad_width)
        return (getitem(g, index),)


def _normalize_pad_width(pad_width, ndim: int) -> tuple:
    """np.pad's forms: an int, (before, after), ((before, after),), or one pair (or one int) per axis."""
    sequence = isinstance(pad_width, (tuple, list))
    if _is_int(pad_width):
        pairs = [(pad_width, pad_width)] * ndim
    elif sequence and len(pad_width) == 2 and all(_is_int(v) for v in pad_width):
        pairs = [tuple(pad_width)] * ndim  # one (before, after) for every axis, as np.pad reads it
    elif sequence and len(pad_width) == 1 and _is_int(pad_width[0]):
        pairs = [(pad_width[0], pad_width[0])] * ndim
    elif sequence and pad_width and all(isinstance(p, (tuple, list)) and len(p) in (1, 2)
                                        and all(_is_int(v) for v in p) for p in pad_width):
        pairs = [(p[0], p[0]) if len(p) == 1 else tuple(p) for p in pad_width]
        if len(pairs) == 1:
            pairs = pairs * ndim
        elif len(pairs) != ndim:
            raise ShapeError(f"pad: {len(pairs)} (before, after) pairs for an input of rank {ndim}")
    else:
        raise TypeError(f"pad: pad_width must be an int, a pair of ints or one pair per axis, got {pad_width!r}")
    pairs = tuple((int(b), int(a)) for b, a in pairs)
    if any(v < 0 for p in pairs for v in p):
        raise ShapeError(f"pad: pad widths must be non-negative, got {pad_width!r}")
    return pairs


def pad(x, pad_width, value: float = 0.0) -> Tensor:
    """``np.pad(x, pad_width, mode="constant", constant_values=value)``.

    ``pad_width`` takes NumPy's forms: an int, a ``(before, after)`` pair for every axis,
    or one pair per axis. Widths must be non-negative ints. The gradient is the slice of the
    cotangent that covers ``x``.
    """
    x = as_tensor(x)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"pad: value must be a number, got {value!r}")
    pairs = _normalize_pad_width(pad_width, x.ndim)
    if not any(b or a for b, a in pairs):
        return x
    return apply(Pad(pairs, float(value)), x)


# ---- convolutions -------------------------------------------------------------------------------


@op_dataclass
class _ConvParams(Op):
    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    groups: int = 1

    def __post_init__(self):
        _check_pair_field(self.name, "stride", self.stride, 1)
        _check_pair_field(self.name, "dilation", self.dilation, 1)
        _groups(self.name, self.groups)

    def describe_params(self) -> str:
        return f"stride={self.stride}, dilation={self.dilation}, groups={self.groups}"

    def compiled_impl(self, compile_graph, returned=True):
        """``compute`` with its large temporaries (the window columns, the products of a matmul that
        are summed or overlap-added next) in buffers kept from call to call (``kept_buffer``): fresh
        arrays of many MB fault in page by page at every call."""
        return functools.partial(self.compute, {})

    def check_weight(self, w: Tensor, channels, what: str, shapes: str) -> None:
        """``w`` (O, C/G, kh, kw) against ``channels`` (the C of the correlated input)."""
        out, per_group, kh, kw = w.shape
        g = self.groups
        if out is not None and out % g:
            raise ShapeError(f"{self.name}: groups={g} does not divide the {out} output channels of the weights: "
                             f"{shapes}")
        if channels is not None and channels % g:
            raise ShapeError(f"{self.name}: groups={g} does not divide the {channels} {what} channels: {shapes}")
        if channels is not None and per_group is not None and per_group * g != channels:
            raise ShapeError(f"{self.name}: {what} has {channels} channels but the weights expect "
                             f"{per_group} x groups={g} = {per_group * g}: {shapes}")
        for k, axis in ((kh, "height"), (kw, "width")):
            if k is not None and k < 1:
                raise ShapeError(f"{self.name}: the kernel {axis} must be at least 1: {shapes}")

    def check_windows(self, x: Tensor, w: Tensor, g: Tensor, shapes: str, padding=(0, 0, 0, 0)) -> None:
        """The correlation of ``x`` (padded by ``padding``) with ``w`` has ``g``'s spatial size (the gradient
        ops' invariant)."""
        for a in (0, 1):
            size = x.shape[2 + a]
            size = None if size is None else size + padding[2 * a] + padding[2 * a + 1]
            count = _window_count(self.name, size, w.shape[2 + a], self.stride[a], self.dilation[a],
                                  shapes, ("height", "width")[a])
            if None not in (count, g.shape[2 + a]) and count != g.shape[2 + a]:
                raise ShapeError(f"{self.name}: the input gives {count} windows along {('height', 'width')[a]}, "
                                 f"the gradient has {g.shape[2 + a]}: {shapes}")

    def conv(self, x, w):
        return apply(Conv2d(self.stride, self.dilation, self.groups), x, w)

    def input_grad(self, g, w, x, padding=(0, 0, 0, 0)):
        return apply(Conv2dInputGrad(self.stride, self.dilation, self.groups, padding), g, w, x)

    def weight_grad(self, x, g, w):
        return apply(Conv2dWeightGrad(self.stride, self.dilation, self.groups), x, g, w)

    def check_gradient_operands(self, x, g, w, shapes: str, float_operands: tuple) -> np.dtype:
        """The checks the two gradient ops share: ranks, the weights against the input's channels,
        the gradient's channels against the weights' outputs; the result dtype."""
        for t, what, layout in ((x, "the input", "(N, C, H, W)"), (g, "the gradient", "(N, O, H', W')"),
                                (w, "the weights", "(O, C/groups, kh, kw)")):
            _rank4(self.name, what, t, layout)
        dtype = _float_dtype(self.name, *float_operands)
        self.check_weight(w, x.shape[1], "input", shapes)
        if None not in (g.shape[1], w.shape[0]) and g.shape[1] != w.shape[0]:
            raise ShapeError(f"{self.name}: the gradient has {g.shape[1]} channels, the weights {w.shape[0]} "
                             f"outputs: {shapes}")
        return dtype


@op_dataclass
class Conv2d(_ConvParams):
    """Cross-correlation of an already padded input (N, C, H, W) with weights (O, C/groups, kh, kw)."""

    name = "conv2d"

    def infer(self, x, w):
        if x.ndim == 5:  # the windows already copied (an optimized graph): see Conv2dColumns
            _check_columns(self, x, w)
            return (x.shape[0], w.shape[0]) + x.shape[3:], _float_dtype(self.name, x, w)
        shapes = f"input {format_shape(x.shape)}, weights {format_shape(w.shape)} ({self.describe_params()})"
        _rank4(self.name, "the input", x, "(N, C, H, W)")
        _rank4(self.name, "the weights", w, "(O, C/groups, kh, kw)")
        dtype = _float_dtype(self.name, x, w)
        self.check_weight(w, x.shape[1], "input", shapes)
        hw = tuple(_window_count(self.name, x.shape[2 + a], w.shape[2 + a], self.stride[a], self.dilation[a],
                                 shapes, ("height", "width")[a]) for a in (0, 1))
        return (x.shape[0], w.shape[0]) + hw, dtype

    def impl(self, x, w):
        return self.compute(None, x, w)

    def compute(self, kept, x, w):
        if x.ndim == 5:
            return _columns_times_weights(x, w, x.shape[3:])
        return _correlate(x, w, self.stride, self.dilation, self.groups, kept)

    def vjp(self, node, g):
        x, w = node.inputs
        _no_gradient_of_columns(self.name, x)
        return self.input_grad(g, w, x), self.weight_grad(x, g, w)


@op_dataclass
class Conv2dInputGrad(_ConvParams):
    """The input gradient of ``conv2d``: ``g`` (N, O, H', W') overlap-added through the weights into the
    shape of the (padded) input ``x``, which is only a shape reference."""

    name = "conv2d_input_grad"
    nondiff_inputs = (2,)
    #: (top, bottom, left, right): ``x`` is the input before this padding, and the gradient of the
    #: padded entries is never formed (pad's gradient folds its slice into this op)
    padding: tuple = (0, 0, 0, 0)

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.padding, tuple) and len(self.padding) == 4 and all(_is_int(v) for v in self.padding)):
            raise TypeError(f"{self.name}: padding must be 4 ints (top, bottom, left, right), got {self.padding!r}")
        if min(self.padding) < 0:
            raise ShapeError(f"{self.name}: padding must be non-negative, got {self.padding!r}")

    def infer(self, g, w, x):
        shapes = (f"gradient {format_shape(g.shape)}, weights {format_shape(w.shape)}, input {format_shape(x.shape)}"
                  f" ({self.describe_params()})")
        dtype = self.check_gradient_operands(x, g, w, shapes, (g, w))
        self.check_windows(x, w, g, shapes, self.padding)
        channels = x.shape[1] if x.shape[1] is not None else (
            None if w.shape[1] is None else w.shape[1] * self.groups)
        return (g.shape[0], channels) + x.shape[2:], dtype

    def impl(self, g, w, x):
        return self.compute(None, g, w, x)

    def compute(self, kept, g, w, x):
        top, bottom, left, right = self.padding
        padded = (x.shape[2] + top + bottom, x.shape[3] + left + right)
        return _correlate_transpose(g, w, self.stride, self.dilation, self.groups, padded, self.padding, kept)

    def vjp(self, node, h):
        g, w, x = node.inputs
        if self.padding != (0, 0, 0, 0):
            top, bottom, left, right = self.padding
            h = apply(Pad(((0, 0), (0, 0), (top, bottom), (left, right)), 0.0), h)
        return self.conv(h, w), self.weight_grad(h, g, w), None


@op_dataclass
class Conv2dWeightGrad(_ConvParams):
    """The weight gradient of ``conv2d``: the windows of the (padded) input ``x`` correlated with the
    output gradient ``g``; ``w`` is only a shape reference (the kernel size)."""

    name = "conv2d_weight_grad"
    nondiff_inputs = (2,)

    def infer(self, x, g, w):
        shapes = (f"input {format_shape(x.shape)}, gradient {format_shape(g.shape)}, weights {format_shape(w.shape)}"
                  f" ({self.describe_params()})")
        if x.ndim == 5:  # the windows already copied (an optimized graph): see Conv2dColumns
            return self.check_columns_and_gradient(x, g, w, shapes)
        dtype = self.check_gradient_operands(x, g, w, shapes, (x, g))
        self.check_windows(x, w, g, shapes)
        return w.shape, dtype

    def check_columns_and_gradient(self, cols, g, w, shapes: str):
        _check_columns(self, cols, w)
        _rank4(self.name, "the gradient", g, "(N, O, H', W')")
        for a, b in zip((cols.shape[0],) + cols.shape[3:], (g.shape[0],) + g.shape[2:]):
            if None not in (a, b) and a != b:
                raise ShapeError(f"{self.name}: the columns do not match the gradient: {shapes}")
        if None not in (g.shape[1], w.shape[0]) and g.shape[1] != w.shape[0]:
            raise ShapeError(f"{self.name}: the gradient has {g.shape[1]} channels, the weights {w.shape[0]} "
                             f"outputs: {shapes}")
        return w.shape, _float_dtype(self.name, cols, g)

    def impl(self, x, g, w):
        return self.compute(None, x, g, w)

    def compute(self, kept, x, g, w):
        if x.ndim == 5:
            return _weight_grad_from_columns(x, g, w.shape, kept)
        return _weight_grad(x, g, w.shape[2:], self.stride, self.dilation, self.groups, kept)

    def vjp(self, node, h):
        x, g, w = node.inputs
        _no_gradient_of_columns(self.name, x)
        return self.input_grad(g, h, x), self.conv(x, h), None


# ---- the optimizer's forms: the windows copied once, shared by the forward and the weight gradient ----


@op_dataclass
class Conv2dColumns(_ConvParams):
    """The windows of a padded input ``x`` (N, C, H, W) for weights ``w`` (O, C/G, kh, kw; only a shape
    reference) copied into (N, G, C/G*kh*kw, H', W'): the matrices ``conv2d`` and ``conv2d_weight_grad``
    multiply. Made by the optimizer (``conv2d(x, w) -> conv2d(conv2d_columns(x, w), w)``, and the same
    for the weight gradient: both ops also take the copied windows as their first input, rank 5 instead
    of 4, with stride and dilation (1, 1) since the copy holds them), so that CSE merges a training
    step's two copies of the windows into one. The price: the
    copy (kh*kw times the padded input) lives from the forward pass to the weight gradient. No
    gradient (it exists only in optimized graphs)."""

    name = "conv2d_columns"
    nondiff_inputs = (1,)
    keeps_value = True  # where the plan does not return them, the columns are a buffer kept from call to call

    def infer(self, x, w):
        shapes = f"input {format_shape(x.shape)}, weights {format_shape(w.shape)} ({self.describe_params()})"
        (n, g, hw), dtype = self.windows_shape(x, w, shapes)
        per_group = w.shape[1]
        size = None if None in (per_group, w.shape[2], w.shape[3]) else per_group * w.shape[2] * w.shape[3]
        return (n, g, size) + hw, dtype

    def windows_shape(self, x, w, shapes: str):
        """((N, G, (H', W')), the input's dtype) after the checks ``conv2d`` makes."""
        _rank4(self.name, "the input", x, "(N, C, H, W)")
        _rank4(self.name, "the weights", w, "(O, C/groups, kh, kw)")
        _float_dtype(self.name, x, w)
        self.check_weight(w, x.shape[1], "input", shapes)
        hw = tuple(_window_count(self.name, x.shape[2 + a], w.shape[2 + a], self.stride[a], self.dilation[a],
                                 shapes, ("height", "width")[a]) for a in (0, 1))
        return (x.shape[0], self.groups, hw), x.dtype

    def impl(self, x, w):
        return self.compute(None, x, w)

    def compiled_impl(self, compile_graph, returned=True):
        return functools.partial(self.compute, None if returned else {})

    def compute(self, kept, x, w):
        _check_channels(self.name, x.shape[1], w.shape, self.groups)
        out_hw = _out_hw(self.name, x.shape[2:], w.shape[2:], self.stride, self.dilation)
        return _columns(x, w.shape[2:], self.stride, self.dilation, out_hw, self.groups, kept)


def _no_gradient_of_columns(op: str, x: Tensor) -> None:
    if x.ndim == 5:
        raise GradientError(f"{op} of copied windows (conv2d_columns) is the optimizer's form and has no gradient: "
                            f"differentiate the graph before optimizing it")


def _check_columns(op, cols: Tensor, w: Tensor) -> None:
    """``op`` (a conv2d or conv2d_weight_grad) applied to copied windows ``cols``: the copy holds the stride
    and dilation, so the op's own are (1, 1)."""
    groups = op.groups
    if op.stride != (1, 1) or op.dilation != (1, 1):
        raise ShapeError(f"{op.name} of copied windows (conv2d_columns) takes stride and dilation (1, 1): the "
                         f"copy holds them; got {op.describe_params()}")
    if cols.ndim != 5:
        raise ShapeError(f"{op.name}: the columns must be 5-D (N, G, C/G*kh*kw, H', W'), got "
                         f"{format_shape(cols.shape)}")
    _rank4(op.name, "the weights", w, "(O, C/groups, kh, kw)")
    size = None if None in w.shape[1:] else w.shape[1] * w.shape[2] * w.shape[3]
    if cols.shape[1] != groups or None not in (cols.shape[2], size) and cols.shape[2] != size:
        raise ShapeError(f"{op.name}: columns of shape {format_shape(cols.shape)} do not fit weights of shape "
                         f"{format_shape(w.shape)} with groups={groups}")
    if w.shape[0] is not None and w.shape[0] % groups:
        raise ShapeError(f"{op.name}: groups={groups} does not divide the {w.shape[0]} output channels of the "
                         f"weights")


@op_dataclass
class Conv2dTranspose(_ConvParams):
    """PyTorch's ``conv_transpose2d`` before cropping ``padding``: (N, C_in, H, W) with weights
    (C_in, C_out/groups, kh, kw) gives (N, C_out, (H-1)*s + d*(kh-1) + 1 + output_padding, ...)."""

    name = "conv2d_transpose"
    output_padding: tuple = (0, 0)

    def __post_init__(self):
        super().__post_init__()
        _check_pair_field(self.name, "output_padding", self.output_padding, 0)
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):
                raise ShapeError(f"{self.name}: output_padding {self.output_padding} must be smaller than the "
                                 f"stride {self.stride} or the dilation {self.dilation}")

    def infer(self, x, w):
        shapes = (f"input {format_shape(x.shape)}, weights {format_shape(w.shape)} ({self.describe_params()}, "
                  f"output_padding={self.output_padding})")
        _rank4(self.name, "the input", x, "(N, C_in, H, W)")
        _rank4(self.name, "the weights", w, "(C_in, C_out/groups, kh, kw)")
        dtype = _float_dtype(self.name, x, w)
        c_in, per_group = w.shape[:2]
        if c_in is not None and c_in % self.groups:
            raise ShapeError(f"{self.name}: groups={self.groups} does not divide the {c_in} input channels of the "
                             f"weights: {shapes}")
        if any(k is not None and k < 1 for k in w.shape[2:]):
            raise ShapeError(f"{self.name}: the kernel must be at least 1 x 1: {shapes}")
        if None not in (x.shape[1], c_in) and x.shape[1] != c_in:
            raise ShapeError(f"{self.name}: the input has {x.shape[1]} channels but the weights expect {c_in}: "
                             f"{shapes}")
        hw = []
        for a in (0, 1):
            size, k = x.shape[2 + a], w.shape[2 + a]
            if size is not None and size < 1:
                raise ShapeError(f"{self.name}: the input is empty along {('height', 'width')[a]}: {shapes}")
            hw.append(None if None in (size, k) else
                      (size - 1) * self.stride[a] + self.dilation[a] * (k - 1) + 1 + self.output_padding[a])
        return (x.shape[0], None if per_group is None else per_group * self.groups) + tuple(hw), dtype

    def impl(self, x, w):
        return self.compute(None, x, w)

    def compute(self, kept, x, w):
        hw = [(x.shape[2 + a] - 1) * self.stride[a] + self.dilation[a] * (w.shape[2 + a] - 1) + 1
              + self.output_padding[a] for a in (0, 1)]
        return _correlate_transpose(x, w, self.stride, self.dilation, self.groups, hw, kept=kept)

    def vjp(self, node, h):
        x, w = node.inputs
        # rows past (H-1)*s + d*(k-1) + 1 receive nothing from x; once they make another window fit
        # (output_padding >= stride), the correlation would see one window too many: drop them
        if any(p >= s for p, s in zip(self.output_padding, self.stride)):
            crop = tuple(slice(None, -p) if p >= s else slice(None) for p, s in zip(self.output_padding, self.stride))
            h = getitem(h, (slice(None), slice(None)) + crop)
        return self.conv(h, w), self.weight_grad(h, x, w)


def _conv_padding(padding, kernel, stride, dilation) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) for conv2d's ``padding`` argument."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ShapeError(f"conv2d: padding='same' needs stride 1 (as in PyTorch), got stride {stride}")
            if None in kernel:
                raise ShapeError("conv2d: padding='same' needs the kernel size known at build time")
            result = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                result.append((total // 2, total - total // 2))  # the odd one at the end, as PyTorch
            return result[0], result[1]
        raise ShapeError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = _pair("conv2d", "padding", padding, 0)
    return (ph, ph), (pw, pw)


def conv2d(x, w, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """2-D cross-correlation, PyTorch's ``torch.nn.functional.conv2d``.

    ``x`` is (N, C, H, W), ``w`` is (O, C/groups, kh, kw); the result is (N, O, H', W') with
    ``H' = (H + 2*padding - dilation*(kh-1) - 1) // stride + 1``. ``stride``, ``dilation`` and
    ``padding`` are ints or (height, width) pairs; ``padding`` may also be ``"valid"`` (none) or
    ``"same"`` (stride 1 only; an odd total puts the extra row and column at the end). Unknown
    (None) sizes stay unknown; sizes known at build time are checked then (``ShapeError``).
    """
    x, w = as_tensor(x), as_tensor(w)
    _rank4("conv2d", "the input", x, "(N, C, H, W)")
    _rank4("conv2d", "the weights", w, "(O, C/groups, kh, kw)")
    _float_dtype("conv2d", x, w)
    stride = _pair("conv2d", "stride", stride, 1)
    dilation = _pair("conv2d", "dilation", dilation, 1)
    groups = _groups("conv2d", groups)
    (top, bottom), (left, right) = _conv_padding(padding, w.shape[2:], stride, dilation)
    op = Conv2d(stride, dilation, groups)
    shapes = f"input {format_shape(x.shape)}, weights {format_shape(w.shape)} (padding={padding!r}, " \
             f"{op.describe_params()})"
    op.check_weight(w, x.shape[1], "input", shapes)
    for a, (size, k, before, after) in enumerate(((x.shape[2], w.shape[2], top, bottom),
                                                  (x.shape[3], w.shape[3], left, right))):
        _window_count("conv2d", None if size is None else size + before + after, k, stride[a], dilation[a],
                      shapes, ("height", "width")[a])
    if top or bottom or left or right:
        x = apply(Pad(((0, 0), (0, 0), (top, bottom), (left, right)), 0.0), x)
    return apply(op, x, w)


def conv2d_transpose(x, w, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1) -> Tensor:
    """Transposed convolution, PyTorch's ``torch.nn.functional.conv_transpose2d``.

    ``x`` is (N, C_in, H, W), ``w`` is (C_in, C_out/groups, kh, kw); the result is
    (N, C_out, H', W') with ``H' = (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1``.
    It is the input gradient of ``conv2d`` with the same parameters. ``output_padding`` must be
    smaller than the stride or the dilation.
    """
    x, w = as_tensor(x), as_tensor(w)
    _rank4("conv2d_transpose", "the input", x, "(N, C_in, H, W)")
    _rank4("conv2d_transpose", "the weights", w, "(C_in, C_out/groups, kh, kw)")
    _float_dtype("conv2d_transpose", x, w)
    stride = _pair("conv2d_transpose", "stride", stride, 1)
    dilation = _pair("conv2d_transpose", "dilation", dilation, 1)
    if isinstance(padding, str):
        raise TypeError(f"conv2d_transpose: padding must be an int or a pair of ints, got {padding!r}")
    padding = _pair("conv2d_transpose", "padding", padding, 0)
    output_padding = _pair("conv2d_transpose", "output_padding", output_padding, 0)
    groups = _groups("conv2d_transpose", groups)
    full = apply(Conv2dTranspose(stride, dilation, groups, output_padding), x, w)
    for a in (0, 1):
        size = full.shape[2 + a]
        if size is not None and size - 2 * padding[a] < 1:
            raise ShapeError(f"conv2d_transpose: padding {padding} leaves nothing of the {size} output "
                             f"{('rows', 'columns')[a]} (input {format_shape(x.shape)}, weights "
                             f"{format_shape(w.shape)})")
    if padding == (0, 0):
        return full
    crop = tuple(slice(p, -p) if p else slice(None) for p in padding)
    return getitem(full, (slice(None), slice(None)) + crop)


# ---- pooling -------------------------------------------------------------------------------------


@op_dataclass
class _PoolParams(Op):
    kernel_size: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)

    def __post_init__(self):
        _check_pair_field(self.name, "kernel_size", self.kernel_size, 1)
        _check_pair_field(self.name, "stride", self.stride, 1)
        _check_pair_field(self.name, "padding", self.padding, 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ShapeError(f"{self.name}: padding {self.padding} must be at most half the kernel size "
                             f"{self.kernel_size} (as in PyTorch)")

    def describe_params(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def pooled_shape(self, x: Tensor) -> tuple:
        shapes = f"input {format_shape(x.shape)} ({self.describe_params()})"
        _rank4(self.name, "the input", x, "(N, C, H, W)")
        hw = tuple(_window_count(self.name, None if x.shape[2 + a] is None else x.shape[2 + a] + 2 * self.padding[a],
                                 self.kernel_size[a], self.stride[a], 1, shapes, ("height", "width")[a])
                   for a in (0, 1))
        return x.shape[:2] + hw

    def padded(self, x: np.ndarray, fill) -> np.ndarray:
        if self.padding == (0, 0):
            return x
        (ph, pw) = self.padding
        return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=fill)

    def windows(self, xp: np.ndarray) -> np.ndarray:
        out_hw = _out_hw(self.name, xp.shape[2:], self.kernel_size, self.stride, (1, 1))
        return _windows(xp, self.kernel_size, self.stride, (1, 1), out_hw)

    def scatter(self, parts, x_shape, dtype) -> np.ndarray:
        """Overlap-add window contributions into the input's shape (those on padding are dropped)."""
        return _overlap_add(parts, tuple(x_shape), self.kernel_size, self.stride, (1, 1), dtype, self.padding)

    def params_tuple(self):
        return self.kernel_size, self.stride, self.padding


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


@op_dataclass
class MaxPool2d(_PoolParams):
    """Maximum over each window; padded entries never win."""

    name = "max_pool2d"

    def infer(self, x):
        if x.dtype.kind not in "iuf":
            raise DTypeError(f"max_pool2d: unsupported dtype {x.dtype}")
        return self.pooled_shape(x), x.dtype

    def impl(self, x):
        return self.windows(self.padded(x, _lowest(x.dtype))).max(axis=(4, 5))

    def vjp(self, node, g):
        (x,) = node.inputs
        return (apply(MaxPool2dGrad(*self.params_tuple()), x, node, g),)


def _max_winners(op: _PoolParams, x: np.ndarray, y: np.ndarray):
    """(winners, count): which entries of each window equal its maximum (never padding), and how many."""
    fill = _lowest(x.dtype)
    view = op.windows(op.padded(x, fill))
    winners = view == y[..., None, None]
    if op.padding != (0, 0) and np.any(y == fill):  # a window of real entries equal to the fill value
        real = op.windows(op.padded(np.ones(x.shape, bool), False))
        winners &= real
    count = winners.sum(axis=(4, 5))
    return winners, np.maximum(count, 1)  # a NaN window has no winner: its gradient is 0


@op_dataclass
class MaxPool2dGrad(_PoolParams):
    """The gradient of ``max_pool2d``: each window's ``g`` split evenly among its tied maxima."""

    name = "max_pool2d_grad"
    nondiff_inputs = (0, 1)

    def infer(self, x, y, g):
        shape = self.pooled_shape(x)
        if g.dtype.kind != "f":
            raise DTypeError(f"{self.name}: the gradient must be floating point, got {g.dtype}")
        for t in (y, g):
            if t.ndim != 4 or any(None not in (a, b) and a != b for a, b in zip(t.shape, shape)):
                raise ShapeError(f"{self.name}: expected pooled shape {format_shape(shape)}, got "
                                 f"{format_shape(t.shape)}")
        return x.shape, g.dtype

    def impl(self, x, y, g):
        winners, count = _max_winners(self, x, y)
        share = g / count
        return self.scatter(lambda i, j: np.where(winners[..., i, j], share, 0), x.shape, g.dtype)

    def vjp(self, node, h):
        x, y, g = node.inputs
        return None, None, apply(MaxPool2dGather(*self.params_tuple()), x, y, h)


@op_dataclass
class MaxPool2dGather(_PoolParams):
    """The adjoint of ``max_pool2d_grad``: for each window, the mean of ``h`` over its tied maxima."""

    name = "max_pool2d_gather"
    nondiff_inputs = (0, 1)

    def infer(self, x, y, h):
        if h.dtype.kind != "f":
            raise DTypeError(f"{self.name}: the cotangent must be floating point, got {h.dtype}")
        if h.ndim != 4 or any(None not in (a, b) and a != b for a, b in zip(h.shape, x.shape)):
            raise ShapeError(f"{self.name}: expected the input's shape {format_shape(x.shape)}, got "
                             f"{format_shape(h.shape)}")
        return self.pooled_shape(x), h.dtype

    def impl(self, x, y, h):
        winners, count = _max_winners(self, x, y)
        picked = np.where(winners, self.windows(self.padded(h, 0)), 0).sum(axis=(4, 5))
        return (picked / count).astype(h.dtype, copy=False)

    def vjp(self, node, g):
        x, y, h = node.inputs
        return None, None, apply(MaxPool2dGrad(*self.params_tuple()), x, y, g)


@op_dataclass
class AvgPool2d(_PoolParams):
    """Mean over each window, padded zeros included (PyTorch's ``count_include_pad=True``)."""

    name = "avg_pool2d"

    def infer(self, x):
        if x.dtype.kind != "f":
            raise DTypeError(f"avg_pool2d: the input must be floating point, got {x.dtype}")
        return self.pooled_shape(x), x.dtype

    def impl(self, x):
        return self.windows(self.padded(x, 0)).mean(axis=(4, 5))

    def vjp(self, node, g):
        (x,) = node.inputs
        return (apply(AvgPool2dGrad(*self.params_tuple()), g, x),)


@op_dataclass
class AvgPool2dGrad(_PoolParams):
    """The gradient of ``avg_pool2d``: ``g / (kh * kw)`` spread over every window; ``x`` gives the shape."""

    name = "avg_pool2d_grad"
    nondiff_inputs = (1,)

    def infer(self, g, x):
        shape = self.pooled_shape(x)
        if g.dtype.kind != "f":
            raise DTypeError(f"{self.name}: the gradient must be floating point, got {g.dtype}")
        if g.ndim != 4 or any(None not in (a, b) and a != b for a, b in zip(g.shape, shape)):
            raise ShapeError(f"{self.name}: expected pooled shape {format_shape(shape)}, got {format_shape(g.shape)}")
        return (g.shape[0],) + x.shape[1:], g.dtype

    def impl(self, g, x):
        share = g / (self.kernel_size[0] * self.kernel_size[1])
        return self.scatter(lambda i, j: share, x.shape, g.dtype)

    def vjp(self, node, h):
        return apply(AvgPool2d(*self.params_tuple()), h), None


def _pool_args(op: str, kernel_size, stride, padding):
    kernel = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else _pair(op, "stride", stride, 1)
    if isinstance(padding, str):
        raise TypeError(f"{op}: padding must be an int or a pair of ints, got {padding!r}")
    padding = _pair(op, "padding", padding, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ShapeError(f"{op}: padding {padding} must be at most half the kernel size {kernel} (as in PyTorch)")
    return kernel, stride, padding


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """Max pooling over (N, C, H, W), PyTorch's ``max_pool2d`` (floor mode, no dilation).

    ``stride`` defaults to the kernel size; ``padding`` (at most half the kernel) adds entries
    that never win. A tied maximum splits the window's gradient evenly among the tied entries.
    """
    x = as_tensor(x)
    return apply(MaxPool2d(*_pool_args("max_pool2d", kernel_size, stride, padding)), x)


def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """Average pooling over (N, C, H, W), PyTorch's ``avg_pool2d`` with its defaults: padded zeros count
    in the average (``count_include_pad=True``), floor mode; ``stride`` defaults to the kernel size."""
    x = as_tensor(x)
    return apply(AvgPool2d(*_pool_args("avg_pool2d", kernel_size, stride, padding)), x)
