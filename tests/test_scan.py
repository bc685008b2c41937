"""gc.scan / gc.map / gc.foldl: values and derivatives equal those of the same loop unrolled in Python.

Each case is a step function written once with graphc ops; the loop runs it through ``gc.scan``
and, as the reference, through a Python ``for`` loop that builds the unrolled graph (slices with
``x[t]``, traces with ``gc.stack``). Values, gradients (with respect to sequences, initial
states, non-sequences and captured tensors), Hessian-vector products and second derivatives are
compared to 1e-12 in float64, with the optimizer on and off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc

TOL = dict(rtol=1e-12, atol=1e-12)
#: runs the unrolled reference graphs (without optimizing: the reference does not depend on the optimizer)
REFERENCE = gc.Session(optimize=False)


@dataclass
class Case:
    """A loop: ``step(*slices, *states, *non_sequences)``; ``infos`` marks fed-back outputs (shape) or None."""

    name: str
    step: object
    seqs: list            # shapes of one slice of each sequence
    infos: list           # per output: the state's shape, or None (not fed back)
    nonseqs: list         # shapes of the explicit non-sequences
    captured: list = field(default_factory=list)  # shapes of outer tensors the step uses by closure
    no_sequences: bool = False


def _cases():
    cap = {}

    def elementwise(x, h, w):
        return h * w + gc.sin(x)

    def matmul(x, h, W):
        return gc.tanh(x @ cap["U"] + h @ W)

    def reductions(x, h, s, w):
        new_h = h + gc.sum(x * w) * h / (1.0 + gc.sum(h * h))
        return new_h, s + gc.max(x) * gc.mean(h)

    def several(x, a, b, w):
        return a * gc.cos(b) + x, b + a * w

    def with_none(x, h, w):
        return gc.tanh(h * w + x), gc.sum(h * x), gc.exp(x) * cap["c"]

    def no_sequences(h, w):
        return h * w + gc.sin(h) + cap["c"]

    def logsoftmax(x, h, W):
        return h + gc.log_softmax(x @ W + h)

    return cap, [
        Case("elementwise", elementwise, [(3,)], [(3,)], [(3,)]),
        Case("matmul", matmul, [(2, 3)], [(2, 4)], [(4, 4)], captured=[("U", (3, 4))]),
        Case("reductions", reductions, [(3,)], [(3,), ()], [(3,)]),
        Case("several_states", several, [(2,)], [(2,), (2,)], [(2,)]),
        Case("outputs_info_none", with_none, [(3,)], [(3,), None, None], [(3,)], captured=[("c", (3,))]),
        Case("no_sequences", no_sequences, [], [(2,)], [(2,)], captured=[("c", (2,))], no_sequences=True),
        Case("log_softmax", logsoftmax, [(3,)], [(3,)], [(3, 3)]),
    ]


CAPTURED, CASES = _cases()


def _build(case: Case, n: int, go_backwards: bool, rng):
    """Placeholders, a feed, the scan outputs and the unrolled outputs of ``case``."""
    seqs = [gc.placeholder(f"x{k}", (n,) + s) for k, s in enumerate(case.seqs)]
    inits = [gc.placeholder(f"h{k}", s) for k, s in enumerate(case.infos) if s is not None]
    nonseqs = [gc.placeholder(f"w{k}", s) for k, s in enumerate(case.nonseqs)]
    captured = []
    for label, shape in case.captured:
        CAPTURED[label] = gc.placeholder(label, shape)
        captured.append(CAPTURED[label])
    leaves = seqs + inits + nonseqs + captured
    feed = {t: rng.uniform(-0.9, 0.9, t.shape) for t in leaves}
    infos, it = [], iter(inits)
    for shape in case.infos:
        infos.append(None if shape is None else next(it))
    looped = gc.scan(case.step, sequences=seqs, outputs_info=infos, non_sequences=nonseqs,
                     n_steps=n if case.no_sequences else None, go_backwards=go_backwards)
    looped = looped if isinstance(looped, list) else [looped]
    # the reference: the same step function in a Python loop
    states = list(inits)
    traces = [[] for _ in case.infos]
    for t in (reversed(range(n)) if go_backwards else range(n)):
        outs = case.step(*[s[t] for s in seqs], *states, *nonseqs)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        for k, out in enumerate(outs):
            traces[k].append(out)
        states = [out for out, shape in zip(outs, case.infos) if shape is not None]
    unrolled = [gc.stack(trace, 0) if trace else None for trace in traces]
    return leaves, feed, looped, unrolled


def _cost(outputs, rng_weights):
    """A scalar mixing every output (fixed random weights, so no symmetry hides a wrong gradient)."""
    total = None
    for out, weight in zip(outputs, rng_weights):
        term = gc.sum(out * weight) + 0.5 * gc.sum(gc.square(out))
        total = term if total is None else total + term
    return total


def _weights(outputs, rng):
    return [rng.uniform(-1, 1, out.shape) for out in outputs]


@pytest.mark.parametrize("optimize", [False, True], ids=["plain", "optimized"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_values_and_gradients_equal_the_unrolled_loop(case, n, go_backwards, optimize):
    rng = np.random.default_rng(len(case.name) * 7 + n)
    leaves, feed, looped, unrolled = _build(case, n, go_backwards, rng)
    session = gc.Session(optimize=optimize)
    for a, b in zip(session.run(looped, feed), REFERENCE.run(unrolled, feed)):
        np.testing.assert_allclose(a, b, **TOL)
    weights = _weights(looped, rng)
    cost_loop, cost_ref = _cost(looped, weights), _cost(unrolled, weights)
    grads_loop = gc.grad(cost_loop, leaves)
    grads_ref = gc.grad(cost_ref, leaves)
    for leaf, a, b in zip(leaves, session.run(grads_loop, feed), REFERENCE.run(grads_ref, feed)):
        np.testing.assert_allclose(a, b, **TOL, err_msg=f"gradient with respect to {leaf.name}")
    # Hessian-vector products: d/dleaves <grad, v>
    vs = [rng.uniform(-1, 1, t.shape) for t in leaves]

    def hvp(grads):
        inner = None
        for g, v in zip(grads, vs):
            term = gc.sum(g * v)
            inner = term if inner is None else inner + term
        return gc.grad(inner, leaves)

    for leaf, a, b in zip(leaves, session.run(hvp(grads_loop), feed), REFERENCE.run(hvp(grads_ref), feed)):
        np.testing.assert_allclose(a, b, **TOL, err_msg=f"Hessian-vector product, {leaf.name}")


@pytest.mark.parametrize("n", [0, 1, 6])
@pytest.mark.parametrize("optimize", [False, True], ids=["plain", "optimized"])
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("several_states", "no_sequences", "reductions")],
                         ids=lambda c: c.name)
def test_second_derivatives_and_forward_mode(case, optimize, n):
    rng = np.random.default_rng(50 + n)
    leaves, feed, looped, unrolled = _build(case, n, False, rng)
    w = leaves[len(case.seqs) + sum(s is not None for s in case.infos)]  # the first non-sequence
    h0 = leaves[len(case.seqs)]
    session = gc.Session(optimize=optimize)
    if n == 0:  # nothing runs: the traces are empty and every derivative of a cost on them is zero
        assert all(v.shape[0] == 0 for v in session.run(looped, feed))
        for g in session.run(gc.grad(_cost(looped, _weights(looped, rng)), leaves), feed):
            assert not np.any(g)
        return
    weights = _weights(looped, rng)
    cost_loop, cost_ref = _cost(looped, weights), _cost(unrolled, weights)
    np.testing.assert_allclose(session.run(cost_loop, feed), REFERENCE.run(cost_ref, feed), **TOL)
    # second derivatives: the full Hessian with respect to a non-sequence and to an initial state
    for x in (w, h0):
        np.testing.assert_allclose(session.run(gc.hessian(cost_loop, x), feed),
                                   REFERENCE.run(gc.hessian(cost_ref, x), feed), **TOL)
    # forward mode through the loop
    tangent = rng.uniform(-1, 1, w.shape)
    for a, b in zip(session.run(gc.jvp(looped, w, tangent), feed), REFERENCE.run(gc.jvp(unrolled, w, tangent), feed)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize(("name", "go_backwards", "optimize"),
                         [("matmul", True, False), ("matmul", False, True), ("several_states", False, False),
                          ("outputs_info_none", True, True)])
def test_fifty_steps_hessian_vector_products(name, go_backwards, optimize):
    case = next(c for c in CASES if c.name == name)
    rng = np.random.default_rng(5)
    leaves, feed, looped, unrolled = _build(case, 50, go_backwards, rng)
    for a, b in zip(gc.Session(optimize=optimize).run(looped, feed), REFERENCE.run(unrolled, feed)):
        np.testing.assert_allclose(a, b, **TOL)
    session = gc.Session(optimize=optimize)
    weights = _weights(looped, rng)
    products = []
    for outputs, runner in ((looped, session), (unrolled, REFERENCE)):
        grads = gc.grad(_cost(outputs, weights), leaves)
        inner = gc.sum(grads[-2] * np.ones(grads[-2].shape)) + gc.sum(grads[0] * 0.5)
        products.append(runner.run(gc.grad(inner, leaves), feed))
    for leaf, a, b in zip(leaves, *products):
        np.testing.assert_allclose(a, b, **TOL, err_msg=leaf.name)


@pytest.mark.parametrize("optimize", [False, True], ids=["plain", "optimized"])
def test_zero_steps(optimize):
    x = gc.placeholder("x", (None, 3))
    h0 = gc.placeholder("h0", (3,))
    w = gc.placeholder("w", (3,))
    hs, ys = gc.scan(lambda xt, h, w: (h * w + xt, gc.sum(xt * h)), sequences=x, outputs_info=[h0, None],
                     non_sequences=w)
    final = gc.foldl(lambda xt, h, w: h * w + xt, x, h0, non_sequences=w)
    cost = gc.sum(hs) + gc.sum(ys) + gc.sum(final * final)
    grads = gc.grad(cost, [x, h0, w])
    feed = {x: np.zeros((0, 3)), h0: np.array([1.0, -2.0, 3.0]), w: np.ones(3)}
    session = gc.Session(optimize=optimize)
    out_h, out_y, out_final, gx, gh, gw = session.run([hs, ys, final] + grads, feed)
    assert out_h.shape == (0, 3) and out_y.shape == (0,)
    np.testing.assert_array_equal(out_final, feed[h0])
    assert gx.shape == (0, 3)
    np.testing.assert_array_equal(gh, 2 * feed[h0])
    np.testing.assert_array_equal(gw, np.zeros(3))
    # and a tensor n_steps of 0 without sequences
    n = gc.placeholder("n", (), "int64")
    counted = gc.scan(lambda h: h * 2.0, outputs_info=h0, n_steps=n)
    assert counted.shape == (None, 3)
    assert session.run(counted, {h0: feed[h0], n: 0}).shape == (0, 3)
    np.testing.assert_array_equal(session.run(counted, {h0: feed[h0], n: 2})[-1], 4 * feed[h0])


def test_sequence_length_fed_at_run_time_one_compiled_function():
    x = gc.placeholder("x", (None, 2))
    h0 = gc.placeholder("h0", (2,))
    hs = gc.scan(lambda xt, h: gc.tanh(xt + h), sequences=x, outputs_info=h0)
    assert hs.shape == (None, 2)
    cost = gc.sum(hs)
    fn = gc.function([x, h0], [hs, gc.grad(cost, x)])
    for n in (0, 1, 3, 17):
        values = np.linspace(-1, 1, 2 * n).reshape(n, 2)
        trace, gx = fn(values, np.zeros(2))
        h, ref = np.zeros(2), []
        for t in range(n):
            h = np.tanh(values[t] + h)
            ref.append(h)
        np.testing.assert_allclose(trace, np.array(ref).reshape(n, 2), **TOL)
        assert gx.shape == (n, 2)


def test_map_and_foldl():
    x = gc.placeholder("x", (5, 3))
    w = gc.placeholder("w", (3,))
    values = np.arange(15.0).reshape(5, 3) / 10
    squares = gc.map(lambda row, w: gc.sum(row * row * w), x, non_sequences=w)
    total = gc.foldl(lambda row, acc: acc + row, x, gc.constant(np.zeros(3)))
    pair = gc.foldl(lambda row, a, b: (a + row, b * 2.0), [x], [gc.constant(np.zeros(3)), gc.constant(1.0)])
    assert squares.shape == (5,) and total.shape == (3,) and isinstance(pair, list)
    out = gc.Session().run([squares, total] + pair, {x: values, w: np.ones(3)})
    np.testing.assert_allclose(out[0], (values ** 2).sum(1))
    np.testing.assert_allclose(out[1], values.sum(0))
    np.testing.assert_allclose(out[2], values.sum(0))
    assert out[3] == 32.0
    assert gc.check_grad(gc.sum(squares) + gc.sum(total), [x, w], {x: values, w: np.ones(3)}) < 1e-6


def test_results_and_calling_convention():
    x = gc.placeholder("x", (4, 2))
    seen = []

    def step(xt, h, w):
        seen.append((xt.shape, h.shape, w.shape))
        return h + xt * w

    single = gc.scan(step, sequences=[x], outputs_info=[gc.constant(np.zeros(2))], non_sequences=[gc.constant(2.0)])
    assert isinstance(single, gc.Tensor) and single.op == "scan" and single.shape == (4, 2)
    assert seen == [((2,), (2,), ())]  # traced once: slices, then previous outputs, then non-sequences
    listed = gc.scan(lambda xt: [xt * 2.0], sequences=x)
    assert isinstance(listed, list) and len(listed) == 1
    backwards = gc.scan(lambda xt: xt, sequences=x, go_backwards=True)
    values = np.arange(8.0).reshape(4, 2)
    np.testing.assert_array_equal(gc.Session().run(backwards, {x: values}), values[::-1])


def test_build_time_errors_name_the_output():
    x = gc.placeholder("x", (4, 2))
    h0 = gc.placeholder("h0", (2,))
    with pytest.raises(gc.ShapeError, match="output 0 of the step function has shape \\(2, 2\\)"):
        gc.scan(lambda xt, h: gc.outer(h, xt), sequences=x, outputs_info=h0)
    with pytest.raises(gc.DTypeError, match="output 1 of the step function has dtype float32"):
        gc.scan(lambda xt, a, b: (a, gc.cast(b, "float32")), sequences=x, outputs_info=[h0, h0])
    with pytest.raises(gc.ShapeError, match="one length"):
        gc.scan(lambda a, b: a + b, sequences=[x, gc.placeholder("y", (3, 2))])
    with pytest.raises(gc.ShapeError, match="one length"):
        gc.scan(lambda a: a, sequences=[x], n_steps=3)
    with pytest.raises(ValueError, match="returned 2 outputs"):
        gc.scan(lambda xt, h: (h, h), sequences=x, outputs_info=[h0])
    with pytest.raises(ValueError, match="n_steps"):
        gc.scan(lambda h: h, outputs_info=[h0])
    with pytest.raises(gc.DTypeError, match="integer"):
        gc.scan(lambda h: h, outputs_info=[h0], n_steps=gc.placeholder("n", ()))
    with pytest.raises(gc.ShapeError, match="at least one dimension"):
        gc.scan(lambda a: a, sequences=[gc.placeholder("s", ())])


def test_run_time_errors():
    x = gc.placeholder("x", (None, 2))
    y = gc.placeholder("y", (None, 2))
    both = gc.scan(lambda a, b: a + b, sequences=[x, y])
    with pytest.raises(gc.ExecutionError, match="loop's length"):
        gc.Session().run(both, {x: np.zeros((3, 2)), y: np.zeros((4, 2))})
    index = gc.placeholder("i", (None,), "int64")
    table = gc.placeholder("table", (3, 2))
    picked = gc.scan(lambda i: gc.take(table, i, axis=0) * 2.0, sequences=index)  # line of the body node
    with pytest.raises(gc.ExecutionError) as info:
        gc.Session().run(picked, {index: np.array([0, 1, 7]), table: np.zeros((3, 2))})
    message = str(info.value)
    assert "scan step 2 (of 3)" in message and "'take'" in message
    assert message.count("test_scan.py:") >= 2  # the body node's line and the scan call's line


def test_captured_tensors_and_variables_become_inputs():
    W = gc.variable(np.eye(2) * 0.5, name="W")
    b = gc.placeholder("b", (2,))
    x = gc.placeholder("x", (3, 2))
    hs = gc.scan(lambda xt, h: gc.tanh(xt + h @ W + gc.exp(b)), sequences=x, outputs_info=gc.constant(np.zeros(2)))
    node = hs.inputs[0]
    assert W in node.inputs and any(t.op == "exp" for t in node.inputs)  # exp(b) computed outside the loop
    body = node.primitive.body
    assert all(leaf.op in ("placeholder", "constant") for leaf in body.nodes() if not leaf.inputs)
    feed = {x: np.ones((3, 2)), b: np.zeros(2)}
    gW, gb = gc.grad(gc.sum(hs), [W, b])
    assert gc.check_grad(gc.sum(hs), [W, b, x], feed) < 1e-6
    assert gc.Session().run(gW, feed).shape == (2, 2) and gc.Session().run(gb, feed).shape == (2,)


def test_check_grad_through_scans_of_scans():
    x = gc.placeholder("x", (3, 4, 2))
    w = gc.placeholder("w", (2,))

    def outer(block, h):
        inner = gc.scan(lambda row, c: gc.tanh(c * w + row + h), sequences=block, outputs_info=h)
        return inner[-1] + gc.sum(inner, axis=0) * 0.1

    hs = gc.scan(outer, sequences=x, outputs_info=gc.constant(np.full(2, 0.3)))
    feed = {x: np.random.default_rng(1).uniform(-1, 1, (3, 4, 2)), w: np.array([0.4, -0.7])}
    cost = gc.sum(hs * hs)
    assert gc.check_grad(cost, [x, w], feed) < 1e-5
    gw = gc.grad(cost, w)
    assert gc.check_grad(gc.sum(gw * gw), [x, w], feed) < 1e-5  # a gradient of a gradient


@settings(max_examples=12, derandomize=True, deadline=None)
@given(ops=st.lists(st.sampled_from(["add_x", "mul_w", "tanh", "sin", "sum", "sq", "h_dot_w", "exp_neg"]),
                    min_size=1, max_size=5),
       n=st.sampled_from([1, 4]), go_backwards=st.booleans(), optimize=st.booleans())
def test_random_bodies_equal_the_unrolled_loop(ops, n, go_backwards, optimize):
    def step(xt, h, w):
        value = h
        for op in ops:
            value = {"add_x": lambda v: v + xt, "mul_w": lambda v: v * w, "tanh": gc.tanh, "sin": gc.sin,
                     "sum": lambda v: v + gc.sum(v) * 0.1, "sq": lambda v: v * v * 0.5,
                     "h_dot_w": lambda v: v + gc.sum(h * w), "exp_neg": lambda v: gc.exp(-v * v)}[op](value)
        return value

    case = Case("random", step, [(3,)], [(3,)], [(3,)])
    rng = np.random.default_rng(3)
    leaves, feed, looped, unrolled = _build(case, n, go_backwards, rng)
    session = gc.Session(optimize=optimize)
    cost_loop, cost_ref = gc.sum(looped[0] * looped[0]), gc.sum(unrolled[0] * unrolled[0])
    np.testing.assert_allclose(session.run(cost_loop, feed), REFERENCE.run(cost_ref, feed), **TOL)
    for a, b in zip(session.run(gc.grad(cost_loop, leaves), feed), REFERENCE.run(gc.grad(cost_ref, leaves), feed)):
        np.testing.assert_allclose(a, b, **TOL)


# ---- the optimizer -------------------------------------------------------------------------------

def _all_nodes(outputs):
    from graphc.tensor import toposort

    return toposort(outputs if isinstance(outputs, list) else [outputs])


def test_the_step_dependent_part_and_where_it_meets_the_rest():
    """graph.depending / graph.frontier, which split a body (hoisting) and a traced step (capturing)."""
    from graphc.graph import depending, frontier

    x, w, c = gc.placeholder("x", (3,)), gc.placeholder("w", (3,)), gc.placeholder("c", (3,))
    invariant = gc.exp(w) * c
    varying = gc.sin(x) + invariant
    out = varying * invariant
    order = _all_nodes([out, invariant])
    inside = depending(order, lambda node: node is x)
    assert inside == {id(x), id(varying.inputs[0]), id(varying), id(out)}
    # read by the x-dependent part, or returned, and not in it: once each, in order of first use
    assert frontier(order, [out, invariant, x], inside) == [invariant]
    assert frontier(order, [w], inside) == [invariant, w]
    assert depending(order, lambda node: False) == set()


def test_optimizer_hoists_drops_and_keeps_only_the_last_state():
    from graphc.scan import Scan

    x = gc.placeholder("x", (None, 3))
    h0 = gc.placeholder("h0", (3,))
    W = gc.placeholder("W", (3, 3))
    unused = gc.placeholder("unused", (3,))
    hs, ys, zs = gc.scan(lambda xt, h, W, u: (gc.tanh(xt + h @ gc.exp(W)), gc.sum(h), u * 2.0),
                         sequences=x, outputs_info=[h0, None, None], non_sequences=[W, unused])
    last = hs[-1]
    optimized, report = gc.optimize([last, ys], report=True)
    assert report.rules["scan.hoist"] == 1            # exp(W) depends on a non-sequence only
    assert report.rules["scan.last_state"] == 1        # hs is read as hs[-1] only
    assert report.rules["scan.drop_output"] >= 2       # zs and the prev trace nobody reads
    assert report.rules["scan.drop_input"] == 2        # `unused` (read by zs only), W (read by exp(W) only)
    (node,) = [n for n in _all_nodes(optimized) if isinstance(n.primitive, Scan)]
    op = node.primitive
    assert sorted(op.emits) == [(0, "last"), (1, "trace")]
    assert unused not in node.inputs and W not in node.inputs and any(t.op == "exp" for t in node.inputs)
    assert not any(n.op == "exp" for n in op.body.nodes())
    feed = {x: np.random.default_rng(0).uniform(-1, 1, (5, 3)), h0: np.ones(3), W: np.eye(3) * 0.1, unused: np.ones(3)}
    for a, b in zip(gc.Session(optimize=False).run([last, ys], feed), REFERENCE.run(optimized, feed)):
        np.testing.assert_allclose(a, b, **TOL)
    again, second = gc.optimize(optimized, report=True)  # a fixed point
    assert all(a is b for a, b in zip(again, optimized))
    assert not any(rule.startswith("scan.") for rule in second.rules)


def test_optimizer_optimizes_bodies_and_gradient_scans():
    from graphc.scan import Scan

    x = gc.placeholder("x", (6, 2))
    w = gc.placeholder("w", (2,))
    hs = gc.scan(lambda xt, h, w: gc.log(gc.softmax(h * w + xt * 1.0)), sequences=x,
                 outputs_info=gc.constant(np.zeros(2)), non_sequences=w)
    cost = gc.sum(hs)
    grads = gc.grad(cost, [w])
    optimized, report = gc.optimize([cost] + grads, report=True)
    assert report.rules.get("stabilize.log_softmax", 0) + report.rules.get("simplify.mul_one", 0) >= 1
    loops = [n for n in _all_nodes(optimized) if isinstance(n.primitive, Scan)]
    assert len(loops) == 2  # the forward loop (shared) and its gradient loop
    bodies = [n.primitive.body for n in loops]
    assert not any(n.op == "softmax" for body in bodies for n in body.nodes())
    feed = {x: np.random.default_rng(2).uniform(-1, 1, (6, 2)), w: np.array([0.5, -1.5])}
    for a, b in zip(REFERENCE.run([cost] + grads, feed), REFERENCE.run(optimized, feed)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---- saving, printing, exporting -----------------------------------------------------------------

def _rnn_function(optimize=True):
    x = gc.placeholder("x", (None, 3))
    h0 = gc.placeholder("h0", (3,))
    W = gc.variable(np.random.default_rng(0).uniform(-0.5, 0.5, (3, 3)), name="W")

    def outer(xt, h):
        inner = gc.scan(lambda a, c: gc.tanh(c + a * gc.sum(h)), sequences=xt, outputs_info=gc.constant(0.0))
        return gc.tanh(h @ W + gc.sum(inner))

    hs = gc.scan(outer, sequences=x, outputs_info=h0, name="rnn")
    cost = gc.sum(hs * hs)
    fn = gc.function([x, h0], [cost, gc.grad(cost, W)], updates={W: W - 0.1 * gc.grad(cost, W)}, optimize=optimize)
    return fn, np.random.default_rng(1).uniform(-1, 1, (4, 3)), np.full(3, 0.2)


def _save_case(optimize: bool):
    """The loop function in the op-coverage test's save/load cases (tests/ops/test_coverage.py)."""
    fn, x, h0 = _rnn_function(optimize)
    return fn, (x, h0)


@pytest.mark.parametrize("optimize", [True, False])
def test_pickle_and_save_load_round_trips(tmp_path, optimize):
    import pickle

    fn, xs, h = _rnn_function(optimize)
    twin = pickle.loads(pickle.dumps(fn))
    path = tmp_path / "rnn.gcf"
    gc.save(fn, path)
    loaded = gc.load(path)
    expected = fn(xs, h)  # (trains W once)
    for other in (twin, loaded):
        for a, b in zip(other(xs, h), expected):
            np.testing.assert_array_equal(a, b)
    gc.save(fn, tmp_path / "again.gcf")
    gc.save(gc.load(tmp_path / "again.gcf"), tmp_path / "third.gcf")
    assert (tmp_path / "again.gcf").read_bytes() == (tmp_path / "third.gcf").read_bytes()


def test_printing_and_exports_show_the_body():
    fn, _, _ = _rnn_function()
    text = fn.debugprint()
    assert "Inner graphs:" in text and text.count("inner graph 0") >= 3  # forward, nested, gradient loops
    dot = fn.to_dot()
    assert "subgraph cluster_body0" in dot and 'label="body 0"' in dot
    graph = fn.to_networkx()
    loops = [data for _, data in graph.nodes(data=True) if data.get("loop")]
    assert loops and all(len(data["bodies"]) == 1 and data["bodies"][0].number_of_nodes() > 1 for data in loops)
    x = gc.placeholder("x", (3,))
    with pytest.raises(ValueError, match="is a loop"):
        gc.to_sympy(gc.sum(gc.map(gc.exp, x)))


def test_cli_info_lists_loops(tmp_path):
    from graphc.cli import info_text

    fn, _, _ = _rnn_function()
    gc.save(fn, tmp_path / "f.gcf")
    text = info_text(gc.load(tmp_path / "f.gcf"))
    assert "loops (" in text and "scan rnn: body of" in text


def test_loader_fuzz_covers_inner_graphs(tmp_path):
    """Edits inside saved loop bodies (valid checksum): a load succeeds or raises LoadError, never more."""
    import json
    import random

    from graphc.serialize import encode
    from tests.test_serialize import assemble, load_bytes, split

    fn, xs, h = _rnn_function(optimize=False)
    _, _, manifest, data = split(encode(fn))
    manifest = json.loads(manifest)

    def graphs(value, path=()):
        stack = [(value, path)]
        while stack:
            item, where = stack.pop()
            if isinstance(item, list) and len(item) == 2 and item[0] == "graph":
                yield where + (1,)
            children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
            for key, child in children:
                stack.append((child, where + (key,)))

    def at(root, path):
        for key in path:
            root = root[key]
        return root

    inner = list(graphs(manifest))
    assert len(inner) >= 3
    spots = []
    for path in inner:
        stack = [path]
        while stack:
            where = stack.pop()
            item = at(manifest, where)
            if isinstance(item, (dict, list)) and item:
                spots.append(where)
                for key in (item if isinstance(item, dict) else range(len(item))):
                    stack.append(where + (key,))
    rng = random.Random(5)
    junk = [None, True, 0, -1, 1, 7, 2 ** 40, "", "x", "float64", "outputs", "variable", [], {}, ["int", 1],
            ["graph", {}], ["graph", {"nodes": [], "inputs": [], "outputs": []}]]
    outcomes = {"loaded": 0, "error": 0}
    for _ in range(200):
        case = json.loads(json.dumps(manifest))
        target = at(case, rng.choice(spots))
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        action = rng.random()
        if action < 0.2 and isinstance(target, dict):
            del target[key]
        elif action < 0.3 and isinstance(target, list):
            target.insert(key, rng.choice(junk))
        elif action < 0.4 and isinstance(target, list) and len(target) > 1:
            target[key], target[-1] = target[-1], target[key]
        else:
            target[key] = rng.choice(junk)
        try:
            load_bytes(tmp_path, assemble(case, data))
            outcomes["loaded"] += 1
        except gc.LoadError:
            outcomes["error"] += 1
    assert outcomes["error"] > 120
    # a body that reaches a placeholder it does not declare as an input, and one holding a variable
    case = json.loads(json.dumps(manifest))
    body = at(case, inner[0])
    body["inputs"] = body["inputs"][:-1]
    with pytest.raises(gc.LoadError):
        load_bytes(tmp_path, assemble(case, data))
    case = json.loads(json.dumps(manifest))
    body = at(case, inner[0])
    body["nodes"][0] = {"kind": "variable", "name": "v", "array": 0}
    with pytest.raises(gc.LoadError, match="variable"):
        load_bytes(tmp_path, assemble(case, data))


# ---- more dtypes, forward mode, threads, constant loops --------------------------------------------

def test_integer_states_bool_sequences_and_float32():
    mask = gc.placeholder("mask", (None,), "bool")
    values = gc.placeholder("values", (None,), "float32")
    zero32 = gc.constant(0.0, "float32")

    def step(m, v, c, s):
        return c + gc.cast(m, "int64"), s + gc.where(m, v, zero32)

    count, total = gc.scan(step, sequences=[mask, values], outputs_info=[gc.constant(0, "int64"), zero32])
    assert count.dtype == np.int64 and total.dtype == np.float32
    gv = gc.grad(gc.sum(total), values)
    assert gv.dtype == np.float32
    m, v = np.array([True, False, True]), np.array([1.5, 2.0, -3.0], np.float32)
    c, t, g = gc.Session().run([count, total, gv], {mask: m, values: v})
    assert list(c) == [1, 1, 2] and t.dtype == np.float32 and list(t) == [1.5, 1.5, -1.5]
    np.testing.assert_array_equal(g, np.array([3.0, 0.0, 1.0], np.float32))  # entry t counts 3 - t sums


def test_jacobian_through_a_scan():
    x = gc.placeholder("x", (3,))
    ys = gc.scan(lambda h, x: gc.sin(h) * x, outputs_info=gc.constant(np.ones(3)), non_sequences=x, n_steps=3)
    jac = gc.jacobian(ys[-1], x)
    unrolled = gc.constant(np.ones(3))
    for _ in range(3):
        unrolled = gc.sin(unrolled) * x
    point = {x: np.array([0.3, -0.8, 1.1])}
    np.testing.assert_allclose(REFERENCE.run(jac, point), REFERENCE.run(gc.jacobian(unrolled, x), point), **TOL)


def test_a_loop_of_constants_is_not_folded_but_runs():
    powers = gc.scan(lambda h: h * 2.0, outputs_info=gc.constant(1.0), n_steps=10)
    optimized, report = gc.optimize(powers, report=True)
    assert optimized.op == "scan"
    np.testing.assert_array_equal(gc.Session().run(powers), 2.0 ** np.arange(1, 11))


def test_concurrent_calls_share_the_compiled_body():
    from tests.threads import run_concurrently

    x = gc.placeholder("x", (None, 2))
    hs = gc.scan(lambda xt, h: gc.tanh(xt + h), sequences=x, outputs_info=gc.constant(np.zeros(2)))
    fn = gc.function([x], [hs, gc.grad(gc.sum(hs), x)])
    inputs = [np.full((k + 1, 2), 0.1 * k) for k in range(6)]
    expected = [fn(v) for v in inputs]

    def work(k: int) -> None:
        for _ in range(20):
            for value, want in zip(inputs, expected):
                for a, b in zip(fn(value), want):
                    np.testing.assert_array_equal(a, b)

    run_concurrently(work, count=4)


def test_the_reference_interpreter_agrees_with_the_compiled_body():
    x = gc.placeholder("x", (None, 2))
    hs, ys = gc.scan(lambda xt, h: (gc.tanh(xt * h + 1.0), gc.sum(xt)), sequences=x,
                     outputs_info=[gc.constant(np.full(2, 0.5)), None], go_backwards=True)
    node = hs.inputs[0]
    values = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    inputs = [values if t is x else t.primitive.value for t in node.inputs]
    interpreted = node.primitive.impl(*inputs)
    compiled = gc.Session(optimize=False).run([gc.op.Output(k)(node) for k in range(len(interpreted))], {x: values})
    for a, b in zip(interpreted, compiled):
        np.testing.assert_array_equal(a, b)
    idx = gc.placeholder("idx", (None,), "int64")
    picked = gc.scan(lambda i: gc.take(gc.constant(np.zeros((3, 2))), i, axis=0), sequences=idx)
    with pytest.raises(gc.ExecutionError, match="scan step 1 .*'take'"):
        picked.inputs[0].primitive.impl(np.array([0, 9]))


def test_theano_spellings():
    x = gc.placeholder("x", (3,))
    ys = gc.scan(lambda xt, h: h + xt, sequences=x, outputs_info=[{"initial": gc.constant(1.0), "taps": [-1]}])
    np.testing.assert_array_equal(gc.Session().run(ys, {x: np.array([1.0, 2.0, 3.0])}), [2.0, 4.0, 7.0])
    with pytest.raises(ValueError, match="taps"):
        gc.scan(lambda xt, a, b: a + b, sequences=x,
                outputs_info=[{"initial": gc.constant(np.zeros(2)), "taps": [-2, -1]}])
    with pytest.raises(TypeError, match="taps"):
        gc.scan(lambda a, b: a + b, sequences=[{"input": x, "taps": [0, 1]}])
    counted = gc.scan(lambda h: h * 2.0, outputs_info=gc.constant(1.0), n_steps=gc.constant(3))
    assert counted.shape == (None,)  # a tensor n_steps: the first size is unknown until run time
    np.testing.assert_array_equal(gc.Session().run(counted), [2.0, 4.0, 8.0])


def test_a_trace_of_values_of_different_shapes_is_an_error():
    x = gc.placeholder("x", (2, 3))
    selected = gc.map(lambda row: row[row > 0.0], x)  # how many entries survive depends on the row
    assert selected.shape == (2, None)
    with pytest.raises(gc.ExecutionError, match="every step's value must have one shape"):
        gc.Session().run(selected, {x: np.array([[1.0, 2.0, -1.0], [1.0, -1.0, -1.0]])})
    np.testing.assert_array_equal(gc.Session().run(selected, {x: np.array([[1.0, -2.0, 3.0], [-1.0, 4.0, 5.0]])}),
                                  [[1.0, 3.0], [4.0, 5.0]])


def test_reused_trace_buffers_never_change_earlier_results():
    x = gc.placeholder("x", (4, 2))
    hs = gc.scan(lambda xt, h: h + xt, sequences=x, outputs_info=gc.constant(np.zeros(2)))
    fn = gc.function([x], [hs, hs * 2.0, gc.grad(gc.sum(hs * hs), x)])
    first_in, second_in = np.ones((4, 2)), np.full((4, 2), 3.0)
    first = fn(first_in)
    kept = [np.array(a, copy=True) for a in first]
    for _ in range(3):
        second = fn(second_in)
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(second[0], np.cumsum(second_in, axis=0))
    node = hs.inputs[0]
    impl = node.primitive.compiled_impl(lambda graph: (lambda args: graph.evaluate(args)))
    held = impl(first_in, np.zeros(2))[0]      # a view of the loop's buffer, still referenced ...
    again = impl(second_in, np.zeros(2))[0]    # ... so the next call writes into a fresh one
    np.testing.assert_array_equal(held, np.cumsum(first_in, axis=0))
    np.testing.assert_array_equal(again, np.cumsum(second_in, axis=0))


def test_to_dask_runs_a_loop_and_its_gradient():
    pytest.importorskip("dask")
    import dask.array as da

    from graphc.dask import to_dask

    x = gc.placeholder("x", (None, 3))
    w = gc.placeholder("w", (3,))
    hs = gc.scan(lambda xt, h, w: gc.tanh(xt * w + h), sequences=x, outputs_info=gc.constant(np.zeros(3)),
                 non_sequences=w)
    cost = gc.sum(hs * hs)
    outputs = [hs, cost, gc.grad(cost, w)]
    values = np.random.default_rng(0).uniform(-1, 1, (6, 3))
    feed = {x: values, w: np.array([0.5, -0.2, 0.9])}
    expected = gc.Session().run(outputs, feed)
    lazy = to_dask(outputs, {x: da.from_array(values, chunks=(2, 3)), w: feed[w]})
    for a, b in zip(lazy, expected):
        np.testing.assert_allclose(np.asarray(a.compute()), b, rtol=1e-12, atol=1e-12)
