"""Initial values for weights: ``gc.init.glorot_uniform((784, 128), seed=0)`` and friends.

Every initializer returns a NumPy array (float64 unless ``dtype=`` says
otherwise) to give to ``gc.variable``. ``seed`` is an int (the same values every
time), a ``numpy.random.Generator`` (drawn from it, advancing it), or ``None``
(fresh values from the operating system's entropy).

Fans. A 2-D shape is ``(fan_in, fan_out)``, as the weights of ``x @ W`` are
laid out. A shape of 3 or more dimensions is a convolution kernel in
``gc.conv2d``'s layout ``(out_channels, in_channels, *kernel)``, and the fans
count the receptive field as PyTorch (``torch.nn.init``) and Keras do:
``fan_in = in_channels * prod(kernel)``, ``fan_out = out_channels * prod(kernel)``.
A 1-D shape (a bias) has ``fan_in = fan_out = shape[0]``; a 0-d one has fans of 1.
"""

from __future__ import annotations

import math

import numpy as np

from graphc.types import as_dtype

__all__ = ["fans", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "ones", "orthogonal", "zeros"]


def _shape(shape, where: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        entries = tuple(shape)
    except TypeError:
        raise TypeError(f"gc.init.{where}: shape must be a tuple of ints, got {shape!r}") from None
    for entry in entries:
        if isinstance(entry, bool) or not isinstance(entry, (int, np.integer)) or entry < 0:
            raise ValueError(f"gc.init.{where}: shape entries must be non-negative ints, got {shape!r}")
    return tuple(int(entry) for entry in entries)


def _float_dtype(dtype, where: str) -> np.dtype:
    result = as_dtype(dtype)
    if result.kind != "f":
        raise TypeError(f"gc.init.{where}: random initial values need a floating-point dtype, got {result}")
    return result


def _rng(seed, where: str) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"gc.init.{where}: seed must be None, a non-negative int or a numpy Generator, "
                        f"got {seed!r}")
    return np.random.default_rng(int(seed))


def fans(shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` (see the module's docstring for the layouts)."""
    shape = _shape(shape, "fans")
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _draw(where: str, shape, seed, dtype, scale, normal: bool) -> np.ndarray:
    """Uniform ``U(-a, a)`` (``normal=False``) or normal ``N(0, a**2)`` values, ``a = scale(fan_in, fan_out)``."""
    shape = _shape(shape, where)
    dtype = _float_dtype(dtype, where)
    rng = _rng(seed, where)
    if math.prod(shape) == 0:  # nothing to draw (and a fan may be 0)
        return np.zeros(shape, dtype)
    a = scale(*fans(shape))
    values = rng.normal(0.0, a, size=shape) if normal else rng.uniform(-a, a, size=shape)
    return values.astype(dtype, copy=False)


def glorot_uniform(shape, seed=None, dtype="float64") -> np.ndarray:
    """Glorot (Xavier) uniform: ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``.

    The variance is ``2 / (fan_in + fan_out)`` (Glorot & Bengio 2010; PyTorch's
    ``xavier_uniform_``, Keras' ``GlorotUniform``).
    """
    return _draw("glorot_uniform", shape, seed, dtype,
                 lambda fan_in, fan_out: math.sqrt(6.0 / (fan_in + fan_out)), normal=False)


def glorot_normal(shape, seed=None, dtype="float64") -> np.ndarray:
    """Glorot (Xavier) normal: ``N(0, 2 / (fan_in + fan_out))``, not truncated (PyTorch's ``xavier_normal_``)."""
    return _draw("glorot_normal", shape, seed, dtype,
                 lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)), normal=True)


def he_uniform(shape, seed=None, dtype="float64") -> np.ndarray:
    """He (Kaiming) uniform for ReLU layers: ``U(-a, a)`` with ``a = sqrt(6 / fan_in)``, variance ``2 / fan_in``.

    PyTorch's ``kaiming_uniform_(mode="fan_in", nonlinearity="relu")``, Keras' ``HeUniform``.
    """
    return _draw("he_uniform", shape, seed, dtype, lambda fan_in, fan_out: math.sqrt(6.0 / fan_in), normal=False)


def he_normal(shape, seed=None, dtype="float64") -> np.ndarray:
    """He (Kaiming) normal for ReLU layers: ``N(0, 2 / fan_in)``, not truncated (PyTorch's ``kaiming_normal_``)."""
    return _draw("he_normal", shape, seed, dtype, lambda fan_in, fan_out: math.sqrt(2.0 / fan_in), normal=True)


def orthogonal(shape, gain: float = 1.0, seed=None, dtype="float64") -> np.ndarray:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014; PyTorch's ``orthogonal_``).

    The array is viewed as a matrix of ``shape[0]`` rows and ``prod(shape[1:])``
    columns; its columns are orthonormal when there are at least as many rows as
    columns (``W.T @ W = gain**2 * I``), else its rows are (``W @ W.T = gain**2 *
    I``). It is the Q of the QR decomposition of a standard normal matrix, with
    signs fixed so that the distribution is uniform (Haar) over such matrices.
    Needs at least 2 dimensions.
    """
    shape = _shape(shape, "orthogonal")
    dtype = _float_dtype(dtype, "orthogonal")
    if len(shape) < 2:
        raise ValueError(f"gc.init.orthogonal: needs a shape of at least 2 dimensions, got {shape}")
    if isinstance(gain, bool) or not isinstance(gain, (int, float, np.integer, np.floating)) \
            or not np.isfinite(gain):
        raise TypeError(f"gc.init.orthogonal: gain must be a finite number, got {gain!r}")
    rng = _rng(seed, "orthogonal")
    rows, cols = shape[0], math.prod(shape[1:])
    if rows * cols == 0:
        return np.zeros(shape, dtype)
    normal = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(normal)
    # multiplying each column by the sign of R's diagonal makes Q Haar-distributed (Mezzadri 2007)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q = q * signs
    matrix = q if rows >= cols else q.T
    return (float(gain) * matrix).reshape(shape).astype(dtype, copy=False)


def zeros(shape, dtype="float64") -> np.ndarray:
    """An array of zeros (float64 unless ``dtype`` says otherwise): biases, optimizer state."""
    return np.zeros(_shape(shape, "zeros"), as_dtype(dtype))


def ones(shape, dtype="float64") -> np.ndarray:
    """An array of ones (float64 unless ``dtype`` says otherwise): scales of a normalization."""
    return np.ones(_shape(shape, "ones"), as_dtype(dtype))
