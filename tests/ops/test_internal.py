"""The ops only gradients, the optimizer and the compiler make (they show up in printed and saved graphs):
values, gradients to second order, through the one table runner."""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.ops import shape
from graphc.ops.cumulative import LinearScan, Shift
from graphc.ops.elementwise import erf
from graphc.ops.nn import ShapeCheck, SoftmaxMinusOneHot, SparseTarget
from graphc.ops.reduce import ProdOthers, ReducedCount, SoftmaxOver
from graphc.ops.shape import ConcatPiece, SqueezeCheck
from graphc.passes.fuse import fuse

from .util import Case, Spec, fixed, np_erf, np_softmax, table_tests, uniform


def _scatter(index):
    def ref(x, w):
        out = np.zeros_like(w, shape=x.shape)
        np.add.at(out, index, w)
        return out
    return ref


def _prod_others(x):
    return np.prod(x, axis=1, keepdims=True) / x


def _prod_others_grad(x, w):
    """sum over i != j of w_i * (the product of the entries other than i and j), along axis 1."""
    total = np.prod(x, axis=1, keepdims=True)
    return total / x * (np.sum(w / x, axis=1, keepdims=True) - w / x)


def _sort_grad(x, w):
    out = np.zeros_like(w)
    np.put_along_axis(out, np.argsort(x, 1), w, 1)  # each cotangent back to the entry sorted there
    return out


def _tanh_loop(x, h0):
    """The reference of the scan case: h = tanh(h / 2 + x[t]), every state stacked."""
    states, h = [], h0
    for row in x:
        h = np.tanh(0.5 * h + row)
        states.append(h)
    return np.stack(states)


def _shift(x, axis, offset, fill):
    """``Shift``'s reference: entries moved ``offset`` places along ``axis``, vacated places ``fill``."""
    out = np.full_like(x, fill)
    size, lead = x.shape[axis], (slice(None),) * axis
    moved = min(abs(offset), size)
    source, target = (slice(0, size - moved), slice(moved, size))[::1 if offset >= 0 else -1]
    out[lead + (target,)] = x[lead + (source,)]
    return out


def _linear_scan(a, b, axis, reverse):
    """``LinearScan``'s reference, step by step: s_k = a_k s_{k-1} + b_k (from the end when ``reverse``)."""
    out, state = np.zeros_like(b), 0.0
    steps = range(out.shape[axis])
    for k in (reversed(steps) if reverse else steps):
        index = (slice(None),) * axis + (k,)
        state = out[index] = a[index] * state + b[index]
    return out


def _minus_one_hot(z, labels):
    return np_softmax(z, 1) - np.eye(z.shape[1], dtype=z.dtype)[labels]


LABELS = Spec((3,), fixed([2, 0, 3]), kind="int64")
REFERENCE = dict(gen=uniform(), diff=False)  # an input that only gives a shape

CASES = [
    Case("sum_to", shape.sum_to, lambda x, t: np.sum(x, axis=0, keepdims=True),
         [Spec((2, 3)), Spec((1, 3), **REFERENCE)]),
    Case("broadcast_like", shape.broadcast_like, lambda x, t: np.broadcast_to(x, t.shape).copy(),
         [Spec((3,)), Spec((2, 3), **REFERENCE)]),
    Case("reshape_like", shape.reshape_like, lambda x, t: x.reshape(t.shape),
         [Spec((2, 3)), Spec((3, 2), **REFERENCE)]),
    Case("identity", shape.identity, lambda x: x.copy(), [Spec((2, 3))]),
    Case("concat_piece", lambda g, a, b: ConcatPiece(0, 1)(g, a, b), lambda g, a, b: g[2:],
         [Spec((5, 3)), Spec((2, 3), **REFERENCE), Spec((3, 3), **REFERENCE)]),
    Case("getitem_grad", lambda x, w: gc.grad(gc.sum(x[1:3] * w), x), _scatter(slice(1, 3)),
         [Spec((4, 3), **REFERENCE), Spec((2, 3))]),
    Case("take_grad", lambda x, w: gc.grad(gc.sum(gc.take(x, gc.constant([3, 0, 3]), axis=0) * w), x),
         _scatter([3, 0, 3]), [Spec((4, 2), **REFERENCE), Spec((3, 2))]),
    Case("prod_others", lambda x: ProdOthers((1,))(x), _prod_others, [Spec((2, 3), uniform(0.5, 1.5))]),
    Case("softmax_over", lambda x: SoftmaxOver((1,))(x), lambda x: np_softmax(x, 1), [Spec((2, 3))]),
    Case("erf", erf, np_erf, [Spec((2, 3))]),
    Case("softmax_minus_one_hot", lambda z, labels: SoftmaxMinusOneHot()(z, labels), _minus_one_hot,
         [Spec((3, 4)), LABELS]),
    Case("sparse_target", lambda labels, z: SparseTarget(1)(labels, z),
         lambda labels, z: np.eye(z.shape[1], dtype=z.dtype)[labels], [LABELS, Spec((3, 4))], grad=False),
    Case("reduced_count", lambda x: ReducedCount((0, 1))(x), lambda x: np.asarray(x.size, x.dtype),
         [Spec((2, 3))], grad=False),
    Case("fused", lambda x, y: fuse([gc.tanh(x * y) + gc.arctan(x)])[0],
         lambda x, y: np.tanh(x * y) + np.arctan(x), [Spec((2, 3)), Spec((3,))]),
    # the gradient ops of section 15's shape and ordering ops, as values of their own (w: the cotangent)
    Case("tile_grad", lambda x, w: gc.grad(gc.sum(gc.tile(x, (2, 1)) * w), x),
         lambda x, w: w.reshape(2, 2, 3).sum(0), [Spec((2, 3), **REFERENCE), Spec((4, 3))]),
    Case("repeat_grad", lambda x, w: gc.grad(gc.sum(gc.repeat(x, 2, 1) * w), x),
         lambda x, w: w.reshape(2, 3, 2).sum(2), [Spec((2, 3), **REFERENCE), Spec((2, 6))]),
    Case("diagonal_grad", lambda x, w: gc.grad(gc.sum(gc.diagonal(x) * w), x),
         lambda x, w: np.diag(w) + 0 * x, [Spec((3, 3), **REFERENCE), Spec((3,))]),
    Case("prod_others_grad", lambda x, w: gc.grad(gc.sum(ProdOthers((1,))(x) * w), x), _prod_others_grad,
         [Spec((2, 3), uniform(0.5, 1.5)), Spec((2, 3))]),
    Case("shape_check", lambda x, like: ShapeCheck()(x, like), lambda x, like: x.copy(),
         [Spec((2, 3)), Spec((2, 3), **REFERENCE)]),
    Case("squeeze_check", lambda x: SqueezeCheck((0,))(x), lambda x: x.copy(), [Spec((2, 3))]),
    Case("split_grad", lambda x, w: gc.grad(gc.sum(gc.split(x, 2, axis=1)[1] * w), x),
         lambda x, w: np.concatenate([np.zeros_like(w), w], 1), [Spec((2, 4), **REFERENCE), Spec((2, 2))]),
    Case("take_along_axis_grad", lambda x, w: gc.grad(gc.sum(gc.sort(x, 1) * w), x),
         lambda x, w: _sort_grad(x, w),
         [Spec((2, 4), fixed([[0.3, -1.0, 2.0, 0.5], [1.5, 0.2, -0.7, 0.9]]), diff=False), Spec((2, 4))]),
    # cumprod's gradient ops, as ops of their own (to second order: a Hessian of cumprod differentiates them)
    Case("shift", lambda x: Shift(1, 2, 0.5)(x), lambda x: _shift(x, 1, 2, 0.5), [Spec((2, 5))]),
    Case("shift-back", lambda x: Shift(0, -1)(x), lambda x: _shift(x, 0, -1, 0.0), [Spec((3, 2))]),
    Case("linear_scan", lambda a, b: LinearScan(1)(a, b), lambda a, b: _linear_scan(a, b, 1, False),
         [Spec((2, 5), uniform(-1.2, 1.2)), Spec((2, 5))]),
    Case("linear_scan-reverse", lambda a, b: LinearScan(0, True)(a, b), lambda a, b: _linear_scan(a, b, 0, True),
         [Spec((4, 3), uniform(-1.2, 1.2)), Spec((4, 3))]),
    # a loop: one scan node read through its output projection
    Case("scan", lambda x, h0: gc.scan(lambda xt, h: gc.tanh(0.5 * h + xt), sequences=x, outputs_info=h0),
         _tanh_loop, [Spec((4, 3)), Spec((3,))]),
]

globals().update(table_tests(CASES, float32_second=lambda c: c.id in ("fused", "softmax_minus_one_hot")))


def test_fused_case_is_one_fused_node():
    x, y = gc.placeholder("x", (2, 3)), gc.placeholder("y", (3,))
    assert next(c for c in CASES if c.id == "fused").build(x, y).op == "fused"
