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


STEP_CASES = [
    Case("random_step_keys-count", lambda n: _keys(gc.cast(gc.sum(n) * 0.0 + 4.0, "int64")),
         lambda n: np.arange(1, 5, dtype=np.int64), [Spec((2,))], grad=False, dynamic_shape=True),
    Case("random_step_keys-sequence", lambda xs: _keys(None, xs), lambda xs: np.arange(1, 4, dtype=np.int64),
         [Spec((3, 2))], grad=False),
    Case("random_step_keys-nested", lambda xs: _keys(None, xs, parent=gc.constant(np.int64(2))),
         lambda xs: (2 << 32) + np.arange(1, 6, dtype=np.int64), [Spec((5,))], grad=False),
    Case("random_uniform-stepped", lambda x: _stepped(RandomUniform, 0.0, 1.0, like=x),
         lambda x: _stream_at(9).random(x.shape), [Spec((2, 3))], grad=False),
]


def _keys(count, sequence=None, parent=None):
    from graphc.random import StepKeys

    op = StepKeys(from_count=count is not None, nested=parent is not None)
    inputs = [count if count is not None else sequence] + ([parent] if parent is not None else [])
    return apply(op, *inputs)


def _stepped(cls, *params, like):
    op = cls(seed=SEED, salt=SALT, shape=None, like=True, dtype=np.dtype("float64"), stepped=True)
    return apply(op, gc.constant(np.int64(COUNTER)), *params, like, gc.constant(np.int64(9)))


def _stream_at(step):  # Philox counter word 2 is the loop step's key
    bits = np.random.Philox(key=np.array([SEED, SALT], np.uint64),
                            counter=np.array([0, COUNTER, step, 0], np.uint64))
    return np.random.Generator(bits)


@pytest.mark.parametrize("case", STEP_CASES, ids=repr)
def test_step_values(case):
    check_value(case, np.float64)
    check_unknown_sizes(case)


def test_step_draws_keys_only_the_step_functions_own_draws():
    from graphc.random import begin_step_function, end_step_function, step_draws

    gen = gc.random.Generator(0)
    outer = gen.uniform((2,))  # made before the step function: one value for every step
    key = begin_step_function()
    try:
        inner = gen.normal((2,))
        result = [outer + inner * 2.0, outer]
    finally:
        end_step_function(key)
    (stepped, kept), used = step_draws(result, key)
    assert used and kept is outer
    draws = [n for n in gc.tensor.toposort([stepped]) if isinstance(n.primitive, RandomNormal)]
    assert len(draws) == 1 and draws[0].primitive.stepped and draws[0].inputs[-1] is key
    other = begin_step_function()
    end_step_function(other)
    assert step_draws([outer * 3.0], other)[1] is False  # no draw of its own: the key is not needed
    again, used = step_draws([stepped], key)  # already stepped: left as they are
    assert again[0] is stepped

