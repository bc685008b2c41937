"""gc.data.minibatches: aligned batches, shuffling with seeds, the last batch, errors."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


def arrays(n: int = 10):
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    y = np.arange(n) * 10
    return x, y


def test_shuffled_batches_are_aligned_and_cover_every_example_once():
    x, y = arrays(10)
    batches = list(gc.data.minibatches(x, y, batch_size=3, seed=0))
    assert [len(bx) for bx, _ in batches] == [3, 3, 3, 1]     # the last one is shorter
    for bx, by in batches:
        np.testing.assert_array_equal(bx[:, 0] / 2 * 10, by)  # row i of x goes with entry i of y
    seen = np.concatenate([by for _, by in batches])
    assert sorted(seen.tolist()) == y.tolist()
    assert seen.tolist() != y.tolist()                         # shuffled


def test_drop_last_and_exact_division():
    x, y = arrays(10)
    assert [len(b[0]) for b in gc.data.minibatches(x, y, batch_size=3, drop_last=True, seed=0)] == [3, 3, 3]
    assert [len(b[0]) for b in gc.data.minibatches(x, batch_size=5, seed=0)] == [5, 5]
    assert [len(b[0]) for b in gc.data.minibatches(x, batch_size=5, drop_last=True, seed=0)] == [5, 5]
    assert [len(b[0]) for b in gc.data.minibatches(x, batch_size=20, seed=0)] == [10]
    assert list(gc.data.minibatches(x, batch_size=20, drop_last=True)) == []
    assert list(gc.data.minibatches(np.zeros((0, 3)), batch_size=4)) == []


def test_without_shuffle_batches_come_in_order_as_views():
    x, y = arrays(7)
    batches = list(gc.data.minibatches(x, y, batch_size=4, shuffle=False))
    np.testing.assert_array_equal(batches[0][1], [0, 10, 20, 30])
    np.testing.assert_array_equal(batches[1][1], [40, 50, 60])
    assert np.shares_memory(batches[0][0], x)


def test_seeds_reproduce_and_none_draws_fresh_orders():
    x, y = arrays(100)

    def order(seed):
        return np.concatenate([by for _, by in gc.data.minibatches(x, y, batch_size=16, seed=seed)]).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert order(None) != order(None)
    generator = np.random.default_rng(9)
    first = np.concatenate([b for (b,) in gc.data.minibatches(y, batch_size=16, seed=generator)]).tolist()
    second = np.concatenate([b for (b,) in gc.data.minibatches(y, batch_size=16, seed=generator)]).tolist()
    assert first != second                 # one Generator gives each epoch its own order


def test_a_single_array_gives_one_tuples_and_lists_are_accepted():
    batches = list(gc.data.minibatches([1, 2, 3], batch_size=2, shuffle=False))
    assert all(isinstance(batch, tuple) and len(batch) == 1 for batch in batches)
    np.testing.assert_array_equal(batches[1][0], [3])


def test_errors_are_raised_when_called_not_when_iterated():
    x, y = arrays(10)
    with pytest.raises(ValueError, match=r"different lengths \[10, 9\]"):
        gc.data.minibatches(x, y[:9], batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        gc.data.minibatches(x, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        gc.data.minibatches(x, batch_size=2.5)
    with pytest.raises(TypeError, match="at least one array"):
        gc.data.minibatches(batch_size=2)
    with pytest.raises(ValueError, match="0-d"):
        gc.data.minibatches(np.float64(3.0), batch_size=2)
    with pytest.raises(TypeError, match="seed must be None"):
        gc.data.minibatches(x, batch_size=2, seed=-1)
    with pytest.raises(TypeError, match="shuffle and drop_last"):
        gc.data.minibatches(x, batch_size=2, shuffle="no")
    with pytest.raises(TypeError, match="batch_size"):
        gc.data.minibatches(x, 2)  # batch_size is keyword-only: a second positional value is an array


def test_batches_feed_a_training_step():
    rng = np.random.default_rng(0)
    x_value = rng.normal(size=(64, 3))
    y_value = x_value @ np.array([1.0, -2.0, 0.5])
    x = gc.placeholder("x", shape=(None, 3))
    y = gc.placeholder("y", shape=(None,))
    w = gc.variable(gc.init.zeros(3), name="w")
    loss = gc.mean(gc.square(x @ w - y))
    step = gc.function([x, y], loss, updates=gc.optim.sgd(loss, [w], lr=0.1))
    for epoch in range(30):
        for bx, by in gc.data.minibatches(x_value, y_value, batch_size=10, seed=epoch):
            step(bx, by)
    np.testing.assert_allclose(w.value, [1.0, -2.0, 0.5], atol=1e-3)
