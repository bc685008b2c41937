"""Exact algebraic simplification: identities that hold under IEEE arithmetic.

Every rule keeps the tensor's static shape and dtype, so a broadcast that
changes the shape is never dropped (``x * 1`` with ``x`` of shape (3,) and a
one of shape (2, 3) stays). ``x * 0``, ``x - x`` and ``x / x`` are never
folded: NaN and inf exist. The only liberty taken is the sign of a zero
result, as in ``-0.0 + 0 = +0.0``: rules treat -0.0 and +0.0 as the same value
(they compare equal); NaN, inf and every other value are kept.
``sum(broadcast(x))`` becomes ``x * n``, which rounds once instead of n - 1
times (never less accurate, not always bit-identical).
"""

from __future__ import annotations

import numpy as np

from graphc.leaves import constant
from graphc.op import apply
from graphc.ops import elementwise as ew
from graphc.ops.conv import Conv2d, Conv2dColumns, Conv2dWeightGrad
from graphc.ops.shape import BroadcastTo, Reshape, Transpose
from graphc.passes.core import (
    RewriteContext,
    constant_value,
    named,
    producer,
    replaces,
    rewrite,
    rule_table,
    same_type,
    uniform_value,
)
from graphc.tensor import Tensor
from graphc.types import broadcast_shapes

# ---- arithmetic identities -------------------------------------------------------------


def _other_is(node: Tensor, number: float) -> Tensor | None:
    """For a binary commutative node ``x op c``/``c op x`` with a uniform constant ``c == number``: x."""
    a, b = node.inputs
    for x, other in ((a, b), (b, a)):
        value = uniform_value(other)  # (the cheap test first: most inputs are not constants)
        if value is not None and value == number and replaces(x, node):
            return x
    return None


def _one_dtype(*tensors: Tensor) -> bool:
    """All of one dtype (so integer negation wraps the same way on both sides of an identity)."""
    return len({t.dtype for t in tensors}) == 1


@named("simplify.mul_one")
def mul_one(node: Tensor) -> Tensor | None:
    """x * 1 -> x   (x already has the product's shape and dtype)"""
    return _other_is(node, 1)


@named("simplify.mul_minus_one")
def mul_minus_one(node: Tensor) -> Tensor | None:
    """x * -1 -> -x"""
    x = _other_is(node, -1)
    return ew.neg(x) if x is not None and x.dtype.kind in "if" else None


@named("simplify.add_zero")
def add_zero(node: Tensor) -> Tensor | None:
    """x + (-0.0) -> x ;  x + 0 -> x for integers   (x already has the sum's shape and dtype)

    For floats only a negative zero is neutral: ``-0.0 + 0.0`` is ``+0.0``, so ``x + 0.0 -> x``
    would turn the sign of a zero around.
    """
    if node.dtype.kind == "f":
        a, b = node.inputs
        for x, other in ((a, b), (b, a)):
            value = uniform_value(other)
            if value is not None and value == 0 and np.signbit(value) and replaces(x, node):
                return x
        return None
    return _other_is(node, 0)


@named("simplify.sub_zero")
def sub_zero(node: Tensor) -> Tensor | None:
    """x - 0.0 -> x ;  x - 0 -> x for integers

    For floats only a positive zero is neutral: ``-0.0 - (-0.0)`` is ``+0.0``, so
    ``x - (-0.0) -> x`` would turn the sign of a zero around.
    """
    x, zero = node.inputs
    value = uniform_value(zero)
    if value is None or value != 0 or (node.dtype.kind == "f" and np.signbit(value)):
        return None
    return x if replaces(x, node) else None


@named("simplify.div_one")
def div_one(node: Tensor) -> Tensor | None:
    """x / 1 -> x ;  x / -1 -> -x"""
    x, one = node.inputs
    value = uniform_value(one)
    if value is None or not replaces(x, node):
        return None
    if value == 1:
        return x
    if value == -1:
        return ew.neg(x)
    return None


@named("simplify.pow_small")
def pow_small(node: Tensor) -> Tensor | None:
    """x ** 1 -> x ;  x ** 2 -> square(x)"""
    x, y = node.inputs
    value = uniform_value(y)
    if value is None or not replaces(x, node):
        return None
    if value == 1:
        return x
    if value == 2:
        return ew.square(x)
    return None


@named("simplify.neg_neg")
def neg_neg(node: Tensor) -> Tensor | None:
    """-(-x) -> x"""
    inner = producer(node.inputs[0], "neg")
    if inner is not None and same_type(inner.inputs[0], node):
        return inner.inputs[0]
    return None


@named("simplify.add_neg")
def add_neg(node: Tensor) -> Tensor | None:
    """x + (-y) -> x - y ;  (-y) + x -> x - y"""
    a, b = node.inputs
    for x, other in ((a, b), (b, a)):
        inner = producer(other, "neg")
        if inner is not None and _one_dtype(x, inner.inputs[0], node):
            return ew.sub(x, inner.inputs[0])
    return None


@named("simplify.sub_neg")
def sub_neg(node: Tensor) -> Tensor | None:
    """x - (-y) -> x + y"""
    x, other = node.inputs
    inner = producer(other, "neg")
    return ew.add(x, inner.inputs[0]) if inner is not None and _one_dtype(x, inner.inputs[0], node) else None


@named("simplify.neg_times_neg")
def neg_times_neg(node: Tensor) -> Tensor | None:
    """(-x) * (-y) -> x * y ;  (-x) / (-y) -> x / y"""
    a, b = (producer(t, "neg") for t in node.inputs)
    if a is None or b is None or not _one_dtype(a.inputs[0], b.inputs[0], node):
        return None
    return node.primitive(a.inputs[0], b.inputs[0])


# ---- shape identities ------------------------------------------------------------------------

_RESHAPES = ("reshape", "expand_dims", "squeeze")


def _reshape_like_static(node: Tensor) -> Tensor | None:
    """``node`` if it only reshapes its first input (no run-time shape reference)."""
    if producer(node, *_RESHAPES) is not None:
        return node
    if producer(node, "reshape_like") is not None and len(node.inputs) == 1:
        return node
    return None


def _determined_by_size(shape: tuple) -> bool:
    return shape.count(None) <= 1


@named("simplify.reshape_noop")
def reshape_noop(node: Tensor) -> Tensor | None:
    """reshape(x) -> x   when x already has the shape (reshape, expand_dims, squeeze chains)"""
    base = node.inputs[0]
    while _reshape_like_static(base) is not None and not same_type(base, node):
        base = base.inputs[0]
    if same_type(base, node) and _determined_by_size(node.shape):
        return base
    return None


@named("simplify.reshape_chain")
def reshape_chain(node: Tensor) -> Tensor | None:
    """reshape(reshape(x, a), b) -> reshape(x, b)   (also through expand_dims/squeeze)"""
    inner = _reshape_like_static(node.inputs[0])
    if inner is None:
        return None
    base = inner.inputs[0]
    if node.op == "reshape":
        target = node.primitive.shape
    elif None not in node.shape:
        target = node.shape
    else:
        return None
    result = Reshape(tuple(target))(base)
    return result if result.shape == node.shape else None


@named("simplify.transpose_transpose")
def transpose_transpose(node: Tensor) -> Tensor | None:
    """transpose(transpose(x, a), b) -> transpose(x, a[b])  (-> x when that is the identity)"""
    inner = producer(node.inputs[0], "transpose")
    if inner is None:
        return None
    axes = tuple(inner.primitive.axes[i] for i in node.primitive.axes)
    x = inner.inputs[0]
    if axes == tuple(range(len(axes))):
        return x
    return Transpose(axes)(x)


@named("simplify.transpose_identity")
def transpose_identity(node: Tensor) -> Tensor | None:
    """transpose(x, (0, 1, ..)) -> x"""
    if node.primitive.axes == tuple(range(node.ndim)):
        return node.inputs[0]
    return None


@named("simplify.broadcast_noop")
def broadcast_noop(node: Tensor) -> Tensor | None:
    """broadcast_to(x, x.shape) -> x ;  sum_to(x, x.shape) -> x   (static shapes)"""
    x = node.inputs[0]
    if same_type(x, node) and None not in node.shape:
        return x
    return None


@named("simplify.broadcast_chain")
def broadcast_chain(node: Tensor) -> Tensor | None:
    """broadcast_to(broadcast_to(x, a), b) -> broadcast_to(x, b)   (static shapes)"""
    inner = producer(node.inputs[0], "broadcast_to", "broadcast_like")
    if inner is None or None in node.shape or None in inner.shape:
        return None
    return BroadcastTo(node.shape)(inner.inputs[0])


def _root_inputs(node: Tensor) -> list[Tensor] | None:
    """The inputs whose run-time shape ``node``'s equals (all of them agreeing), or None if unknown.

    ``sum_to``/``broadcast_like``/``reshape_like`` with a reference input take
    its shape. An element-wise node whose inputs either have its static shape
    or a fully static shape has the run-time shape of the former (the static
    ones cannot widen it).
    """
    if node.op in ("sum_to", "broadcast_like", "reshape_like") and len(node.inputs) == 2:
        return [node.inputs[1]]
    if isinstance(node.primitive, ew.Elementwise):
        same = [t for t in node.inputs if t.shape == node.shape]
        if same and all(None not in t.shape for t in node.inputs if t.shape != node.shape):
            return same
    return None


def shape_root(tensor: Tensor, context: RewriteContext) -> Tensor:
    """A tensor with the same run-time shape as ``tensor``, as far up the graph as it can be traced."""
    roots = context.cache.setdefault("shape_root", {})

    def known(t: Tensor):
        entry = roots.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else None

    stack = [tensor]
    while stack:
        node = stack[-1]
        if known(node) is not None:
            stack.pop()
            continue
        parents = _root_inputs(node) or []
        missing = [p for p in parents if known(p) is None]
        if missing:
            stack.extend(missing)
            continue
        found = [known(p) for p in parents]
        root = found[0] if found and all(r is found[0] for r in found) else node
        roots[id(node)] = (node, root)
        stack.pop()
    return known(tensor)


def same_runtime_shape(a: Tensor, b: Tensor, context: RewriteContext) -> bool:
    """Whether ``a`` and ``b`` certainly have the same shape when the graph runs."""
    if a.shape != b.shape:
        return False
    return None not in a.shape or shape_root(a, context) is shape_root(b, context)


@named("simplify.shape_noop")
def shape_noop(node: Tensor, context: RewriteContext) -> Tensor | None:
    """sum_to(x, ref) -> x ;  broadcast_like(x, ref) -> x   (x already has ref's run-time shape)"""
    x = node.inputs[0]
    if len(node.inputs) != 2 or x.dtype != node.dtype or not same_runtime_shape(x, node, context):
        return None
    return x


def _broadcast_axes(x_shape: tuple, full: tuple, axes: tuple) -> int | None:
    """How many copies a sum over ``axes`` adds up, if ``x`` broadcast to ``full`` is constant along them."""
    aligned = (1,) * (len(full) - len(x_shape)) + tuple(x_shape)
    copies = 1
    for axis, (size, full_size) in enumerate(zip(aligned, full)):
        if axis in axes:
            if size != 1:
                return None
            copies *= full_size
        elif size != full_size:
            return None
    return copies


@named("simplify.sum_of_broadcast")
def sum_of_broadcast(node: Tensor) -> Tensor | None:
    """sum(broadcast_to(x, S), axes) -> reshape(x) * n + 0.0   (n copies summed; n > 0, static shapes; + 0.0 for
    floats, as np.sum: -0.0s sum to +0.0)"""
    b = producer(node.inputs[0], "broadcast_to", "broadcast_like")
    if b is None or None in b.shape or None in node.shape:
        return None
    x = b.inputs[0]
    if node.op == "sum":
        axes = node.primitive.axes
    else:  # sum_to: leading axes and the target's size-1 axes
        target = node.shape
        lead = b.ndim - len(target)
        axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(target) if s == 1 and b.shape[lead + i] != 1)
    copies = _broadcast_axes(x.shape, b.shape, axes)
    if copies is None or copies == 0 or x.dtype != node.dtype or x.dtype.kind not in "iuf":
        return None
    result = x if x.shape == node.shape else Reshape(node.shape)(x)
    if copies != 1:
        result = ew.mul(result, copies)
    return _positive_zeros(result)


def _positive_zeros(result: Tensor) -> Tensor:
    """``result + 0.0`` for floats: NumPy's sum starts from +0.0, so a sum of -0.0s is +0.0 (nothing else changes)."""
    return ew.add(result, 0.0) if result.dtype.kind == "f" else result


@named("simplify.sum_nothing")
def sum_nothing(node: Tensor) -> Tensor | None:
    """sum(x, axes=()) -> x + 0.0 ;  sum over axes of size 1 -> reshape(x) + 0.0   (same dtype; + 0.0 for floats)"""
    x = node.inputs[0]
    if x.dtype != node.dtype or None in node.shape:
        return None
    if all(x.shape[a] == 1 for a in node.primitive.axes):
        return _positive_zeros(x if x.shape == node.shape else Reshape(node.shape)(x))
    return None


# ---- dtype, selection, shape-only values -------------------------------------------------------


@named("simplify.cast_noop")
def cast_noop(node: Tensor) -> Tensor | None:
    """cast(x, x.dtype) -> x ;  cast(cast(x, wider), x.dtype) -> x"""
    x = node.inputs[0]
    if x.dtype == node.dtype:
        return x
    inner = producer(x, "cast")
    if inner is not None:
        base = inner.inputs[0]
        if base.dtype == node.dtype and _holds_exactly(base.dtype, inner.dtype):
            return base
    return None


def _holds_exactly(source: np.dtype, target: np.dtype) -> bool:
    """Whether every value of ``source`` is exactly representable in ``target``."""
    if source.kind == "b":
        return True
    if target.kind == "f":
        if source.kind == "f":
            return target.itemsize >= source.itemsize
        bits = source.itemsize * 8 - (source.kind == "i")
        return source.kind in "iu" and bits <= np.finfo(target).nmant + 1
    return source.kind in "iu" and target.kind in "iu" and np.can_cast(source, target, "safe")


@named("simplify.where_same")
def where_same(node: Tensor) -> Tensor | None:
    """where(c, x, x) -> x"""
    _, a, b = node.inputs
    return a if a is b and replaces(a, node) else None


@named("simplify.where_constant")
def where_constant(node: Tensor) -> Tensor | None:
    """where(True, a, b) -> a ;  where(False, a, b) -> b   (constant condition)"""
    cond, a, b = node.inputs
    value = uniform_value(cond)
    if value is None:
        return None
    chosen = a if bool(value) else b
    return chosen if replaces(chosen, node) else None


@named("simplify.fill_like")
def fill_like(node: Tensor) -> Tensor | None:
    """zeros_like(x) -> constant 0 (broadcast to x's static shape) ;  ones_like likewise"""
    if None in node.shape:
        return None
    fill = constant(np.asarray(0 if node.op == "zeros_like" else 1, dtype=node.dtype))
    return fill if node.ndim == 0 else BroadcastTo(node.shape)(fill)


@named("simplify.scalar_constant")
def scalar_constant(node: Tensor) -> Tensor | None:
    """op(x, full(S, c)) -> op(x, c)   (a uniform constant the other inputs already broadcast over)

    A 0-d array of the same dtype promotes exactly like the full array (only
    Python scalars are weak), so every entry and the dtype stay the same.
    """
    inputs = list(node.inputs)
    changed = False
    for i, t in enumerate(inputs):
        value = constant_value(t)
        if value is None or value.ndim == 0 or value.size == 0:
            continue
        others = [u.shape for j, u in enumerate(inputs) if j != i]
        if not others or broadcast_shapes(node.op, others) != node.shape:
            continue
        first = uniform_value(t)
        if first is None:
            continue
        inputs[i] = constant(np.asarray(first, dtype=value.dtype))
        changed = True
    if not changed:
        return None
    result = node.primitive(*inputs)
    return result if same_type(result, node) else None


@named("simplify.add_self")
def add_self(node: Tensor) -> Tensor | None:
    """x + x -> x * 2   (exact: doubling never rounds)"""
    a, b = node.inputs
    if a is b and a.dtype.kind == "f" and same_type(a, node):
        return ew.mul(a, 2)
    return None


@named("simplify.conv2d_columns")
def conv2d_by_columns(node: Tensor) -> Tensor | None:
    """conv2d(x, w) -> conv2d(conv2d_columns(x, w), w)   (the same copy of the windows and the same matmul,
    in two steps, the copy taking the stride and dilation: CSE then gives a training step one copy for
    the forward and the weight gradient)"""
    x, w = node.inputs
    if x.ndim != 4:
        return None
    return apply(Conv2d((1, 1), (1, 1), node.primitive.groups), _windows_copy(node.primitive, x, w), w)


@named("simplify.conv2d_weight_grad_columns")
def weight_grad_by_columns(node: Tensor) -> Tensor | None:
    """conv2d_weight_grad(x, g, w) -> conv2d_weight_grad(conv2d_columns(x, w), g, w)   (likewise)"""
    x, g, w = node.inputs
    if x.ndim != 4:
        return None
    columns = _windows_copy(node.primitive, x, w)
    return apply(Conv2dWeightGrad((1, 1), (1, 1), node.primitive.groups), columns, g, w)


def _windows_copy(op, x: Tensor, w: Tensor) -> Tensor:
    return apply(Conv2dColumns(op.stride, op.dilation, op.groups), x, w)


RULES = rule_table(
    ("conv2d", conv2d_by_columns), ("conv2d_weight_grad", weight_grad_by_columns),
    ("mul", mul_one), ("mul", mul_minus_one), ("mul", neg_times_neg),
    ("div", div_one), ("div", neg_times_neg),
    ("add", add_zero), ("add", add_neg), ("add", add_self),
    ("sub", sub_zero), ("sub", sub_neg),
    ("pow", pow_small),
    ("neg", neg_neg),
    ("reshape", reshape_noop), ("reshape", reshape_chain),
    ("expand_dims", reshape_noop), ("expand_dims", reshape_chain),
    ("squeeze", reshape_noop), ("squeeze", reshape_chain),
    ("transpose", transpose_identity), ("transpose", transpose_transpose),
    ("broadcast_to", broadcast_noop), ("broadcast_to", broadcast_chain),
    ("broadcast_like", broadcast_noop),
    ("sum_to", broadcast_noop), ("sum_to", sum_of_broadcast), ("sum_to", shape_noop),
    ("broadcast_like", shape_noop), ("reshape_like", shape_noop),
    ("sum", sum_of_broadcast), ("sum", sum_nothing),
    ("cast", cast_noop),
    ("where", where_same), ("where", where_constant),
    ("zeros_like", fill_like), ("ones_like", fill_like),
    *((op, scalar_constant) for op in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "clip",
                                       "equal", "not_equal", "greater", "greater_equal", "less", "less_equal")),
)


def simplify(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """Apply the exact simplification rules to a fixed point."""
    return rewrite(outputs, RULES, context=context)
