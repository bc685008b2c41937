"""The compiler's lowering rules (graphc/compile/lowering.py), one case per rule.

Each case runs its rule alone (the registry reduced to it) against the plan without any rule:
the rule must fire, ``plan.explain()`` must name it, the values must be the same, and the rule
must do what it is for (fewer steps, fewer passes over memory, less memory). A registered rule
without a case here fails ``test_every_rule_has_a_case``.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import graphc as gc
from graphc.compile import build_plan, lowering
from graphc.op import apply
from graphc.ops import elementwise as ew
from graphc.ops import nn
from graphc.ops.shape import broadcast_like


def run(plan, feeds=()):
    return plan.run(tuple(feeds), tuple(v.value for v in plan.variables))


def peak(plan, feeds, unit: int) -> float:
    run(plan, feeds)  # warm
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run(plan, feeds)
        return (tracemalloc.get_traced_memory()[1] - base) / unit
    finally:
        tracemalloc.stop()


@dataclass
class Case:
    outputs: list
    inputs: list
    feeds: list
    #: (plan with the rule, plan without it) -> the rule did what it is for
    effect: Callable
    exact: bool = True  # bit for bit (else to rounding: a different order of additions)


def relu_mask_case(rng):
    x = gc.placeholder("x", (2000, 50))
    a = x * 2.0
    h = gc.relu(a)
    y = (gc.sin(gc.exp(h)) + h) * gc.cast(a > 0.0, "float64")  # h and the mask of a are read late
    feed = rng.standard_normal((2000, 50))
    feed[0, :5] = 0.0
    unit = feed.nbytes
    # the mask comes from h (the same for every value, NaN included), so a dies at the ReLU instead of
    # living until the mask: one buffer less at the peak
    return Case([y], [x], [feed], lambda fast, slow: peak(fast, [feed], unit) < peak(slow, [feed], unit) - 0.5)


def bool_mask_mul_case(rng):
    x = gc.placeholder("x", (5, 6))
    mask = gc.placeholder("m", (5, 6), "bool")
    y = x * gc.cast(mask, "float64")
    return Case([y], [x, mask], [rng.standard_normal((5, 6)), rng.random((5, 6)) > 0.5],
                lambda fast, slow: len(fast.steps) == len(slow.steps) - 1 and "cast" not in
                [n.op for n in fast.steps])


def drop_scalar_broadcast_case(rng):
    b = gc.placeholder("b", ())
    y = gc.placeholder("y", (4, 3))
    return Case([broadcast_like(b, y) + y], [b, y], [np.array(0.25), rng.standard_normal((4, 3))],
                lambda fast, slow: len(fast.steps) == len(slow.steps) - 1)


def exact_scale_case(rng):
    w = gc.variable(rng.standard_normal((40, 30)))
    s = gc.placeholder("s", ())
    y = (w * 2.0) * gc.reshape(s, (1, 1))
    # one pass over the (40, 30) weights instead of two
    return Case([y], [s], [np.array(-0.3)],
                lambda fast, slow: [n.shape for n in fast.steps].count((40, 30)) == 1
                and [n.shape for n in slow.steps].count((40, 30)) == 2)


def softmax_minus_one_hot_case(rng):
    z = gc.placeholder("z", (6, 4))
    labels = gc.placeholder("labels", (6,), "int64")
    d = gc.softmax(z) - gc.one_hot(labels, 4)
    return Case([d * 2.0], [z, labels], [rng.standard_normal((6, 4)) * 30, np.array([0, 3, 3, 1, 2, 0])],
                lambda fast, slow: [n.op for n in fast.steps].count("softmax_minus_one_hot") == 1
                and len(fast.steps) == len(slow.steps) - 2)


def softmax_minus_one_hot_with_its_loss_case(rng):
    z = gc.placeholder("z", (6, 4))
    labels = gc.placeholder("labels", (6,), "int64")
    loss = gc.softmax_cross_entropy(z, labels)
    d = apply(nn.SoftmaxMinusOneHot(), z, labels)  # (as the numba backend makes it before fusing kernels)
    # the loss and the gradient from one call: one exp of the shifted logits, one label check
    return Case([loss, d * 2.0], [z, labels], [rng.standard_normal((6, 4)) * 30, np.array([0, 3, 3, 1, 2, 0])],
                lambda fast, slow: [type(n.primitive) for n in fast.steps].count(lowering.LossAndGradient) == 1
                and "softmax_minus_one_hot" in [n.op for n in slow.steps]
                and "softmax_minus_one_hot" not in [n.op for n in fast.steps])


def sum_of_squares_dot_case(rng):
    w = gc.variable(rng.standard_normal((300, 200)))
    nbytes = w.value.nbytes
    # no temporary square(w)
    return Case([gc.sum(gc.square(w))], [], [],
                lambda fast, slow: peak(fast, [], nbytes) < 0.1 < 0.9 < peak(slow, [], nbytes), exact=False)


CASES = {case.__name__.removesuffix("_case"): case for case in (
    relu_mask_case, bool_mask_mul_case, drop_scalar_broadcast_case, exact_scale_case,
    softmax_minus_one_hot_case, softmax_minus_one_hot_with_its_loss_case, sum_of_squares_dot_case)}


def test_every_rule_has_a_case():
    registered = {rule.__name__ for rules in lowering.RULES.values() for rule in rules}
    assert registered == set(CASES)


def only(name: str) -> dict:
    """The registry reduced to the rule ``name``."""
    return {cls: [r for r in rules if r.__name__ == name] for cls, rules in lowering.RULES.items()
            if any(r.__name__ == name for r in rules)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_is_named_and_keeps_the_values(name, rng, monkeypatch):
    case = CASES[name](rng)
    slow = build_plan(case.outputs, case.inputs, peepholes=False)
    monkeypatch.setattr(lowering, "RULES", only(name))
    fast = build_plan(case.outputs, case.inputs)
    explained = fast.explain().splitlines()
    marked = [line for line in explained if line.endswith(f"[rule {name}]")]
    assert marked, fast.explain()
    assert all("[rule " not in line for line in explained if line not in marked)
    assert "[rule " not in slow.explain()
    for got, want in zip(run(fast, case.feeds), run(slow, case.feeds)):
        if case.exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13)
    assert case.effect(fast, slow), fast.explain() + "\n---\n" + slow.explain()


def test_rules_leave_graphs_they_do_not_match_alone(rng):
    w = gc.variable(rng.standard_normal((40, 30)))
    s = gc.placeholder("s", ())
    odd = (w * 3.0) * gc.reshape(s, (1, 1))  # 3 is not an exact scaling
    z = gc.placeholder("z", (6, 4))
    labels = gc.placeholder("labels", (6,), "int64")
    probs = gc.softmax(z)
    shared = probs - gc.one_hot(labels, 4)  # the softmax is also an output: it must stay
    plan = build_plan([odd, shared, probs], [s, z, labels])
    assert "[rule " not in plan.explain(), plan.explain()
    assert [n.op for n in plan.steps].count("mul") == 2 and "softmax_minus_one_hot" not in plan.explain()


def test_a_rule_registered_for_an_op_class_fires_on_exactly_that_class(rng, monkeypatch):
    def tanh_by_numpy(node, rw):
        # tanh(x) -> np.tanh(x): the very function Tanh lowers to, so the values cannot change
        rw.special[id(node)] = np.tanh
        rw.fire(node)

    monkeypatch.setitem(lowering.RULES, ew.Tanh, [tanh_by_numpy])
    x = gc.placeholder("x", (3,))
    plan = build_plan([gc.tanh(x) + gc.sin(x)], [x])
    tagged = [line for line in plan.explain().splitlines() if "[rule tanh_by_numpy]" in line]
    assert len(tagged) == 1 and " tanh " in tagged[0], plan.explain()
    value = rng.standard_normal(3)
    np.testing.assert_array_equal(run(plan, [value])[0], np.tanh(value) + np.sin(value))


def test_the_readers_are_made_only_when_a_rule_asks_for_them(rng):
    # a chain of multiplications by constants that are not exact scalings: exact_scale looks at each
    # product, but no rule needs the readers, so the map of readers (a list per value) is never made
    x = gc.placeholder("x", (5,))
    h = x
    for _ in range(4):
        h = (h * 3.0) * 0.7
    steps = build_plan([h], [x]).steps
    deps = {n: n.inputs for n in steps}
    rewrites = lowering.apply_rules(list(steps), deps, {id(h)}, {}, {})
    assert "consumers" not in vars(rewrites) and "position" not in vars(rewrites)
    # asked for, they are the readers of the steps as they were: the same map as made up front
    assert [n.op for n in rewrites.users(steps[0])] == ["mul"] and rewrites.position[id(steps[-1])] == len(steps) - 1
