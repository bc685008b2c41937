"""The sparse cross-entropy's loss and gradient for ``backend="numba"``: NumPy's transcendental and
order-specific calls, and two compiled kernels for the exact rest.

``loss_and_gradient`` returns what ``nn.sparse_cross_entropy_and_gradient`` returns, bit for bit, with the
same errors. It keeps NumPy's calls where a compiled one could differ: ``np.exp`` and ``np.log`` (numba
calls the C library's, 1-3 ulp from NumPy's) and the row sums (``np.add.reduce``: pairwise summation).
The first kernel checks the labels, then finds each row's maximum, subtracts it and picks the shifted
logit at the row's label; the second computes ``log(sum) - picked``, divides by the sums and subtracts
the one-hot's 1: each the same IEEE operation on the same operands as NumPy's. A row maximum found in
any order is NumPy's but for the sign of a zero maximum, which changes no result (``x - (+-0)`` then
differs only in the sign of a zero, whose ``exp`` is 1 either way, and the loss ``log(sum) - (+-0)`` is
``+0`` or positive, with ``sum >= 1``); which of several NaNs NumPy's maximum returns depends on its loop
order, so logits holding a NaN get NumPy's maxima (``np.maximum.reduce``).

numba is imported and the kernels compiled at the first call (``numba_kernels.require_numba``).
"""

from __future__ import annotations

import numpy as np

from graphc.ops import nn

from .numba_kernels import require_numba

#: the dtypes compiled for, each with its 1 (the one-hot's, subtracted in the logits' dtype)
_ONES = {np.dtype(np.float32): np.float32(1), np.dtype(np.float64): np.float64(1)}
_kernels: tuple | None = None
_NO_MAXIMA = np.empty(0)


def _compile() -> tuple:
    numba = require_numba()
    # error_model="numpy": no ZeroDivisionError; no fastmath: IEEE operations only, none reassociated
    compile = numba.njit(nogil=True, error_model="numpy", fastmath=False)

    @compile
    def shift(logits, labels, maxima, probs, picked):  # pragma: no cover - compiled
        """``probs = logits - max(row)`` and ``picked[i] = probs[i, labels[i]]``: -1; or, before anything is
        written, the first row whose label lies outside [0, depth), or -2 for a NaN in a row when
        ``maxima`` (NumPy's row maxima, to be given then) is empty."""
        rows, depth = logits.shape
        for i in range(rows):
            if labels[i] < 0 or labels[i] >= depth:
                return i
        if not maxima.size:
            for i in range(rows):
                for j in range(depth):
                    if logits[i, j] != logits[i, j]:
                        return -2
        for i in range(rows):
            if maxima.size:
                m = maxima[i]
            else:
                m = logits[i, 0]
                for j in range(1, depth):
                    if logits[i, j] > m:
                        m = logits[i, j]
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
    probs = np.empty(logits.shape, logits.dtype)
    loss = np.empty(logits.shape[0], logits.dtype)
    found = shift(logits, labels, _NO_MAXIMA, probs, loss)
    if found == -2:  # a NaN: NumPy's maximum picks one of a row's NaNs in its own order
        found = shift(logits, labels, np.maximum.reduce(logits, axis=1), probs, loss)
    if found >= 0:
        nn._check_labels(labels, logits.shape[1])  # raises NumPy's error
    np.exp(probs, out=probs)
    total = np.add.reduce(probs, axis=1, keepdims=True)
    finish(probs, total, np.log(total), labels, loss, one)
    return loss, probs
