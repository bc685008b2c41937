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

import builtins
import dataclasses
import hashlib
import operator
import sys
import types
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError, GradientError
from graphc.tensor import Tensor, Variable, creation_site
from graphc.types import as_dtype, known_size, normalize_shape

#: Every op class by name; the safe loader accepts only these.
REGISTRY: dict[str, type[Op]] = {}
#: built-in ops registered only when their (fixed, built-in) module is imported: op name -> module;
#: the safe loader imports that module for such a name. Filled by the layer above that defines such
#: an op (graphc.lazy, for the SymPy bridge's op), so the loader never names an upper module itself.
LAZY_OP_MODULES: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class _FrozenParams:
    """Only its ``__dataclass_params__`` are used: what every ``op_dataclass`` class is
    (init, repr, eq, frozen), so real dataclasses may subclass an op class."""


def op_dataclass(cls: type) -> type:
    """``@dataclasses.dataclass(frozen=True)`` for op classes, without code generated per class.

    The class is a dataclass to everyone (``dataclasses.fields``, ``replace``, ``is_dataclass``;
    a real ``@dataclass(frozen=True)`` may subclass it) and behaves as one: ``__init__`` takes the
    fields positionally or by name with their defaults and then calls ``__post_init__``;
    ``__eq__``, ``__hash__`` and ``__repr__`` use the fields' ``compare``/``hash``/``repr``
    flags; fields cannot be set or deleted. The methods are the shared generic ones below,
    driven by a per-class spec: ``dataclasses.dataclass`` compiles six methods per class with
    ``exec``, which was most of ``import graphc`` (about 1 ms per op class, 170 classes).
    """
    for name in ("__setattr__", "__delattr__"):
        if name in cls.__dict__:
            raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
    cls.__dataclass_fields__ = _collect_fields(cls)  # with the ClassVar pseudo-fields, as the stdlib keeps them
    cls.__dataclass_params__ = _FrozenParams.__dataclass_params__
    real = dataclasses.fields(cls)
    cls._dataclass_spec = _dataclass_spec(cls, real)
    cls.__match_args__ = cls._dataclass_spec[0]
    eq, hash_ = _make_eq_hash(cls, [f.name for f in real if f.compare],
                              [f.name for f in real if (f.compare if f.hash is None else f.hash)])
    methods = {"__init__": _make_init(cls, real), "__eq__": eq, "__repr__": _dataclass_repr}
    for name, method in methods.items():
        if name not in cls.__dict__:
            setattr(cls, name, method)
    explicit_hash = cls.__dict__.get("__hash__", dataclasses.MISSING)
    if explicit_hash is dataclasses.MISSING or (explicit_hash is None and "__eq__" in cls.__dict__):
        cls.__hash__ = hash_
    cls.__setattr__ = _frozen_setattr
    cls.__delattr__ = _frozen_delattr
    return cls


def _collect_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The bases' fields, then the class's own, in the stdlib's order (a redefined field keeps its place)."""
    fields: dict[str, dataclasses.Field] = {}
    for base in cls.__mro__[-1:0:-1]:
        fields.update(getattr(base, "__dataclass_fields__", {}))
    own = cls.__dict__.get("__annotations__", {})
    if not own:
        return fields
    # the stdlib reads the annotations (ClassVar, field(...), defaults) of a stand-in class with
    # no bases and nothing to generate, so that part stays exactly the stdlib's
    namespace = {name: cls.__dict__[name] for name in own if name in cls.__dict__}
    stand_in = type(cls.__name__, (), {**namespace, "__annotations__": own, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "__doc__": "stand-in"})
    for name, field in dataclasses.dataclass(init=False, repr=False, eq=False)(stand_in) \
            .__dataclass_fields__.items():
        fields[name] = field
        if isinstance(cls.__dict__.get(name), dataclasses.Field):  # field(default=...): the class holds the default
            if field.default is dataclasses.MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, field.default)
    return fields


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _dataclass_spec(cls: type, real: tuple[dataclasses.Field, ...]) -> tuple:
    """What the generic methods need of ``cls``: (init names, defaults by name, derived fields,
    has __post_init__, compared-values getter, hashed-values getter, shown names)."""
    init = [f for f in real if f.init]
    for before, after in zip(init, init[1:]):
        if _has_default(before) and not _has_default(after):
            raise TypeError(f"non-default argument {after.name!r} follows default argument")
    return (
        tuple(f.name for f in init),
        {f.name: f for f in real if _has_default(f)},
        tuple(f for f in real if not f.init),
        hasattr(cls, "__post_init__"),
        _tuple_getter([f.name for f in real if f.compare]),
        _tuple_getter([f.name for f in real if (f.compare if f.hash is None else f.hash)]),
        tuple(f.name for f in real if f.repr),
    )


#: the code of each generated method by signature ("__init__", field names, has __post_init__), or
#: ("__eq__"/"__hash__", field names): classes with the same fields share it (each with its own
#: defaults), so ``exec`` runs once per signature, not once per class
_CODE: dict[tuple, types.CodeType] = {}
_GLOBALS = {"_setattr": object.__setattr__, "__builtins__": builtins}


def _generated(key: tuple, source: str, cls: type, defaults: tuple = ()) -> Callable:
    """The function ``source`` defines (its code compiled once per ``key``), named for ``cls``."""
    code = _CODE.get(key)
    if code is None:
        namespace: dict = {}
        exec(source, _GLOBALS, namespace)  # noqa: S102 - source made above from identifiers only
        code = _CODE[key] = next(iter(namespace.values())).__code__
    function = types.FunctionType(code, _GLOBALS, key[0], defaults or None)
    function.__qualname__ = f"{cls.__qualname__}.{key[0]}"
    return function


def _plain(names) -> bool:
    return all(name.isidentifier() and name not in ("self", "other", "_setattr") for name in names)


def _make_init(cls: type, real: tuple[dataclasses.Field, ...]) -> Callable:
    """The ``__init__`` of ``cls``: a compiled one (as fast as a dataclass's) for the usual fields,
    the generic ``_dataclass_init`` for derived fields, default factories or unusual names."""
    names = tuple(f.name for f in real)
    post_init = hasattr(cls, "__post_init__")
    if any(not f.init or f.default_factory is not dataclasses.MISSING for f in real) or not _plain(names):
        return _dataclass_init
    body = "".join(f"    _setattr(self, {name!r}, {name})\n" for name in names)
    body += "    self.__post_init__()\n" if post_init else ""
    source = f"def __init__(self, {', '.join(names)}):\n{body or '    pass'}\n"
    defaults = tuple(f.default for f in real if f.default is not dataclasses.MISSING)
    return _generated(("__init__", names, post_init), source, cls, defaults)


def _make_eq_hash(cls: type, compared: list[str], hashed: list[str]) -> tuple[Callable, Callable]:
    """``__eq__`` and ``__hash__`` of ``cls`` comparing and hashing the tuples of those fields."""
    if not (_plain(compared) and _plain(hashed)):
        return _dataclass_eq, _dataclass_hash
    mine = "".join(f"self.{name}," for name in compared)
    theirs = "".join(f"other.{name}," for name in compared)
    eq = _generated(("__eq__", tuple(compared)), f"def __eq__(self, other):\n"
                    f"    if other.__class__ is self.__class__:\n        return ({mine}) == ({theirs})\n"
                    f"    return NotImplemented\n", cls)
    hashed_values = "".join(f"self.{name}," for name in hashed)
    return eq, _generated(("__hash__", tuple(hashed)), f"def __hash__(self):\n    return hash(({hashed_values}))\n",
                          cls)


def _tuple_getter(names: list[str]) -> Callable:
    """``op -> (op.a, op.b, ...)`` for ``names``, as the dataclass methods compare and hash them."""
    if not names:
        return lambda op: ()
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        return lambda op: (single(op),)
    return operator.attrgetter(*names)


def _field_default(field: dataclasses.Field):
    return field.default if field.default_factory is dataclasses.MISSING else field.default_factory()


def _dataclass_init(self, *args, **kwargs) -> None:
    names, defaults, derived, post_init, _, _, _ = type(self)._dataclass_spec
    if len(args) > len(names):
        raise TypeError(f"{type(self).__name__}() takes {len(names)} positional arguments but {len(args)} "
                        f"were given")
    setter = object.__setattr__
    for name, value in zip(names, args):
        setter(self, name, value)
    if kwargs:
        for name in names[:len(args)]:
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
    for name in names[len(args):]:
        if name in kwargs:
            setter(self, name, kwargs.pop(name))
        elif name in defaults:
            setter(self, name, _field_default(defaults[name]))
        else:
            raise TypeError(f"{type(self).__name__}() missing required argument: {name!r}")
    if kwargs:
        raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    for field in derived:
        if field.name in defaults:
            setter(self, field.name, _field_default(field))
    if post_init:
        self.__post_init__()


def _dataclass_eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    compared = self._dataclass_spec[4]
    return compared(self) == compared(other)  # tuples, as a dataclass compares (identity, then ==)


def _dataclass_hash(self) -> int:
    return hash(self._dataclass_spec[5](self))


def _dataclass_repr(self) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._dataclass_spec[6])
    return f"{type(self).__qualname__}({shown})"


def _frozen_setattr(self, name: str, value) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

#: op class -> the key text shared by its instances (b"": the class has parameters, keyed per instance)
_CLASS_KEYS: dict[type, bytes] = {}


def kept_buffer(kept: dict | None, slot, shape: tuple, dtype, fill=None) -> np.ndarray:
    """An array for ``slot`` of a compiled step's ``kept`` buffers: the one the step's last call used
    if nothing refers to it any more, else a new one it keeps for the next call (or, with ``kept``
    None, just a new one). A new one is uninitialized, or filled with ``fill`` (``np.full``'s cast);
    a kept one holds what the last call left in it.

    Large fresh arrays come from fresh pages, which fault in (and are zeroed) page by page; a
    kept one is already mapped. Safe across threads and reentrant calls: the buffer is popped
    (atomic) and kept again only when the popped reference and ``getrefcount``'s argument are its
    only ones, so a buffer another call is using (or a result, or any view of it) is never handed
    out twice; that call then works in a new buffer.
    """
    if kept is not None:
        old = kept.pop(slot, None)
        if old is not None and old.shape == shape and old.dtype == dtype and sys.getrefcount(old) <= 2:
            kept[slot] = old
            return old
        del old
    buffer = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
    if kept is not None:
        kept[slot] = buffer
    return buffer


class Op:
    """Base class of every op. Subclasses are ``@op_dataclass`` (a frozen dataclass, see there)."""

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
    #: the value depends on more than the inputs' values (a random draw): never folded or hoisted
    random: ClassVar[bool] = False
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
    #: the node is the result of a public function built from other ops (``Composite``): ``Tensor.op``
    #: reports that function's name, the instance's ``label``
    labelled: ClassVar[bool] = False
    #: its SymPy form: the name of the SymPy function applied to the inputs ("tanh"); see ``sympy_form``
    sympy: ClassVar[str | None] = None
    #: a domain guard for ``where`` branches: (position of the input whose domain is limited, a value
    #: safely inside it); the stabilizer feeds it that value where the branch is not selected
    domain: ClassVar[tuple[int, float] | None] = None
    #: on NumPy scalars, a Python expression of the inputs that is the very same IEEE operation
    #: (``"{0} + {1}"``); used where the inputs have the node's dtype (or share one, for a bool result)
    scalar_expr: ClassVar[str | None] = None
    #: ``scalar_expr`` gives the very same value on Python floats and bools as on NumPy ``float64`` and
    #: ``bool`` scalars, where the node is ``float64`` or ``bool``: operators that neither raise nor change
    #: type there (``+``, ``*``, comparisons; not ``/``, which raises on a zero). Scalar plans whose values
    #: are all ``float64`` or ``bool`` then run on Python floats, about 4x cheaper per operator
    python_exact: ClassVar[bool] = False
    #: ``compiled_impl(..., returned=False)`` may return a buffer it keeps from call to call: the plan
    #: never writes into such a value (it is not one the plan allocated; see ``kept_buffer``)
    keeps_value: ClassVar[bool] = False

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

    def vjp_needed(self, node: Tensor, g: Tensor, needed: Sequence[int]) -> Sequence[Tensor | None]:
        """Like ``vjp``, where only the inputs at the positions ``needed`` need their cotangent.

        The gradient driver calls this one; an op may return None for the other inputs and build
        nothing for them (``x * 0.9`` needs no cotangent for its constant). The default is ``vjp``.
        """
        return self.vjp(node, g)

    def compiled_impl(self, compile_graph: Callable, returned: bool = True) -> Callable:
        """The function the executor calls for a node of this op, made once per plan step: ``impl``.

        An op that runs inner graphs (a loop's body) overrides it: the compiler passes
        ``compile_graph(inner_graph)``, which returns a compiled callable ``run(arrays) -> tuple``,
        so the ops layer never imports the compiler. An op with large temporaries overrides it to
        keep them from call to call (``kept_buffer``); ``returned`` says whether the plan returns
        the node's value: only if it does not may the value itself be a kept buffer (an op that
        does this says so with ``keeps_value``).
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

    def order_bytes(self, node: Tensor) -> bytes:
        """Bytes describing this op without creation counters: ``key_bytes`` unless that holds one.

        They order the inputs of commutative nodes (see ``graphc.passes.core``), which must not depend
        on how many tensors were built before: a leaf keyed by its creation serial overrides this.
        """
        return self.key_bytes(node)

    def __call__(self, *inputs, name: str | None = None) -> Tensor:
        return apply(self, *inputs, name=name)


#: the static type of a multi-output node itself (its values are read through ``Output`` projections)
MULTI_TYPE: tuple[tuple, np.dtype] = ((), np.dtype("V1"))


@op_dataclass
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


def weak_constant(value, strong_dtypes: Sequence[np.dtype], site: tuple[str, int] | None = None) -> Tensor:
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
    array.setflags(write=False)  # (a fresh 0-d array of a supported dtype: what ``constant`` would make)
    return Tensor(Constant(array), (), (), array.dtype, site=site)


#: (Python scalar type, strong dtypes...) -> the dtype NumPy 2 gives the scalar among them
_WEAK_DTYPES: dict[tuple, np.dtype] = {}


def as_inputs(op: Op, inputs: Sequence, site: tuple[str, int] | None = None) -> Sequence[Tensor]:
    """Wrap non-tensor inputs as constants (weak for ops that take weak scalars); ``site``: the
    weak constants' user site (None: found by each)."""
    for i in inputs:  # (a loop, not ``all`` over a generator: this runs for every node built)
        if not isinstance(i, Tensor):
            break
    else:
        return inputs
    if op.weak_scalars:
        strong = [i.dtype for i in inputs if isinstance(i, Tensor)]
        strong += [np.asarray(i).dtype for i in inputs if not isinstance(i, Tensor) and not _is_python_scalar(i)]
        return [i if isinstance(i, Tensor) else
                (weak_constant(i, strong, site) if _is_python_scalar(i) else as_tensor(i)) for i in inputs]
    return [as_tensor(i) for i in inputs]


def apply(op: Op, *inputs, name: str | None = None) -> Tensor:
    """Build the node ``op(*inputs)``: wrap constants, infer the type, record the site."""
    # the site found once for the node and the weak constants made with it, from the op function's
    # frame up (this one, apply's, is graphc's anyway)
    site = creation_site(2)
    tensors = as_inputs(op, inputs, site)
    shape, dtype = op.infer(*tensors)
    return Tensor(op, tensors, shape, dtype, name=name, site=site)


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

    def order_bytes(self, node: Tensor) -> bytes:
        return f"placeholder:{node.name}".encode()  # (shape and dtype are added by the caller)

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


class Constant(Leaf):
    """Holds a read-only copy of its value."""

    name = "constant"

    #: the key text and the uniform value, made on first use (the value never changes); class
    #: defaults until then, so that making a constant sets nothing more
    _key: bytes | None = None
    _uniform = None

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def impl(self) -> np.ndarray:
        return self.value

    def key_bytes(self, node: Tensor) -> bytes:
        key = self._key
        if key is None:
            value = self.value
            small = value.size <= 4
            if small:  # the weak scalars of ``x * 0.9``: one key text per value, not a digest per node
                probe = (value.dtype, value.shape, value.tobytes())
                key = _SMALL_KEYS.get(probe)
            if key is None:
                digest = hashlib.blake2b(value.tobytes(), digest_size=16).hexdigest()
                dtype = value.dtype
                name = _DTYPE_NAMES.get(dtype)
                if name is None:  # (``str(dtype)`` runs Python code in NumPy: once per dtype)
                    name = _DTYPE_NAMES[dtype] = str(dtype)
                key = f"constant{name}{value.shape}{digest}".encode()
                if small and len(_SMALL_KEYS) < _SMALL_KEYS_MAX:
                    _SMALL_KEYS[probe] = key
            self._key = key
        return key

    def uniform(self):
        """The single value every entry holds (a NumPy scalar), or None: empty, a NaN, or entries
        that differ (-0.0 and +0.0 differ here). Computed once: the value is read-only."""
        found = self._uniform
        if found is None:
            found = self._uniform = (_uniform(self.value),)
        return found[0]

    def params(self) -> dict:
        return {"value": self.value}

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__

    def __reduce__(self):
        return (Constant, (self.value,))


_DTYPE_NAMES: dict[np.dtype, str] = {}
#: (dtype, shape, bytes) of a small constant -> its key text (bounded: a process making endless
#: distinct constants keys the later ones by digest)
_SMALL_KEYS: dict[tuple, bytes] = {}
_SMALL_KEYS_MAX = 1 << 14


def _uniform(value: np.ndarray):
    if value.size == 0:
        return None
    flat = value.reshape(-1)
    first = flat[0]
    if value.size > 1:
        same = flat == first
        if value.dtype.kind == "f":
            same &= np.signbit(flat) == np.signbit(first)
        if not np.all(same):
            return None
    if value.dtype.kind == "f" and np.isnan(first):
        return None
    return first


class VariableLeaf(Leaf):
    name = "variable"

    def key_bytes(self, node: Tensor) -> bytes:
        return f"variable#{node.serial}".encode()

    def order_bytes(self, node: Tensor) -> bytes:
        return f"variable:{node.name}".encode()

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
