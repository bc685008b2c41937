"""Linear algebra: matmul (NumPy rules), dot, outer, einsum."""

from __future__ import annotations

import string

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.op import Op, apply, as_tensor, op_dataclass
from graphc.ops.elementwise import cast, mul, ones_like
from graphc.ops.shape import expand_dims, reshape, reshape_like, squeeze, swap_last_axes
from graphc.tensor import Tensor
from graphc.types import broadcast_shapes, format_shape


def _unify_size(op: str, a, b, shapes) -> int | None:
    if a is None:
        return b
    if b is None or a == b:
        return a
    raise ShapeError(f"{op}: cannot contract shapes {' and '.join(format_shape(s) for s in shapes)} "
                     f"(sizes {a} and {b} differ)")


def _numeric_dtype(op: str, *dtypes) -> np.dtype:
    result = np.result_type(*dtypes)
    if result.kind not in "biuf":
        raise DTypeError(f"{op}: unsupported dtype {result}")
    return result


def _outer_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for a contraction of size 1 (see ``Matmul.kernel_for``)."""
    return np.einsum("...ik,...kj->...ij", a, b, out=out)


#: ``a @ b`` of float32 is computed as ``(b.T @ a.T).T`` (``_swapped_matmul``) where ``a`` has from 2 to this
#: many rows, ``b`` at least ``SWAP_MIN_SIZE`` rows and columns, and the product more than ``SWAP_MIN_WORK``
#: multiplications (the sizes measured to gain, below)
SWAP_MAX_ROWS = 64
SWAP_MIN_SIZE = 256
SWAP_MIN_WORK = 64 ** 3


def _swapped_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, computed as ``(b.T @ a.T).T`` when ``a`` is C- and ``b`` F-contiguous
    (``b`` the transpose of a C-contiguous ``w``: a layer's input gradient ``dz @ W.T``).

    **The same values.** With those layouts NumPy calls the same BLAS routine both ways (OpenBLAS's
    column-major ``TN`` case) with the roles of the operands exchanged: each entry is the same
    products summed in the same order (one accumulator per entry, running over the contracted axis in
    blocks that depend on its length alone), so every entry that is not NaN has the same bits (tested
    on random inputs with signed zeros, infinities and NaNs). A NaN entry made from two NaN operands
    may carry the other one's sign and payload (the multiply's operands trade places; IEEE 754 leaves
    that sign open). Other layouts could take another BLAS case, so they are computed as ``a @ b``.

    **Why.** OpenBLAS's sgemm takes 0.5-0.8x the time for ``(w @ a.T).T`` when ``a`` has few rows and
    ``w`` many (from 6 to 64 rows of ``a``, ``w`` 256x256 to 1024x1024; 0.68-0.79x at 32 rows, ``W``
    256x256, on this machine's OpenBLAS 0.3.31); below 64**3 multiplications (its small-matrix kernel)
    the copy into C order costs more than it gains (1.2x at 2-4 rows of 256), float64's dgemm gains
    nothing, and more rows of ``a`` than of ``w`` lose. The result is copied into C order (into ``out``),
    since a transposed result would take its readers to other BLAS cases (``x.T @ dz`` of a transposed
    ``dz`` gives other bits on this OpenBLAS: measured).
    """
    if a.flags.c_contiguous and b.flags.f_contiguous:
        swapped = np.matmul(b.T, a.T).T
        if out is None:
            return np.ascontiguousarray(swapped)
        np.copyto(out, swapped)
        return out
    return np.matmul(a, b, out=out)


def _swaps(a: Tensor, b: Tensor) -> bool:
    """``a @ b`` of static 2-D float32 operands where ``a`` has few rows and ``b`` is large (see
    ``_swapped_matmul``)."""
    if a.ndim != 2 or b.ndim != 2 or a.dtype != np.float32 or b.dtype != np.float32:
        return False
    if None in a.shape or None in b.shape:
        return False
    rows = a.shape[0]
    return (2 <= rows <= SWAP_MAX_ROWS and min(b.shape) >= SWAP_MIN_SIZE
            and rows * b.shape[0] * b.shape[1] > SWAP_MIN_WORK)


@op_dataclass
class Matmul(Op):
    """``a @ b`` with NumPy's rules: 1-D operands are promoted and squeezed, batches broadcast."""

    name = "matmul"

    def infer(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must be at least 1-D, got shapes "
                             f"{format_shape(a.shape)} and {format_shape(b.shape)}")
        a_shape = (1,) + a.shape if a.ndim == 1 else a.shape
        b_shape = b.shape + (1,) if b.ndim == 1 else b.shape
        _unify_size("matmul", a_shape[-1], b_shape[-2], (a.shape, b.shape))
        try:
            batch = broadcast_shapes("matmul", [a_shape[:-2], b_shape[:-2]])
        except ShapeError:
            raise ShapeError(f"matmul: the batch dimensions of shapes {format_shape(a.shape)} and "
                             f"{format_shape(b.shape)} cannot be broadcast together") from None
        shape = batch + (a_shape[-2],) * (a.ndim > 1) + (b_shape[-1],) * (b.ndim > 1)
        return shape, _numeric_dtype("matmul", a.dtype, b.dtype)

    def impl(self, a, b):
        return np.matmul(a, b)

    def kernel_for(self, a: Tensor, b: Tensor):
        """The function the compiler calls as ``f(a, b, out=buffer)`` for these operands.

        ``np.matmul``, except for floats contracting a static axis of size 1 (the outer product of a
        batch of one, as in a weight gradient ``x.T @ dz``): BLAS is about 3x slower there than
        ``np.einsum``, whose single product per entry is bit for bit what BLAS returns (+0.0 for a
        product of -0.0, as both sum from +0.0), and for float32 with few rows of ``a`` and a large ``b``,
        ``_swapped_matmul`` (OpenBLAS's faster case for the same bits)."""
        # b's contracted size must be known to be 1 as well: np.einsum would broadcast a b of more rows
        # against a's size 1 (summing them) where np.matmul raises
        if (a.ndim >= 2 and b.ndim >= 2 and a.shape[-1] == 1 and b.shape[-2] == 1 and a.dtype == b.dtype
                and a.dtype.kind == "f"):
            return _outer_matmul
        if _swaps(a, b):
            return _swapped_matmul
        return np.matmul

    def vjp(self, node, g):
        return self.vjp_needed(node, g, (0, 1))

    def vjp_needed(self, node, g, needed):
        a, b = node.inputs
        want_a, want_b = 0 in needed, 1 in needed  # (a first layer's input needs no cotangent)
        g2 = g
        if a.ndim == 1:
            g2 = expand_dims(g2, g2.ndim - (1 if b.ndim > 1 else 0))
        if b.ndim == 1:
            g2 = expand_dims(g2, g2.ndim)
        grad_a = grad_b = None
        if want_a:
            b2 = expand_dims(b, -1) if b.ndim == 1 else b
            grad_a = matmul(g2, swap_last_axes(b2))
            if a.ndim == 1:
                grad_a = squeeze(grad_a, grad_a.ndim - 2)
        if want_b:
            a2 = expand_dims(a, 0) if a.ndim == 1 else a
            grad_b = matmul(swap_last_axes(a2), g2)
            if b.ndim == 1:
                grad_b = squeeze(grad_b, grad_b.ndim - 1)
        return grad_a, grad_b


def matmul(a, b) -> Tensor:
    return apply(Matmul(), a, b)


@op_dataclass
class Dot(Op):
    """``np.dot``: contracts the last axis of ``a`` with the second-to-last of ``b``."""

    name = "dot"

    def infer(self, a, b):
        dtype = _numeric_dtype("dot", a.dtype, b.dtype)
        if a.ndim == 0 or b.ndim == 0:
            return broadcast_shapes("dot", [a.shape, b.shape]), dtype
        b_axis = -1 if b.ndim == 1 else -2
        _unify_size("dot", a.shape[-1], b.shape[b_axis], (a.shape, b.shape))
        shape = a.shape[:-1] + (b.shape[:-2] + b.shape[-1:] if b.ndim > 1 else ())
        return shape, dtype

    def impl(self, a, b):
        return np.asarray(np.dot(a, b))

    def subscripts(self, a: Tensor, b: Tensor) -> tuple[str, str, str]:
        letters = iter("abcdefghijklmnopqrstuvwxy")
        a_sub = "".join(next(letters) for _ in range(a.ndim - 1)) + "z"
        if b.ndim == 1:
            b_sub = "z"
            out = a_sub[:-1]
        else:
            b_lead = "".join(next(letters) for _ in range(b.ndim - 2))
            b_last = next(letters)
            b_sub = b_lead + "z" + b_last
            out = a_sub[:-1] + b_lead + b_last
        return a_sub, b_sub, out

    def vjp(self, node, g):
        a, b = node.inputs
        if a.ndim == 0 or b.ndim == 0:
            return mul(g, b), mul(g, a)
        a_sub, b_sub, out = self.subscripts(a, b)
        return einsum(f"{out},{b_sub}->{a_sub}", g, b), einsum(f"{a_sub},{out}->{b_sub}", a, g)


def dot(a, b) -> Tensor:
    return apply(Dot(), a, b)


@op_dataclass
class Outer(Op):
    """``np.outer``: the inputs are flattened."""

    name = "outer"

    def infer(self, a, b):
        return (a.size, b.size), _numeric_dtype("outer", a.dtype, b.dtype)

    def impl(self, a, b):
        return np.outer(a, b)

    def vjp(self, node, g):
        a, b = node.inputs
        flat_a, flat_b = reshape(a, (-1,)), reshape(b, (-1,))
        return reshape_like(matmul(g, flat_b), a), reshape_like(matmul(flat_a, g), b)


def outer(a, b) -> Tensor:
    return apply(Outer(), a, b)


# ---- einsum -------------------------------------------------------------------------------------

def _explicit_subscripts(subscripts: str, ranks: list[int]) -> tuple[list[str], str]:
    """Parse ``subscripts`` into explicit per-operand letters and output letters (no '...')."""
    text = subscripts.replace(" ", "")
    if "->" in text:
        inputs_text, output = text.split("->")
        explicit_output = True
    else:
        inputs_text, output, explicit_output = text, "", False
    inputs = inputs_text.split(",")
    if len(inputs) != len(ranks):
        raise ShapeError(f"einsum: {len(inputs)} operand subscripts for {len(ranks)} operands in {subscripts!r}")
    used = set(text) - set(".,->")
    for letter in used:
        if letter not in string.ascii_letters:
            raise ShapeError(f"einsum: invalid subscript {letter!r} in {subscripts!r}")
    spare = [c for c in string.ascii_letters if c not in used]
    ellipsis_ranks = []
    for sub, rank in zip(inputs, ranks):
        if "..." in sub:
            ellipsis_ranks.append(rank - len(sub.replace("...", "")))
        elif len(sub) != rank:
            raise ShapeError(f"einsum: subscripts {sub!r} do not match an operand of rank {rank}")
    width = max(ellipsis_ranks, default=0)
    if any(r < 0 for r in ellipsis_ranks):
        raise ShapeError(f"einsum: subscripts {subscripts!r} have more letters than operand dimensions")
    broadcast_letters = "".join(spare[:width])
    resolved = []
    for sub, rank in zip(inputs, ranks):
        if "..." in sub:
            count = rank - len(sub.replace("...", ""))
            sub = sub.replace("...", broadcast_letters[width - count:])
        resolved.append(sub)
    if explicit_output:
        output = output.replace("...", broadcast_letters)
    else:
        letters = "".join(resolved)
        output = broadcast_letters + "".join(sorted(c for c in set(letters) - set(broadcast_letters)
                                                    if letters.count(c) == 1))
    if len(set(output)) != len(output):
        raise ShapeError(f"einsum: output subscripts {output!r} repeat a letter")
    for letter in output:
        if not any(letter in sub for sub in resolved):
            raise ShapeError(f"einsum: output letter {letter!r} does not appear in the inputs of {subscripts!r}")
    return resolved, output


@op_dataclass
class Einsum(Op):
    """Einstein summation over explicit subscripts ``"ij,jk->ik"``."""

    name = "einsum"
    subscripts: str = ""
    view = True  # np.einsum returns views for permutations ("ij->ji") and diagonals ("ii->i")

    def parts(self) -> tuple[list[str], str]:
        inputs, output = self.subscripts.split("->")
        return inputs.split(","), output

    def infer(self, *operands):
        inputs, output = self.parts()
        seen: dict[str, list] = {}
        for sub, operand in zip(inputs, operands):
            within: dict[str, int] = {}  # a letter repeated in one operand (a diagonal) never broadcasts
            for letter, size in zip(sub, operand.shape):
                seen.setdefault(letter, []).append(size)
                if size is not None and within.setdefault(letter, size) != size:
                    raise ShapeError(f"einsum {self.subscripts!r}: letter {letter!r} repeated in one operand has "
                                     f"sizes {within[letter]} and {size} (shape {format_shape(operand.shape)})")
        sizes: dict[str, int | None] = {}
        for letter, options in seen.items():
            known = {s for s in options if s not in (None, 1)}
            if len(known) > 1:
                raise ShapeError(f"einsum {self.subscripts!r}: letter {letter!r} has sizes {sorted(known)} "
                                 f"(shapes {', '.join(format_shape(o.shape) for o in operands)})")
            sizes[letter] = known.pop() if known else (None if None in options else 1)
        return tuple(sizes[c] for c in output), _numeric_dtype("einsum", *(o.dtype for o in operands))

    def impl(self, *operands):
        return np.asarray(np.einsum(self.subscripts, *operands, optimize=len(operands) > 1))

    def vjp(self, node, g):
        inputs, output = self.parts()
        operands = node.inputs
        grads = []
        for i, (sub, operand) in enumerate(zip(inputs, operands)):
            others = [s for j, s in enumerate(inputs) if j != i]
            other_tensors = [t for j, t in enumerate(operands) if j != i]
            available = set(output).union(*others) if others else set(output)
            unique = "".join(dict.fromkeys(sub))
            kept = "".join(c for c in unique if c in available)
            grad = einsum(",".join([output] + others) + "->" + kept, g, *other_tensors)
            # letters summed inside this operand alone: their gradient is broadcast back
            for position, letter in enumerate(unique):
                if letter not in available:
                    grad = expand_dims(grad, position)
            if len(unique) != len(sub):
                grad = _embed_diagonal(grad, unique, sub, operand)
            if grad.shape != operand.shape or None in operand.shape:
                # Size-1 axes (summed letters, or letters of size 1 elsewhere that broadcast against
                # this operand) are broadcast to the operand's sizes by a product with ones; axes where
                # this operand has size 1 and the others more stay large, and the grad driver sums them.
                ones = ones_like(operand)
                grad = mul(grad, ones if ones.dtype == grad.dtype else cast(ones, grad.dtype))
            grads.append(grad)
        return grads


def _embed_diagonal(grad: Tensor, unique: str, sub: str, operand: Tensor) -> Tensor:
    """Place ``grad`` (over the unique letters) on the diagonals that repeated letters select.

    A size-1 axis is inserted for every repeated occurrence of a letter, and the product with a
    mask of the operand's shape (1 where the repeated indices agree) spreads ``grad`` onto the
    diagonal; the mask is built at run time, so unknown sizes are fine.
    """
    groups: dict[str, list[int]] = {}
    for position, letter in enumerate(sub):
        groups.setdefault(letter, []).append(position)
    for position, letter in enumerate(sub):
        if groups[letter][0] != position:
            grad = expand_dims(grad, position)
    repeated = tuple(tuple(p) for p in groups.values() if len(p) > 1)
    return mul(grad, apply(DiagonalMask(repeated, grad.dtype), operand))


@op_dataclass
class DiagonalMask(Op):
    """Ones where, for every group of axes, the indices along the group's axes are equal; else zeros."""

    name = "diagonal_mask"
    groups: tuple = ()
    dtype: np.dtype = np.dtype("float64")
    zero_gradient = True

    def infer(self, x):
        return x.shape, self.dtype

    def impl(self, x):
        shape = np.shape(x)
        mask = np.ones((1,) * len(shape), dtype=bool)

        def index(axis: int) -> np.ndarray:
            return np.arange(shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(shape))])

        for group in self.groups:
            for axis in group[1:]:
                mask = mask & (index(group[0]) == index(axis))
        return np.broadcast_to(mask, shape).astype(self.dtype)

    def key_bytes(self, node):
        return f"diagonal_mask{self.groups!r}{self.dtype.str}".encode()


def einsum(subscripts: str, *operands) -> Tensor:
    """NumPy's ``einsum`` (implicit or explicit output, ``...`` broadcasting).

    ``subscripts`` is a str such as ``"ij,jk->ik"``, one comma-separated term per operand.
    Raises ``TypeError`` when it is not a str, ``ShapeError`` when it does not fit the operands.
    """
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: subscripts must be a str such as 'ij,jk->ik' (one term per operand), got "
                        f"{type(subscripts).__name__}; call gc.einsum(subscripts, *operands)")
    tensors = [as_tensor(o) for o in operands]
    inputs, output = _explicit_subscripts(subscripts, [t.ndim for t in tensors])
    return apply(Einsum(",".join(inputs) + "->" + output), *tensors)
