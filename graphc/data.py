"""Feeding data: ``gc.data.minibatches(x, y, batch_size=32, seed=0)``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["minibatches"]


def minibatches(*arrays, batch_size: int, shuffle: bool = True, seed=None,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield tuples ``(a[batch], b[batch], ...)`` of aligned slices along the first axis.

    One pass (an epoch) over the ``arrays``, which must all have the same length
    (a ``ValueError`` otherwise). With ``shuffle=True`` the examples come in the
    order of a random permutation: ``seed`` (an int or a ``numpy.random.Generator``)
    makes it reproducible, ``None`` draws a fresh one; with ``shuffle=False`` they
    come in order, as views of the arrays. The last batch is shorter when
    ``batch_size`` does not divide the length, unless ``drop_last=True`` drops it.
    A tuple is yielded even for a single array (``for (xb,) in minibatches(x, ...)``).
    The arguments are checked when ``minibatches`` is called, not when iteration starts.
    """
    if not arrays:
        raise TypeError("gc.data.minibatches: give at least one array")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"gc.data.minibatches: batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(shuffle, (bool, np.bool_)) or not isinstance(drop_last, (bool, np.bool_)):
        raise TypeError("gc.data.minibatches: shuffle and drop_last must be True or False")
    values = []
    for k, array in enumerate(arrays):
        array = np.asarray(array)
        if array.ndim == 0:
            raise ValueError(f"gc.data.minibatches: array {k} is 0-d; arrays are sliced along their first axis")
        values.append(array)
    lengths = [len(array) for array in values]
    if len(set(lengths)) != 1:
        raise ValueError(f"gc.data.minibatches: the arrays have different lengths {lengths}; they must be "
                         f"aligned along the first axis")
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        rng = np.random.default_rng(seed) if shuffle else None
    else:
        raise TypeError(f"gc.data.minibatches: seed must be None, a non-negative int or a numpy Generator, "
                        f"got {seed!r}")
    order = rng.permutation(lengths[0]) if shuffle else None
    return _batches(values, int(batch_size), order, bool(drop_last))


def _batches(values: list[np.ndarray], batch_size: int, order, drop_last: bool):
    length = len(values[0])
    stop = length - length % batch_size if drop_last else length
    for start in range(0, stop, batch_size):
        if order is None:
            yield tuple(array[start:start + batch_size] for array in values)
        else:
            rows = order[start:start + batch_size]
            yield tuple(array[rows] for array in values)
