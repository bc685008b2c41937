"""check_numerics=True: the first node producing a NaN/inf from finite inputs, feeds and variables."""

import inspect
import pickle
import re

import numpy as np
import pytest

import graphc as gc
from graphc.numerics import NumericsError


def _line() -> int:
    return inspect.currentframe().f_back.f_lineno


def deep_model(check: bool = True):
    x = gc.placeholder("x", (None, 4))
    w = gc.variable(np.full((4, 4), 0.1), name="W")
    h = x @ w
    for _ in range(25):
        h = gc.tanh(h) * 1.5 + 0.25
    shifted = h - 3.0  # negative: tanh * 1.5 + 0.25 < 1.75
    logged = gc.log(shifted); log_line = _line()  # noqa: E702 - the line the error must name
    h = logged
    for _ in range(25):
        h = gc.exp(h * 0.5) + h
    loss = gc.mean(h)
    step = gc.function([x], loss, updates={w: w - 0.01 * gc.grad(loss, w)}, check_numerics=check)
    return x, w, step, log_line


def test_names_the_origin_of_a_nan_in_a_deep_graph_and_changes_no_variable():
    _, w, step, log_line = deep_model()
    before = w.value.copy()
    with pytest.raises(gc.ExecutionError) as info:
        step(np.ones((3, 4)))
    error = info.value
    assert isinstance(error, NumericsError)
    message = str(error)
    assert "op 'log'" in message and f"{__file__}:{log_line}" in message
    assert "(3, 4) float64" in message and "NaN at 12 of 12 entries" in message
    assert error.node.op == "log"
    np.testing.assert_array_equal(w.value, before)
    # unchecked, the same call silently returns NaN and updates W
    _, w2, unchecked, _ = deep_model(check=False)
    assert np.isnan(unchecked(np.ones((3, 4))))
    assert np.isnan(w2.value).all()


def test_a_later_good_call_runs_normally():
    x = gc.placeholder("x", (3,))
    acc = gc.variable(np.zeros(3), name="acc")
    fn = gc.function([x], gc.sqrt(x), updates={acc: acc + gc.sqrt(x)}, check_numerics=True)
    with pytest.raises(gc.ExecutionError, match="op 'sqrt'"):
        fn(np.array([1.0, -4.0, 9.0]))
    np.testing.assert_array_equal(acc.value, 0.0)
    np.testing.assert_array_equal(fn(np.array([1.0, 4.0, 9.0])), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(acc.value, [1.0, 2.0, 3.0])


def test_nan_or_inf_in_a_feed_or_a_variable_names_it():
    x = gc.placeholder("x", (2,))
    v = gc.variable(np.ones(2), name="v")
    counter = gc.variable(0, name="counter")
    fn = gc.function([x], x * v, updates={counter: counter + 1}, check_numerics=True)
    with pytest.raises(gc.ExecutionError, match="placeholder 'x' holds NaN at 1 of 2 entries"):
        fn(np.array([1.0, np.nan]))
    v.set_value([np.inf, 1.0])
    with pytest.raises(gc.ExecutionError, match="variable 'v' .*holds an infinity"):
        fn(np.array([1.0, 2.0]))
    assert int(counter.value) == 0
    with gc.Session(check_numerics=True) as session:
        with pytest.raises(gc.ExecutionError, match="variable 'v'"):
            session.run(x * v, {x: np.ones(2)})


def test_infinities_from_an_infinite_constant_are_not_an_origin():
    x = gc.placeholder("x", (4,))
    masked = gc.where(x > 0, x, -gc.inf)  # -inf comes from the constant
    fn = gc.function([x], [gc.exp(masked), gc.logsumexp(masked)], check_numerics=True)
    probabilities, total = fn(np.array([1.0, -1.0, 2.0, -2.0]))
    assert probabilities[1] == 0.0 and np.isfinite(total)


def test_a_gradient_node_is_named_as_one():
    x = gc.placeholder("x", (2,))
    y = gc.sum(gc.sqrt(x))
    fn = gc.function([x], gc.grad(y, x), check_numerics=True)
    with pytest.raises(gc.ExecutionError, match="a gradient node") as info:
        fn(np.array([0.0, 1.0]))  # d sqrt(x)/dx = inf at 0
    assert "an infinity at 1 of 2 entries (the first at (0,))" in str(info.value)


def test_scalar_graphs_and_sessions():
    a = gc.placeholder("a")
    with gc.Session(check_numerics=True) as session:
        with pytest.raises(gc.ExecutionError, match="op 'log'"):
            session.run(gc.log(a - 2.0) * 3.0, {a: 1.0})
        assert session.run(gc.log(a), {a: 1.0}) == 0.0
    assert gc.function([a], gc.log(a), check_numerics=True).plan.scalar


def test_integer_and_bool_steps_are_not_checked():
    x = gc.placeholder("x", (3,), dtype="int64")
    fn = gc.function([x], [x * 2, x > 1], check_numerics=True)
    assert re.search(r"_n\d+\(", fn.plan.source) is None  # no step is wrapped
    float_fn = gc.function([x], x * 2.5, check_numerics=True)
    assert re.search(r"_n\d+\(", float_fn.plan.source) is not None
    np.testing.assert_array_equal(fn(np.arange(3))[0], [0, 2, 4])


def test_off_by_default_and_the_default_plan_is_unchanged():
    x = gc.placeholder("x", (None, 3))
    y = gc.sum(gc.log(x) * 2.0)
    default = gc.function([x], y)
    assert default.check_numerics is False and default.plan.check_numerics is False
    assert "_check_leaves" not in default.plan.source and "_NumericsError" not in default.plan.source
    checked = gc.function([x], y, check_numerics=True)
    assert "_check_leaves" in checked.plan.source
    assert np.isnan(default(-np.ones((2, 3))))
    # the same code as a plan built without the option
    from graphc.compile import build_plan

    again = build_plan(default.plan.outputs, default.plan.inputs)
    assert again.source == default.plan.source


def test_the_option_survives_pickle_and_save(tmp_path):
    x = gc.placeholder("x", (2,))
    fn = gc.function([x], gc.log(x), check_numerics=True)
    for loaded in (pickle.loads(pickle.dumps(fn)), _saved(fn, tmp_path)):
        assert loaded.check_numerics
        with pytest.raises(gc.ExecutionError, match="op 'log'"):
            loaded(np.array([1.0, -1.0]))
    plain = _saved(gc.function([x], gc.log(x)), tmp_path)
    assert not plain.check_numerics


def _saved(fn, tmp_path):
    path = tmp_path / "fn.graphc"
    gc.save(fn, path)
    return gc.load(path)


def test_not_with_inplace_updates():
    v = gc.variable(np.ones(3), name="v")
    with pytest.raises(ValueError, match="inplace_updates"):
        gc.function([], v, updates={v: v * 2.0}, check_numerics=True, inplace_updates=True)


def test_checked_values_equal_unchecked_ones():
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", (5, 4))
    w = gc.variable(rng.normal(size=(4, 3)), name="w")
    loss = gc.mean(gc.softmax_cross_entropy(x @ w, gc.constant(np.array([0, 1, 2, 0, 1]))))
    outputs = [loss, gc.grad(loss, w)]
    data = rng.normal(size=(5, 4))
    plain = gc.function([x], outputs)(data)
    checked = gc.function([x], outputs, check_numerics=True)(data)
    for a, b in zip(plain, checked):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_a_nan_made_from_infinite_inputs_is_caught():
    # a fully masked softmax row: its inputs hold -inf but no NaN, its output is NaN
    logits = gc.placeholder("logits", (2, 3))
    mask = gc.constant(np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]]))
    checked = gc.function([logits], gc.softmax(logits + mask), check_numerics=True)
    with pytest.raises(gc.ExecutionError, match="'softmax'.*NaN.*inputs holding no NaN"):
        checked(np.zeros((2, 3)))
    # the infinities themselves came from the constant: passing them on is not an error
    masked = gc.function([logits], gc.exp(logits + mask), check_numerics=True)
    np.testing.assert_array_equal(masked(np.zeros((2, 3))), [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
