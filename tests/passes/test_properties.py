"""Hypothesis: random expression trees at arbitrary floats (NaN, inf, -0.0, huge, tiny).

Two properties, because the passes make two different promises:

* simplify, fold and CSE are exact: the optimized graph computes the very same values and
  gradients as the unoptimized one, bit for bit up to NaN payloads (the sign of zero included);
* stabilization changes values where the naive form overflows, underflows or cancels, so it is
  checked for accuracy instead: against a high-precision reference (mpmath), the optimized
  value is never worse than the naive one (``exp(tanh(y)) - 1`` at ``y = 1.9e-56`` is 0.0
  naively and 1.9e-56 once it is ``expm1``: that is the point, not a failure).

Both run derandomized (a fixed sequence of examples, no example database), so CI cannot flake.
"""

from __future__ import annotations

import mpmath
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.passes import optimize_tensors
from graphc.passes.cse import cse
from graphc.passes.fold import fold_constants
from graphc.passes.prune import prune
from graphc.passes.simplify import simplify
from tests.passes.util import keys, run

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
POINTS = st.lists(FLOATS, min_size=3, max_size=3)
CONSTANTS = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 3.0])
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None)

UNARY = {"neg": gc.neg, "square": gc.square, "tanh": gc.tanh, "abs": gc.abs, "exp_tanh": lambda t: gc.exp(gc.tanh(t))}
BINARY = {"add": gc.add, "sub": gc.sub, "mul": gc.mul, "div": gc.div, "maximum": gc.maximum,
          "where": lambda a, b: gc.where(a > b, a, b)}
EXACT_PASSES = (prune, simplify, fold_constants, cse)


def expressions(unary, binary):
    leaf = st.one_of(st.just("x"), st.just("y"), CONSTANTS.map(lambda c: ("const", c)))

    def extend(children):
        return st.one_of(st.tuples(st.sampled_from(sorted(unary)), children),
                         st.tuples(st.sampled_from(sorted(binary)), children, children))

    return st.recursive(leaf, extend, max_leaves=12)


def evaluate(expr, leaf, unary, binary):
    """Iteratively (no recursion over the expression) evaluate a nested tuple expression."""
    stack, results = [(expr, False)], []
    while stack:
        node, ready = stack.pop()
        if node in ("x", "y") or node[0] == "const":
            results.append(leaf(node))
        elif not ready:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node[1:]))
        else:
            args = [results.pop() for _ in node[1:]][::-1]
            results.append((unary.get(node[0]) or binary[node[0]])(*args))
    return results[0]


def build(expr, x, y, unary=UNARY, binary=BINARY):
    out = evaluate(expr, lambda n: {"x": x, "y": y}.get(n) if isinstance(n, str) else gc.constant(n[1]),
                   unary, binary)
    return out if out.shape == (3,) else out + gc.zeros_like(x)


def optimize_exactly(outputs: list) -> list:
    """The exact passes, repeated until a round changes nothing."""
    for _ in range(8):
        before = outputs
        for function in EXACT_PASSES:
            outputs = function(outputs)
        if all(a is b for a, b in zip(before, outputs)):
            break
    return outputs


def assert_identical(expected, actual) -> None:
    """Same dtype and shape, the same numbers bit for bit: NaN where NaN, the sign of every zero."""
    for want, got in zip(expected, actual):
        want, got = np.asarray(want), np.asarray(got)
        assert (want.dtype, want.shape) == (got.dtype, got.shape)
        nan = np.isnan(want)
        np.testing.assert_array_equal(nan, np.isnan(got))
        np.testing.assert_array_equal(want[~nan], got[~nan])
        np.testing.assert_array_equal(np.signbit(want[~nan]), np.signbit(got[~nan]))


@SETTINGS
@given(expressions(UNARY, BINARY), POINTS, POINTS)
@example(("sub", ("neg", "x"), ("const", -0.0)), [0.0, 1.0, -0.0], [0.0, 0.0, 0.0])  # -0.0 - (-0.0) is +0.0
@example(("add", "x", ("const", 0.0)), [-0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
def test_simplify_fold_and_cse_keep_every_bit(expr, xs, ys):
    x, y = gc.placeholder("x", (3,)), gc.placeholder("y", (3,))
    out = build(expr, x, y)
    fetches = [out, *gc.grad(gc.sum(out), [x, y])]
    feeds = {x: np.array(xs), y: np.array(ys)}
    optimized = optimize_exactly(fetches)
    assert_identical(run(fetches, feeds), run(optimized, feeds))
    assert keys(optimize_exactly(optimized)) == keys(optimized)  # idempotent


# ---- stabilization: accuracy against a high-precision reference ---------------------------------

#: what the stabilizer rewrites (log(1 + t), exp(t) - 1, log(1 + exp(t)), ...) among plain arithmetic;
#: no division or where: their reference would have to guess IEEE's signed zeros and branch choices
STABLE_UNARY = {"neg": gc.neg, "square": gc.square, "tanh": gc.tanh, "exp_tanh": lambda t: gc.exp(gc.tanh(t)),
                "log1p_form": lambda t: gc.log(1.0 + gc.abs(t)), "expm1_form": lambda t: gc.exp(gc.tanh(t)) - 1.0,
                "softplus_form": lambda t: gc.log(1.0 + gc.exp(t)), "sigmoid_form": lambda t: 1.0 / (1.0 + gc.exp(-t))}
STABLE_BINARY = {"add": gc.add, "sub": gc.sub, "mul": gc.mul, "maximum": gc.maximum}

_MP_UNARY = {"neg": lambda a: -a, "square": lambda a: a * a, "tanh": mpmath.tanh,
             "exp_tanh": lambda a: mpmath.exp(mpmath.tanh(a)), "log1p_form": lambda a: mpmath.log(1 + abs(a)),
             "expm1_form": lambda a: mpmath.exp(mpmath.tanh(a)) - 1,
             "softplus_form": lambda a: mpmath.log(1 + mpmath.exp(a)),
             "sigmoid_form": lambda a: 1 / (1 + mpmath.exp(-a))}
_MP_BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
              "maximum": lambda a, b: mpmath.nan if mpmath.isnan(a) or mpmath.isnan(b) else max(a, b)}


def _error(value: float, reference) -> mpmath.mpf:
    """|value - reference|, with infinities and NaN: 0 for the same infinity or NaN, else infinite."""
    if mpmath.isnan(reference) or np.isnan(value):
        return mpmath.mpf(0) if mpmath.isnan(reference) and np.isnan(value) else mpmath.inf
    if np.isinf(value) or mpmath.isinf(reference):
        return mpmath.mpf(0) if mpmath.mpf(value) == reference else mpmath.inf
    return abs(mpmath.mpf(value) - reference)


def reference(expr, point: dict):
    """The expression's exact value (to 2,000 bits), and the largest finite magnitude along the way."""
    magnitudes = []

    def track(function):
        def wrapped(*args):
            value = function(*args)
            if mpmath.isfinite(value):
                magnitudes.append(abs(value))
            return value
        return wrapped

    with mpmath.workprec(2000):
        value = evaluate(expr, lambda n: mpmath.mpf(point[n] if isinstance(n, str) else n[1]),
                         {k: track(f) for k, f in _MP_UNARY.items()}, {k: track(f) for k, f in _MP_BINARY.items()})
    return value, max(magnitudes, default=mpmath.mpf(0))


@SETTINGS
@given(expressions(STABLE_UNARY, STABLE_BINARY), POINTS, POINTS)
@example(("expm1_form", "y"), [0.0, 0.0, 0.0], [1.9e-56, -3e-200, 0.25])  # was an intermittent failure
@example(("softplus_form", "x"), [800.0, -800.0, 30.0], [0.0, 0.0, 0.0])
@example(("sub", ("softplus_form", "x"), "x"), [40.0, 1e10, -5.0], [0.0, 0.0, 0.0])
def test_stabilization_is_never_less_accurate(expr, xs, ys):
    x, y = gc.placeholder("x", (3,)), gc.placeholder("y", (3,))
    out = build(expr, x, y, STABLE_UNARY, STABLE_BINARY)
    grads = gc.grad(gc.sum(out), [x, y])
    feeds = {x: np.array(xs), y: np.array(ys)}
    naive = run([out, *grads], feeds)
    stable = run(optimize_tensors([out, *grads]), feeds)
    for k in range(3):
        if naive[0][k] == stable[0][k] or (np.isnan(naive[0][k]) and np.isnan(stable[0][k])):
            continue
        exact, scale = reference(expr, {"x": xs[k], "y": ys[k]})
        worse = _error(stable[0][k], exact) - _error(naive[0][k], exact)
        # a few roundings of the largest intermediate magnitude is noise, not a worse formula
        assert worse <= 1e-12 * scale + mpmath.mpf(2) ** -1074, (expr, xs[k], ys[k], naive[0][k], stable[0][k],
                                                                  mpmath.nstr(exact, 20))
    # the gradient graph is stabilized before differentiating (gc.grad), so optimizing it keeps its
    # finite values up to rounding, and never turns a finite gradient into inf or NaN
    for want, got in zip(naive[1:], stable[1:]):
        finite = np.isfinite(want)
        assert np.isfinite(got[finite]).all(), (expr, want, got)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-9, atol=1e-300)
    assert keys(optimize_tensors(optimize_tensors([out]))) == keys(optimize_tensors([out]))  # idempotent
