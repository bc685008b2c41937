"""Shared helpers for the optimizer tests: running graphs both ways and a seeded random-graph generator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import graphc as gc
from graphc.tensor import Tensor, toposort


def run(outputs, feeds: dict, optimize: bool = False):
    """Values of ``outputs`` (a list) with or without the default pipeline."""
    return gc.Session(optimize=optimize).run(list(outputs), feeds)


def ops_of(outputs) -> list[str]:
    """The op names of every node computing ``outputs``, in topological order."""
    if isinstance(outputs, Tensor):
        outputs = [outputs]
    return [t.op for t in toposort(outputs)]


def count(outputs, op: str) -> int:
    return ops_of(outputs).count(op)


def assert_same_values(expected: Sequence, actual: Sequence, rtol: float = 1e-9, atol: float = 1e-12,
                       signed_zeros: bool = True) -> None:
    """Same shapes and dtypes; equal to ``rtol``; NaN, inf and (unless ``signed_zeros=False``) the sign of zeros
    exactly as in ``expected``."""
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        want, got = np.asarray(want), np.asarray(got)
        assert want.shape == got.shape, (want.shape, got.shape)
        assert want.dtype == got.dtype, (want.dtype, got.dtype)
        np.testing.assert_array_equal(np.isnan(want), np.isnan(got))
        np.testing.assert_array_equal(np.isinf(want) & (want > 0), np.isinf(got) & (got > 0))
        np.testing.assert_array_equal(np.isinf(want) & (want < 0), np.isinf(got) & (got < 0))
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
            # where both are zero, the same zero: -0.0 and +0.0 differ (1 / x, copysign, atan2 tell them apart)
            zeros = (want == 0) & (got == 0) & signed_zeros
            np.testing.assert_array_equal(np.signbit(got)[zeros], np.signbit(want)[zeros], err_msg="sign of zero")
        else:
            np.testing.assert_array_equal(got, want)


def keys(outputs) -> list[str]:
    """The structural keys of a graph's nodes in topological order (its identity, process-independent)."""
    return [t.key for t in toposort(list(outputs))]


# ---- a seeded random-graph generator ----------------------------------------------------------

SHAPES = [(3, 4), (4,), (3, 1), (1, 4), ()]
CONSTANTS = [0.0, 1.0, -1.0, 2.0, 0.5, -3.0, -0.0]


class RandomGraph:
    """A random graph mixing element-wise ops, reductions, broadcasting, shapes and constants.

    Built from a seed, so a failure is reproducible by its seed alone. It
    avoids nothing on purpose: constants 0, 1, -1 and -0.0 appear so that the
    simplifier fires; twins appear so that CSE fires; ``sqrt`` and division
    by zero bring NaN and inf in.
    """

    def __init__(self, seed: int, n_ops: int = 14, unknown_sizes: bool = False) -> None:
        self.rng = rng = np.random.default_rng(seed)
        declared = [(None, 4), (4,), (None, 1)] if unknown_sizes else SHAPES[:3]
        self.placeholders = [gc.placeholder(f"p{i}", declared[i]) for i in range(3)]
        self.feeds = {p: rng.uniform(-2, 2, size=SHAPES[i]) for i, p in enumerate(self.placeholders)}
        pool: list[Tensor] = list(self.placeholders)
        for _ in range(n_ops):
            pool.append(self.random_op(pool))
        picks = rng.choice(len(pool) - 3, size=min(3, len(pool) - 3), replace=False) + 3
        self.outputs = [pool[-1]] + [pool[int(i)] for i in sorted(picks)]
        # a scalar cost mixing every output, for gradients
        cost = gc.sum(self.outputs[0] * 0.7)
        for k, out in enumerate(self.outputs[1:]):
            cost = cost + gc.sum(gc.tanh(out)) * (k + 1.5)
        self.cost = cost
        self.grads = gc.grad(cost, self.placeholders)

    def constant(self) -> Tensor:
        rng = self.rng
        if rng.random() < 0.6:
            return gc.constant(float(rng.choice(CONSTANTS)))
        shape = SHAPES[rng.integers(len(SHAPES))]
        value = rng.choice(CONSTANTS) if rng.random() < 0.5 else None
        return gc.constant(np.full(shape, value) if value is not None else rng.uniform(-2, 2, size=shape))

    def operand(self, pool: list[Tensor]) -> Tensor:
        if self.rng.random() < 0.2:
            return self.constant()
        # prefer recent tensors, so that chains get deep
        index = len(pool) - 1 - min(int(self.rng.exponential(3.0)), len(pool) - 1)
        return pool[index]

    def random_op(self, pool: list[Tensor]) -> Tensor:
        a = self.operand(pool)
        b = self.operand(pool)
        try:
            return self.build(a, b)
        except gc.ShapeError:  # shapes that do not broadcast: fall back to an element-wise op
            return gc.tanh(a)

    def build(self, a: Tensor, b: Tensor) -> Tensor:
        rng = self.rng
        kind = rng.integers(20)
        if kind == 0:
            return a + b
        if kind == 1:
            return a - b
        if kind == 2:
            return a * b
        if kind == 3:
            return a / b
        if kind == 4:
            return -a
        if kind == 5:
            return gc.tanh(a)
        if kind == 6:
            return gc.exp(gc.tanh(a))
        if kind == 7:
            return gc.sqrt(a)
        if kind == 8:
            return gc.maximum(a, b)
        if kind == 9:
            return gc.square(a)
        if kind == 10:
            axis = None if a.ndim == 0 or rng.random() < 0.3 else int(rng.integers(a.ndim))
            return gc.sum(a, axis=axis, keepdims=bool(rng.random() < 0.5))
        if kind == 11:
            axis = None if a.ndim == 0 else int(rng.integers(a.ndim))
            return gc.mean(a, axis=axis)
        if kind == 12:
            return gc.where(a > b, a, b * 0.5)
        if kind == 13:
            return gc.broadcast_to(a, (3, 4)) if a.shape in [(), (4,), (1, 4), (3, 1), (3, 4)] else a
        if kind == 14:
            return a.T if a.ndim == 2 else gc.abs(a)
        if kind == 15:
            return gc.reshape(gc.reshape(a, (-1,)), tuple(-1 if s is None else s for s in a.shape)) \
                if a.ndim and a.shape.count(None) <= 1 else a * 1.0
        if kind == 16:
            return gc.cast(gc.cast(a, "float32"), "float64") if rng.random() < 0.5 else gc.cast(a, "float64")
        if kind == 17:  # a twin of an existing node, built separately
            return gc.tanh(a) + gc.tanh(a)
        if kind == 18:
            return gc.sin(a) * 1.0 + 0.0
        return gc.max(a, axis=None if a.ndim == 0 else -1)
