"""Rearranging shape ops with NumPy's semantics: tile, repeat, flip, roll, split, tril, triu,
diagonal, trace; and the scatters that are their gradients (``tile_grad``, ``repeat_grad``,
``split_grad``, ``diagonal_grad``).

A gradient op whose target shape has unknown sizes takes the forward input as a shape reference
(an extra, non-differentiable input), like ``take_grad``.
"""

from __future__ import annotations

import numpy as np

from graphc.errors import ShapeError
from graphc.op import Op, apply, as_tensor, op_dataclass
from graphc.ops.shape import _slice_length, _target_inputs, _target_shape, expand_dims, reshape, unify_shapes
from graphc.tensor import Tensor
from graphc.types import broadcast_to_shape, check_axes, format_shape, normalize_axes, normalize_axis


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _ints(op: str, what: str, value) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple (TypeError naming the op otherwise)."""
    items = (value,) if _is_int(value) else value
    if isinstance(items, Tensor) or not isinstance(items, (tuple, list, np.ndarray)) \
            or not all(_is_int(v) for v in items):
        raise TypeError(f"{op}: {what} must be an int or a sequence of ints, got {value!r}")
    return tuple(int(v) for v in items)


def _check_axis(op: str, axis, ndim: int) -> None:
    """Raise ShapeError unless ``axis`` is an op parameter already normalized for rank ``ndim``."""
    if not _is_int(axis) or not 0 <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis!r} is not an axis of a tensor of rank {ndim}")


def _at_axis(axis: int, item) -> tuple:
    return (slice(None),) * axis + (item,)


# ---- tile and repeat ---------------------------------------------------------------------------

@op_dataclass
class Tile(Op):
    """``np.tile(x, reps)`` with one repetition count per axis (the wrapper aligns the ranks)."""

    name = "tile"
    reps: tuple = ()

    def tiled(self, shape: tuple) -> tuple:
        if len(self.reps) != len(shape) or not all(_is_int(r) and r >= 0 for r in self.reps):
            raise ShapeError(f"{self.name}: reps {self.reps!r} do not fit shape {format_shape(shape)}")
        return tuple(0 if r == 0 else None if s is None else s * r for s, r in zip(shape, self.reps))

    def infer(self, x):
        return self.tiled(x.shape), x.dtype

    def impl(self, x):
        return np.tile(x, self.reps)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (apply(TileGrad(self.reps, x.shape), g, *_target_inputs(x)),)


@op_dataclass
class TileGrad(Op):
    """Sum the tiles of ``g`` into one of ``shape`` (input 1, if any, gives the run-time shape)."""

    name = "tile_grad"
    reps: tuple = ()
    shape: tuple = ()
    nondiff_inputs = (1,)

    def infer(self, g, *ref):
        unify_shapes(self.name, [g.shape, Tile(self.reps).tiled(self.shape)])
        return self.shape, g.dtype

    def impl(self, g, *ref):
        shape = _target_shape(self, ref)
        split = [size for pair in zip(self.reps, shape) for size in pair]  # (r0, d0, r1, d1, ...)
        return np.sum(np.reshape(g, split), axis=tuple(range(0, len(split), 2)))

    def vjp(self, node, g):
        return (Tile(self.reps)(g),) + (None,) * (len(node.inputs) - 1)


def tile(x, reps) -> Tensor:
    """``np.tile``: ``x`` repeated ``reps[i]`` times along axis i; a shorter ``reps`` is padded with
    1s in front, a longer one gives ``x`` new leading axes. Gradient: the tiles summed."""
    reps = _ints("tile", "reps", reps)
    if min(reps, default=0) < 0:
        raise ShapeError(f"tile: reps must be non-negative, got {reps}")
    x = as_tensor(x)
    if len(reps) > x.ndim:
        x = expand_dims(x, tuple(range(len(reps) - x.ndim)))
    return apply(Tile((1,) * (x.ndim - len(reps)) + reps), x)


def _check_repeats(op: str, repeats) -> None:
    """An op parameter: a non-negative int, or a tuple of them (one count per entry)."""
    counts = repeats if isinstance(repeats, tuple) else (repeats,)
    if not all(_is_int(r) and r >= 0 for r in counts):
        raise ShapeError(f"{op}: repeats must be a non-negative int or a tuple of them, got {repeats!r}")


@op_dataclass
class Repeat(Op):
    """``np.repeat(x, repeats, axis)``: each entry ``repeats`` times in a row, or with a tuple, entry
    ``i`` ``repeats[i]`` times."""

    name = "repeat"
    repeats: int | tuple = 1
    axis: int = 0

    def repeated(self, shape: tuple) -> tuple:
        _check_axis(self.name, self.axis, len(shape))
        _check_repeats(self.name, self.repeats)
        size = shape[self.axis]
        if isinstance(self.repeats, tuple):
            if size is not None and size != len(self.repeats):
                raise ShapeError(f"{self.name}: {len(self.repeats)} counts for {size} entries along axis "
                                 f"{self.axis} of shape {format_shape(shape)}")
            size = sum(self.repeats)
        else:
            size = 0 if self.repeats == 0 else None if size is None else size * self.repeats
        return shape[:self.axis] + (size,) + shape[self.axis + 1:]

    def infer(self, x):
        return self.repeated(x.shape), x.dtype

    def impl(self, x):
        if isinstance(self.repeats, tuple) and x.shape[self.axis] != len(self.repeats):
            raise ValueError(f"{self.name}: {len(self.repeats)} counts for {x.shape[self.axis]} entries along "
                             f"axis {self.axis}")
        return np.repeat(x, self.repeats, self.axis)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (apply(RepeatGrad(self.repeats, self.axis, x.shape), g, *_target_inputs(x)),)


@op_dataclass
class RepeatGrad(Op):
    """Sum each run of ``repeats`` entries of ``g`` along ``axis`` (the gradient of repeat); an entry
    repeated 0 times gets 0."""

    name = "repeat_grad"
    repeats: int | tuple = 1
    axis: int = 0
    shape: tuple = ()
    nondiff_inputs = (1,)

    def infer(self, g, *ref):
        unify_shapes(self.name, [g.shape, Repeat(self.repeats, self.axis).repeated(self.shape)])
        return self.shape, g.dtype

    def impl(self, g, *ref):
        shape = _target_shape(self, ref)
        if not isinstance(self.repeats, tuple):
            runs = shape[:self.axis] + (shape[self.axis], self.repeats) + shape[self.axis + 1:]
            return np.sum(np.reshape(g, runs), axis=self.axis + 1)
        counts = np.asarray(self.repeats, dtype=np.int64)
        out = np.zeros(shape, g.dtype)
        kept = np.flatnonzero(counts)
        if kept.size:
            starts = (np.cumsum(counts) - counts)[kept]  # the first copy of each entry repeated at least once
            out[(slice(None),) * self.axis + (kept,)] = np.add.reduceat(g, starts, axis=self.axis)
        return out

    def vjp(self, node, g):
        return (Repeat(self.repeats, self.axis)(g),) + (None,) * (len(node.inputs) - 1)


def repeat(x, repeats, axis: int | None = None) -> Tensor:
    """``np.repeat``: each entry repeated ``repeats`` times along ``axis`` (of the flattened input
    when None). ``repeats`` is an int or, as in NumPy, one count per entry along the axis (a
    sequence of ints; a single count broadcasts). Gradient: each run summed (0 for an entry
    repeated 0 times)."""
    if _is_int(repeats):
        counts = int(repeats)
    elif isinstance(repeats, (tuple, list, np.ndarray)) and np.ndim(repeats) == 1 \
            and all(_is_int(r) for r in repeats):
        counts = tuple(int(r) for r in repeats)
        if len(counts) == 1:
            counts = counts[0]
    else:
        raise TypeError(f"repeat: repeats must be an int or a sequence of ints, got {repeats!r}")
    if min(counts if isinstance(counts, tuple) else (counts,), default=0) < 0:
        raise ShapeError(f"repeat: repeats must be non-negative, got {repeats}")
    x = as_tensor(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    axis = normalize_axis("repeat", axis, x.ndim)
    if isinstance(counts, tuple) and x.shape[axis] is not None and x.shape[axis] != len(counts):
        raise ShapeError(f"repeat: {len(counts)} counts for {x.shape[axis]} entries along axis {axis} of "
                         f"shape {format_shape(x.shape)}")
    return apply(Repeat(counts, axis), x)


# ---- flip and roll -----------------------------------------------------------------------------

@op_dataclass
class Flip(Op):
    """``np.flip(x, axes)``: the order of the entries reversed along ``axes``."""

    name = "flip"
    axes: tuple = ()
    view = True

    def infer(self, x):
        check_axes(self.name, self.axes, x.ndim)
        return x.shape, x.dtype

    def impl(self, x):
        return np.flip(x, self.axes)

    def vjp(self, node, g):
        return (Flip(self.axes)(g),)


def flip(x, axis=None) -> Tensor:
    """``np.flip``: reverse along ``axis`` (an int, a tuple, or every axis when None)."""
    x = as_tensor(x)
    return apply(Flip(normalize_axes("flip", axis, x.ndim)), x)


@op_dataclass
class Roll(Op):
    """``np.roll(x, shifts, axes)``; ``axes=None`` rolls the flattened entries (one shift)."""

    name = "roll"
    shifts: tuple = ()
    axes: tuple | None = None

    def infer(self, x):
        if self.axes is None:
            if len(self.shifts) != 1:
                raise ShapeError(f"{self.name}: without an axis the shift must be one int, got {self.shifts}")
        elif len(self.shifts) != len(self.axes):
            raise ShapeError(f"{self.name}: {len(self.shifts)} shifts for {len(self.axes)} axes")
        else:
            for axis in self.axes:
                _check_axis(self.name, axis, x.ndim)
        if not all(_is_int(s) for s in self.shifts):
            raise ShapeError(f"{self.name}: shifts must be ints, got {self.shifts!r}")
        return x.shape, x.dtype

    def impl(self, x):
        return np.roll(x, self.shifts[0] if self.axes is None else self.shifts, self.axes)

    def vjp(self, node, g):
        return (Roll(tuple(-s for s in self.shifts), self.axes)(g),)


def roll(x, shift, axis=None) -> Tensor:
    """``np.roll``: entries shifted cyclically by ``shift`` along ``axis`` (ints or matching tuples;
    an int broadcasts over several axes; the flattened entries when ``axis`` is None, by the sum of
    the shifts if ``shift`` is a tuple, as NumPy; an axis given twice rolls twice). Gradient: rolled
    back."""
    x = as_tensor(x)
    shifts = _ints("roll", "shift", shift)
    if axis is None:
        # np.roll rolls the flattened entries by each shift in turn: by their sum
        return apply(Roll((sum(shifts),), None), x)
    axes = tuple(normalize_axis("roll", a, x.ndim) for a in _ints("roll", "axis", axis))
    if len(shifts) == 1 and len(axes) > 1:
        shifts *= len(axes)
    elif len(axes) == 1 and len(shifts) > 1:
        axes *= len(shifts)
    if len(shifts) != len(axes):
        raise ShapeError(f"roll: {len(shifts)} shifts {shifts} do not match {len(axes)} axes {axes}")
    return apply(Roll(shifts, axes), x)


# ---- split -------------------------------------------------------------------------------------

@op_dataclass
class Split(Op):
    """Piece ``index`` of ``np.split(x, sections or list(indices), axis)`` (one op per piece)."""

    name = "split"
    axis: int = 0
    sections: int = 0  # equal pieces; 0 when the pieces are cut at ``indices``
    indices: tuple = ()
    index: int = 0
    view = True

    def check(self, shape: tuple) -> None:
        _check_axis(self.name, self.axis, len(shape))
        pieces = self.sections or len(self.indices) + 1
        if not (_is_int(self.sections) and self.sections >= 0 and (self.sections == 0 or not self.indices)
                and all(_is_int(i) for i in self.indices) and _is_int(self.index) and 0 <= self.index < pieces):
            raise ShapeError(f"{self.name}: invalid piece {self.index!r} of sections={self.sections!r}, "
                             f"indices={self.indices!r}")
        size = shape[self.axis]
        if self.sections and size is not None and size % self.sections:
            raise ShapeError(f"{self.name}: axis {self.axis} of shape {format_shape(shape)} does not divide "
                             f"into {self.sections} equal sections")

    def bounds(self, size: int) -> tuple:
        if self.sections:
            step = size // self.sections
            return step * self.index, step * (self.index + 1)
        edges = (None,) + self.indices + (None,)
        return edges[self.index], edges[self.index + 1]

    def piece(self, shape: tuple) -> tuple:
        self.check(shape)
        size = shape[self.axis]
        if self.sections:
            length = None if size is None else size // self.sections
        else:
            length = _slice_length(size, *self.bounds(0), None)
        return shape[:self.axis] + (length,) + shape[self.axis + 1:]

    def infer(self, x):
        return self.piece(x.shape), x.dtype

    def impl(self, x):
        self.check(np.shape(x))  # a size unknown when the graph was built may not divide
        return x[_at_axis(self.axis, slice(*self.bounds(np.shape(x)[self.axis])))]

    def vjp(self, node, g):
        (x,) = node.inputs
        scatter = SplitGrad(self.axis, self.sections, self.indices, self.index, x.shape)
        return (apply(scatter, g, *_target_inputs(x)),)


@op_dataclass
class SplitGrad(Split):
    """``g`` written into zeros of ``shape`` where piece ``index`` was cut (the gradient of split)."""

    name = "split_grad"
    shape: tuple = ()
    view = False
    nondiff_inputs = (1,)

    def infer(self, g, *ref):
        unify_shapes(self.name, [g.shape, self.piece(self.shape)])
        return self.shape, g.dtype

    def impl(self, g, *ref):
        shape = _target_shape(self, ref)
        result = np.zeros(shape, g.dtype)
        result[_at_axis(self.axis, slice(*self.bounds(shape[self.axis])))] = g
        return result

    def vjp(self, node, g):
        piece = Split(self.axis, self.sections, self.indices, self.index)
        return (piece(g),) + (None,) * (len(node.inputs) - 1)


def split(x, sections, axis: int = 0) -> list[Tensor]:
    """``np.split``: a list of tensors, ``sections`` equal pieces (an int that must divide the size)
    or the pieces between the cut ``indices`` (a list of ints, clipped like slice bounds)."""
    x = as_tensor(x)
    axis = normalize_axis("split", axis, x.ndim)
    if _is_int(sections):
        if sections <= 0:
            raise ShapeError(f"split: the number of sections must be positive, got {sections}")
        return [apply(Split(axis, int(sections), (), k), x) for k in range(int(sections))]
    indices = _ints("split", "sections", sections)
    return [apply(Split(axis, 0, indices, k), x) for k in range(len(indices) + 1)]


# ---- triangles and diagonals -------------------------------------------------------------------

@op_dataclass
class Tril(Op):
    """``np.tril(x, k)``: zeros above the k-th diagonal of the last two axes. Gradient: the same mask."""

    name = "tril"
    k: int = 0

    def infer(self, x):
        if x.ndim < 2:
            raise ShapeError(f"{self.name}: needs at least 2 dimensions, got shape {format_shape(x.shape)}")
        if not _is_int(self.k):
            raise ShapeError(f"{self.name}: k must be an int, got {self.k!r}")
        return x.shape, x.dtype

    def impl(self, x):
        return np.tril(x, self.k)

    def vjp(self, node, g):
        return (type(self)(self.k)(g),)


@op_dataclass
class Triu(Tril):
    """``np.triu(x, k)``: zeros below the k-th diagonal of the last two axes."""

    name = "triu"

    def impl(self, x):
        return np.triu(x, self.k)


def _triangle(op_class, x, k) -> Tensor:
    if not _is_int(k):
        raise TypeError(f"{op_class.name}: k must be an int, got {k!r}")
    return apply(op_class(int(k)), x)


def tril(x, k: int = 0) -> Tensor:
    """``np.tril``: the lower triangle (on and below diagonal ``k``) of the last two axes."""
    return _triangle(Tril, x, k)


def triu(x, k: int = 0) -> Tensor:
    """``np.triu``: the upper triangle (on and above diagonal ``k``) of the last two axes."""
    return _triangle(Triu, x, k)


@op_dataclass
class Diagonal(Op):
    """``np.diagonal(x, offset, axis1, axis2)``: axes ``axis1`` and ``axis2`` removed, the diagonal
    appended as the last axis."""

    name = "diagonal"
    offset: int = 0
    axis1: int = 0
    axis2: int = 1
    view = True

    def length(self, shape: tuple):
        rows, cols = shape[self.axis1], shape[self.axis2]
        rows = None if rows is None else rows + min(self.offset, 0)
        cols = None if cols is None else cols - max(self.offset, 0)
        known = [n for n in (rows, cols) if n is not None]
        if len(known) == 2 or (known and known[0] <= 0):
            return max(0, min(known))
        return None

    def diagonal_shape(self, shape: tuple) -> tuple:
        ndim = len(shape)
        _check_axis(self.name, self.axis1, ndim)
        _check_axis(self.name, self.axis2, ndim)
        if self.axis1 == self.axis2:
            raise ShapeError(f"{self.name}: axis1 and axis2 must differ, got {self.axis1} and {self.axis2}")
        if not _is_int(self.offset):
            raise ShapeError(f"{self.name}: offset must be an int, got {self.offset!r}")
        rest = tuple(s for i, s in enumerate(shape) if i not in (self.axis1, self.axis2))
        return rest + (self.length(shape),)

    def infer(self, x):
        return self.diagonal_shape(x.shape), x.dtype

    def impl(self, x):
        return np.diagonal(x, self.offset, self.axis1, self.axis2)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (diagonal_grad(self, g, x),)


def diagonal_grad(op: Diagonal, g: Tensor, x: Tensor) -> Tensor:
    scatter = DiagonalGrad(op.offset, op.axis1, op.axis2, x.shape)
    return apply(scatter, g, *_target_inputs(x))


@op_dataclass
class DiagonalGrad(Diagonal):
    """``g`` written onto the diagonal of zeros of ``shape`` (broadcast along it: the gradient of
    trace passes one value per matrix)."""

    name = "diagonal_grad"
    shape: tuple = ()
    view = False
    nondiff_inputs = (1,)

    def infer(self, g, *ref):
        broadcast_to_shape(self.name, g.shape, self.diagonal_shape(self.shape))
        return self.shape, g.dtype

    def impl(self, g, *ref):
        shape = _target_shape(self, ref)
        result = np.zeros(shape, g.dtype)
        moved = np.moveaxis(result, (self.axis1, self.axis2), (-2, -1))  # a view: writes land in result
        steps = np.arange(self.length(shape))
        moved[..., steps + max(-self.offset, 0), steps + max(self.offset, 0)] = g
        return result

    def vjp(self, node, g):
        return (Diagonal(self.offset, self.axis1, self.axis2)(g),) + (None,) * (len(node.inputs) - 1)


@op_dataclass
class Trace(Diagonal):
    """``np.trace(x, offset, axis1, axis2)``: the sum of the diagonal."""

    name = "trace"
    view = False

    def infer(self, x):
        return self.diagonal_shape(x.shape)[:-1], np.sum(np.zeros((0,), x.dtype)).dtype

    def impl(self, x):
        return np.trace(x, self.offset, self.axis1, self.axis2)

    def vjp(self, node, g):
        (x,) = node.inputs
        return (diagonal_grad(self, expand_dims(g, -1), x),)


def _diagonal(op_class, x, offset, axis1, axis2) -> Tensor:
    x = as_tensor(x)
    if not _is_int(offset):
        raise TypeError(f"{op_class.name}: offset must be an int, got {offset!r}")
    if x.ndim < 2:
        raise ShapeError(f"{op_class.name}: needs at least 2 dimensions, got shape {format_shape(x.shape)}")
    first, second = (normalize_axis(op_class.name, a, x.ndim) for a in (axis1, axis2))
    if first == second:
        raise ShapeError(f"{op_class.name}: axis1 and axis2 cannot be the same axis ({axis1}, {axis2})")
    return apply(op_class(int(offset), first, second), x)


def diagonal(x, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tensor:
    """``np.diagonal``: the ``offset`` diagonal of the matrices spanned by ``axis1`` and ``axis2``,
    as the last axis. Gradient: written into zeros."""
    return _diagonal(Diagonal, x, offset, axis1, axis2)


def trace(x, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tensor:
    """``np.trace``: the sum along the ``offset`` diagonal (integers summed like ``np.sum``)."""
    return _diagonal(Trace, x, offset, axis1, axis2)
