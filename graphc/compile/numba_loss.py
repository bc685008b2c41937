"""The sparse cross-entropy's loss and gradient for ``backend="numba"``: NumPy's transcendental and
order-specific calls, and one compiled kernel for the exact rest.

``loss_and_gradient`` returns what ``nn.sparse_cross_entropy_and_gradient`` returns, bit for bit. It
keeps NumPy's calls where a compiled one could differ: the row maxima (``np.maximum.reduce``: which NaN
of several it returns depends on its loop order), ``np.exp`` and ``np.log`` (numba calls the C library's,
1-3 ulp from NumPy's) and the row sums (``np.add.reduce``: pairwise summation). The kernel does the rest
in one pass each: the label check, ``shifted = logits - max`` with each row's shifted logit at its label,
then ``log(sum) - picked``, the division by the sums and the one-hot's ``- 1``, each the same IEEE
operation on the same operands as NumPy's.

numba is imported and the kernel compiled at the first call (``numba_kernels.require_numba``).
"""

from __future__ import annotations

import numpy as np

from graphc.ops import nn

from .numba_kernels import require_numba

#: the dtypes compiled for, each with its 1 (the one-hot's, subtracted in the logits' dtype)
_ONES = {np.dtype(np.float32): np.float32(1), np.dtype(np.float64): np.float64(1)}
_kernels: tuple | None = None


def _compile() -> tuple:
    numba = require_numba()
    # error_model="numpy": no ZeroDivisionError; no fastmath: IEEE operations only, none reassociated
    compile = numba.njit(nogil=True, error_model="numpy", fastmath=False)

    @compile
    def shift(logits, maxima, labels, probs, picked):  # pragma: no cover - compiled
        """``probs = logits - maxima`` and ``picked[i] = probs[i, labels[i]]``; -1, or the first row
        whose label lies outside [0, depth) (checked before anything is written)."""
        rows, depth = logits.shape
        for i in range(rows):
            if labels[i] < 0 or labels[i] >= depth:
                return i
        for i in range(rows):
            m = maxima[i, 0]
            for j in range(depth):
                probs[i, j] = logits[i, j] - m
            picked[i] = probs[i, labels[i]]
        return -1

    @compile
    def finish(probs, total, logs, labels, loss, one):  # pragma: no cover - compiled
        """``loss = logs - loss`` (the picked values), ``probs /= total``, ``probs[i, labels[i]] -= one``."""
        rows, depth = probs.shape
        for i in range(rows):
            loss[i] = logs[i, 0] - loss[i]
            t = total[i, 0]
            for j in range(depth):
                probs[i, j] /= t
            probs[i, labels[i]] -= one

    return shift, finish


def loss_and_gradient(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``nn.sparse_cross_entropy_and_gradient(logits, labels)`` (2-D logits, 1-D integer labels), the same
    values and errors."""
    global _kernels
    one = _ONES.get(logits.dtype)
    if labels.shape[0] != logits.shape[0] or not logits.size or not logits.flags.c_contiguous or one is None:
        # broadcasting, no rows or no classes (NumPy's maximum raises), NumPy's summation order of another
        # layout, another dtype: NumPy's own way
        return nn.sparse_cross_entropy_and_gradient(logits, labels)
    if _kernels is None:
        _kernels = _compile()
    shift, finish = _kernels
    maxima = np.maximum.reduce(logits, axis=1, keepdims=True)
    probs = np.empty(logits.shape, logits.dtype)
    loss = np.empty(logits.shape[0], logits.dtype)
    if shift(logits, maxima, labels, probs, loss) >= 0:
        nn._check_labels(labels, logits.shape[1])  # raises NumPy's error
    np.exp(probs, out=probs)
    total = np.add.reduce(probs, axis=1, keepdims=True)
    finish(probs, total, np.log(total), labels, loss, one)
    return loss, probs
