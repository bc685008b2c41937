"""Static shapes and dtypes: broadcasting, axes and promotion rules.

A static shape is a tuple whose entries are ``int`` (known size) or ``None``
(a size known only at run time). The rank is always known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError

Shape = tuple  # tuple[int | None, ...]

SUPPORTED_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def as_dtype(dtype) -> np.dtype:
    """Return ``np.dtype(dtype)``, refusing dtypes graphc does not compute with."""
    try:
        result = np.dtype(dtype)
    except TypeError as exc:
        raise DTypeError(f"not a dtype: {dtype!r}") from exc
    if result.kind not in SUPPORTED_KINDS:
        raise DTypeError(f"dtype {result} is not supported (bool, integer and float dtypes are)")
    return result


def float_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a transcendental function returns for ``dtype`` (NumPy's rule)."""
    return dtype if dtype.kind == "f" else np.dtype("float64")


def format_shape(shape: Shape) -> str:
    inner = ", ".join("?" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def normalize_shape(shape, what: str = "shape") -> Shape:
    """Turn an int or an iterable of ints/None into a static shape tuple."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        entries = tuple(shape)
    except TypeError as exc:
        raise ShapeError(f"{what} must be a tuple of ints or None, got {shape!r}") from exc
    result = []
    for entry in entries:
        if entry is None:
            result.append(None)
        elif isinstance(entry, (int, np.integer)) and not isinstance(entry, bool) and entry >= 0:
            result.append(int(entry))
        else:
            raise ShapeError(f"{what} entries must be non-negative ints or None, got {shape!r}")
    return tuple(result)


def broadcast_shapes(op: str, shapes: Sequence[Shape]) -> Shape:
    """NumPy broadcasting of static shapes; ``None`` broadcasts optimistically.

    ``None`` against 1 gives ``None``; ``None`` against ``n > 1`` gives ``n`` (the
    run time checks the real size); two unknown sizes give ``None``.
    """
    rank = max((len(s) for s in shapes), default=0)
    result: list = []
    for position in range(rank):
        size: int | None = 1
        for shape in shapes:
            offset = position - (rank - len(shape))
            if offset < 0:
                continue
            entry = shape[offset]
            if entry == 1:
                continue
            if entry is None:
                if size == 1:
                    size = None
                continue
            if size == 1 or size is None:
                size = entry
            elif size != entry:
                listed = " and ".join(format_shape(s) for s in shapes)
                raise ShapeError(f"{op}: shapes {listed} cannot be broadcast together")
        result.append(size)
    return tuple(result)


def broadcast_to_shape(op: str, shape: Shape, target: Shape) -> Shape:
    """The static shape of ``shape`` broadcast one way to ``target`` (``np.broadcast_to``).

    Unlike :func:`broadcast_shapes`, ``target`` never grows: ``shape`` must not have more
    dimensions, and each of its known sizes other than 1 must match a known ``target`` size.
    An unknown ``target`` size takes ``shape``'s known size.
    """
    result = broadcast_shapes(op, [shape, target]) if len(shape) <= len(target) else None
    if result is None or any(t is not None and r is not None and r != t for r, t in zip(result, target)):
        raise ShapeError(f"{op}: cannot broadcast {format_shape(shape)} to {format_shape(target)}")
    return tuple(r if t is None else t for r, t in zip(result, target))


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise ShapeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of bounds for a tensor of rank {ndim}")
    return int(axis) % ndim


def normalize_axes(op: str, axis, ndim: int) -> tuple[int, ...]:
    """``None`` means every axis; an int or a tuple of ints is normalized and sorted."""
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, (tuple, list)):
        axis = (axis,)  # an int, or something normalize_axis reports as not an int
    axes = tuple(normalize_axis(op, a, ndim) for a in axis)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(axes))


def check_axes(op: str, axes, ndim: int) -> None:
    """Raise ShapeError unless ``axes`` (an op parameter) is already normalized: sorted, distinct, in range."""
    if not isinstance(axes, tuple) or normalize_axes(op, axes, ndim) != axes:
        raise ShapeError(f"{op}: axes {axes!r} are not sorted, distinct axes of a tensor of rank {ndim}")


def reduced_shape(shape: Shape, axes: Iterable[int], keepdims: bool) -> Shape:
    axes = set(axes)
    if keepdims:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def known_size(shape: Shape) -> int | None:
    """The number of elements, or None when some size is unknown."""
    total = 1
    for entry in shape:
        if entry is None:
            return None
        total *= entry
    return total


def shapes_match(static: Shape, actual: tuple) -> bool:
    """Whether a concrete shape fits a static one (``None`` matches any size)."""
    return len(static) == len(actual) and all(s is None or s == a for s, a in zip(static, actual))
