"""User-defined ops: a NumPy forward and a symbolic backward."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from graphc.errors import DTypeError, GradientError, ShapeError
from graphc.op import Op, apply, as_inputs
from graphc.tensor import Tensor, user_code
from graphc.types import as_dtype, format_shape, normalize_shape, shapes_match

_SERIALS = itertools.count()


def _read_only(array) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


class CustomOp(Op):
    """An op made by :func:`custom_op`; it pickles when its callables are importable."""

    def __init__(self, name: str, forward: Callable, grad: Callable | None, infer: Callable | None,
                 out_type: tuple | None = None, serial: int | None = None) -> None:
        self.name = name
        # which custom_op() call made it: ops from one factory share a name and a forward's
        # qualified name (closures, partials), yet compute different things
        self.serial = next(_SERIALS) if serial is None else serial
        self.forward = forward
        self.grad = grad
        self.infer_fn = infer
        self.out_type = out_type  # (shape, dtype) of one application, checked at run time

    def __call__(self, *inputs, name: str | None = None) -> Tensor:
        tensors = as_inputs(self, inputs)
        shape, dtype = self.infer(*tensors)
        bound = CustomOp(self.name, self.forward, self.grad, self.infer_fn, (shape, dtype), self.serial)
        return apply(bound, *tensors, name=name)

    def infer(self, *inputs: Tensor):
        if self.infer_fn is None:
            if not inputs:
                raise ShapeError(f"custom op {self.name!r}: give infer= for an op without inputs")
            return inputs[0].shape, inputs[0].dtype
        result = self.infer_fn(*inputs)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(f"custom op {self.name!r}: infer must return (shape, dtype), got {result!r}")
        shape, dtype = result
        return normalize_shape(shape, f"custom op {self.name!r} shape"), as_dtype(dtype)

    def impl(self, *arrays):
        # the forward sees read-only views: it must not write into a feed, or a buffer other steps read
        result = np.array(self.forward(*map(_read_only, arrays)), copy=True)  # it may return its input
        if self.out_type is None:
            return result
        shape, dtype = self.out_type
        if not shapes_match(shape, result.shape):
            raise ShapeError(f"custom op {self.name!r}: forward returned shape {format_shape(result.shape)}, "
                             f"expected {format_shape(shape)}")
        if result.dtype == dtype:
            return result
        if not np.can_cast(result.dtype, dtype, "same_kind"):
            raise DTypeError(f"custom op {self.name!r}: forward returned dtype {result.dtype}, which cannot be "
                             f"cast safely (same_kind) to the expected {dtype}")
        return result.astype(dtype)

    def vjp(self, node: Tensor, g: Tensor):
        if self.grad is None:
            raise GradientError(f"custom op {self.name!r} has no gradient ({node.describe()})")
        with user_code():  # (its nodes get the user's lines in the grad function)
            result = self.grad(list(node.inputs), node, g)
        if isinstance(result, (Tensor, type(None))) and len(node.inputs) == 1:
            result = (result,)
        result = tuple(result)
        if len(result) != len(node.inputs):
            raise GradientError(f"custom op {self.name!r}: grad returned {len(result)} values "
                                f"for {len(node.inputs)} inputs")
        return result

    def key_bytes(self, node: Tensor) -> bytes:
        # keyed by creation order, like placeholders: no id(), so keys are the same in every process
        return f"custom:{self.name}#{self.serial}".encode()

    def order_bytes(self, node: Tensor) -> bytes:
        return f"custom:{self.name}".encode()  # no creation counter (see Op.order_bytes)

    def __repr__(self) -> str:
        return f"custom_op({self.name!r})"


def custom_op(name: str, forward: Callable, grad: Callable | None, infer: Callable | None = None) -> CustomOp:
    """A new op callable on tensors.

    ``forward(*arrays)`` computes the value with NumPy. ``grad(inputs, output,
    output_grad)`` returns one gradient Tensor (or None) per input, built from
    graphc ops, so it can be differentiated again. ``infer(*inputs)`` returns
    ``(shape, dtype)`` and defaults to the first input's.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("custom_op: name must be a non-empty str")
    if not callable(forward):
        raise TypeError("custom_op: forward must be callable")
    return CustomOp(name, forward, grad, infer)
