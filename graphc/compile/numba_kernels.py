"""Fused element-wise kernels compiled with numba: the optional ``backend="numba"``.

A chain of element-wise steps evaluated with NumPy ufuncs streams every
intermediate through memory once more, even with ``out=``. A compiled kernel
reads each input element once, keeps the intermediates in registers and
writes the result once: one pass over memory.

**Identical results.** A kernel only ever contains steps whose compiled form
is the very same IEEE operation as NumPy's ufunc, so results are bit-identical
to the NumPy backend's:

* ops with a ``scalar_expr`` (``+ - * /``, negation, square, maximum, minimum,
  comparisons, ``where``): the expression on scalars of the step's dtype, and
* the correctly rounded or exact ufuncs of :data:`EXACT_UFUNCS` (``sqrt``,
  ``abs``, ``floor``, ``ceil``, ``trunc``).

Transcendental functions (``exp``, ``log``, ``tanh``, ``sin``...) are not
compiled: numba calls the C library's versions, which differ from NumPy's own
SIMD ones by 1-3 ulp (measured; docs/performance.md). They stay NumPy steps
between kernels. Every operand and result is float32, float64 or bool (a bool
only as a comparison's result or a ``where`` condition), all float operands of
a step share one dtype, and the step's result has that dtype (or is a bool):
no mixed-precision step is compiled. Kernels are compiled with
``error_model="numpy"`` (a division by zero is inf or NaN, as in NumPy) and
without fast-math (no reassociation, no contraction into fused multiply-adds).
One difference remains: a kernel does not emit NumPy's floating-point
``RuntimeWarning``s.

**Where it pays.** On large arrays: a kernel call has a fixed cost of a few
microseconds (numba's dispatcher); arrays smaller than
:data:`MIN_KERNEL_ELEMENTS` run the fused steps with NumPy instead (the same
values). Each kernel is compiled once per process, at its first call, and
cached by the fused op's structural key (a ``Fused`` op compares by its steps)
and the inputs' layout.

numba is imported only when a kernel is first built (:func:`require_numba`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

from graphc.passes.fuse import Fused, fusable, fuse
from graphc.tensor import Tensor, toposort

#: NumPy ufuncs that numba computes as the very same exactly rounded operation: name -> scalar expression
EXACT_UFUNCS: dict[object, str] = {
    np.sqrt: "np.sqrt({0})",
    np.absolute: "abs({0})",
    np.negative: "-{0}",
    np.floor: "np.floor({0})",
    np.ceil: "np.ceil({0})",
    np.trunc: "np.trunc({0})",
}

#: below this many elements a fused node runs its steps with NumPy (a kernel call costs a few microseconds)
MIN_KERNEL_ELEMENTS = 8192

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_BOOL = np.dtype(bool)


class BackendUnavailable(ImportError):
    """``backend="numba"`` was asked for and numba does not import."""


def require_numba():
    """The numba module, or ``BackendUnavailable`` saying how to install it."""
    try:
        import numba
    except ImportError as exc:
        raise BackendUnavailable(
            'backend="numba" needs the optional numba package: pip install "graphc[numba]" '
            f"(import failed: {exc})") from exc
    return numba


# ---- which steps compile ----------------------------------------------------------------------

def step_expression(op) -> str | None:
    """The scalar expression compiling ``op`` exactly (``"{0} + {1}"``), or None: it stays a NumPy step."""
    expression = getattr(op, "scalar_expr", None)
    if expression is not None:
        return expression
    lowering = op.lowering()
    return EXACT_UFUNCS.get(lowering) if lowering is not None else None


def _types_compile(result: np.dtype, operands: Sequence[np.dtype]) -> bool:
    """One float dtype among the operands; the result is that dtype or a bool; other operands bools."""
    floats = {d for d in operands if d != _BOOL}
    if len(floats) != 1 or any(d != _BOOL and d not in _FLOATS for d in operands):
        return False
    return result == _BOOL or result == next(iter(floats))


def compilable(node: Tensor) -> bool:
    """A node the numba backend may put into a kernel (see the module docstring)."""
    if not fusable(node) or node.shape == () or step_expression(node.primitive) is None:
        return False
    return _types_compile(node.dtype, [p.dtype for p in node.inputs])


def _fused_compiles(node: Tensor) -> bool:
    """Every step of the fused ``node`` compiles (also true of a fused node the user's pipeline made)."""
    op = node.primitive
    dtypes = [p.dtype for p in node.inputs] + [np.dtype(d) for d in op.dtypes]
    return len(node.inputs) == op.n_inputs and all(
        step_expression(step) is not None and _types_compile(dtypes[op.n_inputs + k], [dtypes[a] for a in args])
        for k, (step, args) in enumerate(op.steps))


def fuse_for_kernels(outputs: list[Tensor]) -> list[Tensor]:
    """``fuse`` restricted to compilable nodes: each group of two or more becomes one ``fused`` node."""
    return fuse(outputs, predicate=compilable)


# ---- kernels ------------------------------------------------------------------------------------

def _layout(arrays: Sequence[np.ndarray], shape: tuple) -> tuple[str, ...]:
    """Per input: "s" (one element, passed as a scalar), "f" (flat: the output's shape, C-contiguous),
    or "b" (anything else: a broadcast view of the output's shape)."""
    kinds = []
    for a in arrays:
        if a.size == 1:
            kinds.append("s")
        elif a.shape == shape and a.flags.c_contiguous:
            kinds.append("f")
        else:
            kinds.append("b")
    return tuple(kinds)


def kernel_source(op: Fused, kinds: Sequence[str], ndim: int) -> str:
    """The Python source of ``_kernel(x0, ..., out)`` for ``op`` and the inputs' layout ``kinds``.

    With every input flat or scalar the loop runs over one flat index (``ndim`` 1); otherwise over
    ``ndim`` nested indices of the broadcast shape. Each step's value is converted to its dtype
    (exact: the expression already has that type; it pins the type of a literal).
    """
    names = [f"x{a}" for a in range(op.n_inputs)]
    index = ", ".join(f"i{d}" for d in range(ndim))
    lines = [f"def _kernel({', '.join(names)}, out):"]
    body: list[str] = []
    for a, kind in enumerate(kinds):
        body.append(f"a{a} = x{a}" if kind == "s" else f"a{a} = x{a}[{index}]")
    values = [f"a{a}" for a in range(op.n_inputs)]
    for k, (step, args) in enumerate(op.steps):
        expression = step_expression(step).format(*(values[a] for a in args))
        body.append(f"s{k} = _t{k}({expression})")
        values.append(f"s{k}")
    body.append(f"out[{index}] = s{len(op.steps) - 1}")
    indent = "    "
    for d in range(ndim):
        lines.append(f"{indent}for i{d} in range(out.shape[{d}]):")
        indent += "    "
    lines += [indent + line for line in body]
    return "\n".join(lines) + "\n"


class Kernels:
    """The compiled kernels of this process, by (fused op, inputs' layout, rank). Thread-safe."""

    def __init__(self) -> None:
        self._compiled: dict[tuple, Callable] = {}
        self._lock = threading.Lock()

    def get(self, op: Fused, kinds: tuple[str, ...], ndim: int) -> Callable:
        key = (op, kinds, ndim)
        function = self._compiled.get(key)
        if function is None:
            with self._lock:
                function = self._compiled.get(key)
                if function is None:
                    function = self._compiled[key] = _compile(op, kinds, ndim)
        return function

    def __len__(self) -> int:
        return len(self._compiled)


def _compile(op: Fused, kinds: Sequence[str], ndim: int) -> Callable:
    numba = require_numba()
    namespace: dict[str, object] = {"np": np}
    for k, dtype in enumerate(op.dtypes):
        namespace[f"_t{k}"] = np.dtype(dtype).type
    exec(compile(kernel_source(op, kinds, ndim), f"<graphc numba kernel {op.describe_steps()}>", "exec"),
         namespace)  # noqa: S102 - our own generated code
    # error_model="numpy": x / 0 is inf or NaN, never ZeroDivisionError; no fastmath: IEEE operations only
    return numba.njit(nogil=True, error_model="numpy", fastmath=False)(namespace["_kernel"])


#: the process's kernel cache
KERNELS = Kernels()


class FusedKernel:
    """The callable a plan runs for a kernel-fused node: ``f(*arrays, out=None)`` like a ufunc.

    Writes the whole result into ``out`` (any array of the result's shape and dtype, which may be
    one of the inputs: each element is read before it is written) or into a fresh array.
    """

    __slots__ = ("op", "__name__", "_dispatch")

    def __init__(self, op: Fused) -> None:
        self.op = op
        self.__name__ = "fused_kernel"
        #: (layout kinds, rank) -> compiled kernel: this node's share of ``KERNELS``, found without
        #: hashing the op at every call
        self._dispatch: dict[tuple, Callable] = {}

    def __call__(self, *arrays, out: np.ndarray | None = None):
        arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in arrays]
        shape = _broadcast_shape([a.shape for a in arrays])
        if not shape or math.prod(shape) < MIN_KERNEL_ELEMENTS:
            result = self.op.impl(*arrays)  # the same values with NumPy (the call would cost more)
            if out is None:
                return result
            out[...] = result
            return out
        fresh = out is None
        if fresh:
            out = np.empty(shape, self.op.dtypes[-1])
        kinds, target, operands = _operands(arrays, shape, out, fresh)
        key = (kinds, target.ndim)
        kernel = self._dispatch.get(key)
        if kernel is None:
            kernel = self._dispatch[key] = KERNELS.get(self.op, *key)
        kernel(*operands, target)
        return out


def _broadcast_shape(shapes: list[tuple]) -> tuple:
    """NumPy's broadcast shape, without ``np.broadcast_shapes``'s cost in the common cases."""
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    big = [s for s in shapes if s != ()]
    if all(s == big[0] for s in big):
        return big[0]
    return np.broadcast_shapes(*shapes)


def _operands(arrays: Sequence[np.ndarray], shape: tuple, out: np.ndarray, fresh: bool):
    """(layout kinds, the array the kernel writes, its operands): one flat loop where every input is
    flat or one element and ``out`` is C-contiguous, else a loop over broadcast views of ``shape``.
    A ``fresh`` ``out`` overlaps no input."""
    kinds = _layout(arrays, shape)
    if out.flags.c_contiguous and "b" not in kinds:
        target = out.reshape(-1)
        operands = [a.reshape(-1)[0] if kind == "s" else a.reshape(-1) for a, kind in zip(arrays, kinds)]
    else:
        kinds = tuple("s" if kind == "s" else "b" for kind in kinds)
        target = out
        operands = [a.reshape(-1)[0] if kind == "s" else np.broadcast_to(a, shape) for a, kind in zip(arrays, kinds)]
    if fresh:
        return kinds, target, operands
    return kinds, target, [a if kind == "s" else _unaliased(a, target) for a, kind in zip(operands, kinds)]


def _unaliased(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a``, or a copy of it where it overlaps ``out`` other than element for element (a transposed view)."""
    if not np.may_share_memory(a, out):
        return a
    if (a.__array_interface__["data"][0] == out.__array_interface__["data"][0] and a.strides == out.strides
            and a.shape == out.shape):
        return a  # element i is read before element i is written
    return a.copy()


def kernel_graph(roots: Sequence[Tensor]) -> list[Tensor]:
    """``roots`` with each group of compilable nodes replaced by one ``fused`` node carrying its kernel.

    The plan compiler lowers such a node as it lowers a ufunc, ``kernel(*arrays, out=buffer)``
    (a ``Fused`` op's ``lowering()`` is its kernel), instead of expanding it into steps.
    """
    require_numba()
    memo: dict[int, Tensor] = {}
    fused = fuse_for_kernels(list(roots))
    for node in toposort(fused):
        inputs = [memo.get(id(p), p) for p in node.inputs]
        op = node.primitive
        if isinstance(op, Fused) and op.kernel is None and node.shape != () and _fused_compiles(node):
            memo[id(node)] = Tensor(op.with_kernel(FusedKernel(op)), inputs, node.shape, node.dtype,
                                    name=node.name, site=node.site, is_gradient=node.is_gradient)
        elif any(a is not b for a, b in zip(inputs, node.inputs)):
            memo[id(node)] = Tensor(op, inputs, node.shape, node.dtype, name=node.name, site=node.site,
                                    is_gradient=node.is_gradient)
    return [memo.get(id(t), t) for t in fused]
