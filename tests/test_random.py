"""gc.random: counter-based draws, implicit state updates, threads, pickling, statistics."""

import math
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.passes.fold import foldable
from graphc.random import RandomOp
from graphc.tensor import toposort
from tests.threads import run_concurrently

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_nodes(tensors):
    return [n for n in toposort(tensors) if isinstance(n.primitive, RandomOp)]


# ---- the API: shapes, dtypes, errors --------------------------------------------------------

def test_draw_shapes_and_dtypes():
    gen = gc.random.Generator(3)
    x = gc.placeholder("x", (None, 3))
    draws = {
        "uniform": gen.uniform((2, 3)),
        "uniform32": gen.uniform((4,), dtype="float32"),
        "normal_like": gen.normal(like=x),
        "bernoulli": gen.bernoulli(0.25, (5,)),
        "bernoulli_bool": gen.bernoulli(0.5, (3,), dtype=bool),
        "integers": gen.integers(-2, 5, (6,)),
        "integers8": gen.integers(0, 3, (2, 2), dtype="int8"),
        "scalar": gen.normal(),
    }
    assert draws["normal_like"].shape == (None, 3)
    assert draws["uniform32"].dtype == np.float32 and draws["integers8"].dtype == np.int8
    values = gc.function([x], draws)(np.zeros((7, 3)))
    for key, tensor in draws.items():
        value = values[key]
        assert value.dtype == tensor.dtype, key
        assert gc.types.shapes_match(tensor.shape, value.shape), key
    assert values["normal_like"].shape == (7, 3)
    assert set(np.unique(values["bernoulli"])) <= {0.0, 1.0}
    assert values["integers"].min() >= -2 and values["integers"].max() < 5
    assert values["uniform32"].min() >= 0 and values["uniform32"].max() < 1
    assert values["scalar"].shape == ()


def test_unknown_sizes_follow_the_parameters_or_like():
    gen = gc.random.Generator(0)
    p = gc.placeholder("p", (None, 2))
    coin = gen.bernoulli(p)  # shape=None: p's shape
    wider = gen.uniform((None, 2), low=gc.zeros_like(p), high=1.0)
    assert coin.shape == (None, 2) and wider.shape == (None, 2)
    a, b = gc.function([p], [coin, wider])(np.full((4, 2), 0.5))
    assert a.shape == b.shape == (4, 2)
    ones = gc.function([p], coin)(np.ones((3, 2)))
    np.testing.assert_array_equal(ones, np.ones((3, 2)))  # p = 1: always 1
    with pytest.raises(gc.ShapeError, match="like=x"):
        gen.uniform((None, 3))  # nothing gives the unknown size at run time


def test_bad_arguments():
    gen = gc.random.Generator(0)
    x = gc.placeholder("x", (None, 3))
    with pytest.raises(TypeError, match="not both"):
        gen.uniform((2,), like=x)
    with pytest.raises(ValueError, match="low <= high"):
        gen.uniform((2,), low=2.0, high=1.0)
    with pytest.raises(ValueError, match="low < high"):
        gen.integers(3, 3, (2,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gen.bernoulli(1.5, (2,))
    with pytest.raises(gc.DTypeError):
        gen.uniform((2,), dtype="int64")
    with pytest.raises(gc.DTypeError):
        gen.integers(0, 2, (2,), dtype="float64")
    with pytest.raises(gc.ShapeError):
        gen.uniform((2, 3), low=np.zeros(4))
    with pytest.raises(ValueError, match="2\\*\\*62"):
        gc.random.Generator(-1)
    with pytest.raises(TypeError):
        gc.random.Generator(1.5)
    with pytest.raises(TypeError, match="like="):
        gen.uniform(x)
    with pytest.raises(ValueError, match="out of range"):
        gen.integers(0, 129, (2,), dtype="int8")
    with pytest.raises(ValueError, match="out of range"):
        gen.integers(0, 2**63, (2,))


def test_bad_probability_tensor_fails_at_run_time_naming_the_op():
    gen = gc.random.Generator(0)
    p = gc.placeholder("p", (2,))
    with pytest.raises(gc.ExecutionError, match="random_bernoulli"):
        gc.function([p], gen.bernoulli(p))(np.array([0.5, 1.5]))


# ---- fresh values, reproducible streams -------------------------------------------------------

def test_each_call_draws_new_values_and_advances_the_state_by_one():
    gen = gc.random.Generator(11)
    u = gen.uniform((5,))
    draw = gc.function([], u)
    first, second = draw(), draw()
    assert not np.array_equal(first, second)
    assert int(gen.state.value) == 2
    with gc.Session() as session:
        third = session.run(u)
        assert int(gen.state.value) == 3
        assert session.run(gen.state) == 3 and int(gen.state.value) == 3  # no draw computed: no advance
    assert not np.array_equal(third, second)


def test_same_seed_same_sequence_and_seeds_differ():
    def sequence(seed):
        gen = gc.random.Generator(seed)
        draw = gc.function([], [gen.uniform((3,)), gen.normal((2,))])
        return [np.concatenate(draw()) for _ in range(3)]

    a, b, c = sequence(5), sequence(5), sequence(6)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.allclose(np.stack(a), np.stack(c))


def test_streams_do_not_depend_on_the_rest_of_the_graph():
    # TF1's graph-level seeds shift every stream when a random op is added elsewhere; here a draw's
    # value depends only on its generator's seed, its draw index and the counter.
    gen = gc.random.Generator(7)
    target = gen.normal((4,))
    alone = gc.function([], target)()

    other = gc.random.Generator(7)
    noise = [gc.random.Generator(k).uniform((50,)) for k in range(5)]  # other generators' draws
    mine = other.normal((4,))
    x = gc.placeholder("x", (3,))
    busy = gc.function([x], [gc.sum(x) * 2.0, *noise, gc.exp(mine) * 1.0, mine])(np.ones(3))
    np.testing.assert_array_equal(busy[-1], alone)


def test_one_value_per_call_for_every_consumer():
    gen = gc.random.Generator(1)
    u = gen.uniform((6,))
    for optimize in (True, False):
        a, b, c = gc.function([], [u, u * 2.0, gc.exp(u)], optimize=optimize)()
        np.testing.assert_array_equal(b, a * 2.0)
        np.testing.assert_allclose(c, np.exp(a), rtol=1e-15)


def test_the_optimizer_never_merges_or_folds_draws():
    gen = gc.random.Generator(2)
    a, b = gen.uniform((3,)), gen.uniform((3,))  # the same op and parameters but for the salt
    total = a + b * 1.0 + gen.bernoulli(0.5, (3,)) * 0.0
    optimized = gc.optimize(total)
    assert len(random_nodes([optimized])) == 3
    assert not any(foldable(n) for n in random_nodes([optimized]))
    va, vb = gc.function([], [a, b])()
    assert not np.array_equal(va, vb)


def test_gradients_flow_through_what_is_built_from_draws_but_not_to_parameters():
    gen = gc.random.Generator(4)
    mean = gc.variable(np.array([0.5, -1.0]), name="mean")
    std = gc.variable(np.array([2.0, 3.0]), name="std")
    z = gen.normal((2,))
    sample = mean + std * z
    loss = gc.sum(sample * sample)
    gm, gs = gc.grad(loss, [mean, std])
    zv, sv, gmv, gsv = gc.function([], [z, sample, gm, gs])()
    np.testing.assert_allclose(gmv, 2 * sv, rtol=1e-14)
    np.testing.assert_allclose(gsv, 2 * sv * zv, rtol=1e-14)
    # draws have no gradient with respect to their parameters
    p = gc.variable(0.3, name="p")
    low = gc.variable(0.0, name="low")
    coin = gen.bernoulli(p, (4,))
    spread = gen.uniform((4,), low=low, high=2.0)
    with pytest.raises(gc.GradientError):
        gc.grad(gc.sum(coin) + gc.sum(spread), p, disconnected="raise")
    assert gc.function([], gc.grad(gc.sum(spread * 3.0), low))() == 0.0


def test_a_user_update_of_the_state_is_an_error():
    gen = gc.random.Generator(0)
    u = gen.uniform((2,))
    with pytest.raises(ValueError, match="advances it by itself"):
        gc.function([], u, updates={gen.state: gen.state + 1})
    with pytest.raises(ValueError, match="advances it by itself"):
        gc.Session().run(u, updates={gen.state: gen.state + 2})
    # without draws, the state is an ordinary variable
    gc.function([], gen.state, updates={gen.state: gen.state + 5})()
    assert int(gen.state.value) == 5


def test_feeding_the_state_fixes_the_draws():
    gen = gc.random.Generator(9)
    u = gen.uniform((3,))
    draw = gc.function([], u)
    at = gc.function([gen.state], u)  # the state fed: no implicit update, the counter chosen by the caller
    values = [draw() for _ in range(3)]
    for counter, value in enumerate(values):
        np.testing.assert_array_equal(at(counter), value)
    np.testing.assert_array_equal(at(1), at(1))
    assert int(gen.state.value) == 3


def test_draws_with_other_updates_in_place_and_in_scalar_graphs():
    gen = gc.random.Generator(5)
    acc = gc.variable(np.zeros(4), name="acc")
    noise = gen.normal((4,))
    for inplace in (False, True):
        acc.set_value(np.zeros(4))
        step = gc.function([], noise, updates={acc: acc + noise}, inplace_updates=inplace)
        drawn = [step() for _ in range(3)]
        np.testing.assert_allclose(acc.value, np.sum(drawn, axis=0), rtol=1e-14)
    scalar = gen.uniform(())
    values = [gc.function([], scalar * 2.0 + 1.0)() for _ in range(2)]
    assert values[0] != values[1] and all(1.0 <= v < 3.0 for v in values)


@pytest.mark.parametrize("other_updates", [False, True], ids=["draws only", "with another update"])
def test_concurrent_calls_never_draw_the_same_numbers(other_updates):
    # draws only: each call reserves its counter and runs unlocked; with another update the call
    # holds every lock throughout (both paths of the executor)
    gen = gc.random.Generator(21)
    u = gen.uniform((4,))
    calls = gc.variable(0, name="calls")
    draw = gc.function([], u, updates={calls: calls + 1} if other_updates else None)
    assert (draw._executable._reserved is None) == other_updates
    rows: list[list] = [[] for _ in range(8)]

    run_concurrently(lambda k: rows[k].extend(draw() for _ in range(200)), 8)
    drawn = np.array([row for per_thread in rows for row in per_thread])
    assert drawn.shape == (1600, 4)
    assert int(gen.state.value) == 1600 and int(calls.value) == (1600 if other_updates else 0)
    assert len({row.tobytes() for row in drawn}) == 1600
    # exactly the counters 0..1599, each once: the same rows as drawn with the state fed
    at = gc.function([gen.state], u)
    expected = {at(counter).tobytes() for counter in range(1600)}
    assert {row.tobytes() for row in drawn} == expected


def test_concurrent_session_runs_never_share_a_counter():
    gen = gc.random.Generator(22)
    u = gen.integers(0, 2**62, (2,))
    session = gc.Session()
    seen: list[list] = [[] for _ in range(4)]
    run_concurrently(lambda k: seen[k].extend(session.run(u).tobytes() for _ in range(50)), 4)
    flat = [v for part in seen for v in part]
    assert len(set(flat)) == 200 and int(gen.state.value) == 200


# ---- pickling, saving, processes ---------------------------------------------------------------

def test_pickle_keeps_the_state_and_continues_the_sequence():
    gen = gc.random.Generator(13)
    x = gc.placeholder("x", (None,))
    fn = gc.function([x], x + gen.normal(like=x))
    fn(np.zeros(3))
    loaded = pickle.loads(pickle.dumps(fn))
    expected = fn(np.zeros(3))  # the original's next call
    np.testing.assert_array_equal(loaded(np.zeros(3)), expected)  # the loaded one continues alike
    assert int(gen.state.value) == 2
    np.testing.assert_array_equal(loaded(np.zeros(3)), fn(np.zeros(3)))

    copy = pickle.loads(pickle.dumps(gen))
    assert copy.seed == 13 and int(copy.state.value) == int(gen.state.value)
    np.testing.assert_array_equal(gc.function([], copy.uniform((2,)))(), gc.function([], gen.uniform((2,)))())


def test_save_and_load_continue_the_sequence(tmp_path):
    gen = gc.random.Generator(17)
    x = gc.placeholder("x", (None, 2))
    fn = gc.function([x], gc.dropout(x, 0.5, gen) + gen.uniform((2,), low=-1.0, high=1.0))
    fn(np.ones((3, 2)))
    path = tmp_path / "random.graphc"
    gc.save(fn, path)
    loaded = gc.load(path)
    for _ in range(2):
        np.testing.assert_array_equal(loaded(np.ones((3, 2))), fn(np.ones((3, 2))))
    with open(path, "rb") as stream:  # the same program saves the same bytes
        first = stream.read()
    gc.save(loaded, tmp_path / "again.graphc")
    assert (tmp_path / "again.graphc").read_bytes() != first  # the state moved on by two calls


def test_a_model_file_keeps_one_generator_state_for_its_functions(tmp_path):
    gen = gc.random.Generator(18)
    x = gc.placeholder("x", (None, 3))
    masked = gc.function([x], gc.dropout(x, 0.5, gen))
    noisy = gc.function([x], x + gen.normal(like=x))
    gc.save({"masked": masked, "noisy": noisy}, tmp_path / "model.graphc")
    loaded = gc.load(tmp_path / "model.graphc")
    states = {id(v) for fn in loaded.values() for v, _ in fn.plan.updates}
    assert len(states) == 1  # shared again: a call of either advances the other's counter
    for name in ("masked", "noisy", "noisy", "masked"):
        np.testing.assert_array_equal(loaded[name](np.ones((2, 3))), {"masked": masked, "noisy": noisy}[name](
            np.ones((2, 3))))


def _run_script(source: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], cwd=ROOT, capture_output=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_the_same_draws_in_another_process(tmp_path):
    program = """
        import numpy as np
        import graphc as gc
        gen = gc.random.Generator(123)
        fn = gc.function([], [gen.uniform((3,)), gen.normal((2,)), gen.integers(0, 100, (4,))])
        calls = [np.concatenate([np.ravel(v).astype(float) for v in fn()]) for _ in range(3)]
        print(repr(np.concatenate(calls).tolist()))
    """
    here = {}
    exec(textwrap.dedent(program).replace("print(", "here['out'] = ("), {"here": here})  # noqa: S102
    there = _run_script(program)
    assert there.strip() == here["out"]

    gen = gc.random.Generator(99)
    fn = gc.function([], gen.normal((5,)))
    fn()
    gc.save(fn, tmp_path / "f.graphc")
    expected = [fn().tolist() for _ in range(2)]
    there = _run_script(f"""
        import graphc as gc
        fn = gc.load({str(tmp_path / "f.graphc")!r})
        print(repr([fn().tolist() for _ in range(2)]))
    """)
    assert eval(there) == expected  # noqa: S307 - our own output


# ---- statistics (fixed seeds) ------------------------------------------------------------------

N = 40_000


def _ks_statistic(sample: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov: the largest distance between the empirical and the true CDF."""
    x = np.sort(sample)
    n = len(x)
    f = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


# the KS statistic's critical value at significance 0.001 is about 1.949 / sqrt(n) (Smirnov's asymptotic)
KS_BOUND = 1.949 / math.sqrt(N)


def _normal_cdf(x):
    erf = np.vectorize(math.erf, otypes=[float])
    return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def _within_5_sigma(estimate, expected, sigma):
    assert abs(estimate - expected) < 5 * sigma, (estimate, expected, sigma)


def test_uniform_statistics():
    gen = gc.random.Generator(2024)
    values = gc.function([], gen.uniform((N,), low=-1.0, high=3.0))()
    assert values.min() >= -1.0 and values.max() < 3.0
    unit = (values + 1.0) / 4.0
    _within_5_sigma(unit.mean(), 0.5, math.sqrt(1 / 12 / N))
    # Var(sample variance) ~ (mu4 - sigma^4) / n, mu4 = 1/80 for U(0, 1)
    _within_5_sigma(unit.var(), 1 / 12, math.sqrt((1 / 80 - 1 / 144) / N))
    assert _ks_statistic(unit, lambda x: x) < KS_BOUND


def test_normal_statistics():
    gen = gc.random.Generator(7)
    values = gc.function([], gen.normal((N,), mean=2.0, std=3.0))()
    z = (values - 2.0) / 3.0
    _within_5_sigma(z.mean(), 0.0, math.sqrt(1 / N))
    _within_5_sigma(z.var(), 1.0, math.sqrt(2 / N))  # mu4 - sigma^4 = 3 - 1
    assert _ks_statistic(z, _normal_cdf) < KS_BOUND
    z32 = gc.function([], gen.normal((N,), dtype="float32"))()
    assert z32.dtype == np.float32 and _ks_statistic(z32.astype(float), _normal_cdf) < KS_BOUND


def test_bernoulli_statistics():
    gen = gc.random.Generator(31)
    draw = gc.function([], gen.bernoulli(0.3, (N,)))
    values = draw()
    _within_5_sigma(values.mean(), 0.3, math.sqrt(0.3 * 0.7 / N))
    # calls are independent: the agreement of two calls is p^2 + (1-p)^2
    agree = np.mean(values == draw())
    _within_5_sigma(agree, 0.58, math.sqrt(0.58 * 0.42 / N))


def test_integers_chi_square():
    gen = gc.random.Generator(5)
    values = gc.function([], gen.integers(3, 13, (N,)))()
    counts = np.bincount(values - 3, minlength=10)
    assert counts.shape == (10,)
    expected = N / 10
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 27.877  # the chi-square quantile for 9 degrees of freedom at p = 0.001


def test_draws_of_different_calls_and_salts_are_uncorrelated():
    gen = gc.random.Generator(8)
    a, b = gen.normal((N,)), gen.normal((N,))
    draw = gc.function([], [a, b])
    va, vb = draw()
    vc, _ = draw()
    for x, y in ((va, vb), (va, vc)):
        _within_5_sigma(float(np.mean(x * y)), 0.0, math.sqrt(1 / N))


def test_calls_that_only_draw_reserve_their_counter_and_overlap():
    # A call whose only update is its generator's advance takes its counter when it starts and
    # then runs without the lock: a second call can run while the first is still inside.
    import threading

    entered, released = threading.Event(), threading.Event()

    def forward(value):
        if not entered.is_set():
            entered.set()
            assert released.wait(30), "the second call could not start while the first ran"
        return value

    gate = gc.custom_op("gate", forward, None)
    gen = gc.random.Generator(3)
    draw = gc.function([], gate(gen.uniform((3,))))
    assert draw._executable._reserved == (gen.state,)
    results: dict[int, np.ndarray] = {}

    def first():
        results[0] = draw()

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(30)
    results[1] = draw()  # runs while the first call waits inside its op
    released.set()
    thread.join()
    assert int(gen.state.value) == 2
    replay = gc.function([gen.state], draw.outputs)  # the same draw, at a counter of our choosing
    entered.set()  # (the gate lets everything through from now on)
    np.testing.assert_array_equal(results[0], replay(0))  # the first call reserved counter 0
    np.testing.assert_array_equal(results[1], replay(1))


def test_a_failed_call_gives_its_counter_back():
    gen = gc.random.Generator(4)
    x = gc.placeholder("x", (None,))
    fn = gc.function([x], gc.reshape(x, (2, -1)) + gen.uniform((2, 1)))
    assert fn._executable._reserved == (gen.state,)
    fn(np.ones(4))
    with pytest.raises(gc.ExecutionError, match="reshape"):
        fn(np.ones(3))
    assert int(gen.state.value) == 1  # not advanced by the failed call
    with_update = gc.function([x], gc.reshape(x, (2, -1)) + gen.uniform((2, 1)),
                              updates={gc.variable(0.0, name="v"): gc.sum(x)})
    assert with_update._executable._reserved is None  # other updates: the call holds the locks throughout
    with pytest.raises(gc.ExecutionError):
        with_update(np.ones(3))
    assert int(gen.state.value) == 1


def test_a_draw_is_philox_keyed_by_seed_and_salt_at_the_counter():
    # the documented design, pinned: value = f(seed, salt, counter, shape) through NumPy's Philox
    gen = gc.random.Generator(12345)
    gen.uniform((2,))  # salt 0
    u = gen.uniform((3, 2))  # salt 1
    z = gen.normal((4,), mean=1.0, std=2.0)  # salt 2
    draw = gc.function([], [u, z])
    for counter in range(3):
        value_u, value_z = draw()

        np.testing.assert_array_equal(value_u, _stream(12345, 1, counter).random((3, 2)))
        np.testing.assert_array_equal(value_z, 1.0 + 2.0 * _stream(12345, 2, counter).standard_normal(4))


def _stream(seed: int, salt: int, counter: int) -> np.random.Generator:
    bits = np.random.Philox(key=np.array([seed, salt], np.uint64), counter=np.array([0, counter, 0, 0], np.uint64))
    return np.random.Generator(bits)


def test_an_unpickled_draw_still_advances_in_a_new_function(tmp_path):
    # a fresh process has made no draw op until it unpickles one: functions built from the
    # unpickled tensors must still find the draws and advance their state
    gen = gc.random.Generator(3)
    (tmp_path / "fn.pickle").write_bytes(pickle.dumps(gc.function([], gen.uniform((2,)))))
    there = _run_script(f"""
        import pickle
        import graphc as gc
        from graphc.random import draws_exist
        assert not draws_exist()
        with open({str(tmp_path / "fn.pickle")!r}, "rb") as stream:
            fn = pickle.load(stream)
        again = gc.function([], fn.outputs)
        first, second = again(), again()
        print(int((first != second).all()), int(fn.plan.updates[0][0].value))
    """)
    assert there.split() == ["1", "2"]


def test_optimized_and_unoptimized_graphs_draw_the_same_values():
    # a draw is a pure function of (seed, salt, counter, shape): rewriting the graph around it
    # (stabilizing clones, CSE, folding its neighbours) changes nothing
    def run(optimize):
        gen = gc.random.Generator(6)
        x = gc.variable(np.linspace(-1.0, 1.0, 8).reshape(2, 4), name="x")
        hidden = gc.dropout(gc.tanh(x) * 1.0 + 0.0, 0.3, gen)
        loss = gc.sum(gc.log(gc.softmax(hidden + 0.1 * gen.normal(like=hidden))))
        step = gc.function([], [hidden, loss, gc.grad(loss, x)], optimize=optimize)
        return [step() for _ in range(3)]

    for plain, optimized in zip(run(False), run(True)):
        for a, b in zip(plain, optimized):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ---- draws inside loops (gc.scan) ---------------------------------------------------------------

needs_scan = pytest.mark.skipif(not hasattr(gc, "scan"), reason="gc.scan has not landed in this tree")


@needs_scan
def test_draws_in_a_loop_body_are_new_every_step_and_every_call():
    gen = gc.random.Generator(30)
    xs = gc.placeholder("xs", (None, 3))
    noisy = gc.scan(lambda x: x + gen.uniform((3,)), sequences=[xs])
    draw = gc.function([xs], noisy)
    first, second = draw(np.zeros((4, 3))), draw(np.zeros((4, 3)))
    assert len({row.tobytes() for row in np.concatenate([first, second])}) == 8
    assert int(gen.state.value) == 2  # the loop's draws advance the state once per call
    # step t draws at Philox counter word 2 = t + 1; the draw is the generator's first (salt 0)
    for t in range(4):
        np.testing.assert_array_equal(second[t], _stream_at(30, 0, 1, t + 1).random(3))


def _stream_at(seed: int, salt: int, counter: int, step: int) -> np.random.Generator:
    bits = np.random.Philox(key=np.array([seed, salt], np.uint64),
                            counter=np.array([0, counter, step, 0], np.uint64))
    return np.random.Generator(bits)


@needs_scan
def test_dropout_inside_a_recurrence_differentiates_with_its_own_masks():
    gen = gc.random.Generator(31)
    w = gc.variable(np.linspace(0.5, 1.5, 4).reshape(2, 2), name="w")
    xs = gc.placeholder("xs", (5, 2))

    def step(x, h):
        return gc.tanh(gc.dropout(x, 0.5, gen) @ w + h * gc.exp(0.1 * gen.normal((2,))))

    hs = gc.scan(step, sequences=[xs], outputs_info=[gc.constant(np.zeros(2))])
    loss = gc.sum(hs * hs)
    data = np.arange(1.0, 11.0).reshape(5, 2) / 10
    # the loop's gradient (another loop) sees each step's masks again: central differences agree
    assert gc.check_grad(loss, w, {xs: data}) < 1e-6
    values = gc.function([xs], hs)(data)
    assert not np.allclose(values, gc.function([xs], hs)(data))


@needs_scan
def test_nested_loops_draw_distinct_values_and_round_trip(tmp_path):
    gen = gc.random.Generator(32)
    xs = gc.placeholder("xs", (None, 2))

    def outer(x):
        inner = gc.scan(lambda z: z + gen.uniform((2,)), sequences=[gc.stack([x, x, x])])
        return gc.sum(inner, axis=0)

    fn = gc.function([xs], gc.scan(outer, sequences=[xs]))
    values = fn(np.zeros((4, 2)))
    assert len(np.unique(values)) == 8
    gc.save(fn, tmp_path / "loop.graphc")
    loaded, copy = gc.load(tmp_path / "loop.graphc"), pickle.loads(pickle.dumps(fn))
    expected = fn(np.zeros((4, 2)))
    np.testing.assert_array_equal(loaded(np.zeros((4, 2))), expected)
    np.testing.assert_array_equal(copy(np.zeros((4, 2))), expected)
