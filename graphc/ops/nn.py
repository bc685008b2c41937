"""Network ops with stable numerics: softmax, log_softmax and the cross-entropies.

They are primitives (not compositions) so that both their values and their
gradients stay finite and accurate for logits of any finite size.
"""

from __future__ import annotations

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.op import Op, apply, as_tensor, op_dataclass
from graphc.ops.elementwise import cast, exp, mul, neg, sigmoid, sub
from graphc.ops.reduce import Sum
from graphc.ops.shape import OneHot, composite, expand_dims, one_hot, transpose
from graphc.tensor import Tensor
from graphc.types import broadcast_shapes, float_dtype, format_shape, normalize_axis


def _float_logits(op: str, logits: Tensor) -> np.dtype:
    if logits.dtype.kind != "f":
        raise DTypeError(f"{op}: logits must be floating point, got {logits.dtype}")
    return logits.dtype


def _stable_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _out_of_range(labels: np.ndarray, depth: int) -> bool:
    """Whether a class index lies outside [0, depth), in one reduction: viewed as unsigned integers of
    the same size, negative indices are at least 2**(bits - 1), more than any depth (``labels.min() < 0
    or labels.max() >= depth`` -> ``max(labels as unsigned) >= depth``, exact for integers)."""
    if not labels.size:
        return False
    if labels.dtype.kind == "i":
        labels = labels.view(f"u{labels.dtype.itemsize}")
    return bool(np.maximum.reduce(labels, axis=None) >= depth)


def _check_labels(labels: np.ndarray, depth: int) -> None:
    """Class indices must lie in [0, depth): NumPy would wrap negative ones around silently."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu" and not _out_of_range(labels, depth):
        return
    if labels.size and (labels.min() < 0 or labels.max() >= depth):
        bad = labels[(labels < 0) | (labels >= depth)].flat[0]
        raise IndexError(f"class index {bad} is out of range for {depth} classes")


def _check_label_shape(logits: np.ndarray, labels: np.ndarray, axis: int) -> None:
    """Class indices broadcast against the logits without their class axis (batches fed separately can differ)."""
    reduced = logits.shape[:axis] + logits.shape[axis + 1:]
    try:
        np.broadcast_shapes(np.shape(labels), reduced)
    except ValueError:
        raise ValueError(f"softmax_cross_entropy: labels of shape {np.shape(labels)} for logits of shape "
                         f"{logits.shape}: give one class index per row (shape {reduced}); were the labels and "
                         f"the logits fed from batches of different sizes?") from None


def _sparse_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row ``log(sum(exp(shifted))) - shifted[label]``: the loss picking before subtracting, so that
    no matrix of log-probabilities is made (``np.maximum.reduce``, ``np.add.reduce``: what np.max, np.sum call)."""
    _check_labels(labels, logits.shape[1])
    if labels.shape[0] != logits.shape[0]:  # broadcasting one way or the other, or batches that differ
        _check_label_shape(logits, labels, 1)
        logits = np.broadcast_to(logits, (labels.shape[0], logits.shape[1])) if logits.shape[0] == 1 else logits
    shifted = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True))
    picked = shifted[np.arange(shifted.shape[0]), labels]
    np.exp(shifted, out=shifted)
    total = np.add.reduce(shifted, axis=1)
    np.log(total, out=total)
    total -= picked
    return total


@op_dataclass
class Softmax(Op):
    name = "softmax"
    axis: int = -1

    def infer(self, x):
        return x.shape, _float_logits(self.name, x)

    def impl(self, x):
        shifted = np.exp(x - np.max(x, axis=self.axis, keepdims=True))
        shifted /= np.sum(shifted, axis=self.axis, keepdims=True)
        return shifted

    def vjp(self, node, g):
        # J^T g = s * (g - sum(g * s))
        inner = Sum((self.axis,), True)(mul(g, node))
        return (mul(node, sub(g, inner)),)


@op_dataclass
class LogSoftmax(Op):
    name = "log_softmax"
    axis: int = -1

    def infer(self, x):
        return x.shape, _float_logits(self.name, x)

    def impl(self, x):
        return _stable_log_softmax(x, self.axis)

    def vjp(self, node, g):
        # J^T g = g - softmax(x) * sum(g)
        total = Sum((self.axis,), True)(g)
        return (sub(g, mul(exp(node), total)),)


@op_dataclass
class SoftmaxCrossEntropy(Op):
    """Per-example ``-sum(labels * log_softmax(logits))``; integer labels are class indices."""

    name = "softmax_cross_entropy"
    axis: int = -1
    sparse: bool = False  # labels are integer class indices

    def infer(self, logits, labels):
        dtype = _float_logits(self.name, logits)
        reduced = logits.shape[:self.axis] + logits.shape[self.axis + 1:]
        if self.sparse:
            unified = None
            if labels.ndim == len(reduced):
                try:
                    unified = broadcast_shapes(self.name, [labels.shape, reduced])
                except ShapeError:
                    unified = None
            # labels may fill in a size the logits leave unknown (checked at run time), never grow a known one
            if unified is None or any(r is not None and u != r for u, r in zip(unified, reduced)):
                raise ShapeError(f"softmax_cross_entropy: integer labels must have shape {format_shape(reduced)} "
                                 f"(logits {format_shape(logits.shape)} without axis {self.axis}), "
                                 f"got {format_shape(labels.shape)}")
            return unified, dtype
        if labels.ndim != logits.ndim:
            _rank_lower_labels(logits, labels, self.axis)
        shape = broadcast_shapes(self.name, [logits.shape, labels.shape])
        lead = logits.ndim - labels.ndim
        depth, label_depth = logits.shape[self.axis], labels.shape[self.axis - lead] if self.axis >= lead else 1
        # other axes broadcast, the class axis does not: the loss and its gradient rule need one
        # probability per class (a single logit or label broadcast over the classes means something else)
        if (len(shape) != logits.ndim or self.axis < lead
                or (depth != label_depth and None not in (depth, label_depth))):
            raise ShapeError(f"softmax_cross_entropy: labels of shape {format_shape(labels.shape)} do not "
                             f"match logits of shape {format_shape(logits.shape)}"
                             f" along the class axis {self.axis}")
        return shape[:self.axis] + shape[self.axis + 1:], np.result_type(dtype, labels.dtype)

    def impl(self, logits, labels):
        if self.sparse and logits.ndim == 2 and self.axis in (1, -1) and np.ndim(labels) == 1:
            return _sparse_cross_entropy(logits, labels)
        log_probs = _stable_log_softmax(logits, self.axis)
        if self.sparse:
            _check_label_shape(logits, labels, self.axis)
            _check_labels(labels, logits.shape[self.axis])
            picked = np.take_along_axis(log_probs, np.expand_dims(labels, self.axis), axis=self.axis)
            return -np.squeeze(picked, self.axis)
        lead = logits.ndim - labels.ndim
        if self.axis < lead or labels.shape[self.axis - lead] != logits.shape[self.axis]:  # (sizes unknown before)
            raise ValueError(f"softmax_cross_entropy: labels of shape {labels.shape} do not match logits of "
                             f"shape {logits.shape} along the class axis {self.axis}")
        terms = labels * log_probs
        # logits whose spread overflows (0 and +-1.7e308): x - max is -inf where the true log
        # probability is merely huge, and a zero label times it is NaN; those entries are computed
        # again as labels * x - labels * (max + log-sum) (a zero label contributes 0)
        overflowed = np.isneginf(log_probs) & np.isfinite(logits)
        if overflowed.any():
            peak = np.max(logits, axis=self.axis, keepdims=True)
            total = -np.max(log_probs, axis=self.axis, keepdims=True)  # log-sum-exp of the shifted logits
            with np.errstate(over="ignore"):
                fixed = labels * logits - labels * peak - labels * total
            terms = np.where(overflowed, fixed, terms)
        return -np.sum(terms, axis=self.axis)

    def vjp(self, node, g):
        logits, labels = node.inputs
        g = expand_dims(g, self.axis)
        probs = apply(Softmax(self.axis), logits)
        if self.sparse:
            depth = logits.shape[self.axis]
            if depth is None:
                target = apply(SparseTarget(self.axis), labels, logits)
            else:
                target = one_hot(labels, depth, dtype=logits.dtype)
                if self.axis != logits.ndim - 1:
                    axes = list(range(logits.ndim - 1))
                    axes.insert(self.axis, logits.ndim - 1)
                    target = transpose(target, tuple(axes))
            return mul(g, sub(probs, target)), None
        # d/dlogits = softmax * sum(labels) - labels (sum(labels) is 1 for distributions)
        # labels may lack leading (broadcast) axes: their class axis counts from the right like the logits'
        total = Sum((self.axis - logits.ndim + labels.ndim,), True)(labels)
        log_probs = apply(LogSoftmax(self.axis), logits)
        return mul(g, sub(mul(probs, total), labels)), neg(mul(g, log_probs))


@op_dataclass
class SparseTarget(Op):
    """One-hot rows for class indices, sized like ``logits`` at run time."""

    name = "sparse_target"
    axis: int = -1
    zero_gradient = True

    def infer(self, labels, logits):
        return logits.shape, logits.dtype

    def impl(self, labels, logits):
        _check_labels(labels, logits.shape[self.axis])
        target = np.zeros(logits.shape, logits.dtype)
        np.put_along_axis(target, np.expand_dims(labels, self.axis), 1, axis=self.axis)
        return target


@op_dataclass
class SigmoidCrossEntropy(Op):
    """Element-wise ``-t log sigmoid(x) - (1 - t) log(1 - sigmoid(x))``, computed stably."""

    name = "sigmoid_cross_entropy"

    def infer(self, logits, targets):
        dtype = _float_logits(self.name, logits)
        return broadcast_shapes(self.name, [logits.shape, targets.shape]), np.result_type(dtype, targets.dtype)

    def impl(self, logits, targets):
        # max(x, 0) - x t + log(1 + exp(-|x|)): no overflow for any finite x
        return np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))

    def vjp(self, node, g):
        logits, targets = node.inputs
        grad_targets = neg(mul(g, logits)) if targets.dtype.kind == "f" else None
        # sigmoid(x) - t, written as sigmoid(x) (1 - t) - t sigmoid(-x): for a confident right answer
        # (x = 30, t = 1) the naive difference cancels to a few digits; this is exactly -sigmoid(-x)
        slope = sub(mul(sigmoid(logits), sub(1, targets)), mul(targets, sigmoid(neg(logits))))
        return mul(g, slope), grad_targets


def softmax(x, axis: int = -1) -> Tensor:
    x = as_tensor(x)
    return apply(Softmax(normalize_axis("softmax", axis, x.ndim)), x)


def log_softmax(x, axis: int = -1) -> Tensor:
    x = as_tensor(x)
    return apply(LogSoftmax(normalize_axis("log_softmax", axis, x.ndim)), x)


@op_dataclass
class ShapeCheck(Op):
    """Input 0 itself, after checking at run time that it has exactly the shape of input 1.

    ``softmax_cross_entropy`` puts it before probability labels whose batch size is unknown
    when the graph is built: a batch of one row would otherwise broadcast over the logits'."""

    name = "shape_check"
    view = True
    nondiff_inputs = (1,)

    def infer(self, x, like):
        return x.shape, x.dtype

    def impl(self, x, like):
        if np.shape(x) != np.shape(like):
            raise ValueError(f"softmax_cross_entropy: probability labels of shape {np.shape(x)} for logits of "
                             f"shape {np.shape(like)}: they must have the logits' shape (no broadcasting over "
                             f"the batch); were they fed from batches of different sizes?")
        return x

    def vjp(self, node, g):
        return g, None


def _rank_lower_labels(logits, labels, axis: int):
    """Float labels that are not of the logits' rank: refused, saying what was probably meant."""
    wanted = format_shape(logits.shape)
    if labels.ndim == logits.ndim - 1:
        raise DTypeError(f"softmax_cross_entropy: labels of dtype {labels.dtype} and shape "
                         f"{format_shape(labels.shape)} look like class indices for logits of shape {wanted}: "
                         f"class indices need an integer dtype (gc.cast(labels, 'int64'), or declare the "
                         f"placeholder with dtype='int64'); probability labels must have the logits' shape "
                         f"{wanted}")
    raise ShapeError(f"softmax_cross_entropy: probability labels must have the logits' shape {wanted} "
                     f"(batch and class axis {axis} included), got {format_shape(labels.shape)}")


def softmax_cross_entropy(logits, labels, axis: int = -1) -> Tensor:
    """Per-example cross-entropy of ``softmax(logits)`` against ``labels``.

    ``labels`` holds integer class indices of shape ``logits.shape`` without
    ``axis`` (broadcasting against it), or float probabilities of exactly
    ``logits.shape`` (sizes unknown at build time are checked at run time;
    probabilities are never broadcast over the batch). Float labels of rank
    ``logits.ndim - 1`` raise ``DTypeError`` (class indices need an integer
    dtype); other shapes ``ShapeError``; bool labels ``DTypeError``. Returns the
    loss per example, never inf or NaN for finite logits.
    """
    logits = as_tensor(logits)
    labels = as_tensor(labels)
    axis = normalize_axis("softmax_cross_entropy", axis, logits.ndim)
    if labels.dtype.kind in "iu":
        return apply(SoftmaxCrossEntropy(axis, True), logits, labels)
    if labels.dtype.kind == "b":
        raise DTypeError("softmax_cross_entropy: labels must be integer class indices or float probabilities")
    # (a static 1 against an unknown size would broadcast one row over the batch: refused too)
    if labels.ndim != logits.ndim or any((a is not None and b is not None and a != b) or (a == 1 and b is None)
                                         for a, b in zip(labels.shape, logits.shape)):
        _rank_lower_labels(logits, labels, axis)
    if None in labels.shape or None in logits.shape:  # sizes the run time must still compare
        labels = apply(ShapeCheck(), labels, logits)
    return apply(SoftmaxCrossEntropy(axis, False), logits, labels)


def sigmoid_cross_entropy(logits, targets) -> Tensor:
    """Element-wise binary cross-entropy of ``sigmoid(logits)`` against ``targets`` in [0, 1]."""
    logits = as_tensor(logits)
    if not isinstance(targets, Tensor) and isinstance(targets, (int, float)):
        targets = np.asarray(targets, dtype=float_dtype(logits.dtype))
    targets = as_tensor(targets)
    if targets.dtype.kind != "f":
        targets = cast(targets, logits.dtype)
    return apply(SigmoidCrossEntropy(), logits, targets)


@op_dataclass
class SoftmaxMinusOneHot(Op):
    """``softmax(logits, 1) - one_hot(labels, depth)`` for 2-D logits and 1-D labels, in one buffer: the
    sparse cross-entropy's gradient. The compiler makes it from that subtraction (see ``graphc.compile``);
    a label outside ``[0, depth)`` gives a row of plain probabilities, as ``one_hot`` does."""

    name = "softmax_minus_one_hot"
    nondiff_inputs = (1,)

    def infer(self, logits, labels):
        if logits.ndim != 2 or labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ShapeError(f"{self.name}: needs 2-D logits and 1-D integer labels, got "
                             f"{format_shape(logits.shape)} and {format_shape(labels.shape)} {labels.dtype}")
        broadcast_shapes(self.name, [logits.shape[:1], labels.shape])
        return logits.shape, _float_logits(self.name, logits)

    def impl(self, logits, labels):
        probs = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True))
        np.exp(probs, out=probs)
        probs /= np.add.reduce(probs, axis=1, keepdims=True)
        rows, depth = probs.shape
        if labels.shape[0] != rows:  # one row against many labels (or the reverse): the subtraction broadcasts
            return np.subtract(probs, OneHot(depth, probs.dtype).impl(labels))
        if rows and _out_of_range(labels, depth):
            valid = (labels >= 0) & (labels < depth)  # one_hot gives a zero row elsewhere
            probs[np.arange(rows)[valid], labels[valid]] -= 1
        elif rows:
            probs[np.arange(rows), labels] -= 1
        return probs

    def vjp(self, node, g):
        probs = apply(Softmax(1), node.inputs[0])  # the one-hot term is constant: softmax's own rule
        return mul(probs, sub(g, Sum((1,), True)(mul(g, probs)))), None


def sparse_cross_entropy_and_gradient(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(SoftmaxCrossEntropy(-1, True).impl(logits, labels), SoftmaxMinusOneHot().impl(logits, labels))``
    for 2-D logits and 1-D labels, bit for bit, computing what both share once: the label check, the
    shifted logits, their exp and its row sums (the same NumPy calls on the same values; a sum with
    ``keepdims`` adds in the same order). The loss's errors come first, as when it runs first."""
    _check_labels(labels, logits.shape[1])
    if labels.shape[0] != logits.shape[0]:  # broadcasting, or batches that differ: each impl its own way
        return _sparse_cross_entropy(logits, labels), SoftmaxMinusOneHot().impl(logits, labels)
    probs = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True))
    rows = np.arange(probs.shape[0])
    picked = probs[rows, labels]
    np.exp(probs, out=probs)
    total = np.add.reduce(probs, axis=1, keepdims=True)
    loss = np.log(total.reshape(-1))
    loss -= picked
    probs /= total
    if rows.size:  # (labels checked: all in range)
        probs[rows, labels] -= 1
    return loss, probs


# ---- normalization ------------------------------------------------------------------------------

def _check_eps(op: str, eps) -> float:
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: eps must be a number, got {eps!r}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be non-negative, got {eps!r}")
    return float(eps)


def layer_norm(x, axis=-1, eps: float = 1e-5) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``axis`` (an int or a tuple of ints), with the biased
    variance, as PyTorch's ``layer_norm`` without its affine parameters (multiply and add those
    yourself). A composition of graph ops, so it is differentiable to any order."""
    from graphc.ops.elementwise import add, div, sqrt, square
    from graphc.ops.reduce import mean
    from graphc.types import normalize_axes

    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise DTypeError(f"layer_norm: the input must be floating point, got {x.dtype}")
    eps = _check_eps("layer_norm", eps)
    axes = normalize_axes("layer_norm", axis, x.ndim)
    centered = sub(x, mean(x, axes, keepdims=True))
    variance = mean(square(centered), axes, keepdims=True)
    return composite(div(centered, sqrt(add(variance, eps))), "layer_norm")


def _per_channel(op: str, what: str, stat, x: Tensor):
    """A statistic for ``x``: rank 1 means one value per channel (axis 1 of an (N, C, ...) input, as
    PyTorch); a scalar or a tensor of x's rank broadcasts as NumPy does."""
    from graphc.ops.shape import reshape

    if stat is None:
        return None
    stat = as_tensor(stat)
    if stat.ndim == 0 or stat.ndim == x.ndim:
        broadcast_shapes(op, [x.shape, stat.shape])  # a ShapeError naming both shapes if they do not fit
        return stat
    if stat.ndim == 1 and x.ndim >= 2:
        channels, size = x.shape[1], stat.shape[0]
        if None not in (channels, size) and channels != size:
            raise ShapeError(f"{op}: {what} of shape {format_shape(stat.shape)} does not match the {channels} "
                             f"channels (axis 1) of the input of shape {format_shape(x.shape)}")
        return reshape(stat, (1, -1) + (1,) * (x.ndim - 2))
    raise ShapeError(f"{op}: {what} must be a scalar, one value per channel (shape (C,)) or of the input's rank "
                     f"{x.ndim}, got shape {format_shape(stat.shape)} for an input of shape {format_shape(x.shape)}")


def batch_norm(x, mean, var, scale=None, offset=None, eps: float = 1e-5) -> Tensor:
    """``(x - mean) / sqrt(var + eps) * scale + offset`` with given statistics (PyTorch's
    ``batch_norm`` in evaluation form). 1-D ``mean``, ``var``, ``scale`` and ``offset`` hold one value
    per channel (axis 1 of an (N, C, ...) input); scalars and tensors of the input's rank (for
    example ``gc.mean(x, axis=(0, 2, 3), keepdims=True)``) broadcast. Differentiable to any order in
    every argument, so batch statistics computed in the graph get their gradient too."""
    from graphc.ops.elementwise import add, div, sqrt

    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise DTypeError(f"batch_norm: the input must be floating point, got {x.dtype}")
    eps = _check_eps("batch_norm", eps)
    mean, var, scale, offset = (_per_channel("batch_norm", what, stat, x) for what, stat in
                                (("mean", mean), ("var", var), ("scale", scale), ("offset", offset)))
    out = div(sub(x, mean), sqrt(add(var, eps)))
    if scale is not None:
        out = mul(out, scale)
    if offset is not None:
        out = add(out, offset)
    return composite(out, "batch_norm")
