"""The Op base class, the op registry, and ``apply`` (building a node).

An op is one small frozen dataclass holding its parameters. It says in one
place how to infer the output's static shape and dtype (``infer``), how to
compute it with NumPy (``impl``, which never writes to its inputs), and how to
differentiate it (``vjp``, which returns graph tensors: symbol to symbol).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError, GradientError
from graphc.tensor import Tensor
from graphc.types import known_size

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
    #: its SymPy form: the name of the SymPy function applied to the inputs ("tanh"); see ``sympy_form``
    sympy: ClassVar[str | None] = None
    #: a domain guard for ``where`` branches: (position of the input whose domain is limited, a value
    #: safely inside it); the stabilizer feeds it that value where the branch is not selected
    domain: ClassVar[tuple[int, float] | None] = None
    #: on NumPy scalars, a Python expression of the inputs that is the very same IEEE operation
    #: (``"{0} + {1}"``); used where the inputs have the node's dtype (or share one, for a bool result)
    scalar_expr: ClassVar[str | None] = None

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

    def lowering(self):
        """A NumPy function computing the op as ``f(*arrays, out=buffer)`` (the compiler and the fuser
        then write through ``out=``), or None: the op is lowered as a call of ``impl``."""
        return None

    def sympy_form(self, sp, node: Tensor | None, *args):
        """The op's value as a SymPy expression of ``args`` (``sp`` is the sympy module), or None.

        The bridge derives its inverse map (SymPy function -> op) from these forms."""
        return getattr(sp, self.sympy)(*args) if self.sympy else None

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


def same_elements_form(op: Op, sp, node: Tensor, a, *references):
    """The SymPy form of an op that moves or sums elements: its input's where it keeps every element
    as it is (as many elements out as in: a reshape, a sum over size-1 axes), else a ValueError."""
    source, target = known_size(node.inputs[0].shape), known_size(node.shape)
    if source is not None and source == target:
        return a
    raise ValueError(f"{op.name} from shape {node.inputs[0].shape} to {node.shape} is not element-wise")


def first_input_form(op: Op, sp, node, a, *references):
    """The SymPy form of an op whose every element is its input's (a broadcast, an identity)."""
    return a


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
