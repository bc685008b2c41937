"""The rewrite engine and the report."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ops import elementwise as ew
from graphc.passes.core import Report, RewriteContext, named, op_counts, producer, rewrite
from graphc.tensor import toposort


def test_rules_fire_bottom_up_to_a_fixed_point_and_are_counted():
    @named("test.exp_log")
    def exp_of_log(node):
        """exp(log(x)) -> x   (a test rule, not exact in general)"""
        inner = producer(node.inputs[0], "log")
        return inner.inputs[0] if inner is not None else None

    x = gc.placeholder("x", (2,))
    y = gc.exp(gc.log(gc.exp(gc.log(x))))
    report = Report()
    (z,) = rewrite([y], {"exp": (exp_of_log,)}, context=RewriteContext(report=report))
    assert z is x and report.rules == {"test.exp_log": 2}


def test_a_rule_that_changes_the_type_is_an_error():
    def bad(node):
        return gc.sum(node.inputs[0])

    x = gc.placeholder("x", (2,))
    with pytest.raises(AssertionError, match="changed"):
        rewrite([gc.exp(x)], {"exp": (bad,)})


def test_new_nodes_carry_the_replaced_nodes_site_and_name():
    def neg_to_mul(node):
        return ew.mul(node.inputs[0], -1.0)

    x = gc.placeholder("x", (2,))
    y = ew.neg(x)
    named_y = gc.exp(y)
    (z,) = rewrite([named_y], {"neg": (neg_to_mul,)})
    new = z.inputs[0]
    assert new.op == "mul" and new.site == y.site and new.is_gradient == y.is_gradient


def test_protected_tensors_are_opaque():
    def exp_of_log(node):
        inner = producer(node.inputs[0], "log")
        return inner.inputs[0] if inner is not None else None

    x = gc.placeholder("x", (2,))
    middle = gc.log(x)
    y = gc.exp(middle)
    (z,) = rewrite([y], {"exp": (exp_of_log,)}, protected=[middle])
    assert z is y


def test_unchanged_graphs_come_back_as_the_same_objects():
    x = gc.placeholder("x", (2,))
    y = gc.exp(x).with_name("named")
    assert rewrite([y], {"exp": ()})[0] is y


def test_deep_graphs_use_no_recursion():
    x = gc.placeholder("x", ())
    y = x
    for _ in range(100_000):
        y = gc.neg(y)
    z = gc.optimize(y)
    assert z is x
    assert gc.optimize(gc.sin(y)).inputs[0] is x


def test_report_table_and_counts():
    x = gc.placeholder("x", (3,))
    y = gc.exp(x) * 1.0 + gc.exp(x)
    (out,), report = gc.optimize([y], report=True)
    assert report.before == op_counts([y]) and report.after == op_counts([out])
    assert report.before["exp"] == 2 and report.after["exp"] == 1
    text = str(report)
    assert "exp" in text and "cse.merge" in text and "simplify.mul_one" in text
    assert report.seconds > 0 and report.rounds >= 1
    assert repr(report) == text
    assert len(toposort([out])) == report.nodes_after
    np.testing.assert_allclose(gc.Session().run(out, {x: np.zeros(3)}), 2 * np.ones(3))


def test_a_rule_whose_replacement_cannot_be_built_does_not_apply():
    def impossible(node):
        return gc.reshape(node.inputs[0], (7,))  # ShapeError while building

    x = gc.placeholder("x", (2,))
    y = gc.exp(x)
    assert rewrite([y], {"exp": (impossible,)})[0] is y


def test_protection_hides_the_tensor_even_from_rules_that_read_inputs_directly():
    seen = []

    def exp_to_sin(node):  # reads node.inputs without producer()
        seen.append(node.inputs[0].op)
        return gc.sin(node.inputs[0])

    x = gc.placeholder("x", (2,))
    middle = gc.log(x)
    (z,) = rewrite([gc.exp(middle)], {"exp": (exp_to_sin,)}, protected=[middle])
    assert seen == ["protected"]
    assert z.op == "sin" and z.inputs[0] is middle  # built over the stand-in, handed back over the tensor


def test_rules_taking_a_context_share_its_cache_within_one_rewrite():
    contexts = []

    def note(node, context):
        contexts.append(context)
        context.cache["calls"] = context.cache.get("calls", 0) + 1
        return None

    x = gc.placeholder("x", (2,))
    rewrite([gc.exp(gc.exp(x))], {"exp": (note,)})
    assert len(contexts) == 2 and contexts[0] is contexts[1] and contexts[0].cache["calls"] == 2
    rewrite([gc.exp(x)], {"exp": (note,)})
    assert contexts[2] is not contexts[0] and contexts[2].cache["calls"] == 1


def test_rewrite_with_a_protected_tensor_the_outputs_do_not_reach():
    """jvp protects its dummy cotangents; one of an output that does not depend on wrt is unreachable."""
    import numpy as np

    import graphc as gc

    x, s, w = gc.placeholder("x", (3,)), gc.placeholder("s", ()), gc.placeholder("w", (3,))
    outputs = [x * w, s + gc.max(x)]
    tangents = gc.jvp(outputs, w, np.ones(3))
    values = gc.Session(optimize=False).run(tangents, {x: np.arange(3.0), s: 1.0, w: np.ones(3)})
    np.testing.assert_array_equal(values[0], np.arange(3.0))
    np.testing.assert_array_equal(values[1], 0.0)


def test_canonicalize_reaches_the_fixed_point_in_one_pass():
    """Folding that enables a stabilization takes no second round: rules fire once a node's inputs are final."""
    x = gc.placeholder("x", (3,))
    one = gc.constant(0.5) + gc.constant(0.5)
    (y,), report = gc.optimize([gc.log(one + gc.exp(x)) * 1.0], report=True)
    assert y.op == "softplus" and y.inputs[0] is x
    assert report.rounds == 1 and report.rules["fold.constant"] == 1 and report.rules["stabilize.softplus"] == 1
    assert "scan" not in report.pass_runs  # no loop in the graph: the loop pass does not run


def test_a_pass_taking_a_context_gets_the_optimizations():
    seen = []

    def counting(outputs, context):
        seen.append(context)
        context.count("test.seen", len(outputs))
        return outputs

    x = gc.placeholder("x", (2,))
    pipeline = (("prune", __import__("graphc.passes.prune", fromlist=["prune"]).prune), ("counting", counting))
    _, report = gc.optimize([gc.exp(x), gc.sin(x)], report=True, pipeline=pipeline)
    assert report.rules == {"test.seen": 2} and seen[0].report is report
    _, other = gc.optimize([gc.exp(x)], report=True, pipeline=pipeline)
    assert other.rules == {"test.seen": 1} and seen[1] is not seen[0]


def test_merging_inside_the_rewrite_makes_twins_one_before_their_consumers_rules():
    x = gc.placeholder("x", (3,))
    # where(c, a, a') with twins a, a' only simplifies once they are merged (where_same)
    y = gc.where(x > 0, gc.tanh(x) + 1.0, 1.0 + gc.tanh(x))
    (out,), report = gc.optimize([y], report=True)
    assert out.op == "add" and report.rules["simplify.where_same"] == 1 and report.rounds == 1


def test_rewrite_counts_into_an_explicit_context_only():
    @named("test.neg_neg")
    def neg_neg(node):
        inner = producer(node.inputs[0], "neg")
        return inner.inputs[0] if inner is not None else None

    x = gc.placeholder("x", (2,))
    report = Report()
    (z,) = rewrite([ew.neg(ew.neg(x))], {"neg": (neg_neg,)}, context=RewriteContext(report=report))
    assert z is x and report.rules == {"test.neg_neg": 1}
    (z,) = rewrite([ew.neg(ew.neg(x))], {"neg": (neg_neg,)})  # no context: counted nowhere
    assert z is x and report.rules == {"test.neg_neg": 1}


def _counting_toposort(monkeypatch, *modules) -> list:
    """Patch ``toposort`` where ``modules`` call it; the returned list gets each call's outputs."""
    calls = []

    def counted(outputs, *args, **kwargs):
        calls.append(list(outputs))
        return toposort(outputs, *args, **kwargs)

    for module in modules:
        monkeypatch.setattr(module, "toposort", counted)
    return calls


def test_canonicalize_reuses_the_order_of_a_pass_that_changed_nothing(monkeypatch):
    import graphc.passes.core as core

    x = gc.placeholder("x", (3,))
    y = gc.sum(gc.exp(gc.sin(x) * 0.9 + 0.1))
    calls = _counting_toposort(monkeypatch, core)
    gc.optimize(y)  # prune changes nothing here: canonicalize walks prune's order
    assert len(calls) == 1


def test_merging_digests_no_node_key():
    # twins are found by (op key text, type, merged inputs), not by each node's key digest
    x = gc.placeholder("x", (3,))
    a, b = gc.exp(x) * 2.0, gc.exp(x) * 2.0
    out = gc.optimize([a, b, a - b])
    assert out[0] is out[1] and out[2].inputs == (out[0], out[0])
    assert all(node._key is None for node in toposort(out))


def test_constants_uniform_values_and_key_texts():
    def value(array):
        return gc.constant(np.array(array)).primitive

    assert value([2.0, 2.0]).uniform() == 2.0 and value(3).uniform() == 3
    assert value([0.0, -0.0]).uniform() is None  # signed zeros differ
    assert value([np.nan]).uniform() is None and value(np.zeros((0,))).uniform() is None
    zero = value(-0.0).uniform()
    assert zero == 0 and np.signbit(zero)
    same = [value(0.9).key_bytes(None) for _ in range(2)]
    assert same[0] == same[1] != value(-0.9).key_bytes(None)
    assert value(0.0).key_bytes(None) != value(-0.0).key_bytes(None)  # by bytes, not by ==
    assert value(np.float32(0.9)).key_bytes(None) != same[0]  # and by dtype
