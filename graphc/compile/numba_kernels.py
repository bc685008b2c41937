"""Fused element-wise kernels compiled with numba: the optional ``backend="numba"``.

A chain of element-wise steps evaluated with NumPy ufuncs streams every
intermediate through memory once more, even with ``out=``. A compiled kernel
reads each input element once, keeps the intermediates in registers and
writes the result once: one pass over memory.

**Identical results.** A kernel only ever contains steps whose compiled form
is the very same IEEE operation as NumPy's ufunc, so results are bit-identical
to the NumPy backend's:

* ops with a ``scalar_expr`` (``+ - * /``, negation, square, maximum, minimum,
  comparisons, ``where``) or one in :data:`KERNEL_EXPRESSIONS` (ReLU, a mask's
  cast to a float): the expression on scalars of the step's dtype, and
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

**Where it pays.** A kernel call costs about 2 us more than a ufunc's (the
call's bookkeeping, numba's dispatcher; about 1 us where code generation knows the
shapes and specializes the call, ``FusedKernel.specialized``): a fused node of fewer than
:data:`MIN_SMALL_STEPS` steps known to be smaller than
:data:`MIN_KERNEL_ELEMENTS` is expanded into ordinary NumPy steps, and one whose
size is known only at run time runs its steps with NumPy when that call is
small (the same values); longer chains run their kernel at any size. A ReLU's
mask ``x > 0`` is read from the ReLU (``_relu_masks``), so that ``relu(x @ W +
b)`` and the gradient ``g * (relu > 0)`` are one kernel each. An outer product
(a matmul contracting a static axis of size 1, a batch of one's weight
gradient) is computed as ``a * b + 0.0``, what BLAS returns entry for entry, so
that it joins the kernel of the update that reads it: ``W - lr * (x.T @ dz + wd
* W)`` is one pass over ``W``. Each kernel is compiled once per process, at its first call, and
cached by the fused op's structural key (a ``Fused`` op compares by its steps)
and the inputs' layout.

numba is imported only when a kernel is first built (:func:`require_numba`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import numpy as np

from graphc.op import Constant, constant
from graphc.ops import elementwise as ew
from graphc.ops.linalg import Matmul
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

#: below this many elements a fused node of fewer than ``MIN_SMALL_STEPS`` steps runs its steps with
#: NumPy (a kernel call costs about 2 us more than a ufunc's; a NumPy step on a small array about 1 us)
MIN_KERNEL_ELEMENTS = 8192
#: a fused node of this many steps or more runs its kernel at any size (it costs less than the NumPy calls)
MIN_SMALL_STEPS = 3

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

#: ops with no ``scalar_expr`` of their own that a kernel computes exactly: ReLU as ``np.maximum(x, 0)``
#: (NaN kept, -0.0 gives +0.0), and a cast, compiled only from a bool (a mask) to a float, as 0.0 or 1.0
KERNEL_EXPRESSIONS: dict[type, str] = {
    ew.Relu: "({0} if {0} > 0 or {0} != {0} else 0.0)",
    ew.Cast: "{0}",
}


def step_expression(op) -> str | None:
    """The scalar expression compiling ``op`` exactly (``"{0} + {1}"``), or None: it stays a NumPy step."""
    expression = getattr(op, "scalar_expr", None) or KERNEL_EXPRESSIONS.get(type(op))
    if expression is not None:
        return expression
    lowering = op.lowering()
    return EXACT_UFUNCS.get(lowering) if lowering is not None else None


def _types_compile(op, result: np.dtype, operands: Sequence[np.dtype]) -> bool:
    """One float dtype among the operands; the result is that dtype or a bool; other operands bools.
    A cast: from a bool to a float."""
    if type(op) is ew.Cast:
        return list(operands) == [_BOOL] and result in _FLOATS
    floats = {d for d in operands if d != _BOOL}
    if len(floats) != 1 or any(d != _BOOL and d not in _FLOATS for d in operands):
        return False
    return result == _BOOL or result == next(iter(floats))


def compilable(node: Tensor) -> bool:
    """A node the numba backend may put into a kernel (see the module docstring)."""
    if not fusable(node) or node.shape == () or step_expression(node.primitive) is None:
        return False
    return _types_compile(node.primitive, node.dtype, [p.dtype for p in node.inputs])


def _fused_compiles(node: Tensor) -> bool:
    """Every step of the fused ``node`` compiles (also true of a fused node the user's pipeline made)."""
    op = node.primitive
    dtypes = [p.dtype for p in node.inputs] + [np.dtype(d) for d in op.dtypes]
    return len(node.inputs) == op.n_inputs and all(
        step_expression(step) is not None
        and _types_compile(step, dtypes[op.n_inputs + k], [dtypes[a] for a in args])
        for k, (step, args) in enumerate(op.steps))


def fuse_for_kernels(outputs: list[Tensor]) -> list[Tensor]:
    """``fuse`` restricted to compilable nodes: each group of two or more becomes one ``fused`` node."""
    return fuse(outputs, predicate=compilable)


# ---- kernels ------------------------------------------------------------------------------------

def _indexes(shapes: Sequence[tuple], given: Sequence[bool], ndim: int) -> tuple:
    """Per input, how the kernel reads it: None where it is ``out`` itself (read from ``out``), else
    one index per axis of the input, ``"0"`` along a broadcast (size-1) axis and ``"i<d>"`` (the
    output's axis ``d``) elsewhere: NumPy's broadcasting, decided from the shapes alone."""
    indexes = []
    for shape, same in zip(shapes, given):
        lead = ndim - len(shape)
        indexes.append(None if same else tuple("0" if n == 1 else f"i{lead + j}" for j, n in enumerate(shape)))
    return tuple(indexes)


def kernel_source(op: Fused, indexes: Sequence[tuple | None], ndim: int) -> str:
    """The Python source of ``_kernel(x0, ..., out)`` for ``op`` and the inputs' ``indexes`` (see
    ``_indexes``): ``ndim`` nested loops over the output, the last one innermost (over C-contiguous
    arrays LLVM vectorizes it; numba compiles one version per layout, so any strides are correct).

    Each input is read in the outermost loop its index depends on (a scalar before the loops, a
    column once per row): a broadcast input never overlaps ``out`` (a caller copies such an input
    first), so reading it early reads the same values. An input that is ``out`` itself (index None) is
    read from ``out`` and not passed, since LLVM vectorizes a loop only where it can rule out that two
    arrays overlap, which ``out`` and an input aliasing it fail (measured: about 1.5x slower). Each
    step's value is converted to its dtype (exact: the expression already has that type; it pins the
    type of a literal).
    """
    names = [f"x{a}" for a, index in enumerate(indexes) if index is not None]
    full = ", ".join(f"i{d}" for d in range(ndim))
    reads: dict[int, list[str]] = {}  # loop depth -> the inputs read there
    for a, index in enumerate(indexes):
        if index is None:
            depth, read = ndim, f"out[{full}]"
        else:
            depth = max([int(i[1:]) + 1 for i in index if i != "0"], default=0)
            read = f"x{a}[{', '.join(index) if index else '()'}]"
        reads.setdefault(depth, []).append(f"a{a} = {read}")
    values = [f"a{a}" for a in range(op.n_inputs)]
    body = []
    for k, (step, args) in enumerate(op.steps):
        expression = step_expression(step).format(*(values[a] for a in args))
        body.append(f"s{k} = _t{k}({expression})")
        values.append(f"s{k}")
    body.append(f"out[{full}] = s{len(op.steps) - 1}")
    lines = [f"def _kernel({', '.join([*names, 'out'])}):"]
    indent = "    "
    lines += [indent + line for line in reads.get(0, ())]
    for d in range(ndim):
        lines.append(f"{indent}for i{d} in range(out.shape[{d}]):")
        indent += "    "
        lines += [indent + line for line in reads.get(d + 1, ())]
    lines += [indent + line for line in body]
    return "\n".join(lines) + "\n"


class Kernels:
    """The compiled kernels of this process, by (fused op, inputs' indexes, rank). Thread-safe."""

    def __init__(self) -> None:
        self._compiled: dict[tuple, Callable] = {}
        self._lock = threading.Lock()

    def get(self, op: Fused, indexes: tuple, ndim: int) -> Callable:
        key = (op, indexes, ndim)
        function = self._compiled.get(key)
        if function is None:
            with self._lock:
                function = self._compiled.get(key)
                if function is None:
                    function = self._compiled[key] = _compile(op, indexes, ndim)
        return function

    def __len__(self) -> int:
        return len(self._compiled)


def _compile(op: Fused, indexes: tuple, ndim: int) -> Callable:
    numba = require_numba()
    namespace: dict[str, object] = {"np": np}
    for k, dtype in enumerate(op.dtypes):
        namespace[f"_t{k}"] = np.dtype(dtype).type
    exec(compile(kernel_source(op, indexes, ndim), f"<graphc numba kernel {op.describe_steps()}>", "exec"),
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

    __slots__ = ("op", "__name__", "_calls")

    def __init__(self, op: Fused) -> None:
        self.op = op
        self.__name__ = "fused_kernel"
        #: (per input its shape, or None where it is ``out``) -> (result shape, compiled kernel or None for a
        #: small result, the positions of the inputs passed, those of them a given ``out`` could
        #: overlap): what a call of those inputs does, decided once (np.broadcast_shapes alone costs
        #: several microseconds); the kernel is this node's share of ``KERNELS``, found without hashing
        #: the op at every call
        self._calls: dict[tuple, tuple] = {}

    def __call__(self, *arrays, out: np.ndarray | None = None):
        arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in arrays]
        key = tuple([None if a is out else a.shape for a in arrays])  # (None: the input is ``out``)
        call = self._calls.get(key)
        if call is None:
            call = self._decide(arrays, key, out)
        shape, kernel, passed, checked = call
        if kernel is None:
            result = self.op.impl(*arrays)  # the same values with NumPy (the call would cost more)
            if out is None:
                return result
            out[...] = result
            return out
        if out is None:
            for k in checked if len(shape) > 1 else ():  # (a loop: a comprehension costs 0.2 us more)
                if not arrays[k].flags.c_contiguous:
                    # NumPy's steps, for NumPy's layout of the result (its ufuncs follow an input's order:
                    # Fortran for a Fortran feed): a matmul or a reduction of it sums in that order
                    return self.op.impl(*arrays)
            out = np.empty(shape, self.op.dtypes[-1])
        elif not all([_separate(arrays[k], out) for k in checked]):
            return self._overlapping(arrays, out)
        kernel(*[arrays[k] for k in passed], out)
        return out

    def specialized(self, shapes: Sequence[tuple], outs: Sequence[bool], given_out: bool) -> Callable:
        """This call at inputs of the static ``shapes`` (``outs``: which inputs are the very array given as
        ``out``; ``given_out``: whether ``out`` is given), as code generation knows them: a function of
        the same arguments doing what ``__call__`` decides for them without deciding it again per call
        (the shapes' key, its lookup, the list of the inputs passed: 1.2-1.5 of a 2.4-3.4 us call, measured). It checks
        what only the arrays tell (layouts, memory shared with ``out``) and hands anything else to
        ``__call__``. ``self`` where a size is unknown or the call runs NumPy's steps."""
        if any(None in shape for shape in shapes):
            return self
        stubs = [SimpleNamespace(shape=tuple(shape), size=math.prod(shape)) for shape in shapes]
        key = tuple([None if same else tuple(shape) for shape, same in zip(shapes, outs)])
        out_stub = next((stub for stub, same in zip(stubs, outs) if same), None)
        shape, kernel, passed, checked = self._decide(stubs, key, out_stub)
        if kernel is None:
            return self
        return _specialized_call(self, kernel, shape, [len(s) == 0 for s in shapes], passed, checked, given_out)

    def _decide(self, arrays: list[np.ndarray], key: tuple, out: np.ndarray | None) -> tuple:
        """The call of ``key`` (per input its shape, or None where it is ``out``)."""
        shapes = [a.shape for a in arrays]
        shape = out.shape if None in key else _broadcast_shape(shapes)
        if len(self._calls) >= 64:  # ever new shapes (sizes unknown before the call): forget the old ones
            self._calls.clear()
        if not shape or (math.prod(shape) < MIN_KERNEL_ELEMENTS and len(self.op.steps) < MIN_SMALL_STEPS):
            call = self._calls[key] = (shape, None, (), ())
            return call
        indexes = _indexes(shapes, [k is None for k in key], len(shape))
        passed = tuple(k for k, index in enumerate(indexes) if index is not None)
        checked = tuple(k for k in passed if arrays[k].size != 1)  # (one element is read before any write)
        call = self._calls[key] = (shape, KERNELS.get(self.op, indexes, len(shape)), passed, checked)
        return call

    def _overlapping(self, arrays: list[np.ndarray], out: np.ndarray) -> np.ndarray:
        """The call where an input other than ``out`` itself may share ``out``'s memory: one that is
        ``out`` element for element is read from ``out``; one overlapping it otherwise is copied."""
        same = [a is out or (a.size != 1 and _same_elements(a, out)) for a in arrays]
        operands = [out if s else a if a.size == 1 else _unaliased(a, out) for a, s in zip(arrays, same)]
        key = tuple([None if a is out else a.shape for a in operands])
        call = self._calls.get(key) or self._decide(operands, key, out)
        _, kernel, passed, _ = call
        if kernel is None:  # (a key holding None was decided at another call's size of ``out``: small)
            out[...] = self.op.impl(*arrays)
            return out
        kernel(*[operands[k] for k in passed], out)
        return out


def _specialized_call(fused: FusedKernel, kernel: Callable, shape: tuple, scalars: list[bool], passed: tuple,
                      checked: tuple, given_out: bool) -> Callable:
    """``fused``'s call at one static key, generated (see ``FusedKernel.specialized``): the same checks as
    ``__call__`` on the positions they apply to, each failing one handing the call to ``fused`` itself."""
    names = [f"a{k}" for k in range(len(scalars))]
    arguments = ", ".join(names)
    lines = [f"def call({arguments}, out=None):"]
    lines += [f"    if type(a{k}) is not _nd: a{k} = _asarray(a{k})" for k in passed if scalars[k]]
    if given_out:
        if checked:
            separate = " and ".join(f"_separate(a{k}, out)" for k in checked)
            lines.append(f"    if out is None or not ({separate}): return _general({arguments}, out=out)")
        else:
            lines.append(f"    if out is None: return _general({arguments})")
    else:
        lines.append(f"    if out is not None: return _general({arguments}, out=out)")
        if len(shape) > 1:
            lines += [f"    if not a{k}.flags.c_contiguous: return _general({arguments})" for k in checked]
        lines.append("    out = _empty(_shape, _dtype)")
    lines += [f"    _kernel({', '.join([*(names[k] for k in passed), 'out'])})", "    return out"]
    namespace = {"_nd": np.ndarray, "_asarray": np.asarray, "_general": fused, "_separate": _separate,
                 "_empty": np.empty, "_shape": shape, "_dtype": fused.op.dtypes[-1], "_kernel": kernel}
    exec(compile("\n".join(lines) + "\n", "<graphc kernel call>", "exec"), namespace)  # noqa: S102 - generated here
    return namespace["call"]


def _broadcast_shape(shapes: list[tuple]) -> tuple:
    """NumPy's broadcast shape, without ``np.broadcast_shapes``'s cost in the common cases."""
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    big = [s for s in shapes if s != ()]
    if all(s == big[0] for s in big):
        return big[0]
    return np.broadcast_shapes(*shapes)


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
    weight gradient ``x.T @ dz``), with a known result size."""
    if type(node.primitive) is not Matmul:
        return False
    a, b = node.inputs
    size = _static_size(node.shape)
    # both sizes of the contracted axis known (b's unknown could be anything the broadcast would accept)
    return (a.ndim == 2 and b.ndim == 2 and a.shape[1] == 1 and b.shape[0] == 1 and a.dtype == b.dtype
            and a.dtype in _FLOATS and size is not None)


def _as_product(node: Tensor, inputs: list[Tensor]) -> Tensor:
    """``a * b + 0.0`` for the outer product ``node``: bit for bit what ``np.matmul`` (and ``np.einsum``)
    return, one product per entry summed from +0.0 (so -0.0 becomes +0.0), and two element-wise steps
    that join the kernel of the update reading them (``W - lr * (x.T @ dz + wd * W)`` in one pass)."""
    a, b = inputs
    product = Tensor(ew.Mul(), (a, b), node.shape, node.dtype, site=node.site, is_gradient=node.is_gradient)
    zero = constant(np.zeros((), node.dtype))
    return Tensor(ew.Add(), (product, zero), node.shape, node.dtype, name=node.name, site=node.site,
                  is_gradient=node.is_gradient)


def _product_form(node: Tensor, inputs: list[Tensor]) -> Tensor | None:
    return _as_product(node, inputs) if _outer_product(node) else None


def replace_nodes(roots: list[Tensor], replace: Callable[[Tensor, list[Tensor]], Tensor | None]) -> list[Tensor]:
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
    if not (isinstance(op, Fused) and op.kernel is None and node.shape != () and _fused_compiles(node)):
        return None
    size = _static_size(node.shape)
    if size is not None and size < MIN_KERNEL_ELEMENTS and len(op.steps) < MIN_SMALL_STEPS:
        return None  # small and short: lowering expands it into its NumPy steps, which cost less
    return Tensor(op.with_kernel(FusedKernel(op)), inputs, node.shape, node.dtype, name=node.name,
                  site=node.site, is_gradient=node.is_gradient)


def _is_zero(node: Tensor) -> bool:
    return isinstance(node.primitive, Constant) and node.shape == () and bool(node.primitive.value == 0)


def _relu_masks(roots: list[Tensor]) -> list[Tensor]:
    """``roots`` with each ``x > 0`` of a float ``x`` that a ReLU reads computed as ``relu(x) > 0``: the
    same mask for every ``x`` (NaN included), as the lowering rule ``relu_mask`` does for the NumPy
    backend. Here it lets the pre-activation be read by the ReLU alone, so that ``relu(x @ W + b)``
    is one kernel, and ReLU's gradient ``g * cast(relu(x) > 0)`` another."""
    relu_of = {id(n.inputs[0]): n for n in toposort(roots) if type(n.primitive) is ew.Relu}

    def replace(node: Tensor, inputs: list[Tensor]) -> Tensor | None:
        relu = relu_of.get(id(node.inputs[0])) if type(node.primitive) is ew.Greater else None
        if relu is None or inputs[0] is not node.inputs[0] or relu.dtype.kind != "f" or not _is_zero(inputs[1]):
            return None
        if relu.shape != node.inputs[0].shape or relu.dtype != node.inputs[0].dtype:
            return None
        return Tensor(node.primitive, (relu, inputs[1]), node.shape, node.dtype, name=node.name, site=node.site,
                      is_gradient=node.is_gradient)

    return replace_nodes(roots, replace)


def kernel_graph(roots: Sequence[Tensor]) -> list[Tensor]:
    """``roots`` with each group of compilable nodes replaced by one ``fused`` node carrying its kernel.

    A ReLU's mask reads the ReLU (``_relu_masks``) and outer products that a kernel computes exactly
    (``_outer_product``) become element-wise steps first, so that they join their consumers' kernel. The
    plan compiler lowers a kernel-fused node as it
    lowers a ufunc, ``kernel(*arrays, out=buffer)`` (a ``Fused`` op's ``lowering()`` is its kernel),
    instead of expanding it into steps.
    """
    require_numba()
    roots = replace_nodes(_relu_masks(list(roots)), _product_form)
    return replace_nodes(fuse_for_kernels(roots), _with_kernel)
