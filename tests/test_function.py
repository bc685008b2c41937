"""gc.function: calls, updates, threads, aliasing, untouched feeds, errors."""

import pickle
import threading

import numpy as np
import pytest

import graphc as gc


@pytest.fixture(params=[True, False], ids=["optimized", "as-built"])
def optimize(request):
    return request.param


def test_positional_and_keyword_calls(optimize):
    x = gc.placeholder("x", (2,))
    y = gc.placeholder("y", (2,))
    fn = gc.function([x, y], x - y, optimize=optimize)
    np.testing.assert_array_equal(fn([3.0, 4.0], [1.0, 1.0]), [2.0, 3.0])
    np.testing.assert_array_equal(fn(y=[1.0, 1.0], x=[3.0, 4.0]), [2.0, 3.0])
    np.testing.assert_array_equal(fn([3.0, 4.0], y=[1.0, 1.0]), [2.0, 3.0])
    with pytest.raises(gc.FeedError, match="'y'"):
        fn([3.0, 4.0])
    with pytest.raises(gc.FeedError, match="'z'"):
        fn([3.0, 4.0], z=[1.0, 1.0])
    with pytest.raises(gc.FeedError, match="twice"):
        fn([3.0, 4.0], x=[1.0, 1.0])
    with pytest.raises(gc.FeedError):
        fn(1, 2, 3)


def test_outputs_keep_their_structure(optimize):
    x = gc.placeholder("x")
    fn = gc.function([x], {"double": x * 2.0, "pair": (x + 1.0, [x - 1.0])}, optimize=optimize)
    out = fn(1.0)
    assert out["double"] == 2.0 and out["pair"][0] == 2.0 and out["pair"][1][0] == 0.0


def test_missing_placeholder_is_reported_when_compiling():
    x = gc.placeholder("x")
    hidden = gc.placeholder("hidden")
    with pytest.raises(gc.FeedError, match="'hidden'"):
        gc.function([x], x + hidden)


def test_updates_are_simultaneous_and_outputs_see_old_values(optimize):
    a = gc.variable(np.array([1.0, 2.0]), name="a")
    b = gc.variable(np.array([10.0, 20.0]), name="b")
    fn = gc.function([], [a, b], updates={a: a + b, b: a * b}, optimize=optimize)
    old_a, old_b = fn()
    np.testing.assert_array_equal(old_a, [1.0, 2.0])
    np.testing.assert_array_equal(a.value, [11.0, 22.0])
    np.testing.assert_array_equal(b.value, [10.0, 40.0])


def test_sgd_on_a_quadratic_converges(optimize):
    target = np.array([1.0, -2.0, 3.0])
    w = gc.variable(np.zeros(3), name="w")
    loss = gc.sum(gc.square(w - target))
    step = gc.function([], loss, updates={w: w - 0.1 * gc.grad(loss, w)}, optimize=optimize)
    for _ in range(100):
        step()
    np.testing.assert_allclose(w.value, target, atol=1e-8)


def test_returned_arrays_never_alias(optimize):
    x = gc.placeholder("x", (3,))
    v = gc.variable(np.arange(3.0), name="v")
    c = gc.constant(np.ones(3))
    y = gc.exp(x)
    outputs = [x, v, c, y, y, gc.reshape(x, (3, 1)), gc.stop_gradient(v), x * 1.0, gc.transpose(y)]
    fn = gc.function([x], outputs, optimize=optimize)
    fed = np.array([1.0, 2.0, 3.0])
    results = fn(fed)
    for i, first in enumerate(results):
        assert first.flags.writeable
        assert not np.shares_memory(first, fed)
        assert not np.shares_memory(first, v.value)
        for second in results[i + 1:]:
            assert not np.shares_memory(first, second)
    for result in results:
        result[...] = -1.0  # the caller may write into them freely
    np.testing.assert_array_equal(fed, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(v.value, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(fn(fed)[2], [1.0, 1.0, 1.0])


def test_a_second_call_does_not_overwrite_earlier_results(optimize):
    x = gc.placeholder("x", (2,))
    fn = gc.function([x], gc.tanh(x) * 2.0, optimize=optimize)
    first = fn([0.5, 1.0])
    kept = first.copy()
    fn([3.0, 4.0])
    np.testing.assert_array_equal(first, kept)


def test_fed_arrays_are_never_written(optimize):
    x = gc.placeholder("x", (4,))
    w = gc.variable(np.ones(4), name="w")
    loss = gc.sum(gc.relu(x * w) + gc.exp(-x))
    fn = gc.function([x], [loss, gc.grad(loss, x)], updates={w: w - 0.1 * gc.grad(loss, w)}, optimize=optimize)
    fed = np.array([1.0, -2.0, 3.0, 0.5])
    fed.flags.writeable = False  # any write would raise
    fn(fed)
    writable = np.array([1.0, -2.0, 3.0, 0.5])
    fn(writable)
    np.testing.assert_array_equal(writable, [1.0, -2.0, 3.0, 0.5])


def test_variable_values_are_snapshots():
    v = gc.variable(np.zeros(2), name="v")
    before = v.value
    gc.function([], v, updates={v: v + 1.0})()
    np.testing.assert_array_equal(before, [0.0, 0.0])  # the old array was replaced, not written


def test_eight_threads_compute_correct_results(optimize):
    x = gc.placeholder("x", (None, 16))
    w = gc.variable(np.random.default_rng(0).normal(size=(16, 8)), name="w")
    out = gc.sum(gc.tanh(gc.matmul(x, w)), axis=1)
    fn = gc.function([x], out, optimize=optimize)
    inputs = [np.random.default_rng(i).normal(size=(32, 16)) for i in range(8)]
    expected = [np.tanh(batch @ w.value).sum(axis=1) for batch in inputs]
    errors = []

    def worker(index):
        for _ in range(50):
            result = fn(inputs[index])
            if not np.allclose(result, expected[index]):
                errors.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_updates_lose_nothing(optimize):
    counter = gc.variable(0.0, name="counter")
    total = gc.variable(np.zeros(3), name="total")
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], counter, updates={counter: counter + 1.0, total: total + x}, optimize=optimize)
    calls_per_thread = 200

    def worker():
        for _ in range(calls_per_thread):
            fn(np.ones(3))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value == 8 * calls_per_thread
    np.testing.assert_array_equal(total.value, np.full(3, 8.0 * calls_per_thread))


def test_update_dtype_is_kept():
    v = gc.variable(np.ones(2, dtype=np.float32), name="v")
    gc.function([], [], updates={v: v * 2.0})()
    assert v.value.dtype == np.float32 and v.value.tolist() == [2.0, 2.0]


def test_execution_error_in_function_names_user_line():
    idx = gc.placeholder("idx", (), dtype="int64")
    table = gc.constant(np.arange(4.0))
    picked = gc.take(table, idx)
    fn = gc.function([idx], picked)
    assert fn(2) == 2.0
    with pytest.raises(gc.ExecutionError, match=rf"take.*test_function.py:{picked.site[1]}"):
        fn(10)


def test_keyword_call_with_a_name_shared_by_two_inputs_is_ambiguous():
    a, b = gc.placeholder("p", (2,)), gc.placeholder("p", (2,))
    fn = gc.function([a, b], a - 2 * b)
    with pytest.raises(gc.FeedError, match="'p' is ambiguous: 2 inputs"):
        fn(p=np.ones(2))
    assert fn(np.ones(2), np.zeros(2)).tolist() == [1.0, 1.0]
    with pytest.raises(gc.FeedError, match="ambiguous"):
        pickle.loads(pickle.dumps(fn))(p=np.ones(2))


def test_a_bad_positional_feed_for_an_intermediate_input_names_its_op():
    x = gc.placeholder("x", (2,))
    e = gc.exp(x)
    with pytest.raises(gc.FeedError, match=r"'fed exp': shape \(3,\)"):
        gc.function([e], e * 2.0)(np.ones(3))


def _mlp_step(batch, rng_seed=0, layers=(6, 5, 4)):
    """An MLP step with the batch size ``batch`` (None: unknown) and its variables."""
    rng = np.random.default_rng(rng_seed)
    x = gc.placeholder("x", (batch, layers[0]))
    labels = gc.placeholder("labels", (batch,), "int64")
    params = []
    h = x
    for k, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        w, bias = gc.variable(rng.standard_normal((a, b)), name=f"W{k}"), gc.variable(np.zeros(b), name=f"b{k}")
        params += [w, bias]
        h = h @ w + bias
        if k < len(layers) - 2:
            h = gc.relu(h)
    loss = gc.mean(gc.softmax_cross_entropy(h, labels)) + 1e-3 * gc.sum(gc.square(params[0]))
    grads = gc.grad(loss, params)
    return gc.function([x, labels], [loss, h], updates=[(p, p - 0.1 * g) for p, g in zip(params, grads)]), params


@pytest.mark.parametrize("optimize", [True, False])
def test_unknown_sizes_get_a_plan_per_call_shape_with_the_same_values(optimize):
    # a batch size declared None: after a few calls of one shape, calls of that shape run a plan
    # made with the size known; its values are those of the general plan, bit for bit (checked
    # against a function declared with each size, which never had unknown sizes)
    free, free_params = _mlp_step(None)
    free = gc.function(free.inputs, free.outputs, updates=free._updates, optimize=optimize)
    fixed = {}
    for batch in (7, 3):
        fn, params = _mlp_step(batch)
        fixed[batch] = (gc.function(fn.inputs, fn.outputs, updates=fn._updates, optimize=optimize), params)
    rng = np.random.default_rng(1)
    for step in range(12):
        batch = (7, 3)[step % 2]
        fn, params = fixed[batch]
        for p, q in zip(params, free_params):
            p.set_value(q.value)
        x, labels = rng.standard_normal((batch, 6)), rng.integers(0, 4, batch)
        got, want = free(x, labels), fn(x, labels)
        for a, b in zip(got, want):
            assert a.shape == b.shape and a.tobytes() == b.tobytes(), step
        for p, q in zip(params, free_params):
            assert p.value.tobytes() == q.value.tobytes(), step
    runs = free._executable._dispatch.runs
    assert set(runs) == {((7, 6), (7,)), ((3, 6), (3,))}
    assert all(run is not free.plan.run for run in runs.values())


def test_unknown_sizes_that_do_not_fit_still_raise_when_running():
    a = gc.placeholder("a", (None,))
    b = gc.placeholder("b", (None,))
    fn = gc.function([a, b], a + b)
    for _ in range(5):  # (past the calls after which a shape gets its own plan)
        with pytest.raises(gc.ExecutionError, match="add"):
            fn(np.ones(3), np.ones(4))
    for n in range(1, 12):  # many shapes: a few get plans of their own, all are right
        for _ in range(3):
            np.testing.assert_array_equal(fn(np.arange(n, dtype=float), np.ones(n)), np.arange(n) + 1.0)
    specialized = [run for run in fn._executable._dispatch.runs.values() if run is not fn.plan.run]
    assert 1 <= len(specialized) <= 4


@pytest.mark.parametrize("positional", [True, False], ids=["positional", "keyword"])
def test_generated_call_checks_every_update_before_installing_any(optimize, positional):
    # the call is generated per function (straight-line installs): a new value whose size was
    # unknown is checked at run time, and its failure must leave the variable installed before it
    # in the plan's order unchanged too; a float32 new value of a float64 variable is cast
    w = gc.variable(np.zeros(3), name="w")
    v = gc.variable(np.zeros(3), name="v")
    c = gc.variable(np.zeros(2, np.float64), name="c")
    p = gc.placeholder("p", (None,))
    q = gc.placeholder("q", (2,), "float32")
    fn = gc.function([p, q], gc.sum(p), updates=[(w, w + 1.0), (v, p), (c, q)], optimize=optimize)
    assert fn._executable.execute_args.__code__.co_filename == "<graphc call>"
    bad = np.arange(4.0)
    for _ in range(4):  # past the per-shape plan's threshold too
        with pytest.raises(gc.ExecutionError, match="no variable was changed"):
            fn(bad, np.ones(2, np.float32)) if positional else fn(p=bad, q=np.ones(2, np.float32))
        for variable in (w, v, c):
            np.testing.assert_array_equal(variable.value, np.zeros(variable.shape))
    fed = np.array([1.0, 2.0, 3.0])
    total = fn(fed, np.full(2, 0.5, np.float32)) if positional else fn(p=fed, q=np.full(2, 0.5, np.float32))
    assert total == 6.0
    np.testing.assert_array_equal(w.value, np.ones(3))
    np.testing.assert_array_equal(v.value, fed)
    assert c.value.dtype == np.float64 and not c.value.flags.writeable
    np.testing.assert_array_equal(c.value, [0.5, 0.5])
    assert not np.may_share_memory(v.value, fed)  # the fed array is not installed as the variable
    fed[0] = 9.0
    np.testing.assert_array_equal(v.value, [1.0, 2.0, 3.0])


def test_generated_call_reading_one_variable_waits_for_an_inplace_writer():
    # a function only reading a variable takes no lock; while an in-place call of another function
    # writes the variable, its value is None and the reader must wait for the lock instead
    v = gc.variable(np.arange(3.0), name="v")
    read = gc.function([], v * 2.0)
    with v.lock:
        object.__setattr__(v, "_value", None)
        got = []
        thread = threading.Thread(target=lambda: got.append(read()))
        thread.start()
        thread.join(0.2)
        assert thread.is_alive() and not got  # blocked on the lock
        v._install(np.arange(3.0) + 1.0)
    thread.join()
    np.testing.assert_array_equal(got[0], [2.0, 4.0, 6.0])
