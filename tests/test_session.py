"""Session.run: fetch structures, feeds, plan caching, updates, errors."""

import collections

import numpy as np
import pytest

import graphc as gc


@pytest.fixture(params=[True, False], ids=["optimized", "as-built"])
def session(request):
    with gc.Session(optimize=request.param) as sess:
        yield sess


def test_nested_fetch_structures(session):
    x = gc.placeholder("x", (2,))
    a, b = x + 1.0, x * 2.0
    Pair = collections.namedtuple("Pair", "first second")
    out = session.run({"a": a, "list": [b, (a, b)], "pair": Pair(a, b)}, {x: np.array([1.0, 2.0])})
    assert set(out) == {"a", "list", "pair"}
    np.testing.assert_array_equal(out["a"], [2.0, 3.0])
    assert isinstance(out["list"], list) and isinstance(out["list"][1], tuple)
    np.testing.assert_array_equal(out["list"][1][1], [2.0, 4.0])
    assert isinstance(out["pair"], Pair)
    np.testing.assert_array_equal(out["pair"].second, [2.0, 4.0])
    single = session.run(a, {x: [0.0, 0.0]})
    assert isinstance(single, np.ndarray) and single.tolist() == [1.0, 1.0]


def test_zero_d_results_are_arrays(session):
    x = gc.placeholder("x")
    out = session.run(gc.exp(x), {x: 0.0})
    assert isinstance(out, np.ndarray) and out.shape == () and out == 1.0


def test_plan_is_compiled_once_per_signature():
    x = gc.placeholder("x", (None,))
    y = gc.placeholder("y", (None,))
    total = gc.sum(x * y)
    with gc.Session() as sess:
        for n in range(1, 5):
            sess.run(total, {x: np.ones(n), y: np.ones(n)})
        assert sess.cache_size == 1
        sess.run([total], {x: np.ones(2), y: np.ones(2)})  # same tensors, other structure: same plan
        assert sess.cache_size == 1
        sess.run([total, x * 2.0], {x: np.ones(2), y: np.ones(2)})
        assert sess.cache_size == 2
        sess.run(total, {"x": np.ones(2), y: np.ones(2)})  # feeding by name: same signature
        assert sess.cache_size == 2


def test_feeding_by_name_and_unknown_keys():
    x = gc.placeholder("x", (2,))
    with gc.Session() as sess:
        np.testing.assert_array_equal(sess.run(x * 2.0, {"x": [1.0, 2.0]}), [2.0, 4.0])
        with pytest.raises(gc.FeedError, match="'nope'"):
            sess.run(x * 2.0, {"nope": [1.0, 2.0]})
        with pytest.raises(gc.FeedError, match="unknown feed key"):
            sess.run(x * 2.0, {42: [1.0, 2.0]})


def test_feed_errors_name_the_placeholder_and_run_nothing():
    x = gc.placeholder("inputs", (None, 3))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    counter = gc.variable(0.0, name="counter")
    with gc.Session() as sess:
        run = lambda feeds: sess.run(gc.sum(x), feeds, updates={counter: counter + 1.0})  # noqa: E731
        with pytest.raises(gc.FeedError, match="missing.*'inputs'|'inputs'.*missing|'inputs'"):
            run({})
        with pytest.raises(gc.FeedError, match=r"'inputs'.*\(2, 4\).*\(\?, 3\)"):
            run({x: np.ones((2, 4))})
        with pytest.raises(gc.FeedError, match=r"'inputs'.*\(3,\)"):
            run({x: np.ones(3)})
        with pytest.raises(gc.FeedError, match="'labels'.*float64.*int64"):
            sess.run(gc.sum(labels), {labels: np.array([0.5, 1.5])})
        assert isinstance(gc.FeedError("x"), ValueError)
        assert counter.value == 0.0
        run({x: np.ones((2, 3))})
        assert counter.value == 1.0


def test_safe_casts_are_accepted():
    x = gc.placeholder("x", (3,), dtype="float32")
    out = gc.Session().run(x * 2, {x: np.array([1, 2, 3])})
    assert out.dtype == np.float32 and out.tolist() == [2.0, 4.0, 6.0]


def test_feeding_an_intermediate_tensor_overrides_it():
    x = gc.placeholder("x", (2,))
    hidden = gc.exp(x)
    out = hidden * 3.0
    np.testing.assert_allclose(gc.Session().run(out, {hidden: np.array([1.0, 2.0])}), [3.0, 6.0])


def test_updates_are_simultaneous(session):
    a = gc.variable(1.0, name="a")
    b = gc.variable(10.0, name="b")
    fetched = session.run([a + b, a * b], updates={a: b, b: a})  # a swap
    assert [float(v) for v in fetched] == [11.0, 10.0]
    assert a.value == 10.0 and b.value == 1.0


def test_updates_as_list_of_pairs(session):
    v = gc.variable(np.zeros(2), name="v")
    session.run(v, updates=[(v, v + 1.0)])
    np.testing.assert_array_equal(v.value, [1.0, 1.0])


def test_update_errors_change_nothing():
    a = gc.variable(np.ones(2), name="a")
    b = gc.variable(np.ones(2), name="b")
    x = gc.placeholder("x", (None,))
    with gc.Session() as sess:
        with pytest.raises(gc.ExecutionError):
            # b's new value has the wrong run-time shape: neither a nor b may change
            sess.run(a, {x: np.ones(3)}, updates={a: a + 1.0, b: b + x})
    np.testing.assert_array_equal(a.value, [1.0, 1.0])
    np.testing.assert_array_equal(b.value, [1.0, 1.0])


def test_bad_updates_are_rejected_when_built():
    v = gc.variable(np.zeros(2), name="v")
    with pytest.raises(gc.ShapeError, match="'v'"):
        gc.Session().run(v, updates={v: gc.constant(np.zeros(3))})
    with pytest.raises(gc.DTypeError, match="'v'"):
        gc.Session().run(v, updates={gc.variable(np.zeros(2, dtype=np.int64), name="v"): v * 0.5})
    with pytest.raises(TypeError):
        gc.Session().run(v, updates={v * 2.0: v})


def test_execution_error_names_op_shapes_and_line():
    x = gc.placeholder("x", (None, 3))
    w = gc.placeholder("w", (None, 2))
    product = gc.matmul(x, w)  # the size check is only possible at run time
    line = product.site[1]
    with pytest.raises(gc.ExecutionError) as info:
        gc.Session(optimize=False).run(product, {x: np.ones((2, 3)), w: np.ones((4, 2))})
    message = str(info.value)
    assert "matmul" in message and "(2, 3)" in message and "(4, 2)" in message
    assert f"test_session.py:{line}" in message


def test_closed_session_refuses_to_run():
    sess = gc.Session()
    sess.close()
    with pytest.raises(RuntimeError):
        sess.run(gc.constant(1.0))


def test_a_bad_feed_for_an_intermediate_tensor_describes_that_tensor():
    x = gc.placeholder("x", (2,))
    e = gc.exp(x)
    with gc.Session() as sess:
        described = r"feed for tensor \(exp, shape \(2,\), float64\) created at .*: shape \(3,\)"
        with pytest.raises(gc.FeedError, match=described):
            sess.run(e * 2.0, {e: np.ones(3)})
        with pytest.raises(gc.FeedError, match=r"feed for placeholder 'x': shape \(3,\)"):
            sess.run(e * 2.0, {x: np.ones(3)})


def test_repeated_runs_take_the_fast_path_with_the_same_results():
    # the same fetches / feed keys / updates as an earlier call reuse what it resolved: the
    # values must still follow each call's feeds, in the right places, whatever the key order
    a = gc.placeholder("a", (2,))
    b = gc.placeholder("b", (2,))
    diff = a - b
    with gc.Session() as sess:
        for k in range(3):
            out = sess.run(diff, {a: np.array([k, 1.0]), b: np.array([0.5, 2.0 * k])})
            np.testing.assert_array_equal(out, [k - 0.5, 1.0 - 2.0 * k])
            out = sess.run(diff, {b: np.array([0.5, 2.0 * k]), a: np.array([k, 1.0])})  # other key order
            np.testing.assert_array_equal(out, [k - 0.5, 1.0 - 2.0 * k])
            out = sess.run([diff, a], {"b": [1.0, 1.0], "a": [3.0, float(k)]})  # by name
            assert isinstance(out, list) and len(out) == 2
            np.testing.assert_array_equal(out[0], [2.0, k - 1.0])
            np.testing.assert_array_equal(out[1], [3.0, float(k)])
            out = sess.run((diff,), {a: [1.0, 1.0], b: [1.0, 0.0]})
            assert isinstance(out, tuple) and out[0].tolist() == [0.0, 1.0]
        assert sess.cache_size == 2
        pair = collections.namedtuple("pair", "first second")
        assert type(sess.run(pair(diff, a), {a: [1.0, 1.0], b: [1.0, 0.0]})) is pair
        assert type(sess.run((diff, a), {a: [1.0, 1.0], b: [1.0, 0.0]})) is tuple  # equal, but a plain tuple
        assert type(sess.run([diff, a], {a: [1.0, 1.0], b: [1.0, 0.0]})) is list
        fetches = [diff, a]
        sess.run(fetches, {a: [1.0, 2.0], b: [0.0, 0.0]})
        fetches[1] = b  # the same list object, changed: the new fetch is computed
        out = sess.run(fetches, {a: [1.0, 2.0], b: [5.0, 6.0]})
        np.testing.assert_array_equal(out[1], [5.0, 6.0])


def test_fast_path_keeps_the_checks_and_the_updates():
    x = gc.placeholder("x", (2,))
    w = gc.variable(np.zeros(2), name="w")
    w_now = w * 1.0
    with gc.Session() as sess:
        updates = {w: w + x}
        for k in range(1, 4):
            np.testing.assert_array_equal(sess.run(w_now, {x: np.ones(2)}, updates), np.ones(2) * (k - 1))
            np.testing.assert_array_equal(w.value, np.ones(2) * k)
        # a bad feed on a repeated call is still refused before anything runs
        with pytest.raises(gc.FeedError, match="'x'"):
            sess.run(w_now, {x: np.ones(3)}, updates)
        with pytest.raises(gc.FeedError, match="'x'"):
            sess.run(w_now, {x: np.array(["a", "b"])}, updates)
        np.testing.assert_array_equal(w.value, [3.0, 3.0])
        updates[w] = w - x  # the same dict, changed: the new update applies
        sess.run(w_now, {x: np.ones(2)}, updates)
        np.testing.assert_array_equal(w.value, [2.0, 2.0])
        # a fed array is not written, a returned array aliases nothing
        both = [x * 1.0, w * 1.0]
        fed = np.ones(2)
        fed.flags.writeable = False
        out = sess.run(both, {x: fed})
        out = sess.run(both, {x: fed})
        assert not np.shares_memory(out[0], fed) and not np.shares_memory(out[1], w.value)
    with pytest.raises(RuntimeError, match="closed"):
        sess.run(w_now, {x: np.ones(2)}, updates)


def test_fast_path_with_a_list_of_updates():
    x = gc.placeholder("x", (2,))
    w = gc.variable(np.zeros(2), name="w")
    read = w * 1.0
    with gc.Session() as sess:
        updates = [(w, w + x)]
        for k in range(1, 4):
            np.testing.assert_array_equal(sess.run(read, {x: np.ones(2)}, updates), np.ones(2) * (k - 1))
        updates.append((gc.variable(np.zeros(2), name="v"), x * 2.0))  # the same list, grown
        sess.run(read, {x: np.ones(2)}, updates)
        np.testing.assert_array_equal(updates[1][0].value, [2.0, 2.0])
        np.testing.assert_array_equal(w.value, [4.0, 4.0])
        with pytest.raises(ValueError, match="twice"):  # still checked: the key is a new one
            sess.run(read, {x: np.ones(2)}, [(w, w + x), (w, w - x)])
        np.testing.assert_array_equal(w.value, [4.0, 4.0])
