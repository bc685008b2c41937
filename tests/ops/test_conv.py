"""Convolutional ops: pad, conv2d, conv2d_transpose, max/avg pooling, layer_norm, batch_norm.

Values against direct loop references (and against PyTorch when it is installed), static shapes
with unknown sizes, gradients against finite differences and gc.check_grad, second order
(every op, and a conv + pool + conv stack), tie splitting, build-time errors, and the ops'
life in the rest of graphc: CSE, folding, printing, pickle, save/load and the loader's
parameter checks.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import pickle

import numpy as np
import pytest

import graphc as gc
from graphc.op import apply
from graphc.ops.conv import Conv2d, Conv2dColumns, Conv2dWeightGrad
from graphc.serialize import encode

from .util import (
    Case,
    Spec,
    check_gradient,
    check_jvp,
    check_second_order,
    check_unknown_sizes,
    check_value,
    check_with_check_grad,
    max_grad_error,
    run,
)

FLOATS = [np.float64, np.float32]
HAVE_TORCH = importlib.util.find_spec("torch") is not None


# ---- direct loop references (independent of the strided-view kernels) -----------------------------

def _pairs(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_padding(padding, kernel, dilation):
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = _pairs(padding)
    return (ph, ph), (pw, pw)


def ref_conv2d(x, w, stride=1, padding=0, dilation=1, groups=1):
    """out[n, o, a, b] = sum_{c, i, j} xp[n, g*Cg + c, a*s + i*d, b*s + j*d] * w[o, c, i, j], one offset at a time."""
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    o, cg, kh, kw = w.shape
    (top, bottom), (left, right) = _conv_padding(padding, (kh, kw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, hp, wp = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo), np.result_type(x, w))
    og = o // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                           j * dw:j * dw + sw * (wo - 1) + 1:sw]
                for oo in range(og):
                    weights = w[g * og + oo, :, i, j][None, :, None, None]
                    out[:, g * og + oo] += (patch * weights).sum(axis=1)
    return out


def ref_conv2d_naive(x, w, stride=1, padding=0, dilation=1, groups=1):
    """Seven nested loops: the definition, for a few small cases."""
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    o, cg, kh, kw = w.shape
    (top, bottom), (left, right) = _conv_padding(padding, (kh, kw), (dh, dw))
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, hp, wp = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for b in range(n):
        for oc in range(o):
            g = oc // og
            for a in range(ho):
                for col in range(wo):
                    total = 0.0
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                total += xp[b, g * cg + c, a * sh + i * dh, col * sw + j * dw] * w[oc, c, i, j]
                    out[b, oc, a, col] = total
    return out


def ref_conv2d_transpose(x, w, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Scatter every input entry through the kernel, then crop ``padding``."""
    (sh, sw), (dh, dw), (ph, pw), (oph, opw) = (_pairs(v) for v in (stride, dilation, padding, output_padding))
    n, c_in, h, wd = x.shape
    _, cg_out, kh, kw = w.shape
    full_h, full_w = (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw
    out = np.zeros((n, cg_out * groups, full_h, full_w), np.result_type(x, w))
    cg_in = c_in // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                contribution = np.einsum("nchw,co->nohw", x[:, g * cg_in:(g + 1) * cg_in],
                                         w[g * cg_in:(g + 1) * cg_in, :, i, j])
                out[:, g * cg_out:(g + 1) * cg_out, i * dh:i * dh + sh * (h - 1) + 1:sh,
                    j * dw:j * dw + sw * (wd - 1) + 1:sw] += contribution
    return out[:, :, ph:full_h - ph, pw:full_w - pw]


def _pool_ref(x, kernel_size, stride, padding, reduce, fill):
    kh, kw = _pairs(kernel_size)
    sh, sw = _pairs(stride if stride is not None else kernel_size)
    ph, pw = _pairs(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.empty(x.shape[:2] + (ho, wo), x.dtype)
    for a in range(ho):
        for b in range(wo):
            out[:, :, a, b] = reduce(xp[:, :, a * sh:a * sh + kh, b * sw:b * sw + kw], axis=(2, 3))
    return out


def ref_max_pool2d(x, kernel_size, stride=None, padding=0):
    return _pool_ref(x, kernel_size, stride, padding, np.max, -np.inf)


def ref_avg_pool2d(x, kernel_size, stride=None, padding=0):
    return _pool_ref(x, kernel_size, stride, padding, np.mean, 0.0)


# ---- the gradient ops' references: the adjoints of the loops above, written out -------------------

def _conv_geometry(x_shape, w_shape, stride, padding, dilation):
    """(stride pair, dilation pair, ((top, bottom), (left, right)), padded (H, W), output (H', W'))."""
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    kh, kw = w_shape[2:]
    (top, bottom), (left, right) = _conv_padding(padding, (kh, kw), (dh, dw))
    hp, wp = x_shape[2] + top + bottom, x_shape[3] + left + right
    return (sh, sw), (dh, dw), ((top, bottom), (left, right)), (hp, wp), \
        ((hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1)


def ref_conv2d_input_grad(x, w, g, stride=1, padding=0, dilation=1, groups=1):
    """d/dx of sum(conv2d(x, w) * g): each output entry's g sent back through the kernel offset by offset
    into the padded input, the padding then cropped (``x`` gives only the shape)."""
    (sh, sw), (dh, dw), ((top, _), (left, _)), (hp, wp), (ho, wo) = _conv_geometry(x.shape, w.shape, stride,
                                                                                  padding, dilation)
    o, cg, kh, kw = w.shape
    og = o // groups
    grad = np.zeros((x.shape[0], x.shape[1], hp, wp), np.result_type(w, g))
    for k in range(groups):
        for i in range(kh):
            for j in range(kw):
                for oo in range(og):
                    grad[:, k * cg:(k + 1) * cg, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                         j * dw:j * dw + sw * (wo - 1) + 1:sw] += \
                        g[:, k * og + oo][:, None] * w[k * og + oo, :, i, j][None, :, None, None]
    return grad[:, :, top:top + x.shape[2], left:left + x.shape[3]]


def ref_conv2d_weight_grad(x, w, g, stride=1, padding=0, dilation=1, groups=1):
    """d/dw of sum(conv2d(x, w) * g): each offset's input patch against g (``w`` gives only the shape)."""
    (sh, sw), (dh, dw), ((top, bottom), (left, right)), _, (ho, wo) = _conv_geometry(x.shape, w.shape, stride,
                                                                                    padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    o, cg, kh, kw = w.shape
    og = o // groups
    grad = np.zeros(w.shape, np.result_type(x, g))
    for k in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, k * cg:(k + 1) * cg, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                           j * dw:j * dw + sw * (wo - 1) + 1:sw]
                for oo in range(og):
                    grad[k * og + oo, :, i, j] = (patch * g[:, k * og + oo][:, None]).sum(axis=(0, 2, 3))
    return grad


def _pool_windows(x, kernel_size, stride, padding, fill):
    """The padded input, (a, b, the slices of window (a, b) in it) for every output position, the padding
    pair and the output's (H', W')."""
    kh, kw = _pairs(kernel_size)
    sh, sw = _pairs(stride if stride is not None else kernel_size)
    ph, pw = _pairs(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    windows = [(a, b, (slice(None), slice(None), slice(a * sh, a * sh + kh), slice(b * sw, b * sw + kw)))
               for a in range(ho) for b in range(wo)]
    return xp, windows, (ph, pw), (ho, wo)


def _crop(xp, padding, shape):
    ph, pw = padding
    return xp[:, :, ph:ph + shape[2], pw:pw + shape[3]]


def _max_pool_winners(window, xp):
    """The entries of a window equal to its maximum (padding, at -inf, never among them) and how many."""
    part = xp[window]
    winners = part == part.max(axis=(2, 3), keepdims=True)
    return winners, winners.sum(axis=(2, 3), keepdims=True)


def ref_max_pool2d_grad(x, g, kernel_size, stride=None, padding=0):
    """d/dx of sum(max_pool2d(x) * g): each window's g split evenly among its tied maxima."""
    xp, windows, pads, _ = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    grad = np.zeros(xp.shape, g.dtype)
    for a, b, window in windows:
        winners, count = _max_pool_winners(window, xp)
        grad[window] += np.where(winners, g[:, :, a:a + 1, b:b + 1] / count, 0)
    return _crop(grad, pads, x.shape)


def ref_max_pool2d_gather(x, h, kernel_size, stride=None, padding=0):
    """The derivative of max_pool2d(x) along h: each window's mean of h over its tied maxima."""
    xp, windows, pads, out_hw = _pool_windows(x, kernel_size, stride, padding, -np.inf)
    hp = np.pad(h, ((0, 0), (0, 0), (pads[0], pads[0]), (pads[1], pads[1])))
    out = np.zeros(xp.shape[:2] + out_hw, h.dtype)
    for a, b, window in windows:
        winners, count = _max_pool_winners(window, xp)
        out[:, :, a, b] = (np.where(winners, hp[window], 0).sum(axis=(2, 3)) / count[:, :, 0, 0]).astype(h.dtype)
    return out


def ref_avg_pool2d_grad(x, g, kernel_size, stride=None, padding=0):
    """d/dx of sum(avg_pool2d(x) * g): each window's g / (kh * kw) on every entry (padding's dropped)."""
    xp, windows, pads, _ = _pool_windows(x, kernel_size, stride, padding, 0.0)
    kh, kw = _pairs(kernel_size)
    grad = np.zeros(xp.shape, g.dtype)
    for a, b, window in windows:
        grad[window] += g[:, :, a:a + 1, b:b + 1] / g.dtype.type(kh * kw)
    return _crop(grad, pads, x.shape)


def ref_layer_norm(x, axis=-1, eps=1e-5):
    mean = x.mean(axis=axis, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + x.dtype.type(eps))


def ref_batch_norm(x, mean, var, scale=None, offset=None, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + x.dtype.type(eps))
    if scale is not None:
        out = out * scale.reshape(shape)
    if offset is not None:
        out = out + offset.reshape(shape)
    return out


# ---- the grid ------------------------------------------------------------------------------------

#: (input shape, weight shape, stride, padding, dilation, groups)
CONV = [
    ((2, 3, 6, 5), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1, 1, 1),
    ((1, 4, 6, 7), (6, 2, 3, 3), 1, "same", 1, 2),
    ((2, 4, 7, 7), (4, 1, 3, 3), (2, 1), (1, 2), (1, 2), 4),  # depthwise, mixed stride/padding/dilation
    ((2, 2, 8, 7), (3, 2, 2, 3), 1, "same", 2, 1),  # an even kernel: 'same' pads one more at the end
    ((2, 3, 5, 5), (2, 3, 1, 1), 1, "valid", 1, 1),
    ((1, 2, 5, 4), (2, 2, 5, 4), 1, 0, 1, 1),  # the kernel covers the input
    ((2, 2, 8, 9), (4, 1, 3, 2), 3, (0, 2), (2, 1), 2),  # stride 3 leaves trailing rows unused
]

#: (input shape, weight shape, stride, padding, output_padding, dilation, groups)
TRANSPOSE = [
    ((2, 3, 4, 5), (3, 2, 3, 3), 1, 0, 0, 1, 1),
    ((2, 3, 4, 4), (3, 2, 3, 3), 2, 1, 1, 1, 1),
    ((1, 4, 3, 4), (4, 3, 2, 3), (2, 3), (0, 1), (1, 2), 1, 2),
    ((2, 2, 4, 3), (2, 1, 3, 3), 1, 1, (1, 0), (2, 1), 1),  # output_padding >= stride (allowed by dilation)
    ((2, 4, 3, 3), (4, 1, 3, 3), 2, 0, 0, 2, 4),
]

#: (input shape, kernel_size, stride, padding)
POOL = [
    ((2, 3, 6, 6), 2, None, 0),
    ((2, 2, 7, 6), 3, 2, 1),
    ((1, 3, 6, 7), (2, 3), (1, 2), (1, 1)),
    ((2, 2, 5, 5), 3, 1, 0),  # overlapping windows
    ((1, 2, 5, 7), (3, 2), (2, 3), (1, 0)),
]


def _conv_id(prefix, params):
    return prefix + "-" + "-".join(str(p).replace(" ", "") for p in params)


def conv_case(x_shape, w_shape, stride, padding, dilation, groups):
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return Case(_conv_id("conv2d", (x_shape, w_shape, stride, padding, dilation, groups)),
                lambda x, w: gc.conv2d(x, w, **kwargs), lambda x, w: ref_conv2d(x, w, **kwargs),
                [Spec(x_shape), Spec(w_shape)], rtol64=1e-12, rtol32=1e-5)


def transpose_case(x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
    return Case(_conv_id("conv2d_transpose", (x_shape, w_shape, stride, padding, output_padding, dilation, groups)),
                lambda x, w: gc.conv2d_transpose(x, w, **kwargs), lambda x, w: ref_conv2d_transpose(x, w, **kwargs),
                [Spec(x_shape), Spec(w_shape)], rtol64=1e-12, rtol32=1e-5)


def pool_case(kind, x_shape, kernel_size, stride, padding):
    fn, ref = {"max": (gc.max_pool2d, ref_max_pool2d), "avg": (gc.avg_pool2d, ref_avg_pool2d)}[kind]
    return Case(_conv_id(f"{kind}_pool2d", (x_shape, kernel_size, stride, padding)),
                lambda x: fn(x, kernel_size, stride, padding), lambda x: ref(x, kernel_size, stride, padding),
                [Spec(x_shape)], rtol64=1e-12, rtol32=1e-5)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def ties(rng, shape):
    """Small integers as floats: pooling windows with tied maxima."""
    return rng.integers(0, 3, size=shape).astype(np.float64)


def _conv_output_shape(x_shape, w_shape, stride, padding, dilation):
    return (x_shape[0], w_shape[0]) + _conv_geometry(x_shape, w_shape, stride, padding, dilation)[4]


def conv_grad_case(wrt, x_shape, w_shape, stride, padding, dilation, groups):
    """The gradient op of conv2d with respect to ``wrt`` ("input" or "weight"), built as gc.vjp does it, as a
    case of its own: a function of the cotangent and of the other operand (the differentiated one gives only
    its shape), so its own gradient rules (first and second order) are checked."""
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref = ref_conv2d_input_grad if wrt == "input" else ref_conv2d_weight_grad
    g_shape = _conv_output_shape(x_shape, w_shape, stride, padding, dilation)
    return Case(_conv_id(f"conv2d_{wrt}_grad", (x_shape, w_shape, stride, padding, dilation, groups)),
                lambda x, w, g: gc.vjp(gc.conv2d(x, w, **kwargs), x if wrt == "input" else w, g),
                lambda x, w, g: ref(x, w, g, **kwargs),
                [Spec(x_shape, diff=wrt != "input"), Spec(w_shape, diff=wrt != "weight"), Spec(g_shape)],
                rtol64=1e-12, rtol32=1e-5)


def pool_grad_case(op, x_shape, kernel_size, stride, padding):
    """A pooling gradient op as a case of its own, on inputs with tied maxima: ``max_pool2d_grad`` and
    ``avg_pool2d_grad`` as gc.vjp builds them (a function of the cotangent; the input gives the shape and the
    winners), ``max_pool2d_gather`` as gc.jvp builds it (a function of the tangent)."""
    pool = gc.max_pool2d if op.startswith("max") else gc.avg_pool2d
    ref = {"max_pool2d_grad": ref_max_pool2d_grad, "max_pool2d_gather": ref_max_pool2d_gather,
           "avg_pool2d_grad": ref_avg_pool2d_grad}[op]
    derivative = gc.jvp if op == "max_pool2d_gather" else gc.vjp
    seed_shape = x_shape if op == "max_pool2d_gather" else \
        ref_max_pool2d(np.zeros(x_shape), kernel_size, stride, padding).shape
    return Case(_conv_id(op, (x_shape, kernel_size, stride, padding)),
                lambda x, seed: derivative(pool(x, kernel_size, stride, padding), x, seed),
                lambda x, seed: ref(x, seed, kernel_size, stride, padding),
                [Spec(x_shape, ties, diff=False), Spec(seed_shape)], rtol64=1e-12, rtol32=1e-5)


#: the gradient ops as cases of their own (their values, and their own gradients to second order)
GRADIENT_CASES = (
    [conv_grad_case(wrt, *config) for wrt in ("input", "weight")
     for config in (CONV[1], CONV[3], CONV[7], ((2, 2, 6, 5), (3, 2, 2, 3), 1, "same", 1, 1))]  # 'same': (0, 1)
    + [pool_grad_case(op, *POOL[k]) for op in ("max_pool2d_grad", "max_pool2d_gather", "avg_pool2d_grad")
       for k in (1, 2, 3)]
)


CASES = (
    [conv_case(*c) for c in CONV]
    + [transpose_case(*c) for c in TRANSPOSE]
    + [pool_case("max", *p) for p in POOL]
    + [pool_case("avg", *p) for p in POOL]
    + [
        Case("pad-pairs", lambda x: gc.pad(x, ((1, 0), (0, 2), (2, 1))), lambda x: np.pad(x, ((1, 0), (0, 2), (2, 1))),
             [Spec((2, 3, 2))], rtol64=1e-12, rtol32=1e-5),
        Case("pad-int-value", lambda x: gc.pad(x, 1, value=-1.5), lambda x: np.pad(x, 1, constant_values=-1.5),
             [Spec((2, 3))], rtol64=1e-12, rtol32=1e-5),
        Case("pad-one-pair", lambda x: gc.pad(x, (0, 2)), lambda x: np.pad(x, (0, 2)), [Spec((3, 2, 2))],
             rtol64=1e-12, rtol32=1e-5),
        Case("layer_norm", gc.layer_norm, ref_layer_norm, [Spec((3, 5))], rtol64=1e-12, rtol32=1e-5),
        Case("layer_norm-chw", lambda x: gc.layer_norm(x, axis=(1, 2, 3)),
             lambda x: ref_layer_norm(x, axis=(1, 2, 3)), [Spec((2, 2, 3, 3))], rtol64=1e-12, rtol32=1e-5),
        Case("layer_norm-eps", lambda x: gc.layer_norm(x, 0, eps=0.1), lambda x: ref_layer_norm(x, 0, 0.1),
             [Spec((4, 2))], rtol64=1e-12, rtol32=1e-5),
        Case("batch_norm-nchw", gc.batch_norm, ref_batch_norm,
             [Spec((2, 3, 2, 2)), Spec((3,)), Spec((3,), positive), Spec((3,)), Spec((3,))],
             rtol64=1e-12, rtol32=1e-5),
        Case("batch_norm-nc", lambda x, m, v: gc.batch_norm(x, m, v), lambda x, m, v: ref_batch_norm(x, m, v),
             [Spec((4, 3)), Spec((3,)), Spec((3,), positive)], rtol64=1e-12, rtol32=1e-5),
        Case("batch_norm-batch-statistics",
             lambda x: gc.batch_norm(x, gc.mean(x, (0, 2, 3)),
                                     gc.mean(gc.square(x - gc.mean(x, (0, 2, 3), keepdims=True)), (0, 2, 3))),
             lambda x: ref_batch_norm(x, x.mean((0, 2, 3)), x.var((0, 2, 3))), [Spec((3, 2, 2, 2))],
             rtol64=1e-12, rtol32=1e-5),
        # a small CNN: conv, relu, pool, conv; the relu kink kept away by the offset
        Case("conv-pool-conv",
             lambda x, w1, w2: gc.conv2d(gc.max_pool2d(gc.tanh(gc.conv2d(x, w1, padding=1)), 2), w2, padding="same"),
             lambda x, w1, w2: ref_conv2d(ref_max_pool2d(np.tanh(ref_conv2d(x, w1, padding=1)), 2), w2,
                                          padding="same"),
             [Spec((2, 2, 6, 6)), Spec((3, 2, 3, 3)), Spec((2, 3, 3, 3))], rtol64=1e-12, rtol32=1e-5),
        Case("conv-avgpool-transpose",
             lambda x, w1, w2: gc.conv2d_transpose(gc.avg_pool2d(gc.conv2d(x, w1), 2, padding=1), w2, stride=2),
             lambda x, w1, w2: ref_conv2d_transpose(ref_avg_pool2d(ref_conv2d(x, w1), 2, padding=1), w2, stride=2),
             [Spec((1, 2, 6, 5)), Spec((3, 2, 2, 2)), Spec((3, 2, 2, 2))], rtol64=1e-12, rtol32=1e-5),
    ]
    + GRADIENT_CASES
)
NEEDS_KNOWN_KERNEL = {c.id for c in CASES if "same" in c.id} | {"conv-pool-conv"}  # padding="same"


def _shared_windows(x, w, stride, dilation, groups):
    """What the optimizer makes of a convolution: its windows copied by conv2d_columns."""
    return apply(Conv2dColumns(stride, dilation, groups), x, w)


def ref_weight_grad(x, g, kernel, stride, dilation):
    """dW of conv2d (groups 1) by its definition: the windows of x weighted by g, summed."""
    n, c, _, _ = x.shape
    o, ho, wo = g.shape[1:]
    out = np.zeros((o, c) + kernel, np.result_type(x, g))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = x[:, :, i * dilation[0]::stride[0], j * dilation[1]::stride[1]][:, :, :ho, :wo]
            out[:, :, i, j] = np.einsum("nchw,nohw->oc", rows, g)
    return out


#: the optimizer's forms (the windows copied once, shared by the forward and the weight gradient),
#: built directly: they exist only in optimized graphs and have no gradient
SHARED_WINDOWS_CASES = [
    Case("conv2d-of-columns-grouped-strided-dilated",
         lambda x, w: apply(Conv2d((1, 1), (1, 1), 2), _shared_windows(x, w, (2, 1), (1, 2), 2), w),
         lambda x, w: ref_conv2d(x, w, stride=(2, 1), dilation=(1, 2), groups=2),
         [Spec((2, 4, 7, 8)), Spec((6, 2, 3, 2))], grad=False, second=False, rtol64=1e-12, rtol32=1e-5),
    Case("conv2d_weight_grad-of-columns-strided-dilated",
         lambda x, g, w: apply(Conv2dWeightGrad((1, 1), (1, 1), 1), _shared_windows(x, w, (2, 1), (2, 1), 1), g, w),
         lambda x, g, w: ref_weight_grad(x, g, (2, 3), (2, 1), (2, 1)),
         [Spec((2, 3, 7, 6)), Spec((2, 4, 3, 4)), Spec((4, 3, 2, 3))], grad=False, second=False,
         rtol64=1e-12, rtol32=1e-5),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", SHARED_WINDOWS_CASES, ids=repr)
def test_shared_windows_values(case, dtype):
    check_value(case, dtype)


def test_windows_are_shared_by_the_forward_and_the_weight_gradient():
    """Optimized, a training step copies each layer's windows once; the values are the unoptimized ones,
    bit for bit (the same NumPy calls), and the optimizer's form refuses to be differentiated."""
    rng = np.random.default_rng(11)
    x = gc.placeholder("x", (2, 3, 7, 7))
    w = gc.placeholder("w", (4, 3, 3, 3))
    y = gc.conv2d(x, w, stride=2, padding=1)
    gy = gc.placeholder("gy", y.shape)
    dx, dw = gc.vjp(y, [x, w], gy)
    fn = gc.function([x, w, gy], [y, dw, dx])
    assert [t.op for t in fn.plan.steps] == ["pad", "conv2d_columns", "conv2d", "conv2d_weight_grad",
                                             "conv2d_input_grad"]
    forward_only = gc.function([x, w], y).plan.steps
    assert [t.op for t in forward_only] == ["pad", "conv2d_columns", "conv2d"]  # the same work in two steps
    feeds = (rng.normal(size=(2, 3, 7, 7)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(2, 4, 4, 4)))
    for a, b in zip(fn(*feeds), gc.function([x, w, gy], [y, dw, dx], optimize=False)(*feeds)):
        np.testing.assert_array_equal(a, b)
    optimized = gc.optimize(y)
    with pytest.raises(gc.GradientError, match="before optimizing"):
        gc.grad(gc.sum(optimized), w)
    with pytest.raises(gc.ShapeError, match="stride and dilation"):
        apply(Conv2d((2, 2), (1, 1), 1), optimized.inputs[0], w)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_value(case, dtype):
    check_value(case, dtype)


@pytest.mark.parametrize("case", [c for c in CASES if c.id not in NEEDS_KNOWN_KERNEL], ids=repr)
def test_unknown_sizes(case):
    check_unknown_sizes(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_gradient(case):
    check_gradient(case, np.float64)


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith(("conv-pool", "conv2d-((2,3,7,6)"))],
                         ids=repr)
def test_gradient_float32_and_unknown_sizes(case):
    check_gradient(case, np.float32)
    if case.id not in NEEDS_KNOWN_KERNEL:
        check_gradient(case, np.float64, unknown=True)


#: check_grad's largest relative error where it is not max_grad_error's: in conv-pool-conv an input entry
#: whose gradient is 2.8e-6 (the largest is 6.7) differs from its central difference by 2e-9 (rounding)
CHECK_GRAD_BOUND = {"conv-pool-conv": 1e-3}


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_check_grad(case):
    error = check_with_check_grad(case, np.float64)  # raises GradientError past check_grad's own tolerances
    assert error < CHECK_GRAD_BOUND.get(case.id, max_grad_error(np.float64)), (case.id, error)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_second_order(case):
    check_second_order(case, np.float64)


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith(("conv-", "conv2d_transpose-((2,3,4,4)"))],
                         ids=repr)
def test_forward_mode(case):
    check_jvp(case)


@pytest.mark.parametrize("config", CONV[:4])
def test_offset_reference_agrees_with_the_definition(config):
    x_shape, w_shape, stride, padding, dilation, groups = config
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=x_shape), rng.normal(size=w_shape)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    np.testing.assert_allclose(ref_conv2d(x, w, **kwargs), ref_conv2d_naive(x, w, **kwargs), rtol=1e-12, atol=1e-12)


def test_conv_transpose_is_the_input_gradient_of_conv():
    rng = np.random.default_rng(0)
    x, w = gc.placeholder("x", (2, 3, 7, 7)), gc.placeholder("w", (4, 3, 3, 3))
    y = gc.conv2d(x, w, stride=2, padding=1)
    g = gc.placeholder("g", y.shape)
    dx = gc.grad(gc.sum(y * g), x)
    via_transpose = gc.conv2d_transpose(g, w, stride=2, padding=1, output_padding=0)
    feeds = {x: rng.normal(size=(2, 3, 7, 7)), w: rng.normal(size=(4, 3, 3, 3)), g: rng.normal(size=y.shape)}
    a, b = run([dx, via_transpose], feeds)
    np.testing.assert_allclose(a, b, rtol=1e-12)


# ---- shapes ------------------------------------------------------------------------------------

def test_static_shapes_with_unknown_batch_and_spatial_sizes():
    w = gc.placeholder("w", (8, 3, 3, 3))
    x = gc.placeholder("x", (None, 3, 28, 28))
    assert gc.conv2d(x, w).shape == (None, 8, 26, 26)
    assert gc.conv2d(x, w, stride=2, padding=1).shape == (None, 8, 14, 14)
    assert gc.conv2d(x, w, padding="same", dilation=2).shape == (None, 8, 28, 28)
    assert gc.max_pool2d(gc.conv2d(x, w), 2).shape == (None, 8, 13, 13)
    assert gc.avg_pool2d(x, 3, 2, 1).shape == (None, 3, 14, 14)
    assert gc.conv2d_transpose(x, gc.placeholder("wt", (3, 5, 4, 4)), stride=2, padding=1).shape == (None, 5, 56, 56)
    free = gc.placeholder("free", (None, 3, None, 28))
    assert gc.conv2d(free, w, padding=1).shape == (None, 8, None, 28)
    assert gc.max_pool2d(free, 2).shape == (None, 3, None, 14)
    assert gc.pad(free, 1).shape == (None, 5, None, 30)
    dx, dw = gc.grad(gc.sum(gc.conv2d(free, w, padding=1)), [free, w])
    assert dx.shape == (None, 3, None, 28) and dw.shape == (8, 3, 3, 3)


def test_run_time_sizes_checked_when_unknown_at_build_time():
    x = gc.placeholder("x", (None, None, None, None))
    w = gc.placeholder("w", (4, 3, 3, 3))
    y = gc.conv2d(x, w)
    with pytest.raises(gc.ExecutionError, match="channels"):
        gc.Session().run(y, {x: np.zeros((1, 2, 5, 5)), w: np.zeros((4, 3, 3, 3))})
    with pytest.raises(gc.ExecutionError, match="larger than the padded input"):
        gc.Session().run(y, {x: np.zeros((1, 3, 2, 5)), w: np.zeros((4, 3, 3, 3))})


@pytest.mark.parametrize(("build", "match"), [
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 2, 3, 3))), "3 channels"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 4, 8, 8)), gc.placeholder("w", (4, 2, 3, 3)), groups=3), "groups=3"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 4, 8, 8)), gc.placeholder("w", (3, 2, 3, 3)), groups=2),
     "does not divide the 3 output"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("w", (4, 3, 5, 5))), "larger than"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("w", (4, 3, 7, 7)), padding=1),
     "padded input \\(6\\)"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 6, 6)), gc.placeholder("w", (4, 3, 3, 3)), dilation=3),
     "spanning 7"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 3, 3, 3)), stride=0), "stride"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 3, 3, 3)), padding=-1), "padding"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 3, 3, 3)), padding="full"),
     "'same' or 'valid'"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 3, 3, 3)), stride=2,
                       padding="same"), "stride 1"),
    (lambda: gc.conv2d(gc.placeholder("x", (3, 8, 8)), gc.placeholder("w", (4, 3, 3, 3))), "4-D"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 3, 3))), "4-D"),
    (lambda: gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 3, 3, 3)), groups=0), "groups"),
    (lambda: gc.conv2d_transpose(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("w", (2, 3, 3, 3))),
     "3 channels"),
    (lambda: gc.conv2d_transpose(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("w", (3, 3, 3, 3)),
                                 output_padding=1), "output_padding"),
    (lambda: gc.conv2d_transpose(gc.placeholder("x", (2, 3, 1, 1)), gc.placeholder("w", (3, 3, 1, 1)),
                                 padding=1), "leaves nothing"),
    (lambda: gc.conv2d_transpose(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("w", (3, 2, 3, 3)), groups=2),
     "does not divide the 3 input"),
    (lambda: gc.max_pool2d(gc.placeholder("x", (2, 3, 4, 4)), 5), "larger than"),
    (lambda: gc.max_pool2d(gc.placeholder("x", (2, 3, 8, 8)), 2, padding=2), "half the kernel"),
    (lambda: gc.avg_pool2d(gc.placeholder("x", (3, 8, 8)), 2), "4-D"),
    (lambda: gc.avg_pool2d(gc.placeholder("x", (2, 3, 8, 8)), 0), "kernel_size"),
    (lambda: gc.pad(gc.placeholder("x", (2, 3)), ((1, 1), (1, 1), (1, 1))), "3 \\(before, after\\) pairs"),
    (lambda: gc.pad(gc.placeholder("x", (2, 3)), -1), "non-negative"),
    (lambda: gc.batch_norm(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("m", (4,)),
                           gc.placeholder("v", (3,))), "3 channels"),
    (lambda: gc.batch_norm(gc.placeholder("x", (2, 3, 4, 4)), gc.placeholder("m", (3, 1)),
                           gc.placeholder("v", (3,))), "one value per channel"),
])
def test_build_time_shape_errors(build, match):
    with pytest.raises(gc.ShapeError, match=match) as info:
        build()
    message = str(info.value)
    assert message.split(":")[0] in ("conv2d", "conv2d_transpose", "max_pool2d", "avg_pool2d", "pad", "batch_norm")


def test_shape_errors_name_the_shapes():
    with pytest.raises(gc.ShapeError) as info:
        gc.conv2d(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (4, 2, 3, 3)))
    assert "(2, 3, 8, 8)" in str(info.value) and "(4, 2, 3, 3)" in str(info.value)


@pytest.mark.parametrize("build", [
    lambda x, w: gc.conv2d(x, w, stride=1.5),
    lambda x, w: gc.conv2d(x, w, stride=(1, 2, 3)),
    lambda x, w: gc.conv2d(x, w, padding=True),
    lambda x, w: gc.conv2d(x, w, dilation="2"),
    lambda x, w: gc.conv2d(x, w, groups=1.0),
    lambda x, w: gc.conv2d_transpose(x, w, padding="same"),
    lambda x, w: gc.max_pool2d(x, 2.0),
    lambda x, w: gc.avg_pool2d(x, 2, padding="valid"),
    lambda x, w: gc.pad(x, 1.0),
    lambda x, w: gc.pad(x, 1, value="0"),
    lambda x, w: gc.layer_norm(x, eps="small"),
])
def test_wrong_argument_kinds_are_type_errors(build):
    with pytest.raises(TypeError):
        build(gc.placeholder("x", (2, 3, 8, 8)), gc.placeholder("w", (3, 3, 3, 3)))


def test_dtypes():
    x32 = gc.placeholder("x", (1, 2, 5, 5), "float32")
    w32 = gc.placeholder("w", (3, 2, 3, 3), "float32")
    assert gc.conv2d(x32, w32).dtype == np.float32
    assert gc.conv2d(x32, gc.placeholder("w64", (3, 2, 3, 3))).dtype == np.float64
    assert gc.max_pool2d(x32, 2).dtype == np.float32
    assert gc.layer_norm(x32).dtype == np.float32
    assert gc.batch_norm(x32, np.zeros(2, np.float32), np.ones(2, np.float32)).dtype == np.float32
    with pytest.raises(gc.DTypeError):
        gc.conv2d(gc.placeholder("i", (1, 2, 5, 5), "int64"), w32)
    with pytest.raises(gc.DTypeError):
        gc.avg_pool2d(gc.placeholder("i", (1, 2, 5, 5), "int64"), 2)
    # integer max pooling works; padding entries (the dtype's minimum) never win
    xi = gc.placeholder("i", (1, 1, 3, 3), "int32")
    value = np.full((1, 1, 3, 3), np.iinfo(np.int32).min, np.int32)
    value[0, 0, 1, 1] = 7
    got = run(gc.max_pool2d(xi, 3, 1, 1), {xi: value})
    assert got.dtype == np.int32 and got.shape == (1, 1, 3, 3) and np.all(got == 7)
    assert run(gc.pad(xi, 1, value=2), {xi: value}).dtype == np.int32


# ---- max pooling: ties, padding, NaN --------------------------------------------------------------

def test_max_pool_ties_split_the_gradient_evenly():
    x = gc.placeholder("x", (1, 1, 4, 4))
    value = np.array([[1.0, 1.0, 0.0, 2.0], [1.0, 0.5, 2.0, 2.0], [3.0, 0.0, 5.0, 4.0], [0.0, 0.0, 1.0, 5.0]])
    g = gc.grad(gc.sum(gc.max_pool2d(x, 2) * np.array([[1.0, 2.0], [4.0, 8.0]])), x)
    expected = np.array([[1 / 3, 1 / 3, 0, 2 / 3], [1 / 3, 0, 2 / 3, 2 / 3], [4, 0, 4, 0], [0, 0, 0, 4]])
    np.testing.assert_allclose(run(g, {x: value[None, None]})[0, 0], expected, rtol=1e-15)


def test_max_pool_overlapping_windows_accumulate_per_window_shares():
    x = gc.placeholder("x", (1, 1, 3, 3))
    value = np.zeros((1, 1, 3, 3))  # every entry ties in every window
    g = run(gc.grad(gc.sum(gc.max_pool2d(x, 2, stride=1)), x), {x: value})[0, 0]
    # each 2x2 window gives 1/4 to each of its entries; the centre is in four windows, corners in one
    np.testing.assert_allclose(g, np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4, rtol=1e-15)
    assert g.sum() == pytest.approx(4.0)


def test_max_pool_padding_never_wins():
    x = gc.placeholder("x", (1, 1, 2, 2))
    value = np.full((1, 1, 2, 2), -np.inf)  # real entries equal to the padding's fill
    pooled = gc.max_pool2d(x, 2, stride=1, padding=1)
    out, g = run([pooled, gc.vjp(pooled, x, gc.constant(np.ones((1, 1, 3, 3))))], {x: value})
    assert out.shape == (1, 1, 3, 3) and np.all(out == -np.inf)
    # every window's gradient went to real entries only: 9 windows, all of it arrives
    assert g.sum() == pytest.approx(9.0)
    np.testing.assert_allclose(g[0, 0], np.array([[1 + 1 / 2 + 1 / 2 + 1 / 4] * 2] * 2), rtol=1e-15)


def test_max_pool_of_a_nan_window_gives_nan_value_and_zero_gradient():
    x = gc.placeholder("x", (1, 1, 2, 4))
    value = np.array([[[[np.nan, 1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 0.0]]]])
    pooled = gc.max_pool2d(x, 2)
    out, g = run([pooled, gc.grad(gc.sum(pooled), x)], {x: value})
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 3.0
    np.testing.assert_array_equal(g[0, 0], [[0, 0, 0, 1], [0, 0, 0, 0]])


def test_hessian_vector_product_through_conv_pool_conv():
    """H v of a small CNN's loss in its first-layer weights, against differences of the gradient."""
    rng = np.random.default_rng(11)
    x = gc.constant(rng.normal(size=(2, 2, 8, 8)))
    w1 = gc.placeholder("w1", (4, 2, 3, 3))
    w2 = gc.placeholder("w2", (3, 4, 3, 3))
    h = gc.max_pool2d(gc.tanh(gc.conv2d(x, w1, padding=1)), 2)
    h = gc.avg_pool2d(gc.conv2d(h, w2, stride=2, padding="valid" if False else 1), 2)
    loss = gc.sum(gc.square(h)) + gc.sum(gc.layer_norm(gc.reshape(h, (2, -1))) * 0.3)
    g1, g2 = gc.grad(loss, [w1, w2])
    v1, v2 = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=(3, 4, 3, 3))
    hv = gc.grad(gc.sum(g1 * v1) + gc.sum(g2 * v2), [w1, w2])
    a1, a2 = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=(3, 4, 3, 3))
    got = run(hv, {w1: a1, w2: a2})
    grad_fn = gc.function([w1, w2], [g1, g2])
    eps = 1e-6
    high, low = grad_fn(a1 + eps * v1, a2 + eps * v2), grad_fn(a1 - eps * v1, a2 - eps * v2)
    for value, hi, lo in zip(got, high, low):
        np.testing.assert_allclose(value, (hi - lo) / (2 * eps), rtol=1e-5, atol=1e-6)
    assert np.abs(got[0]).max() > 1e-3  # a real second derivative, not zeros


# ---- PyTorch's numbers ---------------------------------------------------------------------------

torch_only = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed")


def _torch_grads(fn, *arrays, diff=None):
    import torch

    diff = diff or [True] * len(arrays)
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=d) for a, d in zip(arrays, diff)]
    out = fn(*tensors)
    weights = torch.tensor(np.random.default_rng(7).uniform(0.5, 1.5, size=tuple(out.shape)))
    (out * weights).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() if d else None for t, d in zip(tensors, diff)], weights.numpy()


def _graphc_grads(build, *arrays, weights):
    inputs = [gc.placeholder(f"in{k}", a.shape) for k, a in enumerate(arrays)]
    out = build(*inputs)
    values = run([out] + gc.grad(gc.sum(out * weights), inputs), dict(zip(inputs, arrays)))
    return values[0], values[1:]


def _compare(build, torch_fn, arrays, diff=None):
    expected, expected_grads, weights = _torch_grads(torch_fn, *arrays, diff=diff)
    got, grads = _graphc_grads(build, *arrays, weights=weights)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads, expected_grads):
        if b is not None:  # PyTorch does not differentiate batch_norm's running statistics
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@torch_only
@pytest.mark.parametrize("config", CONV, ids=lambda c: _conv_id("conv2d", c))
def test_conv2d_matches_torch(config):
    import torch.nn.functional as F

    x_shape, w_shape, stride, padding, dilation, groups = config
    rng = np.random.default_rng(1)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _compare(lambda x, w: gc.conv2d(x, w, **kwargs), lambda x, w: F.conv2d(x, w, **kwargs),
             [rng.normal(size=x_shape), rng.normal(size=w_shape)])


@torch_only
@pytest.mark.parametrize("config", TRANSPOSE, ids=lambda c: _conv_id("conv2d_transpose", c))
def test_conv2d_transpose_matches_torch(config):
    import torch.nn.functional as F

    x_shape, w_shape, stride, padding, output_padding, dilation, groups = config
    rng = np.random.default_rng(2)
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
    _compare(lambda x, w: gc.conv2d_transpose(x, w, **kwargs), lambda x, w: F.conv_transpose2d(x, w, **kwargs),
             [rng.normal(size=x_shape), rng.normal(size=w_shape)])


@torch_only
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("config", POOL, ids=lambda c: _conv_id("pool", c))
def test_pooling_matches_torch(config, kind):
    import torch.nn.functional as F

    x_shape, kernel_size, stride, padding = config
    ours = gc.max_pool2d if kind == "max" else gc.avg_pool2d
    theirs = F.max_pool2d if kind == "max" else F.avg_pool2d
    _compare(lambda x: ours(x, kernel_size, stride, padding), lambda x: theirs(x, kernel_size, stride, padding),
             [np.random.default_rng(3).normal(size=x_shape)])


@torch_only
def test_norms_match_torch():
    import torch.nn.functional as F

    rng = np.random.default_rng(4)
    x, m, v, s, o = (rng.normal(size=(2, 3, 4, 4)), rng.normal(size=3), rng.uniform(0.5, 2, 3), rng.normal(size=3),
                     rng.normal(size=3))
    _compare(lambda x: gc.layer_norm(x, axis=(2, 3)), lambda x: F.layer_norm(x, (4, 4)), [x])
    _compare(lambda x, m, v, s, o: gc.batch_norm(x, m, v, s, o, eps=1e-3),
             lambda x, m, v, s, o: F.batch_norm(x, m, v, s, o, training=False, eps=1e-3), [x, m, v, s, o],
             diff=[True, False, False, True, True])


# ---- the rest of graphc: optimizer, printing, pickle, save/load ---------------------------------------

def _cnn_function(optimize=True):
    rng = np.random.default_rng(5)
    x = gc.placeholder("x", (None, 2, 8, 8))
    w1 = gc.variable(rng.normal(size=(4, 1, 3, 3)) * 0.3, name="w1")
    wt = gc.variable(rng.normal(size=(4, 2, 2, 2)) * 0.3, name="wt")
    h = gc.conv2d(x, w1, padding=1, groups=2)
    pooled = gc.max_pool2d(gc.relu(h), 2)
    up = gc.conv2d_transpose(pooled, wt, stride=2, output_padding=1, padding=1)
    out = gc.avg_pool2d(gc.pad(up, ((0, 0), (0, 0), (1, 0), (0, 1)), value=0.5), 3, 2, 1)
    loss = gc.mean(gc.square(gc.batch_norm(out, 0.1, 2.0))) + gc.mean(gc.layer_norm(pooled))
    g1, gt = gc.grad(loss, [w1, wt])
    second = gc.grad(gc.sum(g1 * g1), w1)  # second order: max_pool2d_gather, conv2d_input_grad, ...
    fn = gc.function([x], {"loss": loss, "g1": g1, "gt": gt, "second": second},
                     updates={w1: w1 - 0.1 * g1, wt: wt - 0.1 * gt}, optimize=optimize)
    return fn, rng.normal(size=(3, 2, 8, 8))


NEW_OPS = {"pad", "conv2d", "conv2d_input_grad", "conv2d_weight_grad", "conv2d_transpose", "max_pool2d",
           "max_pool2d_grad", "max_pool2d_gather", "avg_pool2d", "avg_pool2d_grad"}


@pytest.mark.parametrize("optimize", [True, False])
def test_save_load_and_pickle_round_trips(tmp_path, optimize):
    fn, data = _cnn_function(optimize)
    ops = {node.op for node in fn.plan.graph_order()}
    assert NEW_OPS <= ops, NEW_OPS - ops
    assert ("conv2d_columns" in ops) == optimize  # optimized: the forward and weight gradient share windows
    gc.save(fn, tmp_path / "cnn.gcf")
    copies = [gc.load(tmp_path / "cnn.gcf"), pickle.loads(pickle.dumps(fn))]
    expected = fn(data)
    for other in copies:
        got = other(data)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    again = fn(data)
    assert not np.array_equal(again["loss"], expected["loss"])  # the update ran: the variables trained


def _small_function():
    """Every new op once or twice (first order, and second order for max_pool2d_gather), optimized."""
    rng = np.random.default_rng(8)
    x = gc.placeholder("x", (2, 2, 5, 5))
    w = gc.variable(rng.normal(size=(2, 1, 3, 3)), name="w")
    wt = gc.variable(rng.normal(size=(2, 1, 2, 2)), name="wt")
    t = gc.conv2d_transpose(gc.conv2d(x, w, padding=1, groups=2), wt, stride=2, output_padding=1)
    loss = gc.sum(gc.square(gc.max_pool2d(t, 2, 1, 1))) + gc.sum(gc.avg_pool2d(gc.pad(t, 1, value=0.5), 3, 2, 1))
    gw = gc.grad(loss, w)
    return gc.function([x], [loss] + gc.grad(gc.sum(gw * gw), [w, wt]))


def _saved_cnn():
    fn = _small_function()
    blob = encode(fn)
    from graphc.serialize import _HEADER

    _, _, manifest_length, data_length = _HEADER.unpack(blob[:_HEADER.size])[1:]
    manifest = json.loads(blob[_HEADER.size:_HEADER.size + manifest_length])
    arrays = blob[_HEADER.size + manifest_length:_HEADER.size + manifest_length + data_length]
    return manifest, arrays


def _assemble(manifest, data: bytes) -> bytes:
    import hashlib

    from graphc.serialize import _HEADER, MAGIC

    text = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    body = _HEADER.pack(MAGIC, manifest["version"], 0, len(text), len(data)) + text + data
    return body + hashlib.sha256(body).digest()


def _tampered_values(name, value):
    """Wrong types and wrong values for one encoded parameter of a new op."""
    wrong_types = [["str", "2"], ["float", (2.0).hex()], ["bool", True], ["none"], ["int", 2], ["tuple", []]]
    tag = value[0]
    if tag == "tuple":
        items = value[1]
        if items and items[0][0] == "tuple":  # pad_width: pairs
            wrong = [["tuple", items[:-1]], ["tuple", [["tuple", [["int", -1], ["int", 0]]]] * len(items)],
                     ["tuple", [["tuple", [["int", 1]]]] * len(items)],
                     ["tuple", [["tuple", [["float", (1.0).hex()], ["int", 0]]]] * len(items)]]
        else:
            wrong = [["tuple", [["int", 0], ["int", 0]]] if name != "output_padding" else
                     ["tuple", [["int", 9], ["int", 9]]],
                     ["tuple", [["int", -3], ["int", 1]]], ["tuple", [["int", 1]]],
                     ["tuple", [["int", 1], ["int", 1], ["int", 1]]], ["tuple", [["bool", True], ["int", 1]]],
                     ["tuple", [["int", 1 << 40], ["int", 1 << 40]]], ["tuple", [["str", "1"], ["int", 1]]]]
        return [w for w in wrong_types if w[0] != "tuple"] + wrong
    if tag == "int":  # groups
        return [w for w in wrong_types if w[0] != "int"] + [["int", 0], ["int", -2], ["int", 3], ["int", 1 << 40]]
    if tag == "float":  # pad value: only its type can be wrong
        return [["str", "0.5"], ["bool", False], ["none"], ["tuple", []]]
    raise AssertionError(f"unexpected parameter {name}: {value}")


def test_loader_rejects_tampered_parameters_of_the_new_ops(tmp_path):
    """Every parameter of every new op node, set to wrong types and to values that are invalid or change
    the node's shape: gc.load raises LoadError (the op's own checks or re-inference), never anything else."""
    manifest, data = _saved_cnn()
    path = tmp_path / "t.gcf"
    path.write_bytes(_assemble(manifest, data))
    gc.load(path)  # the untouched file loads
    seen, tried = set(), 0
    for k, node in enumerate(manifest["nodes"]):
        if node["kind"] != "op" or node["op"] not in NEW_OPS or node["op"] in seen:
            continue  # the first node of each new op
        seen.add(node["op"])
        for name, value in node["params"].items():
            for bad in _tampered_values(name, value):
                if bad == value:
                    continue
                changed = copy.deepcopy(manifest)
                changed["nodes"][k]["params"][name] = bad
                path.write_bytes(_assemble(changed, data))
                with pytest.raises(gc.LoadError):
                    gc.load(path)
                tried += 1
    assert seen == NEW_OPS and tried > 80


def test_optimizer_cse_and_folding():
    rng = np.random.default_rng(6)
    x = gc.placeholder("x", (2, 3, 6, 6))
    w = gc.constant(rng.normal(size=(4, 3, 3, 3)))
    a, b = gc.conv2d(x, w, padding=1), gc.conv2d(x, w, padding=1)
    optimized = gc.optimize([a + b])
    ops = [op for _, op in gc.to_networkx(optimized).nodes(data="op")]
    assert ops.count("conv2d") == 1 and ops.count("pad") == 1  # CSE merged the two convolutions
    folded = gc.optimize([gc.max_pool2d(gc.conv2d(gc.constant(rng.normal(size=(1, 3, 6, 6))), w), 2)])
    assert [op for _, op in gc.to_networkx(folded).nodes(data="op")] == ["constant"]
    feeds = {x: rng.normal(size=(2, 3, 6, 6))}
    np.testing.assert_allclose(gc.Session().run(a + b, feeds), gc.Session(optimize=False).run(a + b, feeds),
                               rtol=1e-15)


def test_printing_and_dot_show_the_ops():
    x = gc.placeholder("x", (None, 1, 5, 5))
    y = gc.max_pool2d(gc.conv2d(x, gc.constant(np.ones((2, 1, 3, 3))), padding="same"), 2)
    text = gc.debugprint(y)
    for name in ("conv2d", "pad", "max_pool2d"):
        assert name in text
    assert "conv2d" in gc.to_dot(y)


def test_padded_convolution_gradient_is_formed_in_the_input_shape():
    """pad's gradient under a convolution is one conv2d_input_grad with the padding, not a padded
    gradient sliced (and copied) back."""
    x = gc.placeholder("x", (None, 3, 6, 6))
    w = gc.placeholder("w", (4, 3, 3, 3))
    dx = gc.grad(gc.sum(gc.conv2d(x, w, padding=(1, 2))), x)
    assert dx.shape == (None, 3, 6, 6)
    nodes = [data for _, data in gc.to_networkx(dx).nodes(data=True)]
    assert [n["op"] for n in nodes].count("conv2d_input_grad") == 1
    assert "getitem" not in {n["op"] for n in nodes}
    # without a convolution under it, pad's gradient is the slice
    other = gc.grad(gc.sum(gc.square(gc.pad(x, 1))), x)
    assert "getitem" in {data["op"] for _, data in gc.to_networkx(other).nodes(data=True)}


@pytest.mark.parametrize("pad_width", [2, (1, 2), [3], ((1, 0), (2, 3)), ((1,), (2,)), [(0, 1)], ((2, 1),)])
def test_pad_takes_numpy_forms(pad_width):
    value = np.arange(6.0).reshape(2, 3)
    x = gc.placeholder("x", (2, 3))
    got = run(gc.pad(x, pad_width, value=-1.0), {x: value})
    np.testing.assert_array_equal(got, np.pad(value, pad_width, constant_values=-1.0))
