"""Hypothesis: random expression trees at arbitrary floats (NaN, inf, -0.0, huge, tiny) keep their values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.passes import optimize_tensors
from tests.passes.util import assert_same_values, keys, run

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
CONSTANTS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 3.0])

UNARY = {"neg": gc.neg, "square": gc.square, "tanh": gc.tanh, "abs": gc.abs, "exp_tanh": lambda t: gc.exp(gc.tanh(t))}
BINARY = {"add": gc.add, "sub": gc.sub, "mul": gc.mul, "div": gc.div, "maximum": gc.maximum,
          "where": lambda a, b: gc.where(a > b, a, b)}


def expressions():
    leaf = st.one_of(st.just("x"), st.just("y"), CONSTANTS.map(lambda c: ("const", c)))

    def extend(children):
        return st.one_of(
            st.tuples(st.sampled_from(sorted(UNARY)), children),
            st.tuples(st.sampled_from(sorted(BINARY)), children, children),
        )

    return st.recursive(leaf, extend, max_leaves=12)


def build(expr, x, y):
    """Iteratively (no recursion over the expression) build the tensor for a nested tuple expression."""
    stack, results = [(expr, False)], []
    while stack:
        node, ready = stack.pop()
        if node == "x" or node == "y":
            results.append(x if node == "x" else y)
        elif node[0] == "const":
            results.append(gc.constant(node[1]))
        elif not ready:
            stack.append((node, True))
            for child in reversed(node[1:]):
                stack.append((child, False))
        else:
            args = [results.pop() for _ in node[1:]][::-1]
            function = UNARY.get(node[0]) or BINARY[node[0]]
            results.append(function(*args))
    return results[0]


@settings(max_examples=150, deadline=None)
@given(expressions(), st.lists(FLOATS, min_size=3, max_size=3), st.lists(FLOATS, min_size=3, max_size=3))
def test_optimized_expression_keeps_values_and_gradients(expr, xs, ys):
    x, y = gc.placeholder("x", (3,)), gc.placeholder("y", (3,))
    out = build(expr, x, y)
    if out.shape != (3,):
        out = out + gc.zeros_like(x)
    grads = gc.grad(gc.sum(out), [x, y])
    fetches = [out, *grads]
    feeds = {x: np.array(xs), y: np.array(ys)}
    expected = run(fetches, feeds)
    optimized = optimize_tensors(fetches)
    assert_same_values(expected, run(optimized, feeds), rtol=1e-9, atol=1e-300)
    assert keys(optimize_tensors(optimized)) == keys(optimized)
