"""Long plans: the generated lines run as a step table, with no ``compile()`` (``table.TABLE_STEPS``)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compile import build_plan, table
from graphc.passes import optimize_tensors


def _blocks(n: int, size=(64,)):
    x = gc.placeholder("x", size)
    h = x
    for _ in range(n):
        h = gc.exp(gc.sin(gc.tanh(h) * 0.9 + 0.1))
    cost = gc.sum(h)
    (g,) = gc.grad(cost, [x])
    return x, optimize_tensors([cost, g])


def _generated(monkeypatch, outputs, inputs, **options):
    with monkeypatch.context() as patch:
        patch.setattr(table, "TABLE_STEPS", 10**9)
        return build_plan(outputs, inputs, **options)


def _is_table(plan) -> bool:
    return plan.source.startswith("# a step table")


def _same(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_long_plan_runs_as_a_table_with_identical_results(monkeypatch):
    monkeypatch.setattr(table, "TABLE_STEPS", 40)
    x, outputs = _blocks(30)
    tabled = build_plan(outputs, [x])
    generated = _generated(monkeypatch, outputs, [x])
    assert _is_table(tabled) and not _is_table(generated) and "def run" in generated.source
    assert tabled.explain() == generated.explain() and tabled.kinds == generated.kinds
    value = np.linspace(-1, 1, 64)
    for _ in range(2):  # the register list is fresh per call
        _same(tabled.run((value,), ()), generated.run((value,), ()))


def test_table_lines_that_are_not_plain_calls(monkeypatch):
    # a transpose, ReLU's keyword out=, a mean and counts of unknown sizes, a spare buffer and
    # _fresh: the lines that run as a lambda of their names
    monkeypatch.setattr(table, "TABLE_STEPS", 0)
    x = gc.placeholder("x", (None, 3))
    w = gc.placeholder("w", (3, 3))
    big = gc.placeholder("big", (400, 400))
    h = gc.relu(x @ w)
    loss = gc.mean(h * h) + gc.sum(gc.transpose(h) @ h) + gc.sum(gc.relu(big * 2.0) + 1.0)
    outputs = optimize_tensors([loss, *gc.grad(loss, [x, w, big])])
    tabled = build_plan(outputs, [x, w, big])
    generated = _generated(monkeypatch, outputs, [x, w, big])
    assert _is_table(tabled) and tabled.explain() == generated.explain()
    assert "_grab(_spare" in tabled.source and ", out=" in tabled.source and ".T" in tabled.source
    rng = np.random.default_rng(0)
    feeds = (rng.normal(size=(5, 3)), rng.normal(size=(3, 3)), rng.normal(size=(400, 400)))
    _same(tabled.run(feeds, ()), generated.run(feeds, ()))
    spare = {((400, 400), "<f8"): [np.empty((400, 400))]}
    _same(tabled.run(feeds, (), spare), generated.run(feeds, ()))


def test_table_holds_no_values_after_the_call(monkeypatch):
    monkeypatch.setattr(table, "TABLE_STEPS", 40)
    x, outputs = _blocks(20)
    plan = build_plan(outputs, [x])
    value = np.linspace(-1, 1, 64)
    first = plan.run((value,), ())
    second = plan.run((value,), ())
    assert first[1] is not second[1] and np.array_equal(first[1], second[1])


def _mismatched_sub_plan():
    """A 40-block chain of unknown size ending in ``h - y``: fed a 3- and a 4-vector, the sub fails."""
    x = gc.placeholder("x", (None,))
    y = gc.placeholder("y", (None,))
    h = x
    for _ in range(40):
        h = gc.tanh(h) * 0.5 + 0.25
    bad = h - y  # MARK-SUB
    return build_plan([gc.exp(bad) * 2.0], [x, y])


def _assert_names_the_sub_and_its_line(message: str) -> None:
    assert "'sub'" in message and "(3,)" in message and "(4,)" in message, message
    line = int(message.split("test_compile_table.py:")[1].split(")")[0])
    assert open(__file__).read().splitlines()[line - 1].endswith("# MARK" + "-SUB")  # (not this line)


def test_error_in_a_table_names_the_step_and_user_line(monkeypatch):
    monkeypatch.setattr(table, "TABLE_STEPS", 30)
    plan = _mismatched_sub_plan()
    assert _is_table(plan)
    with pytest.raises(gc.ExecutionError) as info:
        plan.run((np.ones(3), np.ones(4)), ())
    _assert_names_the_sub_and_its_line(str(info.value))


def test_short_in_place_and_checked_plans_stay_generated_code(monkeypatch):
    x, outputs = _blocks(3)
    plan = build_plan(outputs, [x])
    assert not _is_table(plan) and plan.source.count("def ") == 1
    monkeypatch.setattr(table, "TABLE_STEPS", 0)
    assert not _is_table(build_plan(outputs, [x], check_numerics=True))
    w = gc.variable(np.ones(64), name="w")
    step = build_plan([gc.sum(w * 2.0)], [], [(w, w * 0.5 + 1.0)], inplace_updates=True)
    assert not _is_table(step) and step.inplace


def test_table_becomes_compiled_pieces_one_per_call(monkeypatch):
    monkeypatch.setattr(table, "TABLE_STEPS", 40)
    monkeypatch.setattr(table, "PIECE_LINES", 25)
    x, outputs = _blocks(20)
    plan = build_plan(outputs, [x])
    generated = _generated(monkeypatch, outputs, [x])
    tiers = plan.run.tiers
    count = -(-len(plan.source.splitlines()[1:-1]) // 25)
    assert count >= 5 and not tiers.pieces
    value = np.linspace(-1, 1, 64)
    want = generated.run((value,), ())
    for call in range(count + 2):
        _same(plan.run((value,), ()), want)
        assert len(tiers.pieces) == min(call, count)  # the first call compiles nothing
    assert tiers.table == tiers.pieces and not tiers.pending and tiers.lines is None


def test_error_in_a_compiled_piece_names_the_step_and_user_line(monkeypatch):
    monkeypatch.setattr(table, "TABLE_STEPS", 30)
    monkeypatch.setattr(table, "PIECE_LINES", 20)
    plan = _mismatched_sub_plan()
    lines = len(plan.source.splitlines()) - 2
    for _ in range(-(-lines // 20) + 1):
        with pytest.raises(gc.ExecutionError) as info:
            plan.run((np.ones(3), np.ones(4)), ())
        _assert_names_the_sub_and_its_line(str(info.value))
        plan.run((np.ones(3), np.ones(3)), ())  # a successful call: the next one compiles a piece
    assert not plan.run.tiers.pending and plan.run.tiers.table == plan.run.tiers.pieces


def test_concurrent_calls_while_pieces_are_compiled(monkeypatch):
    import threading

    monkeypatch.setattr(table, "TABLE_STEPS", 40)
    monkeypatch.setattr(table, "PIECE_LINES", 10)
    x, outputs = _blocks(20)
    plan = build_plan(outputs, [x])
    value = np.linspace(-1, 1, 64)
    want = _generated(monkeypatch, outputs, [x]).run((value,), ())
    plan.run((value,), ())
    failures = []

    def calls():
        try:
            for _ in range(30):
                _same(plan.run((value,), ()), want)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    plan.run.tiers.pending = True  # as a call ending while the last piece was swapped in can leave it
    _same(plan.run((value,), ()), want)
    assert not plan.run.tiers.pending and plan.run.tiers.table == plan.run.tiers.pieces


def test_a_piece_whose_compile_is_interrupted_is_compiled_again_from_the_same_state(monkeypatch):
    # a KeyboardInterrupt (or MemoryError) while a piece compiles must leave the tiers as they were:
    # the next call compiles that piece again, with the same names loaded from R
    import builtins

    monkeypatch.setattr(table, "TABLE_STEPS", 40)
    monkeypatch.setattr(table, "PIECE_LINES", 40)
    x = gc.placeholder("x", (64,))
    h = x
    for k in range(20):
        h = gc.exp(gc.sin(gc.tanh(h) * 0.9 + 0.1))
        if k == 12:
            h = h + x  # the feed's last use (and ``del x0``) in the second piece
    outputs = optimize_tensors([gc.sum(h)])
    plan = build_plan(outputs, [x])
    assert 40 <= max(k for k, line in enumerate(plan.source.splitlines()[1:]) if "x0" in line) < 80
    value = np.linspace(-1, 1, 64)
    want = _generated(monkeypatch, outputs, [x]).run((value,), ())
    interrupts = [2]  # the second piece's compile is interrupted (the first piece then reads its names)

    def compile_once_interrupted(*args, **kwargs):
        interrupts[0] -= 1
        if interrupts[0] == 0:
            raise KeyboardInterrupt
        return builtins.compile(*args, **kwargs)

    monkeypatch.setattr(table, "compile", compile_once_interrupted, raising=False)
    _same(plan.run((value,), ()), want)
    _same(plan.run((value,), ()), want)  # the first piece
    with pytest.raises(KeyboardInterrupt):
        plan.run((value,), ())
    tiers = plan.run.tiers
    while tiers.lines is not None:
        _same(plan.run((value,), ()), want)
    _same(plan.run((value,), ()), want)


def test_error_in_a_call_running_the_table_after_the_last_piece_was_swapped_in(monkeypatch):
    # a call still running the table it started with (here: reentrant, from inside a custom op) whose
    # step raises after other calls made the plan all code: the error still names the step
    monkeypatch.setattr(table, "TABLE_STEPS", 30)
    monkeypatch.setattr(table, "PIECE_LINES", 1000)
    state = {"inner": False}

    def forward(a):
        if state["inner"]:
            state["inner"] = False
            plan.run((np.ones(3), np.ones(3)), ())  # the second call compiles the one piece
            while plan.run.tiers.lines is not None:
                plan.run((np.ones(3), np.ones(3)), ())
            raise ValueError("custom failure")
        return a * 1.0

    x = gc.placeholder("x", (None,))
    y = gc.placeholder("y", (None,))
    h = x
    for _ in range(40):
        h = gc.tanh(h) * 0.5 + 0.25
    bad = gc.custom_op("fails_late", forward, None)(h - y)  # MARK-LATE-FAIL
    plan = build_plan([gc.exp(bad) * 2.0], [x, y])
    assert _is_table(plan)
    state["inner"] = True
    with pytest.raises(gc.ExecutionError) as info:
        plan.run((np.ones(3), np.ones(3)), ())
    message = str(info.value)
    assert "fails_late" in message and "(3,)" in message, message
    assert "MARK-LATE-FAIL" in open(__file__).read().splitlines()[
        int(message.split("test_compile_table.py:")[1].split(")")[0]) - 1]
