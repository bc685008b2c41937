"""Stabilization: hand-written numerically fragile patterns become stable primitives.

The rewrites change the value only where the naive form overflows, underflows
or cancels (they compute the same mathematical function). They matter for the
*gradient* even more than for the value: ``gc.grad`` differentiates a
stabilized clone of the cost (see :func:`stabilize_for_grad`, called by
``graphc.autodiff.backprop``), because rewriting the forward graph afterwards
cannot repair a gradient already built from the naive form.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.leaves import constant
from graphc.op import apply
from graphc.ops import elementwise as ew
from graphc.ops.nn import LogSoftmax, Softmax, SoftmaxCrossEntropy
from graphc.ops.reduce import Logsumexp
from graphc.ops.shape import BroadcastTo
from graphc.passes.core import (
    RewriteContext,
    constant_value,
    is_uniform,
    named,
    producer,
    rewrite,
    rule_table,
    same_type,
)
from graphc.tensor import Tensor


def _plus_one(t: Tensor) -> Tensor | None:
    """For ``1 + x``, ``x + 1`` (a uniform constant one, x of the sum's type): x."""
    node = producer(t, "add")
    if node is None:
        return None
    a, b = node.inputs
    for x, one in ((a, b), (b, a)):
        if is_uniform(one, 1) and same_type(x, node):
            return x
    return None


@named("stabilize.log_softmax")
def log_softmax(node: Tensor) -> Tensor | None:
    """log(softmax(x)) -> log_softmax(x)"""
    s = producer(node.inputs[0], "softmax")
    if s is None:
        return None
    return apply(LogSoftmax(s.primitive.axis), s.inputs[0])


@named("stabilize.softmax")
def softmax_by_hand(node: Tensor) -> Tensor | None:
    """exp(x) / sum(exp(x), axis, keepdims=True) -> softmax(x, axis)"""
    num, den = node.inputs
    e = producer(num, "exp")
    total = producer(den, "sum")
    if e is None or total is None:
        return None
    e2 = producer(total.inputs[0], "exp")
    if e2 is None or e2.inputs[0] is not e.inputs[0]:
        return None
    x = e.inputs[0]
    axes = total.primitive.axes
    if x.dtype.kind != "f" or len(axes) != 1 or not (total.primitive.keepdims or x.ndim == 1):
        return None
    result = apply(Softmax(axes[0]), x)
    return result if same_type(result, node) else None


@named("stabilize.logsumexp")
def logsumexp(node: Tensor) -> Tensor | None:
    """log(sum(exp(x))) -> logsumexp(x)   (same axes, keepdims)"""
    total = producer(node.inputs[0], "sum")
    if total is None:
        return None
    e = producer(total.inputs[0], "exp")
    if e is None:
        return None
    result = apply(Logsumexp(total.primitive.axes, total.primitive.keepdims), e.inputs[0])
    return result if same_type(result, node) else None


@named("stabilize.log_sigmoid")
def log_sigmoid(node: Tensor) -> Tensor | None:
    """log(sigmoid(x)) -> -softplus(-x)"""
    s = producer(node.inputs[0], "sigmoid")
    if s is None:
        return None
    return ew.neg(ew.softplus(ew.neg(s.inputs[0])))


def _one_minus_sigmoid(t: Tensor) -> Tensor | None:
    node = producer(t, "sub")
    if node is None:
        return None
    one, s = node.inputs
    s = producer(s, "sigmoid")
    if s is None or not is_uniform(one, 1) or not same_type(s, node):
        return None
    return s.inputs[0]


@named("stabilize.log_one_minus_sigmoid")
def log_one_minus_sigmoid(node: Tensor) -> Tensor | None:
    """log(1 - sigmoid(x)) -> -softplus(x) ;  log1p(-sigmoid(x)) -> -softplus(x)"""
    if node.op == "log":
        x = _one_minus_sigmoid(node.inputs[0])
    else:
        n = producer(node.inputs[0], "neg")
        s = producer(n.inputs[0], "sigmoid") if n is not None else None
        x = s.inputs[0] if s is not None else None
    return ew.neg(ew.softplus(x)) if x is not None else None


@named("stabilize.softplus")
def softplus(node: Tensor) -> Tensor | None:
    """log(1 + exp(x)) -> softplus(x) ;  log1p(exp(x)) -> softplus(x)"""
    inner = _plus_one(node.inputs[0]) if node.op == "log" else node.inputs[0]
    e = producer(inner, "exp") if inner is not None else None
    if e is None:
        return None
    result = ew.softplus(e.inputs[0])
    return result if same_type(result, node) else None


@named("stabilize.log1p")
def log1p(node: Tensor) -> Tensor | None:
    """log(1 + x) -> log1p(x) ;  log(1 - x) -> log1p(-x)"""
    x = _plus_one(node.inputs[0])
    if x is not None:
        result = ew.log1p(x)
    else:
        difference = producer(node.inputs[0], "sub")
        if difference is None or not is_uniform(difference.inputs[0], 1):
            return None
        x = difference.inputs[1]
        if not same_type(x, difference) or x.dtype.kind != "f":
            return None
        result = ew.log1p(ew.neg(x))
    return result if same_type(result, node) else None


@named("stabilize.one_minus_sigmoid")
def one_minus_sigmoid(node: Tensor) -> Tensor | None:
    """1 - sigmoid(x) -> sigmoid(-x)   (1 - s loses every digit once s rounds to 1)"""
    x = _one_minus_sigmoid(node)
    if x is None:
        return None
    result = ew.sigmoid(ew.neg(x))
    return result if same_type(result, node) else None


@named("stabilize.expm1")
def expm1(node: Tensor) -> Tensor | None:
    """exp(x) - 1 -> expm1(x) ;  exp(x) + (-1) -> expm1(x)"""
    if node.op == "sub":
        pairs = [(node.inputs[0], node.inputs[1], 1)]
    else:
        a, b = node.inputs
        pairs = [(a, b, -1), (b, a, -1)]
    for e, one, value in pairs:
        e = producer(e, "exp")
        if e is not None and is_uniform(one, value) and same_type(e, node):
            return ew.expm1(e.inputs[0])
    return None


@named("stabilize.sigmoid")
def sigmoid_by_hand(node: Tensor) -> Tensor | None:
    """1 / (1 + exp(-x)) -> sigmoid(x)"""
    one, den = node.inputs
    if not is_uniform(one, 1):
        return None
    inner = _plus_one(den)
    e = producer(inner, "exp") if inner is not None else None
    n = producer(e.inputs[0], "neg") if e is not None else None
    if n is None:
        return None
    result = ew.sigmoid(n.inputs[0])
    return result if same_type(result, node) else None


@named("stabilize.cross_entropy")
def cross_entropy(node: Tensor) -> Tensor | None:
    """sum(p * log_softmax(x), axis) -> -softmax_cross_entropy(x, p)   (p of x's rank and size along axis)"""
    product = producer(node.inputs[0], "mul")
    if product is None or node.primitive.keepdims or len(node.primitive.axes) != 1:
        return None
    axis = node.primitive.axes[0]
    a, b = product.inputs
    for p, lsm in ((a, b), (b, a)):
        lsm = producer(lsm, "log_softmax")
        if lsm is None or lsm.primitive.axis != axis:
            continue
        x = lsm.inputs[0]
        if p.dtype.kind != "f" or p.ndim != x.ndim or p.shape[axis] != x.shape[axis] or p.shape[axis] is None:
            continue  # (the primitive broadcasts p against the log-probabilities as mul does, except along axis)
        result = ew.neg(apply(SoftmaxCrossEntropy(axis, False), x, p))
        if same_type(result, node):
            return result
    return None


def _negated_log_softmax(t: Tensor) -> tuple[Tensor, int] | None:
    """(log_softmax node, sign) for ``log_softmax(x)`` (+1) or ``-log_softmax(x)`` (-1), over the last axis."""
    sign = 1
    negated = producer(t, "neg")
    if negated is not None:
        t, sign = negated.inputs[0], -1
    lsm = producer(t, "log_softmax")
    if lsm is None or lsm.primitive.axis != lsm.ndim - 1:
        return None
    return lsm, sign


def _picked_loss(node: Tensor, x: Tensor, labels: Tensor, sign: int) -> Tensor | None:
    """``sign * log_softmax(x)`` picked at ``labels`` along the last axis, as ``-+ softmax_cross_entropy``."""
    if labels.dtype.kind not in "iu":
        return None
    loss = apply(SoftmaxCrossEntropy(x.ndim - 1, True), x, labels)
    result = loss if sign < 0 else ew.neg(loss)
    return result if same_type(result, node) else None


@named("stabilize.nll")
def negative_log_likelihood(node: Tensor) -> Tensor | None:
    """log_softmax(x)[arange(n), labels] -> -softmax_cross_entropy(x, labels)   (and -log_softmax(x)[...] -> +)

    Also ``log_softmax(x)[label]`` for one example (1-D x, 0-d label) and
    ``log_softmax(x)[..., k]`` for a fixed class ``k`` (static batch shape).
    """
    found = _negated_log_softmax(node.inputs[0])
    if found is None:
        return None
    lsm, sign = found
    x = lsm.inputs[0]
    index = node.primitive.index
    arrays = node.inputs[1:]
    if index == (("array",), ("array",)) and x.ndim == 2 and x.shape[0] is not None:
        rows, labels = arrays
        row_values = constant_value(rows)
        if row_values is None or row_values.shape != (x.shape[0],) \
                or not np.array_equal(row_values, np.arange(x.shape[0])) or labels.ndim != 1:
            return None
        return _picked_loss(node, x, labels, sign)
    if index == (("array",),) and x.ndim == 1 and arrays[0].ndim == 0:
        return _picked_loss(node, x, arrays[0], sign)
    lead = (("slice", None, None, None),) * (x.ndim - 1)
    if len(index) >= 1 and index[-1][0] == "int" and index[:-1] in (lead, (("ellipsis",),)) and not arrays:
        classes = x.shape[-1]
        if None in x.shape or not -classes <= index[-1][1] < classes:
            return None
        k = index[-1][1] % classes
        labels = BroadcastTo(x.shape[:-1])(constant(np.asarray(k, dtype=np.int64)))
        return _picked_loss(node, x, labels, sign)
    return None


@named("stabilize.nll_take")
def negative_log_likelihood_take(node: Tensor) -> Tensor | None:
    """take(log_softmax(x), label) -> -softmax_cross_entropy(x, label)   (1-D x, 0-d integer label)"""
    found = _negated_log_softmax(node.inputs[0])
    labels = node.inputs[1]
    if found is None or node.primitive.axis not in (None, 0) or labels.ndim != 0 or found[0].ndim != 1:
        return None
    lsm, sign = found
    return _picked_loss(node, lsm.inputs[0], labels, sign)


# ---- where: keep the unselected branch out of the gradient -----------------------------------

def _guard(branch: Tensor, cond: Tensor, selected_when: bool, depth: int) -> Tensor | None:
    """``branch`` with the domain-limited inputs replaced by safe values where it is not selected.

    Descends through element-wise ops only, at most ``depth`` levels (a bound
    on pattern size, not on graph size); each op declares its domain guard (``Op.domain``).
    """
    op = branch.primitive
    # through differentiable element-wise ops (the guard's own ``where`` and casts are boundaries; so is a
    # fused kernel, which has no gradient rule and whose steps would otherwise be reached to any depth)
    node = producer(branch, branch.op) if isinstance(op, ew.Elementwise) and not op.zero_gradient \
        and not isinstance(op, (ew.Where, ew.Cast)) else None
    if node is None or depth == 0:
        return None
    inputs = list(node.inputs)
    changed = False
    guard = op.domain
    if guard is not None and inputs[guard[0]].dtype.kind == "f":
        position, safe = guard
        x = inputs[position]
        already = producer(x, "where")
        value = constant_value(x)
        harmless = value is not None and (position == 0 or not np.any(value == 0))
        if not harmless and not (already is not None and already.inputs[0] is cond):
            safe_t = constant(np.asarray(safe, dtype=x.dtype))
            inputs[position] = ew.where(cond, x, safe_t) if selected_when else ew.where(cond, safe_t, x)
            changed = True
    for i, parent in enumerate(node.inputs):
        if guard is not None and i == guard[0]:
            continue
        guarded = _guard(parent, cond, selected_when, depth - 1)
        if guarded is not None:
            inputs[i] = guarded
            changed = True
    return node.primitive(*inputs) if changed else None


@named("stabilize.where_safe_branch")
def where_safe_branch(node: Tensor) -> Tensor | None:
    """where(c, f(x), b) -> where(c, f(where(c, x, safe)), b)   (f: log, sqrt, div, exp, pow...)

    The unselected branch gets a zero cotangent, but 0 * f'(x) is NaN where
    f'(x) is inf or NaN (e.g. ``where(x > 0, sqrt(x), 0)`` at 0): feeding f a
    safe value where the branch is not selected keeps the gradient clean.
    """
    cond, a, b = node.inputs
    new_a = _guard(a, cond, True, 3)
    new_b = _guard(b, cond, False, 3)
    if new_a is None and new_b is None:
        return None
    result = ew.where(cond, new_a if new_a is not None else a, new_b if new_b is not None else b)
    return result if same_type(result, node) else None


RULES = rule_table(
    ("log", log_softmax), ("log", logsumexp), ("log", log_sigmoid), ("log", log_one_minus_sigmoid),
    ("log", softplus), ("log", log1p),
    ("log1p", softplus), ("log1p", log_one_minus_sigmoid),
    ("sub", expm1), ("sub", one_minus_sigmoid), ("add", expm1),
    ("div", softmax_by_hand), ("div", sigmoid_by_hand),
    ("sum", cross_entropy),
    ("getitem", negative_log_likelihood), ("take", negative_log_likelihood_take),
    ("where", where_safe_branch),
)


def stabilize(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """Rewrite the fragile hand-written patterns into stable primitives."""
    return rewrite(outputs, RULES, context=context)


def stabilize_for_grad(outputs: Sequence[Tensor], wrt: Sequence[Tensor],
                       order: list[Tensor] | None = None) -> list[Tensor]:
    """A stabilized clone of ``outputs`` to differentiate; the ``wrt`` tensors are kept as they are.

    Returns ``outputs`` themselves when nothing applies. ``order``, if given, is ``toposort(outputs)``
    (the gradient driver's, so the graph is not sorted twice).
    """
    context = RewriteContext()
    if order is not None:
        context.known_order(outputs, order)
    return rewrite(list(outputs), RULES, list(wrt), context=context)
