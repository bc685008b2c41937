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
Two differences remain: a kernel does not emit NumPy's floating-point
``RuntimeWarning``s, and where a step makes a NaN from two NaN operands
(``NaN * NaN``) its sign may be the other operand's (LLVM may swap the operands
of a commutative operation; IEEE 754 leaves that sign unspecified).

**Where it pays.** On large arrays: a kernel call has a fixed cost of a few
microseconds (numba's dispatcher); a node whose size is known to be smaller
than :data:`MIN_KERNEL_ELEMENTS` stays an ordinary NumPy step, and a fused
node whose size is known only at run time runs its steps with NumPy when that
call is small (the same values). An outer product (a matmul contracting a
static axis of size 1, a batch of one's weight gradient) is computed as
``a * b + 0.0``, what BLAS returns entry for entry, so that it joins the kernel
of the update that reads it: ``W - lr * (x.T @ dz + wd * W)`` is one pass over
``W``. Each kernel is compiled once per process, at its first call, and
cached by the fused op's structural key (a ``Fused`` op compares by its steps)
and the inputs' layout.

numba is imported only when a kernel is first built (:func:`require_numba`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np

from graphc.op import constant, op_dataclass
from graphc.ops import elementwise as ew
from graphc.ops.linalg import Matmul
from graphc.ops.shape import Transpose
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
    size = _static_size(node.shape)
    if size is not None and size < MIN_KERNEL_ELEMENTS:
        return False  # known to be small: it stays a NumPy step (a fused node that small would run in Python)
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
    """Per input: "s" (one element, passed as a scalar), "f" (full: the output's shape, C-contiguous),
    for a 2-D output "r" (a contiguous row, ``(n,)`` or ``(1, n)``, the same in every row) and "c" (a
    contiguous column ``(m, 1)``, one value per row), or "b" (anything else: a broadcast view)."""
    kinds = []
    two_d = len(shape) == 2
    for a in arrays:
        if a.size == 1:
            kinds.append("s")
        elif a.shape == shape and a.flags.c_contiguous:
            kinds.append("f")
        elif two_d and a.flags.c_contiguous and a.size == shape[1] and a.shape[-1] == shape[1] and a.ndim <= 2:
            kinds.append("r")
        elif two_d and a.shape == (shape[0], 1) and a.flags.c_contiguous:
            kinds.append("c")
        else:
            kinds.append("b")
    return tuple(kinds)


def kernel_source(op: Fused, kinds: Sequence[str], ndim: int) -> str:
    """The Python source of ``_kernel(x0, ..., out)`` for ``op`` and the inputs' layout ``kinds``.

    Three loop forms, each over C-contiguous arrays where it can, so that LLVM vectorizes the inner
    loop: with every input full or scalar, one loop over the flat ``out`` (``ndim`` 1); with rows
    and columns of a 2-D output ("r", "c"; ``ndim`` 2), a loop over rows (a column's value read once
    per row) around a loop over the columns; otherwise (a "b" input) ``ndim`` nested loops over
    broadcast views of the output's shape. An input of kind "o" is ``out`` itself (the result written
    over it element for element): it is read from ``out`` and not passed, since LLVM vectorizes a loop
    only where it can rule out that two arrays overlap, which ``out`` and an input aliasing it fail
    (measured: about 1.5x slower). Each step's value is converted to its dtype (exact: the
    expression already has that type; it pins the type of a literal).
    """
    names = [f"x{a}" for a, kind in enumerate(kinds) if kind != "o"]
    rows = "b" not in kinds and ndim == 2
    index = ", ".join(f"i{d}" for d in range(ndim))
    where = {"s": None, "f": index, "o": index, "b": index, "r": f"i{ndim - 1}", "c": "i0"}
    lines = [f"def _kernel({', '.join(names)}, out):"]
    hoisted = [f"a{a} = x{a}[i0]" for a, kind in enumerate(kinds) if rows and kind == "c"]
    body = [f"a{a} = x{a}" if where[kind] is None else f"a{a} = out[{index}]" if kind == "o"
            else f"a{a} = x{a}[{where[kind]}]" for a, kind in enumerate(kinds) if not (rows and kind == "c")]
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
        if d == 0:
            lines += [indent + line for line in hoisted]
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
    # (LLVM then neither reassociates nor contracts a * b + c into a fused multiply-add)
    return numba.njit(nogil=True, error_model="numpy", fastmath=False)(namespace["_kernel"])


#: the process's kernel cache
KERNELS = Kernels()


class FusedKernel:
    """The callable a plan runs for a kernel-fused node: ``f(*arrays, out=None)`` like a ufunc.

    Writes the whole result into ``out`` (any array of the result's shape and dtype, which may be
    one of the inputs: each element is read before it is written) or into a fresh array.
    """

    __slots__ = ("op", "__name__", "_dispatch", "_layouts")

    def __init__(self, op: Fused) -> None:
        self.op = op
        self.__name__ = "fused_kernel"
        #: (layout kinds, rank) -> compiled kernel: this node's share of ``KERNELS``, found without
        #: hashing the op at every call
        self._dispatch: dict[tuple, Callable] = {}
        #: (the inputs' shapes, their C-contiguity) -> (result shape, kinds or None for a small
        #: result): what a call of those inputs does, decided once (np.broadcast_shapes alone costs
        #: several microseconds)
        self._layouts: dict[tuple, tuple] = {}

    def __call__(self, *arrays, out: np.ndarray | None = None):
        arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in arrays]
        key = (tuple([a.shape for a in arrays]), tuple([a.flags.c_contiguous for a in arrays]))
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._decide(arrays, key)
        shape, kinds = layout
        if kinds is None:
            result = self.op.impl(*arrays)  # the same values with NumPy (the call would cost more)
            if out is None:
                return result
            out[...] = result
            return out
        fresh = out is None
        if fresh:
            out = np.empty(shape, self.op.dtypes[-1])
        kinds, target, operands = _operands(arrays, kinds, shape, out, fresh)
        dispatch = (kinds, target.ndim)
        kernel = self._dispatch.get(dispatch)
        if kernel is None:
            kernel = self._dispatch[dispatch] = KERNELS.get(self.op, *dispatch)
        kernel(*operands, target)
        return out

    def _decide(self, arrays: list[np.ndarray], key: tuple) -> tuple:
        shape = _broadcast_shape(list(key[0]))
        small = not shape or math.prod(shape) < MIN_KERNEL_ELEMENTS
        if len(self._layouts) >= 64:  # ever new shapes (sizes unknown before the call): forget the old ones
            self._layouts.clear()
        layout = self._layouts[key] = (shape, None if small else _layout(arrays, shape))
        return layout


def _broadcast_shape(shapes: list[tuple]) -> tuple:
    """NumPy's broadcast shape, without ``np.broadcast_shapes``'s cost in the common cases."""
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    big = [s for s in shapes if s != ()]
    if all(s == big[0] for s in big):
        return big[0]
    return np.broadcast_shapes(*shapes)


def _operands(arrays: Sequence[np.ndarray], kinds: tuple[str, ...], shape: tuple, out: np.ndarray, fresh: bool):
    """(layout kinds, the array the kernel writes, its operands): the flat or the row loop where every
    input has such a layout (``kinds``) and ``out`` is C-contiguous (see ``kernel_source``), else a loop
    over broadcast views of ``shape``. A ``fresh`` ``out`` overlaps no input."""
    # (a size-1 input's one element as ``a.flat[0]``: the same NumPy scalar as ``a.reshape(-1)[0]``, faster)
    if not out.flags.c_contiguous or "b" in kinds:
        kinds = tuple("s" if kind == "s" else "b" for kind in kinds)
        target = out
        operands = [a.flat[0] if kind == "s" else np.broadcast_to(a, shape) for a, kind in zip(arrays, kinds)]
    elif "r" in kinds or "c" in kinds:
        target = out  # 2-D: full inputs as they are, rows and columns as 1-D arrays
        operands = [a if kind == "f" else a.flat[0] if kind == "s" else a.reshape(-1)
                    for a, kind in zip(arrays, kinds)]
    else:
        target = out.reshape(-1)
        operands = [a.flat[0] if kind == "s" else a.reshape(-1) for a, kind in zip(arrays, kinds)]
    if fresh:
        return kinds, target, operands
    return _against_out(kinds, target, operands, [a is out for a in arrays])


def _against_out(kinds: tuple[str, ...], target: np.ndarray, operands: list, given: list[bool]) -> tuple:
    """(kinds, target, operands) for a given ``out``: an input that is ``out`` element for element is
    read from ``out`` itself (kind "o", see ``kernel_source``); one overlapping it otherwise is copied.
    ``given[k]``: input ``k`` is the very array given as ``out`` (as a plan writing over an input passes
    it), known without comparing addresses. (One pass, each input's quick test made once: this runs at
    every call of a kernel, and each Python-level test costs a fraction of a microsecond.)"""
    if not any(given) and all(kind == "s" or _separate(a, target) for a, kind in zip(operands, kinds)):
        return kinds, target, operands  # the common case: no input shares out's memory
    new_kinds, kept = [], []
    for a, kind, same in zip(operands, kinds, given):
        if kind != "s" and kind != "b" and (same or _same_elements(a, target)):
            new_kinds.append("o")
            continue
        new_kinds.append(kind)
        kept.append(a if kind == "s" else _unaliased(a, target))
    return tuple(new_kinds), target, kept


def _same_elements(a: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``a`` is ``out``'s memory element for element (the same start, shape and strides)."""
    if a.shape != out.shape or a.strides != out.strides:
        return False
    if _separate(a, out):
        return False  # (the quick answer: reading an address costs about 1 us)
    return a.__array_interface__["data"][0] == out.__array_interface__["data"][0]


def _separate(a: np.ndarray, out: np.ndarray) -> bool:
    """Views of two different arrays that own their memory (so they cannot overlap)."""
    mine = a if a.base is None else a.base
    theirs = out if out.base is None else out.base
    return (mine is not theirs and type(mine) is np.ndarray and type(theirs) is np.ndarray and mine.flags.owndata
            and theirs.flags.owndata)


def _unaliased(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a``, or a copy of it where it overlaps ``out`` other than element for element (a transposed view,
    a row or column of ``out``)."""
    if _separate(a, out):
        return a  # (the quick answer of the common case)
    if not np.may_share_memory(a, out):
        return a
    if _same_elements(a, out):
        return a  # element i is read before element i is written
    return a.copy()


# ---- the graph ------------------------------------------------------------------------------------

def _static_size(shape: tuple) -> int | None:
    return None if None in shape else math.prod(shape)


def _outer_product(node: Tensor) -> bool:
    """A matmul of 2-D float operands of one dtype contracting a static axis of size 1 (a batch of one's
    weight gradient ``x.T @ dz``), with a known result size large enough for a kernel."""
    if type(node.primitive) is not Matmul:
        return False
    a, b = node.inputs
    size = _static_size(node.shape)
    # both sizes of the contracted axis known (b's unknown could be anything the broadcast would accept)
    return (a.ndim == 2 and b.ndim == 2 and a.shape[1] == 1 and b.shape[0] == 1 and a.dtype == b.dtype
            and a.dtype in _FLOATS and size is not None and size >= MIN_KERNEL_ELEMENTS)


def _as_product(node: Tensor, inputs: list[Tensor]) -> Tensor:
    """``a * b + 0.0`` for the outer product ``node``: bit for bit what ``np.matmul`` (and ``np.einsum``)
    return, one product per entry summed from +0.0 (so -0.0 becomes +0.0), and two element-wise steps
    that join the kernel of the update reading them (``W - lr * (x.T @ dz + wd * W)`` in one pass)."""
    a, b = inputs
    product = Tensor(ew.Mul(), (a, b), node.shape, node.dtype, site=node.site, is_gradient=node.is_gradient)
    zero = constant(np.zeros((), node.dtype))
    return Tensor(ew.Add(), (product, zero), node.shape, node.dtype, name=node.name, site=node.site,
                  is_gradient=node.is_gradient)


#: ``a @ w.T`` of float32 is computed as ``(w @ a.T).T`` where ``a`` has this many rows or fewer (and at
#: least 2: one row is a matrix-vector product either way) and ``w`` at least ``SWAP_MIN_SIZE`` rows
#: and columns (the sizes measured to gain)
SWAP_MAX_ROWS = 64
SWAP_MIN_SIZE = 256


def _swapped_product(node: Tensor) -> bool:
    """``a @ w.T`` (``w.T`` a transpose node) of static 2-D float32 operands where ``a`` has few rows and
    ``w`` many: a layer's input gradient ``dz @ W.T``, computed by ``SwappedMatmul``.

    OpenBLAS's sgemm takes 0.5-0.8x the time for ``(w @ a.T).T`` on such shapes (from 8 to 64 rows of
    ``a``, ``w`` 256x256 to 1024x1024; 0.68x at 32 rows, ``W`` 256x256, on this machine's OpenBLAS 0.3.31,
    SkylakeX kernels); float64's dgemm gains nothing, more rows of ``a`` than of ``w`` lose, and a
    contracted axis of 10 gains nothing to pay for the result's copy into C order.
    """
    if type(node.primitive) is not Matmul:
        return False
    a, b = node.inputs
    if type(b.primitive) is not Transpose or a.ndim != 2 or b.ndim != 2:
        return False
    if a.dtype != np.float32 or b.dtype != a.dtype or None in a.shape or None in b.shape:
        return False
    return 2 <= a.shape[0] <= SWAP_MAX_ROWS and min(b.shape) >= SWAP_MIN_SIZE


@op_dataclass
class SwappedMatmul(Matmul):
    """``a @ b`` of 2-D operands, computed as ``(b.T @ a.T).T`` when ``a`` is C- and ``b`` F-contiguous
    (``b`` the transpose of a C-contiguous ``w``), else as ``a @ b``.

    **The same values.** With those layouts NumPy calls the same BLAS routine both ways (OpenBLAS's
    column-major ``TN`` case, whose small-matrix test is symmetric in the two sizes that trade places),
    with the roles of the operands exchanged: each entry is the same products summed in the same order
    (one accumulator per entry, running over the contracted axis in blocks that depend on its length
    alone), so every entry that is not NaN has the same bits (tested on random inputs with signed
    zeros, infinities and NaNs). A NaN entry made from two NaN operands may carry the other one's sign
    and payload (the multiply's operands trade places), the difference the kernels already have (the
    module docstring). Other layouts could take another BLAS case (a small-matrix kernel summing in
    one block), so they are computed as ``a @ b``.
    """

    name = "matmul_swapped"

    def impl(self, a, b):
        if a.flags.c_contiguous and b.flags.f_contiguous:
            # C-contiguous, as np.matmul's result: a transposed result would take its readers to other
            # BLAS cases (x.T @ dz of a transposed dz gives other bits on this OpenBLAS: measured)
            return np.ascontiguousarray(np.matmul(b.T, a.T).T)
        return np.matmul(a, b)


def _product_form(node: Tensor, inputs: list[Tensor]) -> Tensor | None:
    if _outer_product(node):
        return _as_product(node, inputs)
    if _swapped_product(node):
        return Tensor(SwappedMatmul(), inputs, node.shape, node.dtype, name=node.name, site=node.site,
                      is_gradient=node.is_gradient)
    return None


def _rebuild(roots: list[Tensor], replace: Callable[[Tensor, list[Tensor]], Tensor | None]) -> list[Tensor]:
    """``roots`` with each node for which ``replace(node, new inputs)`` gives a tensor replaced by it (and
    its consumers rebuilt on the new inputs)."""
    memo: dict[int, Tensor] = {}
    for node in toposort(roots):
        inputs = [memo.get(id(p), p) for p in node.inputs]
        new = replace(node, inputs)
        if new is None and any(a is not b for a, b in zip(inputs, node.inputs)):
            new = Tensor(node.primitive, inputs, node.shape, node.dtype, name=node.name, site=node.site,
                         is_gradient=node.is_gradient)
        if new is not None:
            memo[id(node)] = new
    return [memo.get(id(t), t) for t in roots]


def _with_kernel(node: Tensor, inputs: list[Tensor]) -> Tensor | None:
    op = node.primitive
    if isinstance(op, Fused) and op.kernel is None and node.shape != () and _fused_compiles(node):
        return Tensor(op.with_kernel(FusedKernel(op)), inputs, node.shape, node.dtype, name=node.name,
                      site=node.site, is_gradient=node.is_gradient)
    return None


def kernel_graph(roots: Sequence[Tensor]) -> list[Tensor]:
    """``roots`` with each group of compilable nodes replaced by one ``fused`` node carrying its kernel.

    Outer products that a kernel computes exactly (``_outer_product``) become element-wise steps first,
    so that they join their consumers' kernel; a float32 ``dz @ W.T`` of few rows becomes a
    ``SwappedMatmul`` (``_swapped_product``). The plan compiler lowers a kernel-fused node as it
    lowers a ufunc, ``kernel(*arrays, out=buffer)`` (a ``Fused`` op's ``lowering()`` is its kernel),
    instead of expanding it into steps.
    """
    require_numba()
    roots = _rebuild(list(roots), _product_form)
    return _rebuild(fuse_for_kernels(roots), _with_kernel)
