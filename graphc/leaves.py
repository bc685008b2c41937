"""Leaves of the graph: placeholders (fed), constants (fixed) and variables (state)."""

from __future__ import annotations

import hashlib

import numpy as np

from graphc.errors import DTypeError
from graphc.op import Op
from graphc.tensor import Tensor, Variable
from graphc.types import as_dtype, normalize_shape


class Leaf(Op):
    """An op with no inputs; its value comes from outside the graph."""

    def infer(self, *inputs):  # pragma: no cover - leaves are built directly
        raise TypeError("leaves are built by placeholder/constant/variable")


class Placeholder(Leaf):
    name = "placeholder"

    def key_bytes(self, node: Tensor) -> bytes:
        # Two placeholders are never the same value: key by creation order.
        return f"placeholder#{node.serial}".encode()

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


class Constant(Leaf):
    """Holds a read-only copy of its value."""

    name = "constant"

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def impl(self) -> np.ndarray:
        return self.value

    def key_bytes(self, node: Tensor) -> bytes:
        digest = hashlib.blake2b(self.value.tobytes(), digest_size=16).hexdigest()
        return f"constant{self.value.dtype}{self.value.shape}{digest}".encode()

    def params(self) -> dict:
        return {"value": self.value}

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__

    def __reduce__(self):
        return (Constant, (self.value,))


class VariableLeaf(Leaf):
    name = "variable"

    def key_bytes(self, node: Tensor) -> bytes:
        return f"variable#{node.serial}".encode()

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


def placeholder(name: str, shape=(), dtype="float64") -> Tensor:
    """A value fed at run time. ``shape`` entries are ints or None (unknown size)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"placeholder: name must be a non-empty str, got {name!r}")
    return Tensor(Placeholder(), (), normalize_shape(shape, "placeholder shape"), as_dtype(dtype), name=name)


def constant(value, dtype=None, name: str | None = None) -> Tensor:
    """A constant holding a copy of ``np.asarray(value)`` (cast to ``dtype`` if given)."""
    if isinstance(value, Tensor):
        raise TypeError("constant: value is already a Tensor")
    wanted = as_dtype(dtype) if dtype is not None else None  # (a DTypeError of its own for a bad dtype)
    try:
        array = np.array(value, dtype=wanted, copy=True)
    except OverflowError as exc:  # NumPy 2: constant(-5, "uint8")
        raise DTypeError(f"constant: {value!r:.60} does not fit dtype {wanted}; use a wider dtype or "
                         f"cast explicitly (np.array(value).astype(dtype) wraps around)") from exc
    except (TypeError, ValueError) as exc:
        raise TypeError(f"constant: cannot make an array{' of ' + str(dtype) if dtype is not None else ''} from "
                        f"{value!r:.60} (give a number, a nested list of numbers or a NumPy array): {exc}") from exc
    as_dtype(array.dtype) if array.dtype.kind in "biuf" else _refuse(array)
    array.flags.writeable = False
    return Tensor(Constant(array), (), array.shape, array.dtype, name=name)


def _refuse(array: np.ndarray):
    raise DTypeError(f"constant: values of dtype {array.dtype} are not supported "
                     f"(bool, integer and float arrays are)")


def variable(value, name: str | None = None, dtype=None) -> Variable:
    """State that persists between runs, changed by ``set_value`` or ``updates``."""
    array = np.asarray(value, dtype=as_dtype(dtype) if dtype is not None else None)
    if array.dtype.kind not in "biuf":
        _refuse(array)
    return Variable(VariableLeaf(), array, name)
