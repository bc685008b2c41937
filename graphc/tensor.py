"""Tensors: immutable graph values, their creation site, and graph traversal.

A :class:`Tensor` is a node of the symbolic graph: the op that made it, its
input tensors, and its static shape and dtype. Tensors never change once
built; ``==`` and ``hash`` are identity-based so tensors can key dicts. A
structural key (a digest of op, parameters and input keys) is computed on
demand and drives common-subexpression elimination. Metadata (name, user
source line, gradient marker) rides along outside that key.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import operator
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.hooks import Hook
from graphc.types import format_shape


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a whole-graph pass, and restore it after.

    Building, differentiating, optimizing and lowering a graph allocate many small objects that
    all stay alive; each collection rescans every one of them, so the collector's cost grows with
    the graph (measured: 20% of optimizing a 10,000-block chain, 40% of lowering 35,000 steps).
    Nothing those passes make is garbage in a cycle, so pausing loses nothing. Nested uses keep
    the outer state; the collector runs again as soon as the outermost pass ends.

    At that end everything tracked moves to the oldest generation unscanned (``gc.freeze()`` then
    ``gc.unfreeze()``), where a collection would move the pass's long-lived objects: else the next
    allocation scans them all as young (0.26 s of compiling 30,000 blocks). Not when the program has
    frozen objects itself (unfreezing would undo that). The young generations are collected at the
    start (a few thousand objects at most), so that the move takes none of the program's own garbage
    cycles along: there they would wait for a full collection, holding their memory."""
    collecting = gc.isenabled()
    if collecting and not gc.get_freeze_count():
        gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_serials = itertools.count()


class _State(threading.local):
    #: how many ``building_gradient`` blocks the thread is in (a class default: reading it never fails,
    #: which a missing thread-local attribute with ``getattr(..., 0)`` does, slowly, on every node)
    gradient_depth = 0
    #: the user site of the outermost ``building_gradient`` block (None: outside one, or in user code
    #: called from it): every node the gradient driver builds would walk up to that same frame
    site: tuple[str, int] | None = None


_local = _State()

#: the ops behind Tensor's operators and methods (``x + y``, ``x.sum()``, ``x[i]``, ``with_name``):
#: ops are built on Tensor, so they sit a layer above it and ``graphc.ops`` provides them at import
OPERATORS = Hook("Tensor's operators and methods", "graphc.ops")
#: Tensor's operators read their op from the namespace itself (see ``Hook.resolve``)
_operators = OPERATORS.resolve
#: ``Tensor._repr_svg_`` (Jupyter display), provided by ``graphc.export``
SVG = Hook("Tensor._repr_svg_", "graphc.export")


def user_site(depth: int = 1) -> tuple[str, int] | None:
    """The (file, line) of the innermost caller outside the graphc package, looking from the frame
    ``depth`` levels up (1: the caller's; a caller that knows the next frames are graphc's passes
    more, so that those frames are never materialized)."""
    try:
        frame = sys._getframe(depth)
    except ValueError:  # a stack shallower than that: no user frame
        return None
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    # by (code, position in it): a frame's ``f_lineno`` scans the code's line table from its start
    # (costly in a long script), and the nodes of one call share one site tuple (memory per node)
    code = frame.f_code
    entry = _CODE_SITES.get(id(code))
    if entry is None or entry[0] is not code:  # (the entry holds its code alive: its id is not reused)
        if len(_CODE_SITES) >= _CODE_SITES_MAX:
            _CODE_SITES.clear()
        entry = _CODE_SITES[id(code)] = (code, {})
    lasti = frame.f_lasti
    site = entry[1].get(lasti)
    if site is None:
        site = (code.co_filename, frame.f_lineno)
        site = entry[1][lasti] = _SITES.setdefault(site, site)  # one tuple per source line
    return site


#: every user site seen, so that the nodes made on one line share one tuple
_SITES: dict[tuple[str, int], tuple[str, int]] = {}
#: id(code) -> (code, {instruction offset: its site}) for the user code that built nodes
_CODE_SITES: dict[int, tuple[object, dict[int, tuple[str, int]]]] = {}
_CODE_SITES_MAX = 1 << 12


def creation_site(depth: int = 1) -> tuple[str, int] | None:
    """The user site for a node made now: the gradient driver's inside its block (see
    ``building_gradient``), else the innermost caller outside graphc from ``depth`` levels up
    (as ``user_site``, whose frame this one's counts as level 0)."""
    site = _local.site
    return site if site is not None else user_site(depth + 1)


class building_gradient:
    """Context manager: tensors built inside are marked as gradient nodes."""

    def __enter__(self) -> None:
        self.outer_site = _local.site
        # found once here, not by a walk up the driver's deep stack for each of its nodes
        _local.site = user_site() if self.outer_site is None else self.outer_site
        _local.gradient_depth += 1

    def __exit__(self, *exc_info) -> None:
        _local.gradient_depth -= 1
        _local.site = self.outer_site


class user_code:
    """Context manager around user code called while a gradient is built (a custom op's ``grad``):
    the nodes it builds get their own user site again, found by walking the frames."""

    def __enter__(self) -> None:
        self.outer_site = _local.site
        _local.site = None

    def __exit__(self, *exc_info) -> None:
        _local.site = self.outer_site


def _in_gradient() -> bool:
    return _local.gradient_depth > 0


_KEEP = object()  # with_inputs: keep this metadata as it is
_DTYPE_TEXT: dict[np.dtype, bytes] = {}


def _dtype_text(dtype: np.dtype) -> bytes:
    text = _DTYPE_TEXT.get(dtype)
    if text is None:
        text = _DTYPE_TEXT[dtype] = str(dtype).encode()
    return text


_TYPE_TEXT: dict[tuple[np.dtype, tuple], bytes] = {}


def type_text(node: Tensor) -> bytes:
    """``node``'s dtype and shape as bytes, for digests (made once per distinct type: ``str(dtype)`` is slow)."""
    kind = (node.dtype, node.shape)
    text = _TYPE_TEXT.get(kind)
    if text is None:
        # (sizes as ints: a shape equal to a cached one, say with NumPy ints, gets the very same text)
        sizes = tuple(None if size is None else int(size) for size in node.shape)
        text = _TYPE_TEXT[kind] = f"{node.dtype}{sizes!r}".encode()
    return text


def _has_key(node: Tensor) -> bool:
    return node._key is not None


def _set_key(node: Tensor) -> str:
    """Digest ``node``'s key from its op, type and its (keyed) inputs' keys, and cache it on the node."""
    digest = hashlib.blake2b(node.primitive.key_bytes(node), digest_size=16)
    digest.update(_dtype_text(node.dtype))
    digest.update(repr(node.shape).encode())
    for parent in node.inputs:
        digest.update(parent._key.encode())
    key = digest.hexdigest()
    object.__setattr__(node, "_key", key)
    return key


class Tensor:
    """A node of the graph. Build tensors with graphc's functions, not directly."""

    __slots__ = ("primitive", "inputs", "shape", "dtype", "name", "site", "is_gradient", "serial", "_key",
                 "__weakref__")
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NumPy operators on a Tensor build graph ops (``ndarray + Tensor`` is a Tensor, as with
        Python's reflected operators); any other ufunc says which graphc op to use instead."""
        name = getattr(ufunc, "__name__", str(ufunc))
        if method == "__call__" and not kwargs:
            if name == "equal":  # ``==`` is identity for tensors (they key feed dicts)
                return inputs[0] is inputs[1]
            if name == "not_equal":
                return inputs[0] is not inputs[1]
            op = _OPERATOR_UFUNCS.get(name)
            if op is not None:
                return getattr(OPERATORS, op)(*inputs)
        ops = OPERATORS
        twin = _UFUNC_TWINS.get(name, name)
        if method == "reduce":
            hint = {"add": "gc.sum", "multiply": "gc.prod", "maximum": "gc.max", "minimum": "gc.min"}.get(name)
        else:
            hint = f"gc.{twin}" if hasattr(ops, twin) and not twin.startswith("_") else None
        where = f"np.{name}" + ("" if method == "__call__" else f".{method}")
        raise TypeError(f"{where} cannot compute on a graphc Tensor, which has no value until the graph runs: "
                        + (f"use {hint}(...) to add that op to the graph" if hint else
                           "use graphc's ops (docs/ops.md lists them) to build on it")
                        + ", or run the graph (Session.run, gc.function) and apply NumPy to the result")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self.describe()} is symbolic and has no value until it runs: use graphc's ops "
                        f"(gc.exp, gc.sum, ...) to build on it, and Session.run or gc.function to evaluate it")

    def __init__(self, primitive, inputs: Sequence[Tensor], shape: tuple, dtype: np.dtype,
                 name: str | None = None, site: tuple[str, int] | None = None,
                 is_gradient: bool | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{getattr(primitive, 'name', 'tensor')}: name must be a str or None, got {name!r}")
        # (the slots' own setters: ``object.__setattr__`` by name costs more, on every node built)
        _SET_PRIMITIVE(self, primitive)
        _SET_INPUTS(self, inputs if type(inputs) is tuple else tuple(inputs))
        _SET_SHAPE(self, shape if type(shape) is tuple else tuple(shape))
        _SET_DTYPE(self, dtype if isinstance(dtype, np.dtype) else np.dtype(dtype))
        _SET_NAME(self, name)
        _SET_SITE(self, site if site is not None else (_local.site or user_site()))
        _SET_IS_GRADIENT(self, (_local.gradient_depth > 0) if is_gradient is None else is_gradient)
        _SET_SERIAL(self, next(_serials))
        _SET_KEY(self, None)

    def __setattr__(self, name, value):
        raise AttributeError(f"Tensor is immutable; cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"Tensor is immutable; cannot delete {name!r}")

    # Identity semantics: equality is identity and hashing uses it, so tensors key dicts.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __bool__(self):
        raise TypeError("the truth value of a symbolic Tensor is unknown until it runs; "
                        "use gc.where or compare values after running")

    def __iter__(self):
        raise TypeError("a symbolic Tensor cannot be iterated; index it instead")

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        if self.shape[0] is None:
            raise TypeError("len() of a tensor whose first size is unknown")
        return self.shape[0]

    @property
    def op(self) -> str:
        """The name of the public function that made this tensor (e.g. ``"matmul"``).

        An output of a multi-output node (a projection) reports its producer's name (``"scan"``); the
        result of a function composed of other ops (``layer_norm``: a ``composite`` node over a ``div``)
        reports that function.
        """
        primitive = self.primitive  # (an Op: its class says ``projection`` and ``labelled``)
        if primitive.projection:
            return self.inputs[0].primitive.name
        if primitive.labelled:
            return primitive.label
        return primitive.name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int | None:
        total = 1
        for entry in self.shape:
            if entry is None:
                return None
            total *= entry
        return total

    def with_name(self, name: str) -> Tensor:
        """A tensor computing the same value under a new name (an identity node)."""
        return _operators().identity(self, name=name)

    def describe(self) -> str:
        """A one-line description used in error messages."""
        label = f"'{self.name}' " if self.name else ""
        if getattr(self.primitive, "multi_output", False):
            text = f"node {label}({self.op}, several outputs)"
        else:
            text = f"tensor {label}({self.op}, shape {format_shape(self.shape)}, {self.dtype})"
        if self.site is not None:
            text += f" created at {self.site[0]}:{self.site[1]}"
        return text

    def __repr__(self) -> str:
        label = f" name={self.name!r}" if self.name else ""
        return f"<Tensor {self.op}{label} shape={format_shape(self.shape)} dtype={self.dtype}>"

    # ---- structural key -------------------------------------------------------------
    @property
    def key(self) -> str:
        """A digest of (op, parameters, input keys); equal keys compute equal values.

        Stable across processes: it uses no ``id()`` or ``hash()``.
        """
        key = self._key
        if key is None:
            for parent in self.inputs:
                if parent._key is None:
                    # only the ancestors without a key yet are visited: keying a graph node by node is linear
                    for node in toposort([self], skip=_has_key):
                        _set_key(node)
                    return self._key
            key = _set_key(self)  # the usual case in the passes: the inputs are keyed, one digest
        return key

    # ---- rebuilding -----------------------------------------------------------------
    def with_inputs(self, inputs: Sequence[Tensor], *, name=_KEEP, site=_KEEP, is_gradient=_KEEP,
                    retype: bool = False) -> Tensor:
        """This node's op over ``inputs``, keeping its name, user site and gradient mark unless given.

        Returns ``self`` when nothing would change. The shape and dtype are kept too, or
        inferred again with ``retype=True`` (when an input's type may have changed, e.g. a
        more specific shape). Every pass and clone rebuilds nodes with this method.
        """
        inputs = tuple(inputs)
        old = self.inputs
        same = len(inputs) == len(old) and all(map(operator.is_, inputs, old))
        if name is _KEEP and site is _KEEP and is_gradient is _KEEP:  # the passes' usual call
            if same:
                return self
            if not retype:
                return rebuilt(self, inputs)
            name, site, is_gradient = self.name, self.site, self.is_gradient
        else:
            name = self.name if name is _KEEP else name
            site = self.site if site is _KEEP else site
            is_gradient = self.is_gradient if is_gradient is _KEEP else is_gradient
            if same and name == self.name and site == self.site and is_gradient == self.is_gradient:
                return self
        shape, dtype = self.primitive.infer(*inputs) if retype else (self.shape, self.dtype)
        return Tensor(self.primitive, inputs, shape, dtype, name=name, site=site, is_gradient=is_gradient)

    # ---- operators (NumPy semantics) -------------------------------------------------
    def __add__(self, other):
        return _operators().add(self, other)

    def __radd__(self, other):
        return _operators().add(other, self)

    def __sub__(self, other):
        return _operators().sub(self, other)

    def __rsub__(self, other):
        return _operators().sub(other, self)

    def __mul__(self, other):
        return _operators().mul(self, other)

    def __rmul__(self, other):
        return _operators().mul(other, self)

    def __truediv__(self, other):
        return _operators().div(self, other)

    def __rtruediv__(self, other):
        return _operators().div(other, self)

    def __pow__(self, other):
        return _operators().pow(self, other)

    def __rpow__(self, other):
        return _operators().pow(other, self)

    def __matmul__(self, other):
        return _operators().matmul(self, other)

    def __rmatmul__(self, other):
        return _operators().matmul(other, self)

    def __neg__(self):
        return _operators().neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _operators().abs(self)

    def __lt__(self, other):
        return _operators().less(self, other)

    def __le__(self, other):
        return _operators().less_equal(self, other)

    def __gt__(self, other):
        return _operators().greater(self, other)

    def __ge__(self, other):
        return _operators().greater_equal(self, other)

    def __getitem__(self, key):
        return _operators().getitem(self, key)

    @property
    def T(self) -> Tensor:
        return _operators().transpose(self)

    def sum(self, axis=None, keepdims=False) -> Tensor:
        return _operators().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False) -> Tensor:
        return _operators().mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False) -> Tensor:
        return _operators().max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False) -> Tensor:
        return _operators().min(self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False) -> Tensor:
        return _operators().prod(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape) -> Tensor:
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        return _operators().reshape(self, shape)

    def transpose(self, *axes) -> Tensor:
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], (int, np.integer))):
            axes = axes[0]
        return _operators().transpose(self, axes if axes else None)

    def astype(self, dtype) -> Tensor:
        return _operators().cast(self, dtype)

    def _repr_svg_(self):  # Jupyter display
        return SVG([self])


_SET_PRIMITIVE, _SET_INPUTS, _SET_SHAPE, _SET_DTYPE, _SET_NAME, _SET_SITE, _SET_IS_GRADIENT, _SET_SERIAL, _SET_KEY = (
    getattr(Tensor, slot).__set__
    for slot in ("primitive", "inputs", "shape", "dtype", "name", "site", "is_gradient", "serial", "_key"))

_NEW = object.__new__


def rebuilt(node: Tensor, inputs: tuple[Tensor, ...]) -> Tensor:
    """``node.with_inputs(inputs)`` for a tuple of other inputs: its op, type and metadata kept, as a
    pass rebuilds each node below a change (without a fresh tensor's argument checks)."""
    new = _NEW(Tensor)
    _SET_PRIMITIVE(new, node.primitive)
    _SET_INPUTS(new, inputs)
    _SET_SHAPE(new, node.shape)
    _SET_DTYPE(new, node.dtype)
    _SET_NAME(new, node.name)
    _SET_SITE(new, node.site)
    _SET_IS_GRADIENT(new, node.is_gradient)
    _SET_SERIAL(new, next(_serials))
    _SET_KEY(new, None)
    return new


#: NumPy ufuncs behind Python operators, and the graphc op each builds (``ndarray + Tensor``)
_OPERATOR_UFUNCS = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "div", "true_divide": "div",
                    "power": "pow", "matmul": "matmul", "negative": "neg", "absolute": "abs", "less": "less",
                    "less_equal": "less_equal", "greater": "greater", "greater_equal": "greater_equal"}
#: NumPy ufunc names whose graphc op has another name
_UFUNC_TWINS = {"absolute": "abs", "subtract": "sub", "multiply": "mul", "divide": "div", "true_divide": "div",
                "negative": "neg", "power": "pow", "fmax": "maximum", "fmin": "minimum", "tanh": "tanh"}


class Variable(Tensor):
    """A tensor holding state. Read ``.value``; change it with ``set_value`` or ``updates``."""

    __slots__ = ("_value", "lock")

    def __init__(self, primitive, value: np.ndarray, name: str | None) -> None:
        super().__init__(primitive, (), value.shape, value.dtype, name=name)
        value = np.array(value, copy=True)
        value.flags.writeable = False
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "lock", threading.Lock())

    @property
    def value(self) -> np.ndarray:
        """The current value, as a read-only array (never changed in place)."""
        value = self._value
        if value is None:  # a call with in-place updates is writing it: wait until it is done
            with self.lock:
                value = self._value
        return value

    def set_value(self, value) -> None:
        """Replace the value; it must have the same shape and a ``same_kind``-castable dtype."""
        new = _checked_variable_value(self, value)
        with self.lock:
            object.__setattr__(self, "_value", new)

    def __reduce__(self):
        # A variable pickles as its current value and name (tensors in general do not pickle alone).
        with self.lock:
            value = self._value
        return Variable, (self.primitive, value, self.name)

    def _install(self, value: np.ndarray) -> None:
        """Install an already-checked array owned by graphc (caller holds ``lock``)."""
        value.setflags(write=False)  # (a fifth of ``value.flags.writeable = False``'s cost)
        object.__setattr__(self, "_value", value)


def _checked_variable_value(variable: Variable, value) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != variable.shape:
        raise ShapeError(f"set_value: variable {variable.name or '<unnamed>'!r} has shape "
                         f"{format_shape(variable.shape)}, got a value of shape {format_shape(array.shape)}")
    if not np.can_cast(array.dtype, variable.dtype, casting="same_kind"):
        raise DTypeError(f"set_value: variable {variable.name or '<unnamed>'!r} has dtype {variable.dtype}, "
                         f"got {array.dtype}, which cannot be cast safely (same_kind)")
    new = np.array(array, dtype=variable.dtype, copy=True)
    new.flags.writeable = False
    return new


# ---- traversal ----------------------------------------------------------------------

def toposort(outputs: Iterable[Tensor], stop_at: Iterable[Tensor] = (),
             skip: Callable[[Tensor], bool] | None = None) -> list[Tensor]:
    """Every ancestor of ``outputs`` (inclusive), inputs before consumers: graphc's one traversal.

    Iterative (deep graphs do not hit the recursion limit) and deterministic:
    depth first, visiting inputs in argument order, so the order depends only on
    the graph. Tensors in ``stop_at`` are included but their inputs are not
    visited; tensors for which ``skip`` is true are neither included nor visited
    (e.g. the part of a graph an earlier sweep already handled).
    """
    # (sets of the tensors themselves, which hash by identity: faster than sets of their ``id()``;
    # two stacks, the nodes and their input iterators, rather than a stack of pairs: no tuple per node)
    stop = set(stop_at)
    order: list[Tensor] = []
    seen: set[Tensor] = set()
    for root in outputs:
        if root in seen or (skip is not None and skip(root)):
            continue
        seen.add(root)
        nodes, pending = [root], [iter(() if root in stop else root.inputs)]
        while pending:
            for parent in pending[-1]:
                if parent not in seen and (skip is None or not skip(parent)):
                    seen.add(parent)
                    nodes.append(parent)
                    pending.append(iter(() if parent in stop else parent.inputs))
                    break
            else:
                pending.pop()
                order.append(nodes.pop())
    return order


def consumers(order: Sequence[Tensor]) -> dict[int, list[Tensor]]:
    """Map ``id(tensor)`` to the tensors in ``order`` that take it as an input."""
    result: dict[int, list[Tensor]] = {id(t): [] for t in order}
    for node in order:
        seen = set()
        for parent in node.inputs:
            if id(parent) not in seen:
                seen.add(id(parent))
                result.setdefault(id(parent), []).append(node)
    return result
