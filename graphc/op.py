"""The Op base class, the op registry, and ``apply`` (building a node).

An op is one small frozen dataclass holding its parameters. It says in one
place how to infer the output's static shape and dtype (``infer``), how to
compute it with NumPy (``impl``, which never writes to its inputs), and how to
differentiate it (``vjp``, which returns graph tensors: symbol to symbol).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError, GradientError
from graphc.tensor import Tensor
from graphc.types import format_shape

#: Every op class by name; the safe loader accepts only these.
REGISTRY: dict[str, type[Op]] = {}


class Op:
    """Base class of every op. Subclasses are ``@dataclass(frozen=True)``."""

    #: public name, shown as ``Tensor.op``
    name: ClassVar[str] = ""
    #: ``impl`` works element by element with NumPy broadcasting (fusable)
    elementwise: ClassVar[bool] = False
    #: the two inputs may be swapped (CSE orders them canonically)
    commutative: ClassVar[bool] = False
    #: ``impl`` may return a view of an input (or the input itself)
    view: ClassVar[bool] = False
    #: piecewise constant: the gradient through this op is zero everywhere
    zero_gradient: ClassVar[bool] = False
    #: positions of inputs that carry no gradient (indices, shape references)
    nondiff_inputs: ClassVar[tuple[int, ...]] = ()
    #: Python scalars given to this op are weak (take the other inputs' dtype)
    weak_scalars: ClassVar[bool] = False
    #: the node stands for several values (a loop's outputs); consumers read them through ``Output``
    #: projections. ``infer`` returns ``MULTI_TYPE``, ``output_types`` the real types, ``impl`` a tuple,
    #: and ``vjp(node, gs)`` takes one cotangent (or None) per output. See docs/architecture.md.
    multi_output: ClassVar[bool] = False
    #: the node is a projection ``Output`` of a multi-output node (``Tensor.op`` reports the producer's name)
    projection: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            REGISTRY[cls.name] = cls

    # -- the op's contract --------------------------------------------------------------
    def infer(self, *inputs: Tensor) -> tuple[tuple, np.dtype]:
        """Static (shape, dtype) of the output; raise ShapeError/DTypeError if invalid."""
        raise NotImplementedError

    def impl(self, *arrays: np.ndarray) -> np.ndarray:
        """The value, computed with NumPy. Must not write into ``arrays``."""
        raise NotImplementedError

    def vjp(self, node: Tensor, g: Tensor) -> Sequence[Tensor | None]:
        """One cotangent tensor (or None for zero) per input of ``node``, given ``g``.

        Written as if shapes matched: the grad driver sums each cotangent back to
        its input's shape (undoing broadcasting).
        """
        raise GradientError(f"op {self.name!r} has no gradient rule ({node.describe()})")

    def compiled_impl(self, compile_graph: Callable) -> Callable:
        """The function the executor calls for a node of this op: ``impl``.

        An op that runs inner graphs (a loop's body) overrides it: the compiler passes
        ``compile_graph(inner_graph)``, which returns a compiled callable ``run(arrays) -> tuple``,
        so the ops layer never imports the compiler.
        """
        return self.impl

    def inner_graphs(self) -> tuple:
        """The inner graphs (:class:`graphc.graph.InnerGraph`) this op runs; none for plain ops."""
        return ()

    # -- parameters -----------------------------------------------------------------------
    def params(self) -> dict:
        """The op's parameters by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} \
            if dataclasses.is_dataclass(self) else {}

    def key_bytes(self, node: Tensor) -> bytes:
        """Bytes identifying this op and its parameters (input keys are added by the caller)."""
        return f"{self.name}{sorted(self.params().items())!r}".encode()

    def __call__(self, *inputs, name: str | None = None) -> Tensor:
        return apply(self, *inputs, name=name)


#: the static type of a multi-output node itself (its values are read through ``Output`` projections)
MULTI_TYPE: tuple[tuple, np.dtype] = ((), np.dtype("V1"))


@dataclasses.dataclass(frozen=True)
class Output(Op):
    """Output ``index`` of a multi-output node: the one way consumers read such a node's values.

    A cheap projection (it picks one entry of the tuple the node computes). Its ``Tensor.op``
    is the producer's name (``gc.scan(...)`` results say ``"scan"``). The gradient driver routes
    a projection's cotangent to its producer's ``vjp`` (one cotangent per output), so passes,
    the compiler and the exporters need no special case for several outputs.
    """

    name = "output"
    projection = True
    #: a projection may share memory with its producer's other outputs: never written in place
    view = True
    index: int = 0

    def infer(self, node):
        if not node.primitive.multi_output:
            raise TypeError(f"output: {node.describe()} is not a multi-output node")
        types = node.primitive.output_types(*node.inputs)
        if not 0 <= self.index < len(types):
            raise ValueError(f"output: index {self.index} is out of range for {node.op!r} "
                             f"with {len(types)} outputs")
        return types[self.index]

    def impl(self, values):
        return values[self.index]

    def vjp(self, node, g):  # pragma: no cover - the gradient driver routes projections itself
        raise GradientError("output projections are differentiated by the gradient driver")


def outputs_of(node: Tensor, count: int | None = None) -> list[Tensor]:
    """One ``Output`` projection per output of the multi-output ``node``."""
    total = len(node.primitive.output_types(*node.inputs)) if count is None else count
    return [apply(Output(k), node) for k in range(total)]


def _is_python_scalar(value) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def as_tensor(value, dtype=None) -> Tensor:
    """A Tensor for ``value``: tensors pass through, anything else becomes a constant."""
    if isinstance(value, Tensor):
        return value
    from graphc.leaves import constant

    return constant(value, dtype=dtype)


def weak_constant(value, strong_dtypes: Sequence[np.dtype]) -> Tensor:
    """A constant for a Python scalar, typed the way NumPy 2 treats weak scalars."""
    from graphc.leaves import constant

    if not strong_dtypes:
        return constant(value)
    try:
        dtype = np.result_type(*strong_dtypes, value)
        return constant(np.asarray(value, dtype=dtype))
    except (OverflowError, TypeError) as exc:
        raise DTypeError(f"the Python scalar {value!r} does not fit the dtype "
                         f"{np.result_type(*strong_dtypes)} of the tensor it combines with") from exc


def as_inputs(op: Op, inputs: Sequence) -> list[Tensor]:
    """Wrap non-tensor inputs as constants (weak for ops that take weak scalars)."""
    if all(isinstance(i, Tensor) for i in inputs):
        return list(inputs)
    if op.weak_scalars:
        strong = [i.dtype for i in inputs if isinstance(i, Tensor)]
        strong += [np.asarray(i).dtype for i in inputs if not isinstance(i, Tensor) and not _is_python_scalar(i)]
        return [i if isinstance(i, Tensor) else
                (weak_constant(i, strong) if _is_python_scalar(i) else as_tensor(i)) for i in inputs]
    return [as_tensor(i) for i in inputs]


def apply(op: Op, *inputs, name: str | None = None) -> Tensor:
    """Build the node ``op(*inputs)``: wrap constants, infer the type, record the site."""
    tensors = as_inputs(op, inputs)
    shape, dtype = op.infer(*tensors)
    return Tensor(op, tensors, shape, dtype, name=name)


def describe_inputs(inputs: Sequence[Tensor]) -> str:
    return ", ".join(f"{format_shape(t.shape)} {t.dtype}" for t in inputs)
