"""Long plans: ``run`` written as a chain of pieces compiled one by one (``codegen.CHUNK_LINES``)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.compile import build_plan, codegen
from graphc.passes import optimize_tensors


def _blocks(n: int, size=(64,)):
    x = gc.placeholder("x", size)
    h = x
    for _ in range(n):
        h = gc.exp(gc.sin(gc.tanh(h) * 0.9 + 0.1))
    cost = gc.sum(h)
    (g,) = gc.grad(cost, [x])
    return x, optimize_tensors([cost, g])


def _one_piece(monkeypatch, outputs, inputs):
    with monkeypatch.context() as patch:
        patch.setattr(codegen, "CHUNK_LINES", 10**9)
        return build_plan(outputs, inputs)


def test_long_plan_is_cut_into_pieces_with_identical_results(monkeypatch):
    monkeypatch.setattr(codegen, "CHUNK_LINES", 40)
    x, outputs = _blocks(30)
    chunked = build_plan(outputs, [x])
    whole = _one_piece(monkeypatch, outputs, [x])
    assert chunked.source.count("\ndef _k") >= 5 and "_k0(R, feeds, variables, _spare)" in chunked.source
    assert "def _k" not in whole.source
    assert chunked.explain() == whole.explain()
    value = np.linspace(-1, 1, 64)
    for _ in range(2):  # the register list is fresh per call
        got, want = chunked.run((value,), ()), whole.run((value,), ())
        assert len(got) == len(want) == 2
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_pieces_hold_no_values_after_the_call(monkeypatch):
    monkeypatch.setattr(codegen, "CHUNK_LINES", 40)
    x, outputs = _blocks(20)
    plan = build_plan(outputs, [x])
    value = np.linspace(-1, 1, 64)
    first = plan.run((value,), ())
    second = plan.run((value,), ())
    assert first[1] is not second[1] and np.array_equal(first[1], second[1])


def test_error_in_a_piece_names_the_step_and_user_line(monkeypatch):
    monkeypatch.setattr(codegen, "CHUNK_LINES", 30)
    x = gc.placeholder("x", (None,))
    y = gc.placeholder("y", (None,))
    h = x
    for _ in range(40):
        h = gc.tanh(h) * 0.5 + 0.25
    bad = h - y  # MARK-CHUNK-SUB
    plan = build_plan([gc.exp(bad) * 2.0], [x, y])
    assert plan.source.count("\ndef _k") >= 2
    sub_line = next(i for i, line in enumerate(plan.source.splitlines(), 1)
                    if re.match(r"\s+r\d+ = f\d+\(.*\bx1\b", line))
    with pytest.raises(gc.ExecutionError) as info:
        plan.run((np.ones(3), np.ones(4)), ())
    message = str(info.value)
    assert "'sub'" in message and "(3,)" in message and "(4,)" in message
    assert "MARK-CHUNK-SUB" in open(__file__).read().splitlines()[int(message.split("test_compile_chunks.py:")[1]
                                                                          .split(")")[0]) - 1]
    tb = info.value.__cause__.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name.startswith("_k") and tb.tb_lineno == sub_line  # the source's numbering


def test_short_plans_stay_one_function():
    x, outputs = _blocks(3)
    plan = build_plan(outputs, [x])
    assert "def _k" not in plan.source and plan.source.count("def ") == 1
