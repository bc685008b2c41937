"""Names and argument forms the API contract implies (``/work/shared/graphc-api.md``).

* ``Tensor.op`` is the public function that made the tensor, also for functions composed of other
  ops (``top_k``'s values, ``layer_norm``, ``batch_norm``, ``dropout``);
* ``dropout`` takes a 0-d tensor rate; ``var``/``std`` a whole-numbered float ``ddof``; the
  optimizers a 0-d ``np.ndarray`` hyper-parameter (NumPy's forms of the same values).

(``roll`` with tuple shifts and no axis and ``repeat`` with per-entry counts are value cases in
``tests/ops/test_shape.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ops.shape import Composite


def _run(outputs, feeds: dict, optimize: bool = True):
    fn = gc.function(list(feeds), outputs, optimize=optimize)
    return fn(*feeds.values())


# ---- .op of composed functions -------------------------------------------------------------------

def _composed(x, gen):
    values, indices = gc.top_k(x, 2)
    return {
        "top_k": values,
        "layer_norm": gc.layer_norm(x),
        "batch_norm": gc.batch_norm(x, gc.mean(x, axis=0), gc.var(x, axis=0), scale=2.0, offset=1.0),
        "dropout": gc.dropout(x, 0.5, gen),
    }, indices


def test_composed_functions_report_their_own_name():
    x = gc.placeholder("x", (4, 3))
    gen = gc.random.Generator(0)
    results, indices = _composed(x, gen)
    for name, tensor in results.items():
        assert tensor.op == name
        assert tensor.primitive.name == "composite" and tensor.primitive.label == name
    assert indices.op == "top_k"
    assert gc.dropout(x, 0.5, gen, training=gc.placeholder("t", (), "bool")).op == "dropout"
    assert "layer_norm" in gc.debugprint(results["layer_norm"])


@pytest.mark.parametrize("optimize", [True, False])
def test_the_name_changes_no_value_or_gradient(optimize):
    x = gc.placeholder("x", (4, 3))
    data = np.random.default_rng(0).standard_normal((4, 3))
    values, _ = gc.top_k(x, 2)
    unnamed = values.inputs[0]  # the gather under the name
    assert unnamed.op == "take_along_axis"
    norm = gc.layer_norm(x)
    got = _run([values, gc.grad(gc.sum(values * values), x), norm, gc.grad(gc.sum(norm * x), x)], {x: data},
               optimize)
    want = _run([unnamed, gc.grad(gc.sum(unnamed * unnamed), x), norm.inputs[0],
                 gc.grad(gc.sum(norm.inputs[0] * x), x)], {x: data}, optimize)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[0], -np.sort(-data, axis=-1)[:, :2])


def test_the_optimizer_drops_the_name_node():
    x = gc.placeholder("x", (4, 3))
    results, _ = _composed(x, gc.random.Generator(0))

    def named_steps(optimize):
        plan = gc.function([x], list(results.values()), optimize=optimize).plan
        return sorted(t.op for t in plan.steps if isinstance(t.primitive, Composite))

    assert named_steps(True) == []
    assert named_steps(False) == sorted(results)


def test_the_name_survives_save_load_and_a_bad_label_is_refused(tmp_path):
    x = gc.placeholder("x", (2, 3))
    fn = gc.function([x], gc.layer_norm(x), optimize=False)
    path = tmp_path / "named.gc"
    gc.save(fn, path)
    loaded = gc.load(path)
    assert loaded.outputs.op == "layer_norm"
    data = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(loaded(data), fn(data))
    with pytest.raises(ValueError, match="label"):
        Composite("exp")


# ---- dropout with a tensor rate ------------------------------------------------------------------

def test_dropout_rate_tensor_matches_the_number():
    x = gc.placeholder("x", (None, 50))
    rate = gc.placeholder("rate", ())
    data = np.random.default_rng(1).standard_normal((20, 50))
    by_number = gc.function([x], gc.dropout(x, 0.3, gc.random.Generator(7)))
    by_tensor = gc.function([x, rate], gc.dropout(x, rate, gc.random.Generator(7)))
    np.testing.assert_array_equal(by_tensor(data, 0.3), by_number(data))  # the same mask and scale
    np.testing.assert_array_equal(by_tensor(data, 1.0), np.zeros_like(data))  # no 0/0 at rate 1
    np.testing.assert_array_equal(by_tensor(data, 0.0), data)
    with pytest.raises(gc.ExecutionError):
        by_tensor(data, 1.5)


def test_dropout_rate_tensor_dtype_gradient_and_errors():
    x = gc.placeholder("x", (8,), "float32")
    rate = gc.placeholder("rate", ())  # float64: the result stays float32
    out = gc.dropout(x, rate, gc.random.Generator(3))
    assert out.dtype == np.float32 and out.op == "dropout"
    fn = gc.function([x, rate], [out, gc.grad(gc.sum(out), x)])
    y, gx = fn(np.ones(8, np.float32), 0.75)
    np.testing.assert_array_equal(gx, y)  # d(x * mask / 0.25)/dx = mask / 0.25 = y at x = 1
    assert set(np.unique(y)) <= {0.0, 4.0}
    no_gradient = gc.grad(gc.sum(gc.dropout(gc.constant(np.ones(3)), rate, gc.random.Generator(0))), rate)
    assert gc.function([rate], no_gradient)(0.5) == 0.0  # the rate only sets the mask's odds
    with pytest.raises(gc.ShapeError, match="rate"):
        gc.dropout(x, gc.placeholder("r", (2,)), gc.random.Generator(0))
    with pytest.raises(gc.DTypeError, match="rate"):
        gc.dropout(x, gc.placeholder("r", (), "int64"), gc.random.Generator(0))
    np.testing.assert_array_equal(gc.function([x], gc.dropout(x, np.asarray(0.0), gc.random.Generator(0)))(
        np.ones(8, np.float32)), np.ones(8))  # a 0-d array is the number it holds


# ---- ddof and optimizer hyper-parameters ---------------------------------------------------------

def test_whole_numbered_float_ddof():
    x = gc.placeholder("x", (5, 2))
    data = np.random.default_rng(2).standard_normal((5, 2))
    for ddof in (1.0, np.float32(1.0), np.float64(2.0)):
        got = _run([gc.var(x, axis=0, ddof=ddof), gc.std(x, ddof=ddof)], {x: data})
        np.testing.assert_array_equal(got[0], np.var(data, axis=0, ddof=ddof))
        np.testing.assert_array_equal(got[1], np.std(data, ddof=ddof))
        assert gc.var(x, ddof=ddof).primitive == gc.var(x, ddof=int(ddof)).primitive
    for bad in (0.5, float("inf"), float("nan"), True, "1"):
        with pytest.raises(TypeError, match="ddof"):
            gc.var(x, ddof=bad)


@pytest.mark.parametrize("rule", [gc.optim.sgd, gc.optim.adam, gc.optim.adamw, gc.optim.rmsprop,
                                  gc.optim.adagrad])
def test_optimizers_take_a_0d_array_learning_rate(rule):
    def step(lr):
        w = gc.variable(np.array([1.0, -2.0]), name="w")
        fn = gc.function([], [], updates=rule(gc.sum(w * w), [w], lr=lr))
        fn()
        fn()
        return w.value

    np.testing.assert_array_equal(step(np.asarray(0.1)), step(0.1))
    np.testing.assert_array_equal(step(np.asarray(0.1, np.float32)), step(float(np.float32(0.1))))
    w = gc.variable(np.ones(2), name="w")
    with pytest.raises(TypeError, match="lr must be a number or a 0-d tensor, got ndarray"):
        rule(gc.sum(w), [w], lr=np.array([0.1]))
    with pytest.raises(ValueError, match="out of range"):
        rule(gc.sum(w), [w], lr=np.asarray(-1.0))
