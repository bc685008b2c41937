"""Element-wise fusion (the opt-in FUSING_PIPELINE): grouping, values, in-place safety, errors, gradients."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.compile import build_plan
from graphc.passes import FUSING_PIPELINE, optimize_tensors
from graphc.passes.fuse import MIN_INPLACE_ELEMENTS, Fused, fuse
from graphc.tensor import toposort
from tests.passes.util import RandomGraph, assert_same_values, count, keys, run


def _run_kernel(outputs, inputs, values):
    """Run with fused nodes as single Fused.impl calls (not expanded by the executor)."""
    with np.errstate(all="ignore"):
        return build_plan(outputs, inputs, expand_fused=False).run(tuple(values), ())


def test_a_chain_becomes_one_fused_node():
    x, w = gc.placeholder("x", (5,)), gc.placeholder("w", (5,))
    y = gc.tanh(x * w + 0.5) * 0.5 + 0.5
    (z,) = fuse([y])
    assert z.op == "fused" and isinstance(z.primitive, Fused)
    assert [op.name for op, _ in z.primitive.steps] == ["mul", "add", "tanh", "mul", "add"]
    assert z.site == y.site and z.shape == y.shape and z.dtype == y.dtype
    values = (np.linspace(-2, 2, 5), np.array([np.nan, np.inf, -0.0, 1.0, 3.0]))
    expected = run([y], dict(zip([x, w], values)))
    assert_same_values(expected, _run_kernel([z], [x, w], values))
    assert_same_values(expected, run([z], dict(zip([x, w], values))))
    assert "tanh" in z.primitive.describe_steps() and "tanh" in gc.debugprint(z)


def test_a_predicate_limits_the_groups():
    x, w = gc.placeholder("x", (5,)), gc.placeholder("w", (5,))
    y = gc.tanh(x * w + 0.5) * 0.5 + 0.5
    (z,) = fuse([y], predicate=lambda node: node.op != "tanh")
    groups = [n for n in toposort([z]) if n.op == "fused"]
    assert [[op.name for op, _ in g.primitive.steps] for g in groups] == [["mul", "add"], ["mul", "add"]]
    assert [n.op for n in toposort([z]) if n.op not in ("placeholder", "constant")] == ["fused", "tanh", "fused"]
    values = (np.linspace(-2, 2, 5), np.array([np.nan, np.inf, -0.0, 1.0, 3.0]))
    assert_same_values(run([y], dict(zip([x, w], values))), _run_kernel([z], [x, w], values))


def test_a_kernel_is_not_part_of_the_key():
    (z,) = fuse([gc.placeholder("x", (5,)) * 2.0 + 1.0])
    op = z.primitive
    with_kernel = op.with_kernel(np.add)
    assert with_kernel == op and hash(with_kernel) == hash(op) and with_kernel.lowering() is np.add
    assert op.lowering() is None


def test_shared_intermediates_and_outputs_stay_outside():
    x = gc.placeholder("x", (4,))
    shared = gc.exp(x) * 2.0           # used by two chains
    a = gc.tanh(shared) + 1.0
    b = gc.sin(shared) - 1.0
    out = fuse([a, b, shared])
    assert out[2] is not None and out[2].op == "fused"  # the output itself is a group root
    for t in out[:2]:
        assert t.op == "fused" and any(i is out[2] for i in t.inputs)
    values = np.array([0.1, -1.0, 2.0, np.nan])
    assert_same_values(run([a, b, shared], {x: values}), run(out, {x: values}))


def test_reductions_and_matmuls_are_boundaries():
    x = gc.placeholder("x", (3, 4))
    y = gc.sum(gc.exp(x) + 1.0, axis=0) * 2.0 - 1.0
    (z,) = fuse([y])
    assert z.op == "fused" and z.inputs[0].op == "sum" and z.inputs[0].inputs[0].op == "fused"


def test_single_nodes_are_not_wrapped():
    x = gc.placeholder("x", (3,))
    y = gc.sum(gc.exp(x))
    (z,) = fuse([y])
    assert z is y


def test_large_inputs_are_never_written_and_in_place_gives_the_same_values():
    n = 4 * MIN_INPLACE_ELEMENTS
    x, w = gc.placeholder("x", (n,)), gc.placeholder("w", (n,))
    y = gc.exp(gc.tanh(x * w - 1.0) * x) / (w * w + 1.0)
    (z,) = fuse([y])
    rng = np.random.default_rng(0)
    values = [rng.normal(size=n), rng.normal(size=n)]
    copies = [v.copy() for v in values]
    got = _run_kernel([z], [x, w], values)
    for v, c in zip(values, copies):
        np.testing.assert_array_equal(v, c)
    assert_same_values(run([y], dict(zip([x, w], copies))), got)


def test_broadcasting_and_mixed_dtypes_inside_a_group():
    x = gc.placeholder("x", (3, 1), "float32")
    b = gc.placeholder("b", (4,), "float32")
    y = gc.cast(gc.maximum(x + b, 0.0) * 2.0, "float64") + 1.0
    (z,) = fuse([y])
    assert z.op == "fused" and z.shape == (3, 4) and z.dtype == np.float64
    values = [np.arange(3, dtype="float32").reshape(3, 1) - 1, np.linspace(-1, 1, 4).astype("float32")]
    assert_same_values(run([y], dict(zip([x, b], values))), _run_kernel([z], [x, b], values))


def test_an_error_inside_a_fused_node_names_the_users_line():
    x, w = gc.placeholder("x", (None,)), gc.placeholder("w", (None,))
    y = gc.exp(x + w) * 2.0  # the failing step (a run-time broadcast error)
    (z,) = fuse([y])
    with pytest.raises(Exception, match="test_fuse.py:"):
        _run_kernel([z], [x, w], [np.ones(3), np.ones(4)])
    with pytest.raises(gc.ExecutionError, match="test_fuse.py:"):
        gc.function([x, w], z)(np.ones(3), np.ones(4))


def test_gradient_through_a_fused_node():
    x = gc.placeholder("x", (3,))
    (z,) = fuse([gc.tanh(x * 3.0) * x])
    g = gc.grad(gc.sum(z), x)
    values = np.array([0.1, -0.5, 2.0])
    expected = np.tanh(3 * values) + values * 3 * (1 - np.tanh(3 * values) ** 2)
    np.testing.assert_allclose(run([g], {x: values})[0], expected, rtol=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_fusing_pipeline_on_random_graphs(seed):
    graph = RandomGraph(seed)
    fetches = graph.outputs + list(graph.grads)
    once = optimize_tensors(fetches, FUSING_PIPELINE)
    assert keys(optimize_tensors(once, FUSING_PIPELINE)) == keys(once)
    expected = run(fetches, graph.feeds)
    assert_same_values(expected, run(once, graph.feeds))
    placeholders = graph.placeholders
    assert_same_values(expected, _run_kernel(once, placeholders, [graph.feeds[p] for p in placeholders]))
    assert any(t.op == "fused" for t in toposort(once)) or count(once, "fused") == 0
