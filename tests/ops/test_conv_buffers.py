"""The convolutions' buffers kept from call to call (``Op.compiled_impl``, ``graphc.op.kept_buffer``).

A compiled conv step keeps its large temporaries (the padded input, the window columns, the
matmul products) for its next call instead of allocating them again. What must hold: the values
are bit for bit those of the reference interpreter and of an unoptimized plan, call after call;
a returned array is never a kept buffer (nothing but the caller refers to it) and never aliases
another call's; concurrent calls never share a buffer; a new batch size gets new buffers; the plan
never writes another value into one. (Only temporaries of ``KEEP_MIN_BYTES`` or more are kept: the
tests here keep every size, but the last.) Also the overlap-add's first writes (``part + 0.0``
into an uninitialized output): zeros plus the parts, bit for bit; and the input gradient made a block
of samples at a time (``CONTRIBUTION_BLOCK_BYTES``): the bits of the whole batch at once.
"""

from __future__ import annotations

import sys
import weakref

import numpy as np
import pytest

import graphc as gc
from graphc.graph import InnerGraph
from graphc.op import kept_buffer
from graphc.ops import conv as conv_ops
from graphc.ops.conv import Conv2dColumns, Pad

from ..threads import run_concurrently


@pytest.fixture(autouse=True)
def keep_every_size(monkeypatch):
    """These small arrays are kept as the large ones of real layers are (``KEEP_MIN_BYTES``)."""
    monkeypatch.setattr(conv_ops, "KEEP_MIN_BYTES", 0)


def _network(batch, dtype=np.float64):
    """conv (padded, stride 2, groups) -> relu -> conv (padded) -> sum: the loss, its gradients, and the
    padded input itself as an output (a value a kept buffer must not be)."""
    x = gc.placeholder("x", (batch, 4, 9, 9), dtype)
    w1 = gc.placeholder("w1", (6, 2, 3, 3), dtype)
    w2 = gc.placeholder("w2", (5, 6, 3, 3), dtype)
    h = gc.relu(gc.conv2d(x, w1, stride=2, padding=1, groups=2))
    y = gc.conv2d(h, w2, padding="same")
    loss = gc.sum(y * y)
    dx, dw1, dw2 = gc.grad(loss, [x, w1, w2])
    padded = gc.pad(x, ((0, 0), (0, 0), (2, 1), (1, 2)), value=-1.5)
    return [x, w1, w2], [y, loss, dx, dw1, dw2, padded]


def _feeds(rng, batch, dtype=np.float64):
    return [rng.standard_normal(shape).astype(dtype) for shape in ((batch, 4, 9, 9), (6, 2, 3, 3), (5, 6, 3, 3))]


def _reference(inputs, outputs, arrays):
    return InnerGraph(inputs, outputs).evaluate(arrays)


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


@pytest.mark.parametrize("optimize", [True, False])
def test_calls_give_the_reference_values_bit_for_bit(optimize):
    inputs, outputs = _network(3)
    fn = gc.function(inputs, outputs, optimize=optimize)
    assert any(kind == "call" and node.op.startswith("conv2d") for kind, node in zip(fn.plan.kinds, fn.plan.steps))
    rng = np.random.default_rng(0)
    for _ in range(4):  # the later calls run in the kept buffers of the earlier ones
        arrays = _feeds(rng, 3)
        for ours, expected in zip(fn(*arrays), _reference(inputs, outputs, arrays)):
            np.testing.assert_array_equal(ours, expected, strict=True)


def test_returned_arrays_are_not_kept_nor_aliased_across_calls():
    inputs, outputs = _network(2)
    fn = gc.function(inputs, outputs)
    rng = np.random.default_rng(1)
    first_feeds = _feeds(rng, 2)
    first = fn(*first_feeds)
    saved = [a.copy() for a in first]
    second = fn(*_feeds(rng, 2))
    for a, b, old in zip(first, second, saved):
        np.testing.assert_array_equal(a, old, strict=True)  # the second call wrote nothing of the first's
        assert not np.shares_memory(a, b)
        assert a.flags.writeable
    for a in second:
        a[...] = 7.0  # the caller's to write into: the next call is unaffected
    third = fn(*first_feeds)
    for a, old in zip(third, saved):
        np.testing.assert_array_equal(a, old, strict=True)
    # nothing but the caller refers to a returned array (a kept buffer would stay referenced)
    roots = [weakref.ref(_root(a)) for a in third]
    del first, second, third, a
    assert all(ref() is None for ref in roots)


def test_a_buffer_is_kept_only_while_nothing_else_refers_to_it():
    kept: dict = {}

    def address(array: np.ndarray) -> int:
        return array.__array_interface__["data"][0]

    first = kept_buffer(kept, "slot", (3, 4), np.float32)
    held = kept_buffer(kept, "slot", (3, 4), np.float32)  # the first is still referred to: a new one
    assert not np.shares_memory(held, first)
    view, second = held[1:], address(held)
    del first, held
    fresh = kept_buffer(kept, "slot", (3, 4), np.float32)  # a view still looks into the second one
    assert not np.shares_memory(fresh, view)
    third = address(fresh)
    del view, fresh
    assert address(kept_buffer(kept, "slot", (3, 4), np.float32)) == third  # dropped: handed out again
    assert kept_buffer(kept, "slot", (2, 4), np.float32).shape == (2, 4)  # another shape: a new buffer
    assert kept_buffer(kept, "slot", (2, 4), np.float64).dtype == np.float64
    assert second != third


def test_conv_steps_keep_their_buffers_and_returned_values_stay_fresh():
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6))
    w = np.ones((4, 3, 3, 3))
    columns = Conv2dColumns((1, 1), (1, 1), 1).compiled_impl(None, returned=False)
    first = columns(x, w)
    address = first.__array_interface__["data"][0]
    del first
    again = columns(x, w)
    assert again.__array_interface__["data"][0] == address  # the kept buffer, written again
    np.testing.assert_array_equal(again, Conv2dColumns((1, 1), (1, 1), 1).impl(x, w), strict=True)
    returned = Conv2dColumns((1, 1), (1, 1), 1).compiled_impl(None, returned=True)
    value = returned(x, w)
    assert sys.getrefcount(value) == 2  # (the name and getrefcount's argument): nobody keeps it
    pad = Pad(((0, 0), (0, 0), (1, 2), (0, 1)), 0.25)
    padding = pad.compiled_impl(None, returned=False)
    for _ in range(2):
        np.testing.assert_array_equal(padding(x), pad.impl(x), strict=True)
    np.testing.assert_array_equal(padding(x.astype(np.float32)), pad.impl(x.astype(np.float32)), strict=True)
    assert pad.compiled_impl(None, returned=True) == pad.impl


def test_concurrent_calls_never_share_a_buffer():
    inputs, outputs = _network(2)
    fn = gc.function(inputs, outputs)
    rng = np.random.default_rng(3)
    feeds = [_feeds(rng, 2) for _ in range(4)]
    expected = [_reference(inputs, outputs, arrays) for arrays in feeds]

    def work(k: int) -> None:
        for _ in range(6):
            for ours, theirs in zip(fn(*feeds[k % 4]), expected[k % 4]):
                np.testing.assert_array_equal(ours, theirs, strict=True)

    run_concurrently(work, count=6)


def test_unknown_batch_sizes_get_buffers_of_their_own():
    inputs, outputs = _network(None, np.float32)
    fn = gc.function(inputs, outputs)
    rng = np.random.default_rng(4)
    # more calls per size than it takes to get a plan for a call shape, with the sizes interleaved
    for batch in (3, 1, 3, 2, 3, 1, 3, 3, 2, 1, 3, 2):
        arrays = _feeds(rng, batch, np.float32)
        results = fn(*arrays)
        for ours, expected in zip(results, _reference(inputs, outputs, arrays)):
            np.testing.assert_array_equal(ours, expected, strict=True)


def test_session_runs_give_the_reference_values():
    inputs, outputs = _network(2)
    rng = np.random.default_rng(5)
    with gc.Session() as session:
        kept = []
        for _ in range(3):
            arrays = _feeds(rng, 2)
            values = session.run(outputs, dict(zip(inputs, arrays)))
            for ours, expected in zip(values, _reference(inputs, outputs, arrays)):
                np.testing.assert_array_equal(ours, expected, strict=True)
            kept.append((values, [v.copy() for v in values]))
        for values, saved in kept:  # later runs wrote into none of the earlier results
            for a, b in zip(values, saved):
                np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("optimize, kept, shape", [(False, "pad", (2, 3, 9, 9)),
                                                   (True, "conv2d_columns", (2, 1, 27, 7, 7))])
def test_a_kept_buffer_is_never_reused_for_a_later_value(optimize, kept, shape):
    # the padded input or the windows' copy (optimized) dies at the convolution; a later step of its shape
    # and dtype must not write into it (and be returned): a kept buffer is the conv step's, not one the
    # plan allocated
    x = gc.placeholder("x", (2, 3, 7, 7))
    u = gc.placeholder("u", shape)
    y = gc.conv2d(x, gc.constant(np.ones((4, 3, 3, 3))), padding=1)
    later = u * gc.sum(y)
    fn = gc.function([x, u], [y, later], optimize=optimize)
    assert kept in [node.op for node in fn.plan.steps]
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal((2, 3, 7, 7)), rng.standard_normal(shape)]
    for _ in range(2):
        results = fn(*arrays)
        np.testing.assert_array_equal(results[1], arrays[1] * results[0].sum(), strict=True)
        roots = [weakref.ref(_root(a)) for a in results]
        del results
        assert all(ref() is None for ref in roots)


def test_a_kept_padded_input_keeps_its_border():
    """The padded input's border is written when its buffer is made; later calls write only the middle."""
    pad = Pad(((0, 0), (1, 0), (2, 3)), -2.5)
    padding = pad.compiled_impl(None, returned=False)
    rng = np.random.default_rng(8)
    for shape in ((2, 3, 4), (2, 3, 4), (3, 3, 4), (2, 3, 4)):
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(padding(x), pad.impl(x), strict=True)
    fortran = np.asfortranarray(rng.standard_normal((2, 3, 4)))
    assert padding(fortran).flags.f_contiguous  # as np.pad makes it
    integers = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(padding(integers), pad.impl(integers), strict=True)


@pytest.mark.parametrize("stride, dilation, offset", [((1, 1), (1, 1), (1, 1)), ((1, 1), (2, 1), (0, 2)),
                                                      ((1, 1), (1, 1), (3, 0)), ((2, 1), (1, 1), (1, 1)),
                                                      ((2, 2), (1, 1), (1, 1)), ((3, 3), (1, 1), (0, 0)),
                                                      ((2, 2), (2, 1), (2, 1))])
def test_overlap_add_starts_with_the_values_of_zeros_plus_the_first_part(stride, dilation, offset):
    """The overlap-add writes each block no earlier one touches as ``part + 0.0`` (no zeroed pass under it):
    bit for bit zeros plus the parts, negative zeros (which a copy would keep) and NaNs included; strided
    windows (several such blocks, or too few to cover the output: then zeros and additions)."""
    from graphc.ops.conv import _overlap_add, _overlap_plan

    rng = np.random.default_rng(9)
    kernel = (3, 2)
    for size in ((6, 5), (16, 16)):
        shape = (2, 3) + size
        parts = {(i, j): rng.standard_normal(shape).astype(np.float32) for i in range(3) for j in range(2)}
        for part in parts.values():
            part[0, 0, :2] = -0.0
            part[1, 2, 3, 1] = np.nan
        ours = _overlap_add(lambda i, j, parts=parts: parts[i, j], shape, kernel, stride, dilation, np.float32, offset)
        expected = np.zeros(shape, np.float32)  # the definition, as the kernel was written before
        for (i, j), part in parts.items():
            for a in range(size[0]):
                for b in range(size[1]):
                    row, col = i * dilation[0] + stride[0] * a - offset[0], j * dilation[1] + stride[1] * b - offset[1]
                    if 0 <= row < size[0] and 0 <= col < size[1]:
                        expected[:, :, row, col] += part[:, :, a, b]
        np.testing.assert_array_equal(ours, expected, strict=True)
        np.testing.assert_array_equal(np.signbit(ours), np.signbit(expected))
    # the 16 x 16 case of unit strides zeroes only the entries its first block leaves (a mask)
    assert _overlap_plan((16, 16), (16, 16), kernel, (1, 1), (1, 1), (1, 1))[1] is not None


def test_small_temporaries_are_not_kept(monkeypatch):
    """Below ``KEEP_MIN_BYTES`` a step allocates (malloc recycles memory the last call freed)."""
    monkeypatch.setattr(conv_ops, "KEEP_MIN_BYTES", 600 * 8)
    w = np.ones((4, 3, 2, 2))
    columns = Conv2dColumns((1, 1), (1, 1), 1).compiled_impl(None, returned=False)
    kept = columns(np.ones((2, 3, 7, 7)), w)  # 2 * 12 * 36 float64: kept, the step refers to it too
    fresh = columns(np.ones((1, 3, 7, 7)), w)  # 1 * 12 * 36 float64: not kept
    assert (sys.getrefcount(kept), sys.getrefcount(fresh)) == (3, 2)
    pad = Pad(((0, 0), (0, 0), (1, 1), (1, 1)), 0.0).compiled_impl(None, returned=False)
    padded = pad(np.ones((1, 1, 1, 1)))
    assert sys.getrefcount(padded) == 3  # a padded input is kept whatever its size


# ---- the input gradient a block of samples at a time (CONTRIBUTION_BLOCK_BYTES) --------------------

#: (gradient shape, weight shape, stride, dilation, groups, padding (top, bottom, left, right), input H, W)
BLOCK_GEOMETRIES = [
    ((7, 4, 5, 5), (4, 3, 3, 3), (1, 1), (1, 1), 1, (1, 1, 1, 1), (5, 5)),
    ((7, 6, 3, 4), (6, 2, 3, 2), (2, 2), (1, 2), 2, (0, 1, 2, 0), (6, 7)),
    ((5, 4, 4, 3), (4, 1, 2, 3), (3, 1), (1, 1), 4, (0, 0, 0, 0), (11, 5)),
]


def _input_grad(g, w, geometry, block_samples):
    """conv2d_input_grad's kernel with contributions blocks of ``block_samples`` samples."""
    _, w_shape, stride, dilation, groups, padding, hw = geometry
    sample_bytes = w_shape[1] * groups * w_shape[2] * w_shape[3] * g.shape[2] * g.shape[3] * g.itemsize
    conv_ops.CONTRIBUTION_BLOCK_BYTES = block_samples * sample_bytes  # (restored by monkeypatch)
    assert conv_ops._sample_block(g.shape[0], sample_bytes) == min(block_samples, g.shape[0])
    padded = (hw[0] + padding[0] + padding[1], hw[1] + padding[2] + padding[3])
    return conv_ops._correlate_transpose(g, w, stride, dilation, groups, padded, padding, {})


@pytest.mark.parametrize("geometry", BLOCK_GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_blocked_input_gradient_is_the_whole_batch_s_bit_for_bit(monkeypatch, geometry, dtype):
    """Blocks of 1, 2, 3 samples (batches of 5 and 7: a last block shorter) give the bits of one block of
    the whole batch: each sample's GEMM and additions are the same; NaNs, infinities, negative zeros."""
    monkeypatch.setattr(conv_ops, "CONTRIBUTION_BLOCK_BYTES", conv_ops.CONTRIBUTION_BLOCK_BYTES)
    rng = np.random.default_rng(11)
    g = rng.standard_normal(geometry[0]).astype(dtype)
    w = rng.standard_normal(geometry[1]).astype(dtype)
    g[0, 0, 0] = -0.0
    w[0, 0, 0] = -0.0
    g[1, 1, 0, 0], g[-1, 0, -1, -1], g[2, 0, 0, 0] = np.nan, np.inf, -np.inf
    whole = _input_grad(g, w, geometry, g.shape[0])
    assert np.isnan(whole).any() and np.isinf(whole).any()
    for block in (1, 2, 3):
        blocked = _input_grad(g, w, geometry, block)
        assert blocked.shape == whole.shape and blocked.dtype == whole.dtype
        assert blocked.tobytes() == whole.tobytes(), block


@pytest.mark.parametrize("geometry", BLOCK_GEOMETRIES)
def test_blocked_input_gradient_is_the_loop_reference_s_exactly(monkeypatch, geometry):
    """Small integers make every sum exact: blocks of 2 samples give the loop reference's bits."""
    from .test_conv import ref_conv2d_input_grad

    monkeypatch.setattr(conv_ops, "CONTRIBUTION_BLOCK_BYTES", conv_ops.CONTRIBUTION_BLOCK_BYTES)
    g_shape, w_shape, stride, dilation, groups, padding, hw = geometry
    rng = np.random.default_rng(12)
    g = rng.integers(-3, 4, g_shape).astype(np.float64)
    w = rng.integers(-3, 4, w_shape).astype(np.float64)
    x = np.empty((g_shape[0], w_shape[1] * groups) + hw)
    ours = _input_grad(g, w, geometry, 2)
    # the reference pads symmetrically: pad x by hand to the op's (top, bottom, left, right), crop after
    top, bottom, left, right = padding
    padded = np.empty(x.shape[:2] + (hw[0] + top + bottom, hw[1] + left + right))
    expected = ref_conv2d_input_grad(padded, w, g, stride, 0, dilation, groups)[:, :, top:top + hw[0],
                                                                               left:left + hw[1]]
    assert ours.tobytes() == np.ascontiguousarray(expected).tobytes()


def _conv_layer(batch):
    """A padded, strided conv's input gradient (three samples' contributions per block, set by the
    caller) and, through it, second-order gradients."""
    x = gc.placeholder("x", (batch, 3, 8, 7))
    w = gc.placeholder("w", (4, 3, 3, 3))
    y = gc.conv2d(x, w, stride=(2, 1), padding=1)
    g = gc.placeholder("g", y.shape)
    (dx,) = gc.vjp(y, [x], g)
    loss = gc.sum(dx * dx * dx)
    second = gc.grad(loss, [w, g])  # the gradient of an input gradient: conv2d and its weight gradient
    return [x, w, g], [dx, loss] + list(second)


def test_blocked_input_gradients_with_dynamic_batch_sizes_and_of_second_order(monkeypatch):
    """A compiled step of unknown batch size, blocks of 3 samples: batches of 1 to 8 (shorter last blocks)
    give the values of one block a batch, first and second order, and the second order is right."""
    sample_bytes = 3 * 9 * 4 * 7 * 8
    monkeypatch.setattr(conv_ops, "CONTRIBUTION_BLOCK_BYTES", 3 * sample_bytes)
    inputs, outputs = _conv_layer(None)
    blocked = gc.function(inputs, outputs)
    rng = np.random.default_rng(13)
    feeds = {}
    for batch in (5, 1, 7, 3, 8, 5):
        feeds[batch] = [rng.standard_normal((batch, 3, 8, 7)), rng.standard_normal((4, 3, 3, 3)),
                        rng.standard_normal((batch, 4, 4, 7))]
    results = {batch: blocked(*arrays) for batch, arrays in feeds.items()}
    monkeypatch.setattr(conv_ops, "CONTRIBUTION_BLOCK_BYTES", 1 << 40)
    whole = gc.function(inputs, outputs)
    for batch, arrays in feeds.items():
        for ours, expected in zip(results[batch], whole(*arrays)):
            assert ours.tobytes() == expected.tobytes(), batch
    monkeypatch.setattr(conv_ops, "CONTRIBUTION_BLOCK_BYTES", 3 * sample_bytes)
    inputs, outputs = _conv_layer(7)
    feed = dict(zip(inputs, feeds[7]))
    gc.check_grad(outputs[1], [inputs[1], inputs[2]], feed)


# ---- the overlap-add by shifted runs of the flattened planes (unit strides, windows as wide as x) --------

#: (H, W, kernel, dilation, (top, left), bottom): the windows' width W' = W (right = d*(kw-1) - left)
RUN_GEOMETRIES = [((5, 5), (3, 3), (1, 1), (1, 1), 1), ((6, 7), (5, 5), (1, 1), (2, 2), 2),
                  ((4, 6), (3, 2), (2, 1), (0, 1), 3), ((3, 4), (2, 3), (1, 2), (4, 0), 0),
                  ((1, 2), (4, 3), (1, 1), (3, 2), 0), ((6, 3), (1, 1), (1, 1), (0, 0), 2),
                  ((2, 5), (3, 7), (1, 1), (1, 6), 1)]


@pytest.mark.parametrize("size, kernel, dilation, offset, bottom", RUN_GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_overlap_add_by_runs_is_the_slices_bit_for_bit(size, kernel, dilation, offset, bottom, dtype):
    """``_overlap_add_runs`` (each offset's plane one shifted addition of whole output planes, reading the
    zeros of the gaps between the buffer's rows where it leaves them, or of the parts inside the plane, with
    no gaps; the parts it carries over a row's edge set to zero first) gives ``_overlap_add``'s bits into an
    output of garbage, with the gap ``_runs_plan`` asks for and a wider one: negative zeros, NaNs and
    infinities at the edges and inside, offsets past the output (kernels taller or wider than it). (Where
    two NaNs meet, IEEE 754 leaves the one a sum returns open, and NumPy's loops differ: NaNs compare as
    NaNs, every other entry bit for bit.)"""
    rng = np.random.default_rng(14)
    rows = size[0] + offset[0] + bottom - dilation[0] * (kernel[0] - 1)
    cols = rng.standard_normal((2, 3) + kernel + (rows, size[1])).astype(dtype)
    cols[0, 0, ..., 0] = -0.0
    cols[1, 0, ..., -1] = -0.0
    cols[0, 1, ..., 0, :] = -0.0
    cols[1, 2, 0, 0, 0, 0], cols[0, 2, -1, -1, -1, -1] = np.nan, np.nan
    cols[1, 1, ..., -1], cols[0, 1, ..., 0] = np.inf, -np.inf
    expected = conv_ops._overlap_add(lambda i, j: cols[:, :, i, j], (2, 3) + size, kernel, (1, 1), dilation,
                                     dtype, offset)
    for whole, gap_more in ((True, 0), (True, 3), (False, 0), (False, 2)):
        plan = conv_ops._runs_plan(size, (rows, size[1]), kernel, dilation, offset, whole)
        gap = plan[2] + gap_more
        pitch = rows * size[1] + gap
        flat = np.full(gap + cols[..., 0, 0].size * pitch, np.nan, dtype)
        flat[:gap] = 0
        planes = flat[gap:].reshape(-1, pitch)
        planes[:, :rows * size[1]] = cols.reshape(-1, rows * size[1])
        planes[:, rows * size[1]:] = 0
        out = np.full((2, 3) + size, 7.0, dtype)
        views = conv_ops._runs_views(flat, gap, pitch, cols.shape, size[0], plan)
        conv_ops._overlap_add_runs(views, out, plan)
        nan = np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(out), nan)
        assert out[~nan].tobytes() == expected[~nan].tobytes(), (whole, gap)


@pytest.mark.parametrize("stride, padding, runs", [(1, 1, True), (1, 0, False), (2, 1, False), ((1, 2), 1, False),
                                                  ((1, 1), ((1, 1), (2, 0)), True)])
def test_input_gradient_of_unit_strides_and_same_width_adds_by_runs(monkeypatch, stride, padding, runs):
    """A convolution's input gradient overlap-adds by shifted runs (one call a block of samples) where its
    strides are 1 and the windows are as many as the input's columns (the width's padding "same"), else by
    slices; small integers make every sum exact: the loop reference's bits either way."""
    from .test_conv import ref_conv2d_input_grad

    calls = []

    def counted(*args):
        calls.append(args[1].shape[0])
        return original(*args)

    original = conv_ops._overlap_add_runs
    monkeypatch.setattr(conv_ops, "_overlap_add_runs", counted)
    monkeypatch.setattr(conv_ops, "CONTRIBUTION_BLOCK_BYTES", 1)  # (blocks of one sample)
    x = gc.placeholder("x", (3, 2, 6, 5))
    w = gc.placeholder("w", (4, 2, 3, 3))
    pads = ((0, 0), (0, 0)) + (padding if isinstance(padding, tuple) else ((padding, padding),) * 2)
    y = gc.conv2d(gc.pad(x, pads), w, stride=stride)
    g = gc.placeholder("g", y.shape)
    (dx,) = gc.vjp(y, [x], g)
    rng = np.random.default_rng(15)
    feeds = [rng.integers(-3, 4, t.shape).astype(np.float64) for t in (x, w, g)]
    ours = gc.function([x, w, g], dx)(*feeds)
    assert calls == ([1, 1, 1] if runs else [])
    (top, bottom), (left, right) = pads[2:]
    padded = np.empty((3, 2, 6 + top + bottom, 5 + left + right))
    expected = ref_conv2d_input_grad(padded, feeds[1], feeds[2], stride)[:, :, top:top + 6, left:left + 5]
    assert ours.tobytes() == np.ascontiguousarray(expected).tobytes()


def test_the_columns_of_a_1x1_window_are_a_copy_not_a_view_of_the_input():
    # a 1x1 kernel of unit stride: the windows' view is C-contiguous already, and the plan reuses the
    # input's buffer (dead after the copy) while the weight gradient still reads the columns
    rng = np.random.default_rng(40)
    x, w = gc.placeholder("x", (2, 4, 5, 5)), gc.placeholder("w", (4, 4, 1, 1))
    loss = gc.sum(gc.square(gc.conv2d(gc.relu(x) + 1.0, w) * 3.0 + 1.0))
    (gw,) = gc.grad(loss, [w])
    fn = gc.function([x, w], gw)
    assert "conv2d_columns" in [s.op for s in fn.plan.steps]
    xs, ws = rng.normal(size=(2, 4, 5, 5)), rng.normal(size=(4, 4, 1, 1))
    np.testing.assert_array_equal(fn(xs, ws), gc.function([x, w], gw, optimize=False)(xs, ws))
    columns = Conv2dColumns().impl(xs, ws)
    assert not np.shares_memory(columns, xs) and columns.flags.writeable
