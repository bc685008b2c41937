"""The helpers a plan's generated ``run`` calls (it receives them as default arguments)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.errors import ExecutionError
from graphc.tensor import Tensor
from graphc.types import format_shape

#: arrays at least this large try a spare buffer (see ``Plan.run``) before allocating
SPARE_MIN_BYTES = 1 << 20


def as_array(value) -> np.ndarray:
    return value if type(value) is np.ndarray else np.asarray(value)


def copy(value) -> np.ndarray:
    return np.array(value, copy=True)


def fresh(result, *inputs):
    """``result`` if the plan may later write into it (``out=``), else a copy of it.

    Applied to steps whose code is not known to allocate (an op's ``impl``): an impl
    may hand back one of its inputs or a view of one (a fused op of a tampered file,
    ``stop_gradient``-like identities), and writing into that would overwrite a feed,
    a variable or a constant.
    """
    if (type(result) is np.ndarray and result.flags.writeable
            and not any(type(a) is np.ndarray and np.may_share_memory(result, a) for a in inputs)):
        return result
    return np.array(result, copy=True)


def grab(spare: dict | None, key: tuple) -> np.ndarray | None:
    """A spare buffer of this (shape, dtype) if the caller gave one, else None (allocate)."""
    if spare:
        free = spare.get(key)
        if free:
            return free.pop()
    return None


def write(shape: tuple, dtype: np.dtype, variable: str, target, value) -> np.ndarray:
    """Write ``value`` into ``target`` (a variable's storage), or into a fresh array if None."""
    value = as_array(value)
    if value.shape != shape:
        raise ValueError(f"the new value of variable {variable!r} has shape {format_shape(value.shape)}, "
                         f"the variable {format_shape(shape)}")
    if target is None:
        return np.array(value, dtype=dtype, order="C", copy=True)
    np.copyto(target, value, casting="unsafe")  # the dtype was checked (same_kind) when the function was built
    return target


def describe_failure(node: Tensor, arrays: Sequence, exc: Exception) -> ExecutionError:
    """The ExecutionError for ``exc`` raised by step ``node`` on ``arrays``: the op, the node's name
    and user source line, the input shapes."""
    shapes = ", ".join(format_shape(np.shape(a)) + f" {np.asarray(a).dtype}" if a is not None else "?"
                       for a in arrays)
    site = f" created at {node.site[0]}:{node.site[1]}" if node.site else ""
    label = f" {node.name!r}" if node.name else ""
    return ExecutionError(f"op {node.op!r} (node{label}{site}) failed on inputs of shapes [{shapes}]: "
                          f"{type(exc).__name__}: {exc}")
