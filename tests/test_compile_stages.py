"""The compiler's stages (graphc.compile.STAGES) run one by one over plain data."""

from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.compile import STAGES, build_plan, compile_inner
from graphc.compile.plan import Options, Program
from graphc.passes import optimize_tensors


def training_step(rng):
    x = gc.placeholder("x", (8, 5))
    labels = gc.placeholder("labels", (8,), "int64")
    w = gc.variable(rng.standard_normal((5, 4)), name="w")
    loss = gc.mean(gc.softmax_cross_entropy(gc.relu(x @ w), labels)) + 0.5 * gc.sum(gc.square(w))
    (g,) = gc.grad(loss, [w])
    return [loss], [x, labels], [(w, w - 0.1 * g)]


def test_the_stages_are_listed_in_order():
    assert [stage.__module__.rsplit(".", 1)[-1] for stage in STAGES] == [
        "lowering", "schedule", "inplace", "buffers", "codegen"]


def test_each_stage_fills_in_its_part_and_the_result_is_build_plans(rng):
    outputs, inputs, updates = training_step(rng)
    for inplace in (False, True):
        program = Program(tuple(outputs), tuple(inputs), tuple(updates), Options(inplace=inplace),
                          compile_graph=compile_inner)
        lower, schedule, plan_inplace, assign_buffers, generate = STAGES
        program = lower(program)
        leaves = {id(t) for t in program.leaves}
        assert program.steps and not any(id(n) in leaves for n in program.steps)
        assert len(program.roots) == len(outputs) + len(updates)
        assert "softmax_minus_one_hot" in program.fired.values()  # a lowering rule fired
        lowered = list(program.steps)
        program = schedule(program)
        assert sorted(map(id, program.steps)) == sorted(map(id, lowered))  # a reordering
        seen: set[int] = set()
        for node in program.steps:  # every step after the steps it reads
            assert all(id(p) in seen or id(p) in leaves for p in program.deps[node])
            seen.add(id(node))
        program = plan_inplace(program)
        assert bool(program.writes or program.fused) == inplace
        program = assign_buffers(program)
        assert len(program.kinds) == len(program.steps) and program.plan is None
        # the values numbered once: the steps in run order, then the leaves; inputs by number
        n = len(program.steps)
        assert program.values[:n] == program.steps and program.values[n:] == program.leaves
        assert all(program.number[v] == k for k, v in enumerate(program.values))
        assert all([program.values[k] for k in program.parents[i]] == list(program.deps[node])
                   for i, node in enumerate(program.steps))
        assert len(program.target) == n and all(buffer is None or 0 <= buffer < n for buffer in program.target)
        assert all(program.target[step] == buffer for buffer, step in enumerate(program.taken_at) if step >= 0)
        program = generate(program)
        expected = build_plan(outputs, inputs, updates, inplace_updates=inplace)
        assert program.plan.source == expected.source and program.plan.explain() == expected.explain()
        feeds = (rng.standard_normal((8, 5)), rng.integers(0, 4, 8))
        values = tuple(v.value for v in program.plan.variables)
        storage = [((np.array(updates[0][0].value, copy=True),),) if inplace else () for _ in range(2)]
        # (a storage of its own for each run: an in-place plan returns the array it wrote)
        got, want = program.plan.run(feeds, values, *storage[0]), expected.run(feeds, values, *storage[1])
        assert len(got) == 2
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_lowering_stores_only_the_inputs_it_changes():
    # a plan no lowering rule rewrites keeps no dict of every step: each step reads its own inputs
    x = gc.placeholder("x", (6,))
    h = gc.exp(gc.sin(gc.tanh(x) * 0.9 + 0.1))
    (g,) = gc.grad(gc.sum(h), [x])
    lower = STAGES[0]
    program = lower(Program(tuple(optimize_tensors([h, g])), (x,), (), Options(), compile_graph=compile_inner))
    assert not program.fired and len(program.deps) == 0
    assert all(program.deps[node] is node.inputs for node in program.steps)
    # a rule's rewiring is stored, and the steps it does not touch still read their own inputs
    outputs, inputs, updates = training_step(np.random.default_rng(0))
    program = lower(Program(tuple(outputs), tuple(inputs), tuple(updates), Options(), compile_graph=compile_inner))
    assert program.fired and len(program.deps) > 0
    made = next(n for n in program.steps if program.fired.get(id(n)) == "softmax_minus_one_hot")
    assert made in program.deps and all(program.deps[n] is n.inputs for n in program.steps if n not in program.deps)
