"""In-place variable updates: ``gc.function(..., inplace_updates=True)``.

The opt-in writes each new value into the variable's own storage as soon as
every reader of the old value has run. These tests check that it computes
exactly what the default (atomic) mode computes, that the storage really is
reused, and every guarantee it keeps (simultaneous-update semantics, no
aliasing of returned arrays, serialized concurrent calls, untouched feeds,
``v.value`` arrays that never change) and the one it gives up (atomicity on
failure, with the changed variables named).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import graphc as gc
from graphc.compile import build_plan
from tests.threads import run_concurrently

from .test_compile import allocated, mlp, readonly


def storage(variable) -> int:
    """The address of the variable's current storage (no reference to it is kept)."""
    return variable.value.__array_interface__["data"][0]


def twin_runs(make, feeds_list, steps=1):
    """Build the same graph twice (default and in place) with equal starting values; run both.

    ``make(inplace)`` returns ``(fn, variables)``. Returns the per-call outputs and the
    variables' values after each call, for both modes.
    """
    results = []
    for inplace in (False, True):
        fn, variables = make(inplace)
        history = []
        for _ in range(steps):
            for feeds in feeds_list:
                out = fn(*feeds)
                history.append((out, [np.array(v.value) for v in variables]))
        results.append(history)
    return results


def assert_same(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


# ---- the same values as the default mode -------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(4))
def test_mlp_steps_match_the_default_mode_bit_for_bit(seed, dtype):
    layers = [(6, 5, 4, 3), (8, 8, 8, 8, 2), (5, 3), (4, 7, 7, 3)][seed]
    feeds = []

    def make(inplace):
        rng = np.random.default_rng(seed)
        x, labels, params, loss, updates, first = mlp(rng, layers=layers, dtype=dtype)
        if not feeds:
            feeds.append(first)
            feeds.extend((rng.standard_normal(first[0].shape).astype(dtype),
                          rng.integers(0, layers[-1], first[1].shape[0])) for _ in range(3))
        fn = gc.function([x, labels], [loss, params[0]], updates=updates, inplace_updates=inplace)
        assert fn.inplace_updates is inplace
        return fn, params

    default, inplace = twin_runs(make, feeds, steps=2)
    for (out_a, vals_a), (out_b, vals_b) in zip(default, inplace):
        assert_same(out_a, out_b)
        assert_same(vals_a, vals_b)


def test_mlp_updates_are_computed_straight_into_the_storage(rng):
    x, labels, params, loss, updates, feeds = mlp(rng, layers=(6, 5, 5, 5, 3))
    fn = gc.function([x, labels], loss, updates=updates, inplace_updates=True)
    position = {id(n): i for i, n in enumerate(fn.plan.steps)}
    for variable, new in fn.plan.updates:
        # the update comes after every step reading the old value (forward, W^T g, weight decay)
        readers = [i for i, n in enumerate(fn.plan.steps)
                   if any(p is variable or (p.op == "transpose" and p.inputs[0] is variable) for p in n.inputs)]
        assert max(readers) == position[id(new)], (variable.name, readers, position[id(new)])
    addresses = [storage(p) for p in params]
    for _ in range(3):
        fn(*feeds)
        assert [storage(p) for p in params] == addresses  # the very same buffers, every call
    for p in params:
        assert not p.value.flags.writeable


def test_mlp_new_values_take_no_memory_of_their_own(rng):
    # every weight update is the final ufunc of its expression, computed with out= the storage: no
    # new-value buffer, no write or copy step. Measured: the peak a call allocates, in weight sizes
    peaks = []
    for inplace in (False, True):
        x, labels, params, loss, updates, feeds = mlp(rng, layers=(200, 200, 200, 10))
        fn = gc.function([x, labels], loss, updates=updates, inplace_updates=inplace)
        unit = params[0].value.nbytes
        peaks.append(allocated(lambda fn=fn, feeds=feeds: fn(*feeds), unit))
    assert peaks[1] <= peaks[0] - 0.9, peaks


def test_default_mode_is_unchanged(rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    fn = gc.function([x, labels], loss, updates=updates)
    assert fn.inplace_updates is False and not fn.plan.inplace
    before = [p.value for p in params]
    fn(*feeds)
    for old, p in zip(before, params):  # every new value is a fresh array; the old ones are intact
        assert not np.shares_memory(old, p.value) and not old.flags.writeable


def random_state_graph(seed: int):
    """Three variables, random ops, and random updates that read each other (swaps included)."""
    r = np.random.default_rng(seed)
    x = gc.placeholder("x", (4, 3))
    a = gc.variable(r.standard_normal((4, 3)), name="a")
    b = gc.variable(r.standard_normal((4, 3)), name="b")
    c = gc.variable(r.standard_normal((3, 4)), name="c")
    only = gc.variable(r.standard_normal(3), name="only")  # used only by its own update
    pool = [x, a, b, gc.transpose(c), x * 0.5]
    unary = [gc.exp, gc.tanh, gc.relu, gc.sin, gc.neg, lambda t: t * 2.0, lambda t: gc.transpose(gc.transpose(t)),
             lambda t: t - gc.mean(t, axis=0, keepdims=True)]
    binary = [gc.add, gc.sub, gc.mul, gc.maximum]
    for _ in range(int(r.integers(3, 10))):
        if r.random() < 0.5:
            pool.append(unary[int(r.integers(len(unary)))](pool[int(r.integers(len(pool)))]))
        else:
            left, right = (pool[int(r.integers(len(pool)))] for _ in range(2))
            pool.append(binary[int(r.integers(len(binary)))](left, right))

    def pick():
        return pool[int(r.integers(len(pool)))]

    choice = int(r.integers(4))
    if choice == 0:  # a swap, and c from the old a
        updates = {a: b, b: a, c: gc.transpose(a) * 1.5}
    elif choice == 1:  # each reads another variable being updated
        updates = {a: pick() + b, b: a * pick(), c: gc.transpose(b) - c}
    elif choice == 2:  # a new value that is a view of an updated variable
        updates = {a: gc.transpose(c), c: gc.transpose(a + pick())}
    else:
        updates = {a: a - 0.1 * pick(), b: gc.maximum(a, pick())}
    updates[only] = only * 0.9 + gc.sum(pick(), axis=0)
    outputs = [pick(), a, gc.transpose(c), pick()]  # updated variables (and views) fetched too
    if r.random() < 0.5:
        outputs.append(updates[a])  # a new value fetched as an output
    return x, [a, b, c, only], outputs, updates


@pytest.mark.parametrize("seed", range(30))
def test_random_graphs_match_the_default_mode(seed):
    feeds = [(readonly(np.random.default_rng(seed + 99).standard_normal((4, 3))),)]
    state = {}

    def make(inplace):
        x, variables, outputs, updates = random_state_graph(seed)
        state[inplace] = variables
        return gc.function([x], outputs, updates=updates, inplace_updates=inplace,
                           optimize=bool(seed % 2)), variables

    default, inplace = twin_runs(make, feeds, steps=3)
    for (out_a, vals_a), (out_b, vals_b) in zip(default, inplace):
        assert_same(out_a, out_b)
        assert_same(vals_a, vals_b)
    # and returned arrays never share memory with the variables' storage, the feed or each other
    fn_vars = state[True]
    x, variables, outputs, updates = random_state_graph(seed)
    fn = gc.function([x], outputs, updates=updates, inplace_updates=True)
    got = fn(*feeds[0])
    for i, array in enumerate(got):
        for v in variables:
            assert not np.shares_memory(array, v.value)
        assert not np.shares_memory(array, feeds[0][0])
        for other in got[:i]:
            assert not np.shares_memory(array, other)
    del fn_vars


def test_swap_and_simultaneous_semantics():
    a = gc.variable(np.arange(6.0).reshape(2, 3), name="a")
    b = gc.variable(-np.arange(6.0).reshape(2, 3), name="b")
    swap = gc.function([], [a, b, a + b], updates={a: b, b: a}, inplace_updates=True)
    first = swap()
    np.testing.assert_array_equal(first[0], np.arange(6.0).reshape(2, 3))  # outputs see the old values
    np.testing.assert_array_equal(first[1], -np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(a.value, -np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(b.value, np.arange(6.0).reshape(2, 3))
    first[0][:] = 99.0  # the returned copies are the caller's
    np.testing.assert_array_equal(b.value, np.arange(6.0).reshape(2, 3))
    rotate = gc.function([], [], updates={a: a + b, b: a - b}, inplace_updates=True)
    rotate()
    np.testing.assert_array_equal(a.value, np.zeros((2, 3)))
    np.testing.assert_array_equal(b.value, -2 * np.arange(6.0).reshape(2, 3))


def test_feeds_are_never_written_even_when_they_become_a_variable():
    x = gc.placeholder("x", (3,))
    v = gc.variable(np.zeros(3), name="v")
    w = gc.variable(np.ones(3), name="w")
    fn = gc.function([x], v * 1.0, updates={v: x, w: w + x}, inplace_updates=True)
    fed = readonly([1.0, 2.0, 3.0])  # a write into it would raise
    address = storage(w)
    np.testing.assert_array_equal(fn(fed), 0.0)
    np.testing.assert_array_equal(v.value, [1.0, 2.0, 3.0])
    assert not np.shares_memory(v.value, fed)
    np.testing.assert_array_equal(w.value, [2.0, 3.0, 4.0])
    assert storage(w) == address


def test_overlapping_reads_of_the_variable_being_written():
    m = gc.variable(np.arange(16.0).reshape(4, 4), name="m")
    i = gc.variable(np.arange(6, dtype=np.int64), name="i")
    fn = gc.function([], [m, m @ m], updates={m: m - gc.transpose(m), i: i * 2 + 1}, inplace_updates=True)
    start = np.arange(16.0).reshape(4, 4)
    addresses = storage(m), storage(i)
    old_m, product = fn()
    assert (storage(m), storage(i)) == addresses  # both written into their storage ...
    assert not np.shares_memory(old_m, m.value)  # ... the fetched m copied before m was overwritten
    np.testing.assert_array_equal(old_m, start)
    np.testing.assert_array_equal(product, start @ start)
    np.testing.assert_array_equal(m.value, start - start.T)  # NumPy handles the overlap of m.T and m
    np.testing.assert_array_equal(i.value, np.arange(6) * 2 + 1)
    assert i.value.dtype == np.int64


# ---- the storage, and what v.value hands out -------------------------------------------------

def test_held_values_never_change_and_in_place_resumes_when_dropped():
    v = gc.variable(np.zeros(1000), name="v")
    fn = gc.function([], gc.sum(v), updates={v: v + 1.0}, inplace_updates=True)
    fn()
    address = storage(v)
    held = v.value  # someone holds the current value: it must never change
    assert not held.flags.writeable
    fn()
    np.testing.assert_array_equal(held, 1.0)
    np.testing.assert_array_equal(v.value, 2.0)
    assert not np.shares_memory(held, v.value)  # this call wrote into a fresh array instead
    view = v.value[::2]  # a view holds its base too
    fn()
    np.testing.assert_array_equal(view, 2.0)
    del held, view
    fn()
    address = storage(v)
    for expected in (5.0, 6.0, 7.0):
        fn()
        assert storage(v) == address  # nobody refers to it: written in place again
        np.testing.assert_array_equal(v.value, expected)


def test_readers_of_other_functions_see_consistent_values(rng):
    # a function without updates snapshots the variable; the in-place step must not write under it
    v = gc.variable(np.zeros((300, 300)), name="v")
    step = gc.function([], [], updates={v: v + 1.0}, inplace_updates=True)
    read = gc.function([], [gc.min(v), gc.max(v)])

    def reader(k):
        for _ in range(200):
            low, high = read()
            assert low == high, (low, high)
            value = v.value
            assert value.min() == value.max()

    def steps():
        for _ in range(200):
            step()

    run_concurrently(reader, 3, main=steps)
    np.testing.assert_array_equal(v.value, 200.0)


@pytest.mark.parametrize("size", [1, 200000])
def test_eight_threads_lose_no_update(size):
    counter = gc.variable(np.zeros(size), name="counter")
    other = gc.variable(np.zeros(size), name="other")
    step = gc.function([], gc.sum(counter), updates={counter: counter + 1.0, other: other - 1.0},
                       inplace_updates=True)
    reader = gc.function([], [counter - other])

    def work(k):
        for _ in range(100):
            step()
            (diff,) = reader()
            assert np.all(diff == diff.flat[0]) and diff.flat[0] % 2 == 0

    run_concurrently(work, 8)
    np.testing.assert_array_equal(counter.value, 800.0)
    np.testing.assert_array_equal(other.value, -800.0)


def test_set_value_from_read_only_and_non_contiguous_arrays():
    base = np.arange(24.0).reshape(4, 6)
    v = gc.variable(np.zeros((4, 3)), name="v")
    fn = gc.function([], [v * 1.0], updates={v: v * 2.0 + 1.0}, inplace_updates=True)
    frozen = readonly(base[:, ::2])  # read-only and strided
    v.set_value(frozen)
    (out,) = fn()
    np.testing.assert_array_equal(out, base[:, ::2])
    np.testing.assert_array_equal(v.value, base[:, ::2] * 2.0 + 1.0)
    np.testing.assert_array_equal(frozen, base[:, ::2])  # the array given to set_value is untouched
    v.set_value(np.asfortranarray(base[:, :3]))  # a Fortran-ordered value
    fn()
    address = storage(v)
    fn()
    assert storage(v) == address
    np.testing.assert_array_equal(v.value, (base[:, :3] * 2.0 + 1.0) * 2.0 + 1.0)
    assert not v.value.flags.writeable
    v.set_value(np.ones((4, 3), dtype=np.float32))  # a castable dtype: the variable keeps float64
    fn()
    assert v.value.dtype == np.float64 and v.value.shape == (4, 3)
    np.testing.assert_array_equal(v.value, 3.0)


def test_dtype_and_shape_are_kept_with_a_cast_update():
    v = gc.variable(np.zeros(5, dtype=np.float32), name="v")
    x = gc.placeholder("x", (5,))  # float64
    fn = gc.function([x], [], updates={v: v + x}, inplace_updates=True)
    fn(np.full(5, 0.1))
    assert v.value.dtype == np.float32
    np.testing.assert_array_equal(v.value, np.float32(0.1))


# ---- failures: atomicity is given up, and the error says what changed --------------------------

def test_failure_mid_call_names_the_variables_already_updated():
    a = gc.variable(np.zeros(3), name="a")
    b = gc.variable(np.zeros(3), name="b")
    x = gc.placeholder("x", (None,))
    new_a = a + 1.0
    # the output needs a's new value and x: it fails (a bad x) after a has been written
    fn = gc.function([x], [new_a * x], updates={a: new_a, b: b + x}, inplace_updates=True)
    fn(np.ones(3))
    with pytest.raises(gc.ExecutionError) as info:
        fn(np.ones(4))
    message = str(info.value)
    assert "'a'" in message and "already updated" in message and "unchanged: 'b'" in message, message
    assert [v.name for v in info.value.changed_variables] == ["a"]
    np.testing.assert_array_equal(a.value, 2.0)  # not atomic: a was changed
    np.testing.assert_array_equal(b.value, 1.0)
    assert not a.value.flags.writeable and not b.value.flags.writeable
    fn(np.ones(3))  # the function and the variables still work
    np.testing.assert_array_equal(a.value, 3.0)
    np.testing.assert_array_equal(b.value, 2.0)
    # the default mode still changes nothing
    atomic = gc.function([x], [new_a * x], updates={a: new_a, b: b + x})
    with pytest.raises(gc.ExecutionError) as info:
        atomic(np.ones(4))
    assert "already updated" not in str(info.value)
    np.testing.assert_array_equal(a.value, 3.0)


def test_failure_before_any_write_changes_nothing():
    a = gc.variable(np.zeros(3), name="a")
    x = gc.placeholder("x", (None,))
    fn = gc.function([x], [], updates={a: a + x}, inplace_updates=True)
    with pytest.raises(gc.ExecutionError) as info:
        fn(np.ones(4))
    assert "no variable had been updated" in str(info.value) and "unchanged: 'a'" in str(info.value)
    assert info.value.changed_variables == ()
    np.testing.assert_array_equal(a.value, 0.0)


def test_a_new_value_of_the_wrong_shape_is_reported_at_its_write():
    a = gc.variable(np.zeros(3), name="a")
    b = gc.variable(np.zeros(2), name="b")
    x = gc.placeholder("x", (None,))
    fn = gc.function([x], [], updates={a: a + 1.0, b: x * 2.0}, inplace_updates=True)
    address = storage(b)
    fn(np.ones(2))
    np.testing.assert_array_equal(b.value, 2.0)
    assert storage(b) == address  # a value of run-time shape is checked, then written into the storage
    with pytest.raises(gc.ExecutionError) as info:
        fn(np.ones(5))
    assert "update of variable 'b'" in str(info.value) and "(5,)" in str(info.value)
    assert b.value.shape == (2,)
    changed = {v.name for v in getattr(info.value, "changed_variables", ())}
    np.testing.assert_array_equal(a.value, 2.0 if "a" in changed else 1.0)


# ---- Session, pickle, gc.save ------------------------------------------------------------------

def test_session_run_in_place(rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    with gc.Session() as sess:
        feed = {x: feeds[0], labels: feeds[1]}
        address = storage(params[0])
        sess.run(loss, feed, updates=updates, inplace_updates=True)
        sess.run(loss, feed, updates=updates, inplace_updates=True)
        assert storage(params[0]) == address
        assert sess.cache_size == 1
        sess.run(loss, feed, updates=updates)  # the default mode is another signature
        assert sess.cache_size == 2
        assert storage(params[0]) != address


def test_pickle_and_save_keep_the_option(tmp_path, rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    fn = gc.function([x, labels], loss, updates=updates, inplace_updates=True)
    fn(*feeds)
    expected_loss = fn(*feeds)
    loaded = pickle.loads(pickle.dumps(fn))
    assert loaded.inplace_updates and loaded.plan.inplace
    default = gc.function([x, labels], loss, updates=updates)
    assert pickle.loads(pickle.dumps(default)).inplace_updates is False
    for path, original in (("inplace.gcf", fn), ("default.gcf", default)):
        gc.save(original, tmp_path / path)
    saved = gc.load(tmp_path / "inplace.gcf")
    assert saved.inplace_updates and saved.plan.inplace
    assert gc.load(tmp_path / "default.gcf").inplace_updates is False
    assert b"inplace_updates" not in (tmp_path / "default.gcf").read_bytes()  # unchanged format for others
    for copy in (loaded, saved):
        variable = next(v for v, _ in copy.plan.updates if v.name == "W0")
        address = storage(variable)
        copy(*feeds)
        copy(*feeds)
        assert storage(variable) == address
    # both copies continue from the pickled/saved state exactly as the original does
    np.testing.assert_array_equal(loaded(*feeds), saved(*feeds))
    assert float(expected_loss) > 0


def test_build_plan_switches_and_inplace_agree(rng):
    x, labels, params, loss, updates, feeds = mlp(rng)
    values = {id(p): np.array(p.value) for p in params}
    plain = build_plan([loss], [x, labels], updates, reuse_buffers=False, schedule_updates=False,
                       scalar_mode=False, peepholes=False, expand_fused=False)
    expected = plain.run(feeds, tuple(values[id(v)] for v in plain.variables))
    for options in ({}, {"schedule_updates": False}, {"reuse_buffers": False}, {"peepholes": False}):
        plan = build_plan([loss], [x, labels], updates, inplace_updates=True, **options)
        by_var = {key: np.array(value) for key, value in values.items()}
        got = plan.run(feeds, tuple(by_var[id(v)] for v in plan.variables),
                       tuple(by_var[id(v)] for v, _ in plan.updates))
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
        for (variable, _), value, want in zip(plan.updates, got[1:], expected[1:]):
            assert value is by_var[id(variable)]  # written into the storage given
            np.testing.assert_allclose(value, want, rtol=1e-12)


def test_large_step_buffers_are_kept_from_call_to_call(rng):
    # the weight gradient (2 MiB) is a large fresh step: in the steady state a call writes it into
    # the buffer the previous call used, so it allocates no large array at all (no page faults)
    x, labels, params, loss, updates, feeds = mlp(rng, layers=(512, 512, 10), batch=4)
    fn = gc.function([x, labels], loss, updates=updates, inplace_updates=True)
    assert any(kind.endswith("+spare") for kind in fn.plan.kinds)
    unit = params[0].value.nbytes
    fn(*feeds)
    assert allocated(lambda: fn(*feeds), unit) < 0.5
    # the same numbers as the default mode, call after call
    x2, labels2, params2, loss2, updates2, _ = mlp(np.random.default_rng(0), layers=(512, 512, 10), batch=4)
    for p, q in zip(params, params2):
        q.set_value(p.value)
    default = gc.function([x2, labels2], loss2, updates=updates2)
    for _ in range(3):
        assert fn(*feeds).tobytes() == default(*feeds).tobytes()
        for p, q in zip(params, params2):
            assert p.value.tobytes() == q.value.tobytes()


@pytest.mark.parametrize("inplace", [False, True])
def test_kept_buffers_never_overwrite_what_a_call_returned(rng, inplace):
    # a large step fetched as an output leaves the call: it is the caller's, never written again
    x, labels, params, loss, updates, feeds = mlp(rng, layers=(512, 512, 10), batch=4)
    grad = gc.grad(loss, params[0])
    fn = gc.function([x, labels], [loss, grad * 1.0, grad], updates=updates, inplace_updates=inplace)
    first = fn(*feeds)
    saved = [a.copy() for a in first]
    second = fn(*feeds)
    for a, b in zip(first, saved):
        np.testing.assert_array_equal(a, b)
    for a in first:
        for b in second:
            assert not np.shares_memory(a, b)
    assert not any(np.shares_memory(a, p.value) for a in second for p in params)
