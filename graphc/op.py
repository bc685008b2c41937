"""The Op base class, the op registry, the leaf ops, and ``apply`` (building a node).

An op is one small frozen dataclass holding its parameters. It says in one
place how to infer the output's static shape and dtype (``infer``), how to
compute it with NumPy (``impl``, which never writes to its inputs), and how to
differentiate it (``vjp``, which returns graph tensors: symbol to symbol).

The leaves (placeholders, constants, variables) are ops too, and ``apply`` wraps
Python numbers and arrays as constants, so they live here with it (one module, no
import cycle); :mod:`graphc.leaves` is their public home.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError, GradientError
from graphc.tensor import Tensor, Variable
from graphc.types import as_dtype, known_size, normalize_shape

#: Every op class by name; the safe loader accepts only these.
REGISTRY: dict[str, type[Op]] = {}
#: op class -> the key text shared by its instances (b"": the class has parameters, keyed per instance)
_CLASS_KEYS: dict[type, bytes] = {}


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
        cls = type(self)
        fixed = _CLASS_KEYS.get(cls)
        if fixed is None:
            # an op class without parameters has one key text for all its instances: made once
            plain = cls.params is Op.params and dataclasses.is_dataclass(cls) and not dataclasses.fields(cls)
            fixed = _CLASS_KEYS[cls] = f"{self.name}[]".encode() if plain else b""
        return fixed or f"{self.name}{sorted(self.params().items())!r}".encode()

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
    return constant(value, dtype=dtype)


def weak_constant(value, strong_dtypes: Sequence[np.dtype]) -> Tensor:
    """A constant for a Python scalar, typed the way NumPy 2 treats weak scalars."""
    if not strong_dtypes:
        return constant(value)
    try:
        # NumPy 2's weak-scalar promotion depends on the scalar's type, not its value: resolved once
        key = (type(value), *strong_dtypes)
        dtype = _WEAK_DTYPES.get(key)
        if dtype is None:
            dtype = _WEAK_DTYPES[key] = np.result_type(*strong_dtypes, value)
        array = np.array(value, dtype=dtype)
    except (OverflowError, TypeError) as exc:
        raise DTypeError(f"the Python scalar {value!r} does not fit the dtype "
                         f"{np.result_type(*strong_dtypes)} of the tensor it combines with") from exc
    array.flags.writeable = False  # (a fresh 0-d array of a supported dtype: what ``constant`` would make)
    return Tensor(Constant(array), (), (), array.dtype)


#: (Python scalar type, strong dtypes...) -> the dtype NumPy 2 gives the scalar among them
_WEAK_DTYPES: dict[tuple, np.dtype] = {}


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


# ---- the leaves -----------------------------------------------------------------------------

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
