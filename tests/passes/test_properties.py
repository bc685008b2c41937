"""Hypothesis (derandomized): random expression trees at arbitrary floats (NaN, inf, -0.0, huge, tiny).

The exact passes must keep every bit; stabilization is checked for accuracy against a high-precision reference.
"""

from __future__ import annotations

import mpmath
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.passes import optimize_tensors
from graphc.passes.cse import cse
from graphc.passes.fold import fold_constants
from graphc.passes.prune import prune
from graphc.passes.simplify import simplify
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


def _exact_passes(outputs):
    """simplify, fold and CSE (no stabilization) repeated to a fixed point: rewrites that must be exact."""
    for _ in range(8):
        before = outputs
        for function in (simplify, fold_constants, cse):
            outputs = function(outputs)
        if all(p is q for p, q in zip(before, outputs)):
            break
    return outputs


EXACT_PIPELINE = (("prune", prune), ("exact", _exact_passes))


def _graph(expr, xs, ys):
    x, y = gc.placeholder("x", (3,)), gc.placeholder("y", (3,))
    out = build(expr, x, y)
    if out.shape != (3,):
        out = out + gc.zeros_like(x)
    return [out, *gc.grad(gc.sum(out), [x, y])], {x: np.array(xs), y: np.array(ys)}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(expressions(), st.lists(FLOATS, min_size=3, max_size=3), st.lists(FLOATS, min_size=3, max_size=3))
def test_exact_passes_keep_every_bit(expr, xs, ys):
    """simplify, fold and CSE give the unoptimized values exactly: NaN, inf and the sign of zero included."""
    fetches, feeds = _graph(expr, xs, ys)
    expected = run(fetches, feeds)
    optimized = optimize_tensors(fetches, pipeline=EXACT_PIPELINE)
    assert_same_values(expected, run(optimized, feeds), rtol=0.0, atol=0.0)
    assert keys(optimize_tensors(optimized, pipeline=EXACT_PIPELINE)) == keys(optimized)


def _reference(expr, xs, ys) -> list:
    """The expression's value at each point, with mpmath at 120 digits (None where it is not finite)."""
    mpmath.mp.dps = 120
    unary = {"neg": lambda a: -a, "square": lambda a: a * a, "tanh": mpmath.tanh, "abs": abs,
             "exp_tanh": lambda a: mpmath.exp(mpmath.tanh(a))}
    binary = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
              "div": lambda a, b: a / b, "maximum": max, "where": lambda a, b: a if a > b else b}
    values = []
    for xv, yv in zip(xs, ys):
        stack, results = [(expr, False)], []
        try:
            while stack:
                node, ready = stack.pop()
                if node in ("x", "y"):
                    results.append(mpmath.mpf(xv if node == "x" else yv))
                elif node[0] == "const":
                    results.append(mpmath.mpf(node[1]))
                elif not ready:
                    stack.append((node, True))
                    stack.extend((child, False) for child in reversed(node[1:]))
                else:
                    args = [results.pop() for _ in node[1:]][::-1]
                    results.append((unary.get(node[0]) or binary[node[0]])(*args))
            value = results[0]
            values.append(value if mpmath.isfinite(value) else None)
        except (ZeroDivisionError, ValueError, OverflowError):
            values.append(None)
    return values


@settings(max_examples=100, deadline=None, derandomize=True)
@given(expressions(), st.lists(FLOATS, min_size=3, max_size=3), st.lists(FLOATS, min_size=3, max_size=3))
def test_stabilized_expression_is_as_accurate_as_the_naive_one(expr, xs, ys):
    """The default pipeline (stabilization included) is checked against a 120-digit reference, not for equality:
    where the naive float64 value is accurate, the optimized one is too (within 4 ulp), and it never
    makes a finite value NaN or infinite. Gradients (built from a stabilized clone either way) match."""
    fetches, feeds = _graph(expr, xs, ys)
    naive = run(fetches, feeds)
    got = run(optimize_tensors(fetches), feeds)
    assert_same_values(naive[1:], got[1:], rtol=1e-9, atol=1e-300, signed_zeros=False)
    for k, exact in enumerate(_reference(expr, xs, ys)):
        if exact is None or not np.isfinite(naive[0][k]):
            continue
        assert np.isfinite(got[0][k]), (expr, xs, ys, k)
        error = abs(mpmath.mpf(float(got[0][k])) - exact)
        allowed = abs(mpmath.mpf(float(naive[0][k])) - exact) + 4 * np.spacing(abs(float(exact)))
        assert error <= allowed, (expr, xs[k], ys[k], float(got[0][k]), float(naive[0][k]), float(exact))
