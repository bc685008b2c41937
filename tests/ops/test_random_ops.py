"""The draw ops as table cases: value, static type and unknown sizes, against NumPy's Philox.

Each case applies a draw op to a constant counter (no generator variable, so no implicit
update): its value is then a fixed function of the inputs, which the reference computes with
NumPy's ``Philox`` keyed by (seed, salt) at that counter, as graphc/random.py documents. The
draws have no gradient (``zero_gradient``); tests/test_random.py covers them as users meet them.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.op import apply
from graphc.random import RandomBernoulli, RandomIntegers, RandomNormal, RandomUniform

from .util import Case, Spec, check_unknown_sizes, check_value, uniform

FLOATS = [np.float64, np.float32]
SEED, SALT, COUNTER = 77, 5, 3


def _stream() -> np.random.Generator:
    bits = np.random.Philox(key=np.array([SEED, SALT], np.uint64), counter=np.array([0, COUNTER, 0, 0], np.uint64))
    return np.random.Generator(bits)


def _draw(cls, *params, like=None, shape=None, dtype="float64"):
    op = cls(seed=SEED, salt=SALT, shape=shape, like=like is not None, dtype=np.dtype(dtype))
    inputs = [gc.constant(np.int64(COUNTER)), *params] + ([like] if like is not None else [])
    return apply(op, *inputs)


CASES = [
    Case("random_uniform-like", lambda x: _draw(RandomUniform, -1.0, 3.0, like=x),
         lambda x: -1.0 + 4.0 * _stream().random(x.shape), [Spec((3, 4))], grad=False),
    Case("random_uniform-params", lambda low: _draw(RandomUniform, low, gc.constant(2.0)),
         lambda low: (low + (2.0 - low) * _stream().random(low.shape)), [Spec((2, 3), kind="float64")],
         grad=False),
    Case("random_normal-like", lambda x: _draw(RandomNormal, 0.5, 2.0, like=x),
         lambda x: 0.5 + 2.0 * _stream().standard_normal(x.shape), [Spec((5,))], grad=False),
    Case("random_normal-float32", lambda x: _draw(RandomNormal, np.float32(0.0), np.float32(1.0), like=x,
                                                  dtype="float32"),
         lambda x: _stream().standard_normal(x.shape, dtype=np.float32), [Spec((2, 2))], grad=False),
    Case("random_bernoulli-p", lambda p: _draw(RandomBernoulli, p),
         lambda p: (_stream().random(p.shape) < p).astype(np.float64), [Spec((4, 3), uniform(0.0, 1.0),
                                                                              kind="float64")], grad=False),
    Case("random_bernoulli-bool-like", lambda x: _draw(RandomBernoulli, 0.4, like=x, dtype=bool),
         lambda x: _stream().random(x.shape) < 0.4, [Spec((6,))], grad=False),
    Case("random_integers-like", lambda x: _draw(RandomIntegers, np.int64(-3), np.int64(9), like=x, dtype="int64"),
         lambda x: _stream().integers(-3, 9, size=x.shape, dtype=np.int64), [Spec((3, 3))], grad=False),
    Case("random_integers-int8", lambda x: _draw(RandomIntegers, np.int64(0), np.int64(4), shape=(7,),
                                                 dtype="int8") + gc.cast(gc.sum(x) * 0.0, "int8"),
         lambda x: _stream().integers(0, 4, size=(7,), dtype=np.int8), [Spec((2,))], grad=False),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_value(case, dtype):
    check_value(case, dtype)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_unknown_sizes(case):
    check_unknown_sizes(case)


def test_a_constant_counter_is_never_folded():
    u = _draw(RandomUniform, 0.0, 1.0, shape=(3,))
    optimized = gc.optimize(u)
    assert optimized.op == "random_uniform"
    np.testing.assert_array_equal(gc.function([], u)(), _stream().random(3))
