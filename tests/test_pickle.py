import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def forbid_optimizing() -> None:
    """In a fresh process: make every way into the optimizer (and Function.__init__) fail."""
    import importlib

    def refuse(*args, **kwargs):
        raise AssertionError("optimized or compiled again while loading")

    # graphc.function is also the name of gc.function: reach the modules through sys.modules
    passes, pipeline = importlib.import_module("graphc.passes"), importlib.import_module("graphc.passes.pipeline")
    for module in (passes, pipeline):
        for name in ("optimize", "optimize_tensors", "run_pipeline", "run_pass", "canonicalize"):
            if hasattr(module, name):
                setattr(module, name, refuse)
    function_module = importlib.import_module("graphc.function")
    function_module.prepare_graph = refuse
    function_module.Function.__init__ = refuse


def _model(seed=0):
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, 4))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    w = gc.variable(rng.normal(size=(4, 3)), name="W")
    b = gc.variable(np.zeros(3), name="b")
    loss = gc.mean(gc.softmax_cross_entropy(gc.matmul(x, w) + b, labels))
    gw, gb = gc.grad(loss, [w, b])
    train = gc.function([x, labels], {"loss": loss, "grads": (gw, gb)},
                        updates={w: w - 0.5 * gw, b: b - 0.5 * gb})
    data = rng.normal(size=(16, 4))
    targets = (data[:, 0] > 0).astype(np.int64) + (data[:, 1] > 0).astype(np.int64)
    return train, (w, b), data, targets


def _run_subprocess(script: str, tmp_path) -> None:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    done = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr.decode()


def test_round_trip_in_process():
    train, (w, b), data, targets = _model()
    for _ in range(3):
        train(data, targets)
    clone = pickle.loads(pickle.dumps(train))
    new_w = [t for t in clone.plan.variables if t.name == "W"][0]
    np.testing.assert_array_equal(new_w.value, w.value)
    first, second = train(data, targets), clone(data, targets)
    assert set(second) == {"loss", "grads"} and isinstance(second["grads"], tuple)
    np.testing.assert_array_equal(first["loss"], second["loss"])
    np.testing.assert_array_equal(first["grads"][0], second["grads"][0])
    np.testing.assert_array_equal(w.value, new_w.value)  # both took the same step
    assert new_w is not w  # the copy has its own state


def test_restored_function_has_the_attributes_of_a_fresh_one():
    train, *_ = _model()
    clone = pickle.loads(pickle.dumps(train))
    assert sorted(vars(clone)) == sorted(vars(train))


def test_keyword_call_and_set_value_after_loading():
    train, (w, b), data, targets = _model()
    w.set_value(np.full((4, 3), 0.25))
    clone = pickle.loads(pickle.dumps(train))
    np.testing.assert_array_equal(clone(x=data, labels=targets)["loss"], train(data, targets)["loss"])
    with pytest.raises(gc.FeedError):
        clone(data)


def test_fresh_process_without_optimizing_after_training(tmp_path):
    train, (w, b), data, targets = _model()
    for _ in range(5):
        train(data, targets)
    (tmp_path / "fn.pkl").write_bytes(pickle.dumps(train))
    np.savez(tmp_path / "data.npz", data=data, targets=targets)
    expected = [train(data, targets)["loss"] for _ in range(3)]
    _run_subprocess(f"""
        import pickle, numpy as np
        from tests.test_pickle import forbid_optimizing
        forbid_optimizing()
        with open({str(tmp_path / "fn.pkl")!r}, "rb") as handle:
            train = pickle.load(handle)
        arrays = np.load({str(tmp_path / "data.npz")!r})
        losses = [train(arrays["data"], arrays["targets"])["loss"] for _ in range(3)]
        weights = {{v.name: v.value for v in train.plan.variables}}
        np.savez({str(tmp_path / "out.npz")!r}, losses=np.array(losses), **weights)
    """, tmp_path)
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["losses"], np.array(expected))
    np.testing.assert_array_equal(out["W"], w.value)
    np.testing.assert_array_equal(out["b"], b.value)


def test_shared_variables_stay_shared_within_one_pickle():
    x = gc.placeholder("x", (2,))
    v = gc.variable(np.zeros(2), name="v")
    step = gc.function([x], [], updates={v: v + x})
    read = gc.function([], v * 2.0)
    step2, read2 = pickle.loads(pickle.dumps([step, read]))
    step2(np.ones(2))
    np.testing.assert_array_equal(read2(), np.full(2, 2.0))
    np.testing.assert_array_equal(read(), np.zeros(2))


def test_non_placeholder_inputs_and_constants():
    x = gc.placeholder("x", (3,))
    h = gc.exp(x) + gc.constant([1.0, 2.0, 3.0])
    fn = gc.function([h], h * 2.0)
    clone = pickle.loads(pickle.dumps(fn))
    np.testing.assert_array_equal(clone(np.ones(3)), fn(np.ones(3)))


def custom_forward(a):
    return np.cumsum(a)


def custom_grad(inputs, output, g):
    return gc.ones_like(inputs[0]) * gc.sum(g)


def test_custom_op_pickles_by_reference():
    cumsum = gc.custom_op("cumsum", custom_forward, custom_grad)
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], cumsum(x) * 2.0)
    clone = pickle.loads(pickle.dumps(fn))
    np.testing.assert_array_equal(clone(np.arange(3.0)), [0.0, 2.0, 6.0])


def test_custom_op_with_lambda_does_not_pickle():
    op = gc.custom_op("twice", lambda a: 2 * a, None)
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], op(x))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(fn)


def test_deep_graph_pickles_without_recursion():
    x = gc.placeholder("x", (2,))
    y = x
    for i in range(10000):
        y = gc.sin(y) if i % 2 else y * 1.0001
    fn = gc.function([x], y, optimize=False)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        data = pickle.dumps(fn)
        clone = pickle.loads(data)
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_array_equal(clone(np.ones(2)), fn(np.ones(2)))


def test_unknown_state_version():
    from graphc.pickling import restore_function

    with pytest.raises(gc.LoadError, match="version"):
        restore_function({"version": 999})


def test_a_dict_of_functions_keeps_its_shared_variables():
    x = gc.placeholder("x", (None, 2))
    w = gc.variable(np.ones((2, 1)), name="w")
    loss = gc.mean(gc.square(x @ w - 1.0))
    model = {"train": gc.function([x], loss, updates=gc.optim.adam(loss, [w], lr=0.1)),
             "predict": gc.function([x], x @ w)}
    batch = np.array([[1.0, 2.0], [0.5, -1.0]])
    model["train"](batch)
    clone = pickle.loads(pickle.dumps(model))
    shared = clone["predict"].plan.variables[0]
    assert clone["train"].plan.updated_variables[0] is shared     # one variable again, a new one
    assert shared is not w
    before = clone["predict"](batch)
    for _ in range(2):
        assert clone["train"](batch) == model["train"](batch)      # the Adam state was pickled too
    assert not np.allclose(clone["predict"](batch), before)        # training the clone moves its predict
    np.testing.assert_array_equal(clone["predict"](batch), model["predict"](batch))
