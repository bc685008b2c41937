"""Shape ops: reshape, transpose, broadcasting, joining, indexing, gathering.

Internal ops used by gradient rules live here too: ``sum_to`` (undo
broadcasting), ``broadcast_like``, ``reshape_like`` and the scatter ops that
are the gradients of indexing. When a target shape has sizes unknown until run
time, these ops take a reference tensor whose run-time shape is used.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.leaves import Constant
from graphc.op import Op, apply, as_tensor, first_input_form, op_dataclass, same_elements_form
from graphc.tensor import Tensor
from graphc.types import (
    as_dtype,
    broadcast_shapes,
    broadcast_to_shape,
    format_shape,
    known_size,
    normalize_axes,
    normalize_axis,
    normalize_shape,
)


def unify_shapes(op: str, shapes) -> tuple:
    """The common shape of shapes that must be equal (``None`` matches any size)."""
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ShapeError(f"{op}: inputs must have the same rank, got " + ", ".join(map(format_shape, shapes)))
    result = []
    for sizes in zip(*shapes):
        known = {s for s in sizes if s is not None}
        if len(known) > 1:
            raise ShapeError(f"{op}: shapes " + ", ".join(map(format_shape, shapes)) + " do not match")
        result.append(known.pop() if known else None)
    return tuple(result)


def _target_inputs(target: Tensor) -> tuple:
    """The reference input needed to know ``target``'s shape at run time (none if static)."""
    return (target,) if None in target.shape else ()


def _target_shape(op, ref) -> tuple:
    return ref[0].shape if ref else op.shape


def _inferred_target(op, ref) -> tuple:
    """The target shape as far as it is known before running: the reference input's when that is
    fully known (it is what ``_target_shape`` takes at run time; e.g. a graph cloned with the
    sizes of a call's feeds), else the op's own, with its unknown sizes."""
    if ref and None not in ref[0].shape and len(ref[0].shape) == len(op.shape):
        return ref[0].shape
    return op.shape


# ---- internal shape-reference ops -------------------------------------------------------

@op_dataclass
class SumTo(Op):
    """Sum ``x`` down to ``shape`` (undoes broadcasting); input 1, if any, gives the shape."""

    name = "sum_to"
    scalar_expr = "{0}"
    sympy_form = same_elements_form
    shape: tuple = ()
    view = True
    nondiff_inputs = (1,)

    def infer(self, x, *ref):
        target = _inferred_target(self, ref)
        broadcast_shapes(self.name, [x.shape, target])
        return target, x.dtype

    def impl(self, x, *ref):
        return sum_to_shape(x, _target_shape(self, ref))

    def vjp(self, node, g):
        return (broadcast_like(g, node.inputs[0]),) + (None,) * (len(node.inputs) - 1)


def sum_to_shape(x: np.ndarray, shape: tuple) -> np.ndarray:
    """NumPy: sum the broadcast dimensions of ``x`` so that it has ``shape``."""
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, size in enumerate(shape)
                                      if size == 1 and x.shape[lead + i] != 1)
    return np.sum(x, axis=axes, keepdims=True).reshape(shape) if axes else np.reshape(x, shape)


@op_dataclass
class BroadcastLike(Op):
    """Broadcast ``x`` to ``shape``; input 1, if any, gives the run-time shape."""

    name = "broadcast_like"
    scalar_expr = "{0}"
    sympy_form = first_input_form
    shape: tuple = ()
    view = True
    nondiff_inputs = (1,)

    def infer(self, x, *ref):
        return broadcast_to_shape(self.name, x.shape, _inferred_target(self, ref)), x.dtype

    def impl(self, x, *ref):
        return np.broadcast_to(x, _target_shape(self, ref))

    def vjp(self, node, g):
        return (g,) + (None,) * (len(node.inputs) - 1)


@op_dataclass
class ReshapeLike(Op):
    """Reshape ``x`` to ``shape``; input 1, if any, gives the run-time shape."""

    name = "reshape_like"
    scalar_expr = "{0}"
    sympy_form = same_elements_form
    shape: tuple = ()
    view = True
    nondiff_inputs = (1,)

    def infer(self, x, *ref):
        return _inferred_target(self, ref), x.dtype

    def impl(self, x, *ref):
        return np.reshape(x, _target_shape(self, ref))

    def vjp(self, node, g):
        return (reshape_like(g, node.inputs[0]),) + (None,) * (len(node.inputs) - 1)


def sum_to(x: Tensor, target: Tensor) -> Tensor:
    """Sum ``x`` down to ``target``'s shape (static when known, else at run time)."""
    if x.shape == target.shape and None not in x.shape:
        return x
    return apply(SumTo(target.shape), x, *_target_inputs(target))


def broadcast_like(x: Tensor, target: Tensor) -> Tensor:
    """Broadcast ``x`` to ``target``'s shape."""
    if x.shape == target.shape and None not in x.shape:
        return x
    return apply(BroadcastLike(target.shape), x, *_target_inputs(target))


def reshape_like(x: Tensor, target: Tensor) -> Tensor:
    """Reshape ``x`` to ``target``'s shape."""
    if x.shape == target.shape and None not in x.shape:
        return x
    return apply(ReshapeLike(target.shape), x, *_target_inputs(target))


@op_dataclass
class Identity(Op):
    """The value of ``x`` under a new name."""

    name = "identity"
    scalar_expr = "{0}"
    sympy_form = first_input_form
    view = True

    def infer(self, x):
        return x.shape, x.dtype

    def impl(self, x):
        return x

    def vjp(self, node, g):
        return (g,)


def identity(x, name: str | None = None) -> Tensor:
    return apply(Identity(), x, name=name)


@op_dataclass
class Composite(Identity):
    """The result of a public function that is built from other ops, under that function's name:
    ``gc.layer_norm(x)`` is a ``composite`` node over the ``div`` that computes it, and its
    ``Tensor.op`` is ``"layer_norm"`` (the ``label``). An identity otherwise: the optimizer drops it
    (``composite(x) -> x``) and its gradient is the cotangent."""

    name = "composite"
    label: str = ""
    labelled = True
    #: the public functions that mark their results this way (what a loaded file may name)
    LABELS: ClassVar[tuple[str, ...]] = ("top_k", "layer_norm", "batch_norm", "dropout")

    def __post_init__(self):
        if self.label not in self.LABELS:
            raise ValueError(f"composite: label must be one of {', '.join(self.LABELS)}, got {self.label!r}")


def composite(x: Tensor, label: str) -> Tensor:
    """``x`` as the result of the public function ``label`` (see ``Composite``)."""
    return apply(Composite(label), x)


# ---- public shape ops ---------------------------------------------------------------------

@op_dataclass
class Reshape(Op):
    name = "reshape"
    scalar_expr = "{0}"
    sympy_form = same_elements_form
    shape: tuple = ()
    view = True

    def infer(self, x):
        target = list(self.shape)
        if target.count(-1) > 1:
            raise ShapeError(f"reshape: at most one -1 in the new shape, got {self.shape}")
        total = known_size(x.shape)
        if -1 in target:
            rest = known_size(tuple(s for s in target if s != -1))
            position = target.index(-1)
            if total is None:
                target[position] = None
            elif rest == 0 or total % rest:
                raise ShapeError(f"reshape: cannot reshape {format_shape(x.shape)} into {self.shape}")
            else:
                target[position] = total // rest
        elif total is not None and known_size(tuple(target)) != total:
            raise ShapeError(f"reshape: cannot reshape {format_shape(x.shape)} "
                             f"({total} elements) into {format_shape(tuple(target))}")
        return tuple(target), x.dtype

    def impl(self, x):
        return np.reshape(x, self.shape)

    def vjp(self, node, g):
        return (reshape_like(g, node.inputs[0]),)


def reshape(x, shape) -> Tensor:
    """NumPy ``reshape``; one entry may be -1.

    ``shape`` is an int or a tuple/list of ints; raises ``ShapeError`` when the sizes do not fit.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"reshape: the new shape must be an int or a tuple of ints (one may be -1), got "
                        f"{type(shape).__name__}")
    shape = tuple(shape)
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
        raise ShapeError(f"reshape: the new shape must hold ints (one may be -1), got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if any(s < -1 for s in shape):
        raise ShapeError(f"reshape: invalid shape {shape}")
    return apply(Reshape(shape), x)


@op_dataclass
class Transpose(Op):
    name = "transpose"
    scalar_expr = "{0}"
    axes: tuple = ()
    view = True

    def infer(self, x):
        if sorted(self.axes) != list(range(x.ndim)):
            raise ShapeError(f"transpose: axes {self.axes} are not a permutation for a tensor of rank {x.ndim}")
        return tuple(x.shape[a] for a in self.axes), x.dtype

    def impl(self, x):
        return np.transpose(x, self.axes)

    def vjp(self, node, g):
        return (transpose(g, tuple(int(a) for a in np.argsort(self.axes))),)


def transpose(x, axes=None) -> Tensor:
    """Permute the axes (reverse them when ``axes`` is None); ``axes`` is a permutation of
    ``range(x.ndim)`` (a tuple or list; negative entries count from the end)."""
    x = as_tensor(x)
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    elif isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (axes,)  # as np.transpose: a single int names the one axis of a 1-d array
    elif not isinstance(axes, (tuple, list)):
        raise TypeError(f"transpose: axes must be None or a tuple of ints (a permutation of range({x.ndim})), "
                        f"got {type(axes).__name__}")
    axes = tuple(normalize_axis("transpose", a, x.ndim) for a in axes) if x.ndim else tuple(axes)
    return apply(Transpose(axes), x)


def swap_last_axes(x: Tensor) -> Tensor:
    """Swap the last two axes (the matrix transpose of a batch)."""
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return transpose(x, tuple(axes))


@op_dataclass
class ExpandDims(Op):
    name = "expand_dims"
    scalar_expr = "{0}"
    sympy_form = same_elements_form
    axes: tuple = ()
    view = True

    def infer(self, x):
        shape = list(x.shape)
        for axis in self.axes:
            shape.insert(axis, 1)
        return tuple(shape), x.dtype

    def impl(self, x):
        return np.expand_dims(x, self.axes)

    def vjp(self, node, g):
        return (squeeze(g, self.axes),)


def expand_dims(x, axis) -> Tensor:
    """Insert size-1 axes at the positions ``axis`` (an int or a tuple) of the result."""
    x = as_tensor(x)
    if not isinstance(axis, (int, np.integer, tuple, list)) or isinstance(axis, bool):
        raise TypeError(f"expand_dims: axis must be an int or a tuple of ints (positions in the result), got "
                        f"{type(axis).__name__}")
    axes = normalize_axes("expand_dims", axis, x.ndim + (1 if isinstance(axis, (int, np.integer)) else len(axis)))
    return apply(ExpandDims(axes), x)


@op_dataclass
class Squeeze(Op):
    name = "squeeze"
    scalar_expr = "{0}"
    sympy_form = same_elements_form
    axes: tuple = ()
    view = True

    def infer(self, x):
        for axis in self.axes:
            if x.shape[axis] not in (1, None):
                raise ShapeError(f"squeeze: axis {axis} of shape {format_shape(x.shape)} does not have size 1")
        return tuple(s for i, s in enumerate(x.shape) if i not in self.axes), x.dtype

    def impl(self, x):
        return np.squeeze(x, self.axes)

    def vjp(self, node, g):
        return (expand_dims(g, self.axes),)


@op_dataclass
class SqueezeCheck(Op):
    """``x`` itself, after checking at run time that the ``axes`` (unknown when the graph was
    built) are not of size 1: ``squeeze(x)`` keeps them, where NumPy would remove them."""

    name = "squeeze_check"
    axes: tuple = ()
    view = True

    def infer(self, x):
        return x.shape, x.dtype

    def impl(self, x):
        ones = [a for a in self.axes if x.shape[a] == 1]
        if ones:
            raise ValueError(f"squeeze: axis {ones[0]} of shape {x.shape} has size 1 at run time, but its size was "
                             f"unknown when the graph was built, so squeeze() without axis kept it (NumPy would "
                             f"remove it and change the rank); pass axis= to say which axes to remove")
        return x

    def vjp(self, node, g):
        return (g,)


def squeeze(x, axis=None) -> Tensor:
    """Remove size-1 axes (all of them when ``axis`` is None), as ``np.squeeze``.

    The rank of a graphc tensor is known when the graph is built, so without ``axis`` the
    axes of size 1 are those *known* to be 1; an axis of unknown size is kept, and is checked
    at run time: if it is 1 there (where NumPy would remove it), the call raises an
    ``ExecutionError`` that says to pass ``axis``. With ``axis``, an axis of unknown size is
    removed and must be 1 at run time. Raises ``ShapeError`` for an axis known not to be 1.
    """
    x = as_tensor(x)
    if axis is None:
        unknown = tuple(i for i, s in enumerate(x.shape) if s is None)
        if unknown:
            x = apply(SqueezeCheck(unknown), x)
        axes = tuple(i for i, s in enumerate(x.shape) if s == 1)
    else:
        axes = normalize_axes("squeeze", axis, x.ndim)
    return apply(Squeeze(axes), x)


@op_dataclass
class BroadcastTo(Op):
    name = "broadcast_to"
    scalar_expr = "{0}"
    sympy_form = first_input_form
    shape: tuple = ()
    view = True

    def infer(self, x):
        return broadcast_to_shape(self.name, x.shape, self.shape), x.dtype

    def impl(self, x):
        return np.broadcast_to(x, self.shape)

    def vjp(self, node, g):
        return (g,)  # the grad driver sums g back to the input's shape


def broadcast_to(x, shape) -> Tensor:
    shape = normalize_shape(shape, "broadcast_to shape")
    if None in shape:
        raise ShapeError(f"broadcast_to: the target shape must be fully known, got {format_shape(shape)}")
    return apply(BroadcastTo(shape), x)


@op_dataclass
class Concatenate(Op):
    name = "concatenate"
    axis: int = 0

    def infer(self, *xs):
        if not xs:
            raise ShapeError("concatenate: needs at least one tensor")
        if xs[0].ndim == 0:
            raise ShapeError("concatenate: 0-d tensors cannot be concatenated")
        if any(x.ndim != xs[0].ndim for x in xs):
            raise ShapeError(f"concatenate: inputs must have the same rank, got shapes "
                             f"{', '.join(format_shape(x.shape) for x in xs)}")
        others = [tuple(s for i, s in enumerate(x.shape) if i != self.axis) for x in xs]
        try:
            rest = unify_shapes(self.name, others)
        except ShapeError:
            raise ShapeError(f"concatenate: shapes {', '.join(format_shape(x.shape) for x in xs)} differ "
                             f"outside axis {self.axis}") from None
        sizes = [x.shape[self.axis] for x in xs]
        total = None if None in sizes else sum(sizes)
        shape = rest[:self.axis] + (total,) + rest[self.axis:]
        return shape, np.result_type(*(x.dtype for x in xs))

    def impl(self, *xs):
        return np.concatenate(xs, axis=self.axis)

    def vjp(self, node, g):
        xs = node.inputs
        sizes = [x.shape[self.axis] for x in xs]
        if None not in sizes:
            pieces, start = [], 0
            for size in sizes:
                index = (slice(None),) * self.axis + (slice(start, start + size),)
                pieces.append(getitem(g, index))
                start += size
            return pieces
        return [apply(ConcatPiece(self.axis, i), g, *xs) for i in range(len(xs))]


@op_dataclass
class ConcatPiece(Op):
    """The part of a concatenation's cotangent that belongs to input ``index`` (sizes at run time)."""

    name = "concat_piece"
    axis: int = 0
    index: int = 0
    view = True

    @property
    def nondiff_inputs(self):  # every input but the cotangent is a shape reference
        return tuple(range(1, 1 << 16))

    def infer(self, g, *xs):
        return xs[self.index].shape, g.dtype

    def impl(self, g, *xs):
        start = sum(x.shape[self.axis] for x in xs[:self.index])
        stop = start + xs[self.index].shape[self.axis]
        return g[(slice(None),) * self.axis + (slice(start, stop),)]

    def vjp(self, node, g):
        xs = node.inputs[1:]
        parts = [g if i == self.index else zeros_like_cast(x, g.dtype) for i, x in enumerate(xs)]
        return (concatenate(parts, self.axis),) + (None,) * len(xs)


def zeros_like_cast(x: Tensor, dtype) -> Tensor:
    from graphc.ops.elementwise import cast, zeros_like

    zeros = zeros_like(x)
    return zeros if zeros.dtype == dtype else cast(zeros, dtype)


def _tensor_list(op: str, xs) -> list[Tensor]:
    if isinstance(xs, (Tensor, np.ndarray, str, bytes)) or not hasattr(xs, "__iter__"):
        raise TypeError(f"{op}: takes a list or tuple of tensors (gc.{op}([a, b], axis=0)), got "
                        f"{type(xs).__name__}")
    return [as_tensor(x) for x in xs]


def concatenate(xs, axis: int = 0) -> Tensor:
    """Join the tensors ``xs`` (a list or tuple) along an existing ``axis``, as ``np.concatenate``."""
    xs = _tensor_list("concatenate", xs)
    if not xs:
        raise ShapeError("concatenate: needs at least one tensor")
    axis = normalize_axis("concatenate", axis, max(xs[0].ndim, 1))
    return apply(Concatenate(axis), *xs)


@op_dataclass
class Stack(Op):
    name = "stack"
    axis: int = 0

    def infer(self, *xs):
        if not xs:
            raise ShapeError("stack: needs at least one tensor")
        shape = unify_shapes(self.name, [x.shape for x in xs])
        return shape[:self.axis] + (len(xs),) + shape[self.axis:], np.result_type(*(x.dtype for x in xs))

    def impl(self, *xs):
        return np.stack(xs, axis=self.axis)

    def vjp(self, node, g):
        return [getitem(g, (slice(None),) * self.axis + (i,)) for i in range(len(node.inputs))]


def stack(xs, axis: int = 0) -> Tensor:
    """Join the tensors ``xs`` (a list or tuple, all of one shape) along a new ``axis``, as ``np.stack``."""
    xs = _tensor_list("stack", xs)
    if not xs:
        raise ShapeError("stack: needs at least one tensor")
    axis = normalize_axis("stack", axis, xs[0].ndim + 1)
    return apply(Stack(axis), *xs)


# ---- gathering ------------------------------------------------------------------------------

def _check_indices(op: str, indices: Tensor) -> None:
    if indices.dtype.kind not in "iu":
        raise DTypeError(f"{op}: indices must be integers, got dtype {indices.dtype}")


@op_dataclass
class Take(Op):
    """``np.take(x, indices, axis)``."""

    name = "take"
    axis: int | None = None
    nondiff_inputs = (1,)

    def infer(self, x, indices):
        _check_indices(self.name, indices)
        if self.axis is None:
            return indices.shape, x.dtype
        return x.shape[:self.axis] + indices.shape + x.shape[self.axis + 1:], x.dtype

    def impl(self, x, indices):
        return np.take(x, indices, axis=self.axis)

    def vjp(self, node, g):
        x, indices = node.inputs
        return apply(TakeGrad(self.axis, x.shape), g, indices, *_target_inputs(x)), None


@op_dataclass
class TakeGrad(Op):
    """Scatter-add ``g`` into zeros of ``shape`` at ``indices`` (the gradient of take)."""

    name = "take_grad"
    axis: int | None = None
    shape: tuple = ()
    nondiff_inputs = (1, 2)

    def infer(self, g, indices, *ref):
        return self.shape, g.dtype

    def impl(self, g, indices, *ref):
        shape = _target_shape(self, ref)
        result = np.zeros(shape, g.dtype)
        if self.axis is None:
            np.add.at(result.reshape(-1), indices, g)
        elif self.axis == 0:
            np.add.at(result, indices, g)
        else:
            np.add.at(result, (slice(None),) * self.axis + (indices,), g)
        return result

    def vjp(self, node, g):
        return (take(g, node.inputs[1], self.axis),) + (None,) * (len(node.inputs) - 1)


def take(x, indices, axis=None) -> Tensor:
    """Gather entries of ``x`` at integer ``indices`` along ``axis`` (flattened when None)."""
    x = as_tensor(x)
    indices = as_tensor(indices)
    if axis is not None:
        axis = normalize_axis("take", axis, x.ndim)
    return apply(Take(axis), x, indices)


@op_dataclass
class OneHot(Op):
    name = "one_hot"
    depth: int = 1
    dtype: np.dtype = np.dtype("float64")
    zero_gradient = True

    def infer(self, indices):
        _check_indices(self.name, indices)
        return indices.shape + (self.depth,), self.dtype

    def impl(self, indices):
        return (np.expand_dims(indices, -1) == np.arange(self.depth)).astype(self.dtype)

    def key_bytes(self, node):
        return f"one_hot{self.depth}{self.dtype.str}".encode()


def one_hot(indices, depth: int, dtype="float64") -> Tensor:
    """Rows of the identity: ``result[..., k] = (indices == k)``; out-of-range indices give zeros."""
    if not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ShapeError(f"one_hot: depth must be a non-negative int, got {depth!r}")
    return apply(OneHot(int(depth), as_dtype(dtype)), indices)


# ---- indexing ---------------------------------------------------------------------------------
# An index is normalized to a tuple of entries: ("slice", start, stop, step), ("int", i),
# ("newaxis",), ("array",). Array entries take their values from the op's extra inputs, in order.

def _normalize_index(key) -> tuple[tuple, list[Tensor]]:
    if not isinstance(key, tuple):
        key = (key,)
    entries: list[tuple] = []
    arrays: list[Tensor] = []
    saw_ellipsis = False
    for item in key:
        if item is None:
            entries.append(("newaxis",))
        elif item is Ellipsis:
            if saw_ellipsis:
                raise ShapeError("getitem: an index can only have a single ellipsis ('...')")
            saw_ellipsis = True
            entries.append(("ellipsis",))
        elif isinstance(item, slice):
            for bound in (item.start, item.stop, item.step):
                if bound is not None and not isinstance(bound, (int, np.integer)):
                    raise TypeError(f"getitem: slice bounds must be ints or None, got {item!r}")
            if item.step == 0:
                raise ShapeError("getitem: slice step cannot be zero")
            entries.append(("slice", *(None if b is None else int(b) for b in (item.start, item.stop, item.step))))
        elif isinstance(item, (bool, np.bool_)):
            raise TypeError("getitem: a bare bool index is not supported; use a bool array")
        elif isinstance(item, (int, np.integer)):
            entries.append(("int", int(item)))
        else:
            try:
                tensor = as_tensor(item)
            except (TypeError, ValueError):  # DTypeError for strings, NumPy's errors for ragged lists
                tensor = None
            if tensor is None or tensor.dtype.kind not in "iub":
                got = f"dtype {tensor.dtype}" if tensor is not None else repr(item)
                raise DTypeError(f"getitem: indices must be ints, slices, None, ..., or integer or bool "
                                 f"arrays, got {got}")
            if tensor.dtype.kind == "b" and tensor.ndim == 0:
                raise TypeError("getitem: a 0-d bool index is not supported")
            entries.append(("array",))
            arrays.append(tensor)
    return tuple(entries), arrays


def _slice_length(size: int | None, start, stop, step) -> int | None:
    if size is None:
        return None
    return len(range(*slice(start, stop, step).indices(size)))


def _index_result_shape(shape: tuple, entries: tuple, arrays) -> tuple:
    consumed = sum(1 for entry in entries if entry[0] in ("slice", "int"))
    consumed += sum(a.ndim if a.dtype.kind == "b" else 1 for a in arrays)
    if consumed > len(shape):
        raise ShapeError(f"getitem: too many indices for a tensor of shape {format_shape(shape)}")
    # expand the ellipsis (or an implied one at the end) into full slices
    fill = [("slice", None, None, None)] * (len(shape) - consumed)
    if ("ellipsis",) in entries:
        # the ellipsis stays as a marker: even when it stands for no axis at all, NumPy treats it as
        # separating the advanced indices on its two sides (x[:, i, ..., 0] moves the block first)
        at = entries.index(("ellipsis",))
        entries = entries[:at] + tuple(fill) + (("ellipsis",),) + entries[at + 1:]
    else:
        entries = entries + tuple(fill)
    has_array = bool(arrays)
    result: list = []
    advanced_shapes: list[tuple] = []
    advanced_at: list[int] = []
    dim = 0
    array_iter = iter(arrays)
    for position, entry in enumerate(entries):
        kind = entry[0]
        if kind == "ellipsis":
            continue
        if kind == "newaxis":
            result.append(1)
        elif kind == "slice":
            result.append(_slice_length(shape[dim], *entry[1:]))
            dim += 1
        elif kind == "int":
            size = shape[dim]
            if size is not None and not -size <= entry[1] < size:
                raise ShapeError(f"getitem: index {entry[1]} is out of bounds for axis {dim} with size {size}")
            if has_array:
                advanced_shapes.append(())
                advanced_at.append(position)
                result.append("advanced")
            dim += 1
        else:
            array = next(array_iter)
            if array.dtype.kind == "b":
                mask_dims = shape[dim:dim + array.ndim]
                unify_shapes("getitem (bool mask)", [array.shape, mask_dims])
                # how many entries a mask selects is known only for a constant mask
                count = (int(np.count_nonzero(array.primitive.value)) if isinstance(array.primitive, Constant)
                         else None)
                advanced_shapes.append((count,))
                dim += array.ndim
            else:
                advanced_shapes.append(array.shape)
                dim += 1
            advanced_at.append(position)
            result.append("advanced")
    if not advanced_at:
        return tuple(result)
    block = broadcast_shapes("getitem", advanced_shapes)
    adjacent = advanced_at == list(range(advanced_at[0], advanced_at[-1] + 1))
    first = result.index("advanced")
    plain = [s for s in result if s != "advanced"]
    if adjacent:
        return tuple(plain[:first]) + block + tuple(plain[first:])
    return block + tuple(plain)


def _numpy_index(entries: tuple, arrays) -> tuple:
    key = []
    array_iter = iter(arrays)
    for entry in entries:
        kind = entry[0]
        if kind == "newaxis":
            key.append(None)
        elif kind == "ellipsis":
            key.append(Ellipsis)
        elif kind == "slice":
            key.append(slice(*entry[1:]))
        elif kind == "int":
            key.append(entry[1])
        else:
            key.append(next(array_iter))
    return tuple(key)


@op_dataclass
class Getitem(Op):
    """``x[index]``: basic slicing, ints, ``None``, ``...``, integer and bool arrays."""

    name = "getitem"
    index: tuple = ()
    view = True

    @property
    def nondiff_inputs(self):
        return tuple(range(1, 1 << 16))

    def infer(self, x, *arrays):
        return _index_result_shape(x.shape, self.index, arrays), x.dtype

    def impl(self, x, *arrays):
        return x[_numpy_index(self.index, arrays)]

    def vjp(self, node, g):
        x, *arrays = node.inputs
        scatter = GetitemGrad(self.index, x.shape, len(arrays))
        return (apply(scatter, g, *arrays, *_target_inputs(x)),) + (None,) * len(arrays)


@op_dataclass
class GetitemGrad(Op):
    """Scatter-add ``g`` into zeros of ``shape`` at ``index`` (the gradient of indexing)."""

    name = "getitem_grad"
    index: tuple = ()
    shape: tuple = ()
    num_arrays: int = 0

    @property
    def nondiff_inputs(self):
        return tuple(range(1, 1 << 16))

    def infer(self, g, *rest):
        return self.shape, g.dtype

    def impl(self, g, *rest):
        arrays, ref = rest[:self.num_arrays], rest[self.num_arrays:]
        result = np.zeros(_target_shape(self, ref), g.dtype)
        # The very index of the forward op (newaxis included): dropping newaxis entries would
        # make separated advanced indices adjacent, which moves their block (x[:, i, None, j]).
        key = _numpy_index(self.index, arrays)
        if not arrays:
            result[key] = g  # basic indexing selects every entry at most once
        else:
            np.add.at(result, key, g)  # repeated indices accumulate
        return result

    def vjp(self, node, g):
        _, *rest = node.inputs
        arrays = rest[:self.num_arrays]
        return (getitem_by_entries(g, self.index, arrays),) + (None,) * len(rest)


def getitem_by_entries(x: Tensor, entries: tuple, arrays) -> Tensor:
    return apply(Getitem(entries), x, *arrays)


def getitem(x, key) -> Tensor:
    """``x[key]`` with NumPy semantics."""
    x = as_tensor(x)
    entries, arrays = _normalize_index(key)
    return apply(Getitem(entries), x, *arrays)
