"""The executor: every lowering path, and the contract each of them must keep.

Paths (``Plan.kinds``): plain ``call``; ``ufunc`` (direct ufunc call); ``inplace``
(an input dying at the step is overwritten); ``reuse`` (a dead buffer is
overwritten); ``matmul`` / ``+spare`` (recycled old variable values);
``special`` (sum of squares as a dot); ``T`` / ``reduce`` / ``reshape`` (cheap
view and sum_to lowering); ``scalar`` (0-d graphs on NumPy scalars). Plus
update scheduling, fused-node expansion, lowering peepholes, output copying,
error wrapping, the feed check, threads and atomic updates. Buffer reuse is
checked by what it does, the memory a call allocates (``allocated``), not by
the plan's labels.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import graphc as gc
from graphc.compile import build_plan
from graphc.compile.lowering import LossAndGradient
from graphc.function import Executable
from graphc.numerics import NumericsError
from tests.threads import run_concurrently

HERE = __file__


def line_of(marker: str) -> int:
    """The line number of this file's line containing ``marker``."""
    with open(HERE) as handle:
        for number, text in enumerate(handle, 1):
            if marker in text and "line_of(" not in text:
                return number
    raise AssertionError(marker)


def run_plan(plan, feeds=(), variables=None):
    values = tuple(v.value for v in plan.variables) if variables is None else variables
    return plan.run(tuple(feeds), values)


def readonly(array) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False  # any write into a feed raises
    return array


def allocated(call, unit: int) -> float:
    """The peak memory ``call()`` allocates (NumPy reports its buffers to tracemalloc), in ``unit`` bytes."""
    call()  # warm: first calls may fill caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        call()
        return (tracemalloc.get_traced_memory()[1] - base) / unit
    finally:
        tracemalloc.stop()


ALL_OFF = dict(reuse_buffers=False, schedule_updates=False, scalar_mode=False, peepholes=False,
               expand_fused=False)


# ---- buffer reuse: in place and dead buffers ---------------------------------------------------

def test_inplace_and_reuse_paths_are_taken_and_correct(rng):
    x = gc.placeholder("x", (128, 128))
    a = gc.exp(x)               # fresh buffer
    b = a * 2.0                 # a dies here: written in place
    s = gc.sum(b)               # b dies here: its buffer goes to the pool
    c = gc.cos(x)               # no owned input: takes b's dead buffer
    d = c + 1.0                 # in place again
    plan = build_plan([s, d], [x])
    value = readonly(rng.standard_normal((128, 128)))
    got_s, got_d = run_plan(plan, [value])
    np.testing.assert_allclose(got_s, np.sum(np.exp(value) * 2.0))
    np.testing.assert_array_equal(got_d, np.cos(value) + 1.0)
    plain = build_plan([s, d], [x], **ALL_OFF)
    # the whole chain lives in one buffer (returned as d); without reuse two arrays are alive at once
    assert allocated(lambda: run_plan(plan, [value]), value.nbytes) < 1.5, plan.explain()
    assert allocated(lambda: run_plan(plain, [value]), value.nbytes) > 1.9
    for fast, slow in zip(run_plan(plan, [value]), run_plan(plain, [value])):
        np.testing.assert_array_equal(fast, slow)


def test_never_writes_feeds_variables_constants_or_broadcast_views(rng):
    x = gc.placeholder("x", (3, 4))
    w = gc.variable(rng.standard_normal((3, 4)))
    c = gc.constant(rng.standard_normal((3, 4)))
    row = gc.placeholder("row", (4,))
    outs = [gc.exp(x) + 1, (w * 2) - c, gc.broadcast_to(row, (3, 4)) * 3, gc.tanh(gc.transpose(x)) * 2,
            gc.relu(x), gc.neg(w) + gc.neg(c)]
    plan = build_plan(outs, [x, row])
    before = (w.value.copy(), c.primitive.value.copy())
    xv, rv = readonly(rng.standard_normal((3, 4))), readonly(rng.standard_normal(4))
    results = run_plan(plan, [xv, rv])
    np.testing.assert_array_equal(w.value, before[0])
    np.testing.assert_array_equal(c.primitive.value, before[1])
    np.testing.assert_allclose(results[2], np.broadcast_to(rv, (3, 4)) * 3)
    np.testing.assert_allclose(results[3], np.tanh(xv.T) * 2)


def test_view_keeps_its_buffer_alive():
    x = gc.placeholder("x", (2, 3))
    a = gc.exp(x)
    t = gc.transpose(a)         # a view of a's buffer, used after a's own last use
    b = a * 3.0                 # a's last direct use: must NOT be overwritten (t still looks into it)
    out = gc.sum(b) + gc.sum(t * 1.0)
    plan = build_plan([out], [x])
    value = np.arange(6.0).reshape(2, 3) / 10
    expected = np.sum(np.exp(value) * 3.0) + np.sum(np.exp(value).T)
    np.testing.assert_allclose(run_plan(plan, [value])[0], expected)


def test_matmul_writes_into_a_dead_buffer(rng):
    x = gc.placeholder("x", (128, 128))
    a = gc.exp(x)
    s = gc.sum(a * 1.0)            # a's buffer dies
    m = x @ x                      # same shape: reuses it
    plan = build_plan([s, m], [x])
    value = rng.standard_normal((128, 128))
    np.testing.assert_allclose(run_plan(plan, [value])[1], value @ value)
    assert allocated(lambda: run_plan(plan, [value]), value.nbytes) < 1.5, plan.explain()  # one buffer
    plain = build_plan([s, m], [x], **ALL_OFF)
    assert allocated(lambda: run_plan(plain, [value]), value.nbytes) > 1.9


# ---- outputs never alias --------------------------------------------------------------------------

def test_outputs_never_alias_feeds_variables_constants_or_each_other(rng):
    x = gc.placeholder("x", (3,))
    v = gc.variable(rng.standard_normal(3))
    c = gc.constant([1.0, 2.0, 3.0])
    y = gc.exp(x)
    outs = [x, v, c, y, y, gc.reshape(x, (3, 1)), gc.stop_gradient(v), gc.transpose(y), y * 1.0]
    for optimize in (False, True):
        fn = gc.function([x], outs, optimize=optimize)
        feed = readonly(rng.standard_normal(3))
        results = fn(feed)
        protected = [feed, v.value, c.primitive.value]
        for i, r in enumerate(results):
            assert r.flags.writeable
            for p in protected:
                assert not np.shares_memory(r, p), (i, optimize)
            for j, other in enumerate(results[:i]):
                assert not np.shares_memory(r, other), (i, j, optimize)
        before = v.value.copy()
        for r in results:
            r[...] = 7.0  # the caller may write into results freely
        np.testing.assert_array_equal(v.value, before)
        np.testing.assert_array_equal(fn(feed)[0], feed)


def test_update_values_never_alias_outputs(rng):
    v = gc.variable(np.zeros(3))
    x = gc.placeholder("x", (3,))
    new = v + x
    fn = gc.function([x], [new, x], updates={v: new}, optimize=False)
    out_new, out_x = fn(readonly(np.ones(3)))
    assert not np.shares_memory(out_new, v.value)
    out_new[...] = 100
    np.testing.assert_array_equal(v.value, np.ones(3))
    w = gc.variable(np.zeros(3))
    fn2 = gc.function([x], [], updates={w: x}, optimize=False)  # a feed as the new value: copied
    feed = np.arange(3.0)
    fn2(feed)
    feed[...] = -1
    np.testing.assert_array_equal(w.value, [0.0, 1.0, 2.0])


# ---- update scheduling -------------------------------------------------------------------------------

def mlp(rng, layers=(6, 5, 4, 3), batch=7, dtype="float64"):
    x = gc.placeholder("x", (batch, layers[0]), dtype)
    labels = gc.placeholder("labels", (batch,), "int64")
    params = []
    h = x
    for k, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        w = gc.variable(rng.standard_normal((a, b)).astype(dtype), name=f"W{k}")
        bias = gc.variable(rng.standard_normal(b).astype(dtype) * 0.1, name=f"b{k}")
        params += [w, bias]
        h = h @ w + bias
        if k < len(layers) - 2:
            h = gc.relu(h)
    loss = gc.mean(gc.softmax_cross_entropy(h, labels)) + 1e-3 * sum(gc.sum(gc.square(p)) for p in params[::2])
    grads = gc.grad(loss, params)
    updates = [(p, p - 0.1 * g) for p, g in zip(params, grads)]
    feeds = (rng.standard_normal((batch, layers[0])).astype(dtype), rng.integers(0, layers[-1], batch))
    return x, labels, params, loss, updates, feeds


def test_updates_are_scheduled_right_after_their_gradients(rng):
    x, labels, params, loss, updates, feeds = mlp(rng, layers=(6, 5, 5, 5, 3))
    plan = build_plan([loss], [x, labels], updates)
    position = {id(n): i for i, n in enumerate(plan.steps)}
    weight_grads = [i for i, n in enumerate(plan.steps) if n.op == "matmul" and n.shape in ((6, 5), (5, 5), (5, 3))]
    update_positions = sorted(position[id(new)] for _, new in updates)
    # every weight's new value follows its gradient's matmul within a few steps
    for grad_position in weight_grads:
        later = [u for u in update_positions if u > grad_position]
        assert later and later[0] - grad_position <= 6, plan.explain()
    # the last layer is updated before the first layer's gradient is computed
    first_layer_grad = max(weight_grads)
    assert min(update_positions) < first_layer_grad


def test_scheduling_and_every_switch_give_the_same_step(rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    start = [p.value.copy() for p in params]
    results = []
    for options in ({}, ALL_OFF, dict(schedule_updates=False), dict(reuse_buffers=False),
                    dict(peepholes=False)):
        for p, value in zip(params, start):
            p.set_value(value)
        executable = Executable(build_plan([loss], [x, labels], updates, **options))
        value = executable.execute(feeds)[0]
        results.append((float(value), [p.value.copy() for p in params]))
    for value, new in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-12)
        for a, b in zip(new, results[0][1]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# ---- peepholes -------------------------------------------------------------------------------------

def test_relu_mask_and_bool_cast_peepholes(rng):
    x = gc.placeholder("x", (5, 6))
    w = gc.variable(rng.standard_normal((6, 6)))
    h = gc.relu(x @ w)
    cost = gc.sum(h * h)
    g = gc.grad(cost, w)
    plan = build_plan([g], [x])
    ops = [n.op for n in plan.steps]
    assert "cast" not in ops  # g * cast(mask) became g * mask
    greater = next(n for n in plan.steps if n.op == "greater")
    relu_position = ops.index("relu")
    assert plan.kinds[relu_position] == "inplace"  # the pre-activation dies at the ReLU
    del greater
    value = rng.standard_normal((5, 6))
    value[0, 0] = 0.0
    slow = build_plan([g], [x], **ALL_OFF)
    np.testing.assert_array_equal(run_plan(plan, [value])[0], run_plan(slow, [value])[0])


def test_sum_of_squares_is_one_dot(rng):
    w = gc.variable(rng.standard_normal((300, 200)))
    s = gc.sum(gc.square(w))
    plan = build_plan([s], [])
    assert [n.op for n in plan.steps] == ["sum"]
    assert allocated(lambda: run_plan(plan), w.value.nbytes) < 0.1  # no temporary square(w): a dot
    assert allocated(lambda: run_plan(build_plan([s], [], **ALL_OFF)), w.value.nbytes) > 0.9
    np.testing.assert_allclose(run_plan(plan)[0], np.sum(w.value ** 2), rtol=1e-13)
    assert isinstance(run_plan(plan)[0], np.ndarray)


def test_cheap_view_and_sum_to_lowerings(rng):
    x = gc.placeholder("x", (4, 3))
    b = gc.placeholder("b", (3,))
    y = gc.transpose(x + b)
    cost = gc.sum(gc.exp(y))
    gb = gc.grad(cost, b)
    plan = build_plan([y, gb], [x, b])
    kinds = set(plan.kinds)
    assert "T" in kinds and "reduce" in kinds, plan.explain()
    xv, bv = rng.standard_normal((4, 3)), rng.standard_normal(3)
    got_y, got_gb = run_plan(plan, [xv, bv])
    np.testing.assert_array_equal(got_y, (xv + bv).T)
    np.testing.assert_allclose(got_gb, np.exp(xv + bv).sum(axis=0))


# ---- fused nodes -------------------------------------------------------------------------------------

def test_fused_nodes_are_expanded_with_the_same_results(rng):
    x = gc.placeholder("x", (50,))
    y = gc.tanh(x * 2.0 + 1.0) * gc.exp(-x)
    from graphc import passes

    (opt,) = passes.optimize_tensors([y], getattr(passes, "FUSING_PIPELINE", passes.DEFAULT_PIPELINE))
    if opt.op != "fused":
        pytest.skip("the optimizer did not fuse this chain")
    expanded = build_plan([opt], [x])
    assert all(n.op != "fused" for n in expanded.steps)
    kept = build_plan([opt], [x], expand_fused=False)
    assert [n.op for n in kept.steps] == ["fused"]
    value = rng.standard_normal(50)
    np.testing.assert_allclose(run_plan(expanded, [value])[0], run_plan(kept, [value])[0], rtol=1e-15)
    assert expanded.outputs[0] is opt  # the plan still names the graph's own tensors


# ---- scalar graphs --------------------------------------------------------------------------------------

def test_scalar_mode_matches_array_mode_exactly():
    x, y, z = (gc.placeholder(n) for n in "xyz")
    f = (x + y) * gc.maximum(y, z) - gc.minimum(x, z) / (y - 0.5)
    outs = [f, *gc.grad(f, [x, y, z]), gc.where(x > y, x, z), gc.cast(x > 0, "float64") * y,
            gc.zeros_like(x) + gc.ones_like(y)]
    fast = gc.function([x, y, z], outs)
    assert fast.plan.scalar and set(fast.plan.kinds) == {"scalar"}
    slow_plan = build_plan(fast.plan.outputs, fast.inputs, scalar_mode=False)  # the same graph, on arrays
    assert not slow_plan.scalar
    values = [0.0, -0.0, 1.5, 0.5, -2.0, np.nan, np.inf]
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may warn: errors are ignored inside graphs
        for _ in range(200):
            point = [np.array(v) for v in rng.choice(values, 3)]
            got = fast(*point)
            want = Executable(slow_plan).execute(tuple(point))
            for a, b in zip(got, want):
                assert type(a) is np.ndarray and a.shape == () and a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
                assert np.signbit(a) == np.signbit(b) or np.isnan(a)


def test_scalar_float32_stays_float32():
    x = gc.placeholder("x", (), "float32")
    fn = gc.function([x], [x * 3.0 + 1.0, gc.maximum(x, 0.5)])
    assert fn.plan.scalar
    a, b = fn(np.float32(0.1))
    assert a.dtype == np.float32 and a == np.float32(0.1) * np.float32(3.0) + np.float32(1.0)
    assert b.dtype == np.float32 and b == np.float32(0.5)



def test_scalar_mode_keeps_every_dtype():
    # square of a bool is int8 (np.square), not bool (bool * bool); its consumers must see int8
    b = gc.placeholder("b", (), "bool")
    sq = gc.square(b)
    fn = gc.function([b], [sq, -sq, sq + b])
    assert fn.plan.scalar
    for value in (True, False):
        got = fn(np.array(value))
        want = [np.square(np.array(value)), -np.square(np.array(value)), np.square(np.array(value)) + value]
        for a, w in zip(got, want):
            assert a.dtype == w.dtype == np.int8 and a == w


# ---- errors ----------------------------------------------------------------------------------------------

def test_execution_error_names_op_shapes_and_user_line():
    a = gc.placeholder("a", (None,))
    b = gc.placeholder("b", (None,))
    c = a + b  # MARK-ADD
    fn = gc.function([a, b], gc.exp(c) * 2.0)
    with pytest.raises(gc.ExecutionError) as info:
        fn(np.ones(3), np.ones(4))
    message = str(info.value)
    assert "'add'" in message and "(3,)" in message and "(4,)" in message
    assert f"test_compile.py:{line_of('MARK-ADD')}" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_execution_error_in_a_call_step_and_in_an_expanded_fused_step():
    a = gc.placeholder("a", (2, None))
    b = gc.placeholder("b", (None, 2))
    m = a @ b  # MARK-MATMUL
    fn = gc.function([a, b], gc.tanh(m) * 3.0 + 1.0, optimize=True)
    with pytest.raises(gc.ExecutionError) as info:
        fn(np.ones((2, 3)), np.ones((4, 2)))
    message = str(info.value)
    assert "'matmul'" in message and "(2, 3)" in message and "(4, 2)" in message
    assert f":{line_of('MARK-MATMUL')}" in message
    x = gc.placeholder("x", (None,))
    y = gc.placeholder("y", (None,))
    chained = gc.sqrt(x * 2.0 - y)  # MARK-SUB
    fn2 = gc.function([x, y], chained * 4.0)
    with pytest.raises(gc.ExecutionError) as info:
        fn2(np.ones(2), np.ones(5))
    assert "'sub'" in str(info.value) and f":{line_of('MARK-SUB')}" in str(info.value)


def test_custom_op_error_is_wrapped():
    def forward(v):
        raise RuntimeError("boom")

    op = gc.custom_op("explode", forward, lambda inputs, out, g: [g])
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], op(x) + 1.0)  # MARK-CUSTOM
    with pytest.raises(gc.ExecutionError, match="boom") as info:
        fn(np.ones(3))
    assert "'explode'" in str(info.value) and "(3,)" in str(info.value)


# ---- feeds ------------------------------------------------------------------------------------------------

def test_feed_check_fast_and_slow_paths():
    x = gc.placeholder("x", (2, None))
    n = gc.placeholder("n", (), "int64")
    fn = gc.function([x, n], x * gc.cast(n, "float64"))
    np.testing.assert_array_equal(fn(np.ones((2, 3)), np.array(2)), np.full((2, 3), 2.0))
    np.testing.assert_array_equal(fn([[1, 2], [3, 4]], 3), [[3.0, 6.0], [9.0, 12.0]])  # converted
    np.testing.assert_array_equal(fn(np.ones((2, 1), np.float32), 1), np.ones((2, 1)))  # cast
    with pytest.raises(gc.FeedError, match="'x'"):
        fn(np.ones((3, 3)), 1)
    with pytest.raises(gc.FeedError, match="'x'"):
        fn(np.ones(2), 1)
    with pytest.raises(gc.FeedError, match="'n'"):
        fn(np.ones((2, 2)), 1.5)
    np.testing.assert_array_equal(fn(x=np.ones((2, 1)), n=4), [[4.0], [4.0]])


def test_fed_arrays_are_untouched(rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    fn = gc.function([x, labels], loss, updates=updates)
    fx, fl = readonly(feeds[0]), readonly(feeds[1])
    copies = (fx.copy(), fl.copy())
    for _ in range(3):
        fn(fx, fl)
    np.testing.assert_array_equal(fx, copies[0])
    np.testing.assert_array_equal(fl, copies[1])


# ---- recycled variable buffers ---------------------------------------------------------------------------

def test_old_variable_values_are_recycled_only_when_unreferenced():
    v = gc.variable(np.zeros(200000))  # 1.6 MB: large enough to be recycled
    fn = gc.function([], [], updates={v: v * 1.0 + 1.0}, optimize=False)
    # an unreferenced old value is the next new value's memory: a call allocates no new 1.6 MB array
    # (the sizes are computed outside the asserts: pytest's rewritten asserts keep their operands alive)
    unit = v.value.nbytes
    recycled = allocated(fn, unit)
    assert recycled < 0.5, fn.plan.explain()
    held = v.value
    kept = allocated(fn, unit)
    assert kept > 0.9  # ... unless someone holds it (here, v.value of a call before)
    del held
    v.set_value(np.zeros(200000))
    held = v.value
    fn()
    fn()
    np.testing.assert_array_equal(held, 0.0)  # a value someone holds is never reused
    assert not held.flags.writeable
    for expected in range(3, 8):
        fn()
        np.testing.assert_array_equal(v.value, float(expected))
        assert not v.value.flags.writeable
    snapshot = v.value
    view = snapshot[::2]
    del snapshot
    fn()
    fn()
    np.testing.assert_array_equal(view, 7.0)  # a view keeps its base out of the pool


# ---- threads and atomicity --------------------------------------------------------------------------------

def test_eight_threads_call_concurrently(rng):
    x = gc.placeholder("x", (50, 40))
    w = gc.variable(rng.standard_normal((40, 30)))
    y = gc.relu(x @ w) * 2.0 + 1.0
    fn = gc.function([x], [y, gc.sum(y)])
    inputs = [rng.standard_normal((50, 40)) for _ in range(8)]
    expected = [np.maximum(v @ w.value, 0) * 2.0 + 1.0 for v in inputs]

    def worker(k):
        for _ in range(100):
            out, total = fn(inputs[k])
            np.testing.assert_allclose(out, expected[k], rtol=1e-12)
            np.testing.assert_allclose(total, expected[k].sum(), rtol=1e-10)

    run_concurrently(worker, 8)


@pytest.mark.parametrize("size", [1, 200000])
def test_concurrent_updates_lose_nothing(size):
    counter = gc.variable(np.zeros(size))
    other = gc.variable(np.zeros(size))
    step = gc.function([], gc.sum(counter), updates={counter: counter + 1.0, other: other - 1.0})
    reader = gc.function([], [counter - other])  # reads both: must see a consistent pair

    def work(k):
        for _ in range(150):
            step()
            (diff,) = reader()
            assert np.all(diff == diff.flat[0]) and diff.flat[0] % 2 == 0

    run_concurrently(work, 8)
    np.testing.assert_array_equal(counter.value, 1200.0)
    np.testing.assert_array_equal(other.value, -1200.0)


def test_failed_call_changes_no_variable():
    a = gc.variable(np.zeros(3))
    b = gc.variable(np.zeros(3))
    x = gc.placeholder("x", (None,))
    fn = gc.function([x], [], updates={a: a + 1.0, b: b + x})
    fn(np.ones(3))
    with pytest.raises(gc.ExecutionError):
        fn(np.ones(4))
    np.testing.assert_array_equal(a.value, 1.0)
    np.testing.assert_array_equal(b.value, 1.0)


def test_session_runs_the_same_plans(rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    start = [p.value.copy() for p in params]
    with gc.Session() as sess:
        first = sess.run(loss, {x: feeds[0], labels: feeds[1]}, updates=updates)
        after_session = [p.value.copy() for p in params]
    for p, value in zip(params, start):
        p.set_value(value)
    fn = gc.function([x, labels], loss, updates=updates)
    np.testing.assert_allclose(fn(*feeds), first, rtol=1e-12)
    for p, value in zip(params, after_session):
        np.testing.assert_allclose(p.value, value, rtol=1e-12)


def test_errors_inside_graphs_do_not_warn():
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], [gc.log(x), x / 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logs, ratios = fn(np.array([0.0, -1.0, 1.0]))
    assert logs[0] == -np.inf and np.isnan(logs[1]) and np.isnan(ratios[0]) and np.isinf(ratios[2])


def test_weight_decay_scaling_is_folded_exactly(rng):
    w = gc.variable(rng.standard_normal((40, 30)))
    s = gc.placeholder("s", ())
    y = (w * 2.0) * gc.reshape(s, (1, 1))  # the L2 gradient's shape: one pass over w, not two
    plan = build_plan([y], [s])
    assert sum(n.shape == (40, 30) for n in plan.steps) == 1, plan.explain()
    slow = build_plan([y], [s], **ALL_OFF)
    for value in (0.3, -1e-4, 7.0):
        np.testing.assert_array_equal(run_plan(plan, [np.array(value)])[0], run_plan(slow, [np.array(value)])[0])
    odd = (w * 3.0) * gc.reshape(s, (1, 1))  # 3 is not an exact scaling: left alone
    assert sum(n.shape == (40, 30) for n in build_plan([odd], [s]).steps) == 2


def test_fresh_outputs_are_returned_without_a_copy():
    x = gc.placeholder("x", (3,))
    v = gc.variable(np.ones(3))
    plan = build_plan([gc.exp(x), x, v, gc.sum(x)], [x], [(v, v * 2.0)])
    returned = plan.source.strip().splitlines()[-1]
    assert returned.count("_copy(") == 2, returned  # the feed and the variable; not exp, sum or v * 2


def test_cross_entropy_lowerings_are_exact(rng):
    z = gc.placeholder("z", (6, 4))
    labels = gc.placeholder("labels", (6,), "int64")
    loss = gc.softmax_cross_entropy(z, labels)
    direct = gc.softmax(z) - gc.one_hot(labels, 4)
    plan = build_plan([loss, direct * 2.0], [z, labels])
    ops = [n.op for n in plan.steps]
    assert "one_hot" not in ops and "softmax" not in ops, plan.explain()
    # the loss and the gradient of the same logits and labels: one step computes both
    assert [type(n.primitive) for n in plan.steps].count(LossAndGradient) == 1, plan.explain()
    assert "[rule softmax_minus_one_hot]" in plan.explain(), plan.explain()
    slow = build_plan([loss, direct * 2.0], [z, labels], **ALL_OFF)
    values = rng.standard_normal((6, 4)) * 30
    for ids in (rng.integers(0, 4, 6), np.array([0, 3, 3, 1, 2, 0])):
        for fast, plain in zip(run_plan(plan, [values, ids]), run_plan(slow, [values, ids])):
            np.testing.assert_array_equal(fast, plain)
    odd = build_plan([direct], [z, labels])  # labels outside [0, depth): one_hot's zero rows
    ids = np.array([-1, 4, 2, 0, 7, 3])
    np.testing.assert_array_equal(run_plan(odd, [values, ids])[0],
                                  run_plan(build_plan([direct], [z, labels], **ALL_OFF), [values, ids])[0])


def _outcome(plan, feeds):
    """The plan's results (a list), or its error's type and message (a tuple)."""
    try:
        return list(run_plan(plan, feeds))
    except gc.ExecutionError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_and_gradient_in_one_step_is_bit_identical_with_the_same_errors(rng, dtype):
    z = gc.placeholder("z", (None, 5), dtype)
    labels = gc.placeholder("labels", (None,), "int64")
    loss = gc.mean(gc.softmax_cross_entropy(z, labels))
    (grad,) = gc.grad(loss, [z])
    fast, slow = build_plan([loss, grad], [z, labels]), build_plan([loss, grad], [z, labels], **ALL_OFF)
    assert [type(n.primitive) for n in fast.steps].count(LossAndGradient) == 1, fast.explain()
    odd = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.7e308, -1.7e308, 5e-324, 3e38, -1e4])
    with np.errstate(over="ignore"):
        wild = rng.choice(odd, (9, 5)).astype(dtype)
    cases = [(rng.standard_normal((b, 5)).astype(dtype) * 40, rng.integers(0, 5, b)) for b in (1, 7, 32)]
    cases += [(wild, rng.integers(0, 5, 9)), (np.zeros((0, 5), dtype), np.zeros(0, "int64")),
              (np.zeros((3, 5), dtype), np.array([0, 5, 1])), (np.zeros((3, 5), dtype), np.array([0, -1, 1])),
              (np.zeros((3, 5), dtype), np.array([0, 1])), (np.ones((1, 5), dtype), np.array([0, 4, 2])),
              (np.ones((3, 5), dtype), np.array([2]))]  # bad labels, batches that differ, broadcasting
    for feeds in cases:
        with np.errstate(all="ignore"):
            got, want = _outcome(fast, feeds), _outcome(slow, feeds)
        if isinstance(want, tuple):  # the same error, naming the loss node and its line
            assert got == want
        else:
            for a, b in zip(got, want):
                assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_softmax_minus_one_hot_broadcasts_one_row_as_the_subtraction_does(rng):
    z = gc.placeholder("z", (None, 4))
    labels = gc.placeholder("labels", (None,), "int64")
    direct = gc.softmax(z) - gc.one_hot(labels, 4)
    plan = build_plan([direct], [z, labels])
    assert "softmax_minus_one_hot" in [n.op for n in plan.steps], plan.explain()
    slow = build_plan([direct], [z, labels], **ALL_OFF)
    for feeds in ((rng.standard_normal((1, 4)), np.array([0, 3, 3, 7])), (rng.standard_normal((3, 4)), np.array([2]))):
        got, want = run_plan(plan, feeds)[0], run_plan(slow, feeds)[0]
        assert got.shape == want.shape and got.tobytes() == want.tobytes()


def test_a_checked_plan_keeps_the_loss_and_its_gradient_apart():
    z = gc.placeholder("z", (None, 3))
    labels = gc.placeholder("labels", (None,), "int64")
    loss = gc.mean(gc.softmax_cross_entropy(z * 1.0, labels))
    (grad,) = gc.grad(loss, [z])
    fn = gc.function([z, labels], [loss, grad], check_numerics=True)
    assert LossAndGradient not in [type(n.primitive) for n in fn.plan.steps]
    # logits whose spread overflows: the loss is +inf from finite inputs, which the loss's own check names
    with np.errstate(all="ignore"), pytest.raises(NumericsError, match="op .softmax_cross_entropy."):
        fn(np.array([[1.7e308, -1.7e308, 0.0]]), np.array([1]))


def test_a_gradient_before_its_loss_keeps_its_own_step(rng):
    z = gc.placeholder("z", (6, 4))
    labels = gc.placeholder("labels", (6,), "int64")
    direct = gc.softmax(z) - gc.one_hot(labels, 4)
    loss = gc.softmax_cross_entropy(z, labels)
    plan = build_plan([direct * 2.0, loss], [z, labels])  # the gradient runs first: its errors would come first
    assert LossAndGradient not in [type(n.primitive) for n in plan.steps], plan.explain()
    assert "softmax_minus_one_hot" in [n.op for n in plan.steps], plan.explain()


# ---- differential: random graphs, every executor optimization on vs all off ------------------------

def random_graph(seed: int):
    """A random graph of element-wise ops, broadcasts, views, reductions and matmuls."""
    r = np.random.default_rng(seed)
    x = gc.placeholder("x", (4, 3))
    y = gc.placeholder("y", (3,))
    v = gc.variable(r.standard_normal((4, 3)), name="v")
    pool = [x, y, v, gc.constant(r.standard_normal((1, 3)))]
    unary = [gc.exp, gc.tanh, gc.relu, gc.square, gc.sin, gc.neg, gc.abs,
             lambda a: gc.transpose(a) if a.ndim == 2 else a, lambda a: gc.sum(a, axis=0, keepdims=True),
             lambda a: a * 2.0, lambda a: gc.cast(a > 0, "float64") * a]
    binary = [gc.add, gc.sub, gc.mul, gc.maximum, gc.minimum]
    for _ in range(int(r.integers(4, 14))):
        if r.random() < 0.6:
            a = pool[int(r.integers(len(pool)))]
            pool.append(unary[int(r.integers(len(unary)))](a))
        else:
            a, b = (pool[int(r.integers(len(pool)))] for _ in range(2))
            try:
                pool.append(binary[int(r.integers(len(binary)))](a, b))
            except gc.ShapeError:
                if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1]:
                    pool.append(a @ gc.transpose(b))
    outputs = [pool[int(k)] for k in r.choice(len(pool), size=min(4, len(pool)), replace=False)]
    loss = gc.sum(gc.square(pool[-1])) + gc.sum(v * v)
    return x, y, v, outputs + [loss], [(v, v - 0.1 * gc.grad(loss, v))]


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_agree_with_the_plain_plan(seed):
    x, y, v, outputs, updates = random_graph(seed)
    r = np.random.default_rng(seed + 1000)
    feeds = (readonly(r.standard_normal((4, 3))), readonly(r.standard_normal(3)))
    start = v.value
    plain = run_plan(build_plan(outputs, [x, y], updates, **ALL_OFF), feeds, (start,))
    fast = run_plan(build_plan(outputs, [x, y], updates), feeds, (start,))
    for a, b in zip(fast, plain):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)
    for i, a in enumerate(fast):
        for p in (feeds[0], feeds[1], start):
            assert not np.shares_memory(a, p)
        for b in fast[:i]:
            assert not np.shares_memory(a, b)


@pytest.mark.parametrize("seed", range(40, 60))
def test_random_graphs_optimized_and_compiled_agree_with_the_plain_plan(seed):
    x, y, v, outputs, updates = random_graph(seed)
    r = np.random.default_rng(seed + 1000)
    feeds = (readonly(r.standard_normal((4, 3))), readonly(r.standard_normal(3)))
    start = v.value
    plain = run_plan(build_plan(outputs, [x, y], updates, **ALL_OFF), feeds, (start,))
    fn = gc.function([x, y], outputs, updates=updates)
    got = fn(*feeds)
    for a, b in zip(got, plain[:len(outputs)]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v.value, plain[-1], rtol=1e-10, atol=1e-12)
    assert not np.shares_memory(v.value, start)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mean_lowering_is_np_mean_exactly(rng, dtype):
    x = gc.placeholder("x", (7, 5, 3), dtype)
    outs = [gc.mean(x), gc.mean(x, axis=1), gc.mean(x, axis=(0, 2), keepdims=True)]
    plan = build_plan(outs, [x])
    assert [k for k, n in zip(plan.kinds, plan.steps) if n.op == "mean"] == ["reduce"] * 3
    value = (rng.standard_normal((7, 5, 3)) * 100).astype(dtype)
    for got, want in zip(run_plan(plan, [value]), [np.mean(value), np.mean(value, axis=1),
                                                   np.mean(value, axis=(0, 2), keepdims=True)]):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [-1, 4])
def test_lowered_cross_entropy_rejects_out_of_range_labels_like_the_op(bad):
    z = gc.placeholder("z", (2, 4))
    labels = gc.placeholder("labels", (2,), "int64")
    fn = gc.function([z, labels], gc.mean(gc.softmax_cross_entropy(z, labels)))
    assert [n.op for n in fn.plan.steps].count("softmax_cross_entropy") == 1  # one step, the op's own kernel
    with pytest.raises(gc.ExecutionError, match="softmax_cross_entropy"):
        fn(np.zeros((2, 4)), np.array([0, bad]))


def test_special_kernels_never_take_a_dead_buffer(rng):
    z = gc.placeholder("z", (6, 4))
    labels = gc.placeholder("labels", (6,), "int64")
    warm = gc.sum(gc.exp(z) * 1.0)              # leaves a dead (6, 4) buffer in the pool
    direct = gc.softmax(z) - gc.one_hot(labels, 4)   # lowered to one kernel, which has no out=
    plan = build_plan([warm, direct], [z, labels])
    assert [k for k, n in zip(plan.kinds, plan.steps) if n.op == "softmax_minus_one_hot"] == ["call"]
    values, ids = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    slow = build_plan([warm, direct], [z, labels], **ALL_OFF)
    np.testing.assert_array_equal(run_plan(plan, [values, ids])[1], run_plan(slow, [values, ids])[1])


# ---- API contract section 15: each element-wise op is one direct NumPy call, fused and on scalars too ------

SECTION15_UNARY = ["tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "arcsinh", "arccosh", "arctanh", "exp2",
                   "log2", "log10", "reciprocal", "rsqrt", "floor", "ceil", "trunc", "round", "isnan", "isinf",
                   "isfinite", "logical_not"]
SECTION15_BINARY = ["arctan2", "mod", "floor_divide", "logaddexp", "logical_and", "logical_or", "logical_xor"]


def _section15(name, x, y):
    fn = getattr(gc, name)
    if name in ("arccosh", "log2", "log10", "rsqrt"):  # inside the domain
        return fn(gc.abs(x) + 1.0)
    return fn(x * 0.5) if name in SECTION15_UNARY else fn(x * 0.5, y)


@pytest.mark.parametrize("name", SECTION15_UNARY + SECTION15_BINARY)
def test_section15_ops_lower_to_one_numpy_call_fuse_and_run_on_scalars(name):
    from graphc.passes.fuse import fuse

    values = np.linspace(-0.9, 0.9, 4096)
    rng = np.random.default_rng(0)
    other = rng.uniform(0.5, 2.0, 4096)
    x, y = gc.placeholder("x", (4096,)), gc.placeholder("y", (4096,))
    out = _section15(name, x, y)
    plan = build_plan([out], [x, y])
    step = [k for k, n in zip(plan.kinds, plan.steps) if n.op == name]
    assert step and step[0] != "call", plan.explain()  # not a Python call of impl: the ufunc, writing out=
    slow = build_plan([out], [x, y], **ALL_OFF)
    expected = run_plan(slow, [values, other])[0]
    np.testing.assert_array_equal(run_plan(plan, [values, other])[0], expected)
    (fused,) = fuse([out + 1.0])
    assert fused.op == "fused" and name in fused.primitive.describe_steps() and name in gc.debugprint(fused)
    fused_fn = gc.function([x, y], fused, optimize=False)
    np.testing.assert_array_equal(fused_fn(values, other), expected + 1.0)
    # an all-0-d graph runs on NumPy scalars: the same values
    xs, ys = gc.placeholder("xs"), gc.placeholder("ys")
    scalar = build_plan([_section15(name, xs, ys)], [xs, ys])
    assert scalar.scalar
    for a, b in zip(values[::512], other[::512]):
        got = run_plan(scalar, [np.asarray(a), np.asarray(b)])[0]
        want = run_plan(slow, [np.full(4096, a), np.full(4096, b)])[0][0]
        assert got.dtype == want.dtype and (got == want or (np.isnan(got) and np.isnan(want)))


def test_scalar_operators_take_mixed_dtypes_where_numpy_gives_the_same_dtype():
    """On NumPy scalars ``c * mask`` (float * bool) is np.multiply itself: written as the operator, not a
    ufunc call; ``square`` of a bool (int8 in NumPy, bool for ``b * b``) and a max of mixed dtypes are not."""
    x, y = gc.placeholder("x"), gc.placeholder("y")
    f = (x + y) * gc.maximum(y, x)
    plan = gc.function([x, y], gc.grad(f, [x, y])).plan
    assert plan.scalar and "_u" not in plan.source, plan.source
    b, i = gc.placeholder("b", (), "bool"), gc.placeholder("i", (), "int32")
    outs = [gc.square(b), gc.maximum(i, x), b * 2.5, gc.maximum(x, x * 2.0)]
    scalar, slow = build_plan(outs, [b, i, x]), build_plan(outs, [b, i, x], **ALL_OFF)
    assert scalar.scalar
    for feeds in ([np.asarray(True), np.asarray(3, np.int32), np.asarray(-0.0)],
                  [np.asarray(False), np.asarray(-2, np.int32), np.asarray(7.5)]):
        for got, want in zip(run_plan(scalar, feeds), run_plan(slow, feeds)):
            assert got.dtype == want.dtype and got == want and np.signbit(got) == np.signbit(want)


def test_never_writes_into_an_array_an_op_returned_unchanged():
    """Issue 15.2: an op whose impl hands back its input (or a view of it) must not have a later
    step compute in place into it: that array is the caller's feed, a variable or a constant."""
    from graphc.op import apply
    from graphc.ops.elementwise import StopGradient
    from graphc.passes.fuse import Fused

    empty = Fused((), 1, ())  # what a tampered file could hold: returns its input
    identity = Fused(((StopGradient(), (0,)),), 1, (np.dtype("float64"),))
    x = gc.placeholder("x", (3,))
    w = gc.variable(np.array([1.0, 2.0, 3.0]), name="w")
    for source in (x, w, gc.constant(np.array([1.0, 2.0, 3.0]))):
        for op in (empty, identity):
            fn = gc.function([x], gc.exp(apply(op, source) * 2.0) + x, optimize=False)
            assert "inplace" in fn.plan.kinds  # the path that wrote into the returned array
            feed = np.array([1.0, 2.0, 3.0])
            out = fn(feed)
            np.testing.assert_array_equal(feed, [1.0, 2.0, 3.0])
            np.testing.assert_array_equal(w.value, [1.0, 2.0, 3.0])
            assert not np.shares_memory(out, feed)
            np.testing.assert_allclose(out, np.exp(np.array([1.0, 2.0, 3.0]) * 2) + feed)


def _by_impl(outputs, feeds: dict):
    """Every node evaluated by its op's own ``impl`` (the definition the lowerings restate)."""
    from graphc.leaves import Constant
    from graphc.tensor import toposort

    values = {}
    for node in toposort(list(outputs)):
        if id(node) in feeds:
            values[id(node)] = feeds[id(node)]
        elif isinstance(node.primitive, Constant):
            values[id(node)] = node.primitive.value
        else:
            values[id(node)] = node.primitive.impl(*[values[id(p)] for p in node.inputs])
    return [values[id(t)] for t in outputs]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # the empty batch, in np.mean's impl
def test_unknown_size_steps_are_direct_numpy_calls_equal_to_their_impl(rng, dtype):
    # mean, reduced_count, expand_dims, broadcast_like and sum_to over an unknown batch size: direct
    # NumPy expressions reading the sizes from the arrays, bit for bit what the ops' impls give
    x = gc.placeholder("x", (None, 5, 3), dtype)
    w = gc.placeholder("w", (5, 3), dtype)
    loss = gc.mean(gc.square(x * w)) + gc.mean(x, axis=(0, 2)).sum() + gc.mean(x, axis=0, keepdims=True).sum()
    outputs = [loss, *gc.grad(loss, [x, w]), gc.expand_dims(gc.sum(x, axis=(1, 2)), 1)]
    plan = build_plan(outputs, [x, w])
    direct = {n.op for k, n in zip(plan.kinds, plan.steps) if k == "direct"}
    assert {"mean", "reduced_count", "broadcast_like", "expand_dims"} <= direct, plan.explain()
    lowered = {"mean", "reduced_count", "broadcast_like", "expand_dims", "sum_to"}
    assert not [n.op for k, n in zip(plan.kinds, plan.steps) if k == "call" and n.op in lowered], plan.explain()
    for batch in (1, 4, 0):
        feeds = ((rng.standard_normal((batch, 5, 3)) * 10).astype(dtype), rng.standard_normal((5, 3)).astype(dtype))
        with np.errstate(all="ignore"):
            want = _by_impl(plan.outputs, {id(plan.inputs[0]): feeds[0], id(plan.inputs[1]): feeds[1]})
            got = run_plan(plan, feeds)
        for a, b in zip(got, want):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), plan.explain()


# ---- scalar plans on Python floats ---------------------------------------------------------------------

def _float64_scalar_graph(x, y, w):
    s = x + y
    m = gc.maximum(y, w)
    picked = gc.where(x > y, s * m, gc.minimum(x, -w))
    mask = gc.cast(gc.equal(x, y), "float64")
    return [picked, s / y, gc.square(s) - m, mask * x, gc.relu(s), gc.exp(y) * 0.5, x <= w, gc.zeros_like(x) + y]


def test_float64_scalar_plans_run_on_python_floats_with_bit_identical_results():
    # every value float64 or bool: operators on Python floats instead of NumPy scalars (4x cheaper);
    # the same IEEE operations, so bit for bit the array plan's values, dtypes included, at the
    # special values too (a zero divisor, NaN, infinities, -0.0, overflow, ties)
    x, y = gc.placeholder("x"), gc.placeholder("y")
    w = gc.variable(np.array(2.0), name="w")
    outputs = _float64_scalar_graph(x, y, w)
    fast = build_plan(outputs, [x, y])
    arrays = build_plan(outputs, [x, y], scalar_mode=False)
    assert fast.scalar and ".item()" in fast.source
    assert not arrays.scalar
    specials = [0.0, -0.0, 1.5, -2.0, 2.0, np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324]
    with np.errstate(all="ignore"):
        for a in specials:
            for b in specials:
                got = run_plan(fast, [np.array(a), np.array(b)])
                want = run_plan(arrays, [np.array(a), np.array(b)])
                for g, e in zip(got, want):
                    assert type(g) is np.ndarray and g.shape == () and g.dtype == e.dtype, (a, b, g, e)
                    assert g.tobytes() == e.tobytes(), (a, b, g, e)


def test_scalar_plans_with_other_dtypes_or_python_kernels_stay_on_numpy_scalars():
    x, y = gc.placeholder("x", (), "float32"), gc.placeholder("y", (), "float32")
    plan = build_plan([x * y + 1.0], [x, y])
    assert plan.scalar and ".item()" not in plan.source and "[()]" in plan.source
    got = run_plan(plan, [np.float32(1.5), np.float32(3.0)])[0]
    assert got.dtype == np.float32 and got == np.float32(5.5)
    a = gc.placeholder("a")
    rounded = build_plan([gc.round(a) * 2.0], [a])  # round's kernel is a Python function, not a ufunc
    assert rounded.scalar and ".item()" not in rounded.source
    assert run_plan(rounded, [np.array(2.5)])[0] == 4.0
