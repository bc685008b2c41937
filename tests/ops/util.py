"""Shared machinery for the table-driven op tests.

A :class:`Case` describes one op application: how to build it from graphc
tensors, the NumPy reference computing the same value, and the inputs (shape,
kind, how to draw test points). The generic checks below run a case through
``gc.Session(optimize=False)`` / ``gc.function`` and compare:

* the value with the NumPy reference (float64 and float32 inputs);
* the static shape and dtype inferred at build time with the real result's,
  also when the placeholders' sizes are unknown (``None``);
* the gradient of ``sum(out * w)`` with central finite differences of the
  NumPy reference (in float64, whatever the dtype of the graph);
* a Hessian-vector product of ``sum(out * out * w)`` (grad of ``sum(grad * v)``)
  with central differences of graphc's own first-order gradient, which is
  itself checked against NumPy; likewise a third directional derivative;
* forward mode (``gc.jvp``) with central differences of the NumPy reference;
* ``gc.check_grad``, the project's own finite-difference check.

Feeds are read-only (an op writing into its input fails) and results must not
alias them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

import graphc as gc
from graphc.types import shapes_match

# ---- drawing test points --------------------------------------------------------------------

Gen = Callable[[np.random.Generator, tuple], np.ndarray]


def uniform(low: float = -2.0, high: float = 2.0) -> Gen:
    """Floats drawn uniformly from [low, high)."""
    return lambda rng, shape: rng.uniform(low, high, size=shape)


def away_from(*kinks: float, low: float = -2.0, high: float = 2.0, margin: float = 0.1) -> Gen:
    """Uniform floats at least ``margin`` away from every kink (for FD near non-smooth points)."""

    def draw(rng, shape):
        values = rng.uniform(low, high, size=shape)
        for kink in kinks:
            close = np.abs(values - kink) < margin
            values = np.where(close, kink + np.where(values >= kink, margin, -margin) * 1.5, values)
        return values

    return draw


def booleans() -> Gen:
    return lambda rng, shape: rng.random(size=shape) < 0.5


def fixed(value) -> Gen:
    """Always the same value (an index array, labels, ...)."""
    array = np.asarray(value)
    return lambda rng, shape: array.copy()


@dataclass
class Spec:
    """One input of a case. ``kind`` is "f" (float: the test's dtype), or a fixed dtype string."""

    shape: tuple
    gen: Gen = field(default_factory=uniform)
    kind: str = "f"
    #: whether the gradient with respect to this input is checked (float inputs only)
    diff: bool = True

    def dtype(self, float_dtype) -> np.dtype:
        return np.dtype(float_dtype) if self.kind == "f" else np.dtype(self.kind)


@dataclass
class Case:
    """One op application with its NumPy reference."""

    id: str
    build: Callable[..., gc.Tensor]
    ref: Callable[..., np.ndarray]
    inputs: Sequence[Spec]
    #: check the gradient (of the float inputs with diff=True) against finite differences
    grad: bool = True
    #: check second order (Hessian-vector products)
    second: bool = True
    #: the result's size depends on input values (a fed bool mask): the static shape may hold None
    dynamic_shape: bool = False
    #: value tolerances (relative, and the same absolute) for float64 and float32 inputs
    rtol64: float = 1e-10
    rtol32: float = 2e-5
    #: gradient tolerances: float64 (vs FD in float64) and float32
    grad_rtol64: float = 1e-5
    grad_rtol32: float = 2e-3

    def __repr__(self) -> str:  # shown by pytest for failing parametrizations
        return self.id


# ---- running ----------------------------------------------------------------------------------

def run(fetches, feeds: dict | None = None):
    """Run with an unoptimized Session."""
    with gc.Session(optimize=False) as session:
        return session.run(fetches, feeds or {})


def draw(case: Case, float_dtype, seed: int = 0) -> list[np.ndarray]:
    """Input arrays for ``case`` (float inputs cast to ``float_dtype``)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in case.inputs:
        value = np.asarray(spec.gen(rng, spec.shape))
        arrays.append(value.astype(spec.dtype(float_dtype)))
    return arrays


def placeholders(case: Case, float_dtype, unknown: bool = False) -> list[gc.Tensor]:
    """One placeholder per input; with ``unknown`` every size is None (the rank stays known)."""
    result = []
    for k, spec in enumerate(case.inputs):
        shape = (None,) * len(spec.shape) if unknown else spec.shape
        result.append(gc.placeholder(f"in{k}", shape, spec.dtype(float_dtype)))
    return result


def assert_static_matches(tensor: gc.Tensor, value: np.ndarray) -> None:
    """The static shape and dtype inferred at build time agree with the computed value."""
    value = np.asarray(value)
    assert shapes_match(tensor.shape, value.shape), (tensor, value.shape)
    assert tensor.dtype == value.dtype, (tensor, value.dtype)


def assert_close(actual, expected, rtol: float, atol: float = 0.0, what: str = "") -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol,
                               err_msg=what, equal_nan=False)


def check_value(case: Case, float_dtype) -> None:
    """Value, shape and dtype against the NumPy reference."""
    arrays = draw(case, float_dtype)
    for array in arrays:
        array.flags.writeable = False  # an op that wrote into its input would fail here
    inputs = placeholders(case, float_dtype)
    out = case.build(*inputs)
    value = run(out, dict(zip(inputs, arrays)))
    expected = np.asarray(case.ref(*arrays))
    assert_static_matches(out, value)
    if not case.dynamic_shape:  # every input size is known, so the result's is too
        assert out.shape == value.shape, (case.id, out.shape, value.shape)
    assert not any(np.shares_memory(value, a) for a in arrays)  # results never alias a feed
    assert value.shape == expected.shape
    assert value.dtype == expected.dtype, (value.dtype, expected.dtype)
    rtol = case.rtol64 if np.dtype(float_dtype) == np.float64 else case.rtol32
    if value.dtype.kind in "biu":
        np.testing.assert_array_equal(value, expected)
    else:
        assert_close(value, expected, rtol=rtol, atol=rtol, what=case.id)
    # also through gc.function, called by keyword
    fn = gc.function(inputs, out, optimize=False)
    again = fn(**{t.name: a for t, a in zip(inputs, arrays)})
    np.testing.assert_array_equal(again, value)


def check_unknown_sizes(case: Case) -> None:
    """With every placeholder size unknown: the static type still matches the result."""
    arrays = draw(case, np.float64)
    inputs = placeholders(case, np.float64, unknown=True)
    out = case.build(*inputs)
    value = run(out, dict(zip(inputs, arrays)))
    assert_static_matches(out, value)
    expected = np.asarray(case.ref(*arrays))
    assert value.shape == expected.shape
    if value.dtype.kind in "biu":
        np.testing.assert_array_equal(value, expected)
    else:
        assert_close(value, expected, rtol=case.rtol64, atol=case.rtol64, what=case.id)


# ---- gradients ----------------------------------------------------------------------------------

def numeric_gradient(f: Callable[..., float], arrays: Sequence[np.ndarray], index: int,
                     eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f(*arrays)`` with respect to ``arrays[index]`` (float64)."""
    values = [np.array(a, dtype=np.float64) if a.dtype.kind == "f" else a for a in arrays]
    center = values[index]
    result = np.zeros(center.shape)
    for entry in np.ndindex(center.shape):
        step = eps * max(1.0, abs(float(center[entry])))
        plus, minus = center.copy(), center.copy()
        plus[entry] += step
        minus[entry] -= step
        high = f(*values[:index], plus, *values[index + 1:])
        low = f(*values[:index], minus, *values[index + 1:])
        result[entry] = (high - low) / (2 * step)
    return result


def _weights(shape: tuple, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.5, size=shape)


def diff_positions(case: Case) -> list[int]:
    return [k for k, s in enumerate(case.inputs) if s.kind == "f" and s.diff]


def check_gradient(case: Case, float_dtype, unknown: bool = False) -> None:
    """gc.grad of ``sum(out * w)`` against central differences of the NumPy reference."""
    float_dtype = np.dtype(float_dtype)
    arrays = draw(case, float_dtype)
    inputs = placeholders(case, float_dtype, unknown=unknown)
    out = case.build(*inputs)
    reference = np.asarray(case.ref(*arrays))
    w = _weights(reference.shape)
    cost = gc.sum(out * gc.constant(w.astype(out.dtype)))
    positions = diff_positions(case)
    grads = gc.grad(cost, [inputs[k] for k in positions])
    values = run(grads, dict(zip(inputs, arrays)))

    def f(*xs):
        return float(np.sum(np.asarray(case.ref(*xs), dtype=np.float64) * w))

    for k, g, value in zip(positions, grads, values):
        assert_static_matches(g, value)
        assert value.dtype == float_dtype
        assert value.shape == arrays[k].shape
        numeric = numeric_gradient(f, arrays, k)
        if float_dtype == np.float64:
            rtol, atol = case.grad_rtol64, case.grad_rtol64 * 0.1
        else:
            rtol, atol = case.grad_rtol32, case.grad_rtol32
        assert np.all(np.isfinite(value)), (case.id, k, value)
        assert_close(value, numeric, rtol=rtol, atol=atol, what=f"{case.id}: d/d input {k}")


def check_second_order(case: Case, float_dtype=np.float64, unknown: bool = False) -> None:
    """Hessian-vector product against central differences of graphc's gradient."""
    float_dtype = np.dtype(float_dtype)
    arrays = draw(case, float_dtype)
    inputs = placeholders(case, float_dtype, unknown=unknown)
    out = case.build(*inputs)
    w = _weights(np.shape(case.ref(*arrays)))
    # squared, so that linear ops (indexing, reshapes, matmul) have a non-zero Hessian too: the
    # gradient rules' own rules (scatters, slices of cotangents) are then differentiated
    cost = gc.sum(out * out * gc.constant(w.astype(out.dtype)))
    positions = diff_positions(case)
    xs = [inputs[k] for k in positions]
    grads = gc.grad(cost, xs)
    rng = np.random.default_rng(99)
    directions = [rng.uniform(-1, 1, size=arrays[k].shape) for k in positions]
    inner = _add_all([gc.sum(g * gc.constant(v.astype(float_dtype))) for g, v in zip(grads, directions)])
    hvp = gc.grad(inner, xs)
    hvp_values = run(hvp, dict(zip(inputs, arrays)))
    grad_fn = gc.function(inputs, grads, optimize=False)
    eps = 1e-6 if float_dtype == np.float64 else 1e-2

    def shifted(sign: float) -> list[np.ndarray]:
        moved = list(arrays)
        for k, v in zip(positions, directions):
            moved[k] = (arrays[k] + sign * eps * v).astype(float_dtype)
        return grad_fn(*moved)

    high, low = shifted(1.0), shifted(-1.0)
    rtol = 1e-5 if float_dtype == np.float64 else 5e-2
    for k, h, hi, lo in zip(positions, hvp_values, high, low):
        numeric = (np.asarray(hi, np.float64) - np.asarray(lo, np.float64)) / (2 * eps)
        assert h.dtype == float_dtype, (case.id, k, h.dtype)
        assert np.all(np.isfinite(h)), (case.id, k, h)
        assert_close(h, numeric, rtol=rtol, atol=rtol, what=f"{case.id}: Hv for input {k}")


def check_third_order(case: Case) -> None:
    """Third directional derivative of ``sum(out**3 * w)`` against differences of the second (float64)."""
    arrays = draw(case, np.float64)
    inputs = placeholders(case, np.float64)
    out = case.build(*inputs)
    w = _weights(np.shape(case.ref(*arrays)))
    cost = gc.sum(out * out * out * gc.constant(w))
    positions = diff_positions(case)
    xs = [inputs[k] for k in positions]
    rng = np.random.default_rng(5)
    directions = [rng.uniform(-1, 1, size=arrays[k].shape) for k in positions]

    def along(tensors):
        return _add_all([gc.sum(t * gc.constant(v)) for t, v in zip(tensors, directions)])

    second = gc.grad(along(gc.grad(cost, xs)), xs)
    third = run(gc.grad(along(second), xs), dict(zip(inputs, arrays)))
    second_fn = gc.function(inputs, second, optimize=False)
    eps = 1e-5

    def shifted(sign: float) -> list[np.ndarray]:
        moved = list(arrays)
        for k, v in zip(positions, directions):
            moved[k] = arrays[k] + sign * eps * v
        return second_fn(*moved)

    for k, value, high, low in zip(positions, third, shifted(1.0), shifted(-1.0)):
        assert_close(value, (high - low) / (2 * eps), rtol=1e-4, atol=1e-4, what=f"{case.id}: third order, {k}")


def check_jvp(case: Case, unknown: bool = False) -> None:
    """Forward mode (gc.jvp, which differentiates the VJP rules with respect to their cotangent)
    against central differences of the NumPy reference along the tangent."""
    arrays = draw(case, np.float64)
    inputs = placeholders(case, np.float64, unknown=unknown)
    out = case.build(*inputs)
    positions = diff_positions(case)
    rng = np.random.default_rng(4)
    tangents = [rng.uniform(-1, 1, size=arrays[k].shape) for k in positions]
    product = gc.jvp(out, [inputs[k] for k in positions], [gc.constant(t) for t in tangents])
    value = run(product, dict(zip(inputs, arrays)))
    eps = 1e-6

    def shifted(sign: float) -> np.ndarray:
        moved = list(arrays)
        for k, t in zip(positions, tangents):
            moved[k] = arrays[k] + sign * eps * t
        return np.asarray(case.ref(*moved), dtype=np.float64)

    assert_close(value, (shifted(1.0) - shifted(-1.0)) / (2 * eps), rtol=1e-5, atol=1e-6, what=f"{case.id}: jvp")


def check_with_check_grad(case: Case, float_dtype) -> float:
    """The project's own ``gc.check_grad`` (finite differences of graphc's forward graph in float64)."""
    arrays = draw(case, float_dtype)
    inputs = placeholders(case, float_dtype)
    out = case.build(*inputs)
    w = _weights(np.shape(case.ref(*arrays)))
    cost = gc.sum(out * gc.constant(w.astype(out.dtype)))
    wrt = [inputs[k] for k in diff_positions(case)]
    return gc.check_grad(cost, wrt, dict(zip(inputs, arrays)))


def max_grad_error(float_dtype) -> float:
    """What ``check_with_check_grad`` may return for a correct rule: far inside check_grad's own
    tolerances (it raises past them), so a rule that is merely close fails too."""
    return 1e-5 if np.dtype(float_dtype).itemsize >= 8 else 1e-4


def _add_all(terms: list[gc.Tensor]) -> gc.Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


# ---- small NumPy references ---------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return _erf(x.astype(np.float64)).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    # both branches only exponentiate non-positive numbers
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def np_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x, np.zeros((), np.asarray(x).dtype))


def np_log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def np_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(np_log_softmax(x, axis))


# ---- one runner for every table ------------------------------------------------------------------

def table_tests(cases: Sequence[Case], *, float32_second: Callable[[Case], bool] | None = None,
                unknown: Callable[[Case], bool] | None = None, gradient_unknown: Callable[[Case], bool] | None = None,
                second: Callable[[Case], bool] | None = None) -> dict[str, Callable]:
    """The table-driven tests of ``cases``, to put in a test module: ``globals().update(table_tests(CASES))``.

    ``test_value`` (float64, float32) of every case; ``test_unknown_sizes`` (the static type with every size
    unknown) of those ``unknown`` selects; ``test_gradient`` (float64, float32) of the cases with ``grad``,
    and with unknown sizes of those ``gradient_unknown`` selects; ``test_second_order`` (float64) of the
    differentiable cases with ``second`` (and ``second`` selects, if given), and in float32 of those
    ``float32_second`` selects. A selector left out takes every case (``float32_second``: none).
    """
    import pytest

    def chosen(selected, pool):
        return [c for c in pool if selected is None or selected(c)]

    floats = [np.float64, np.float32]
    differentiable = [c for c in cases if c.grad and diff_positions(c)]
    twice = [c for c in differentiable if c.second]
    smooth = chosen(second, twice)

    @pytest.mark.parametrize("dtype", floats)
    @pytest.mark.parametrize("case", cases, ids=repr)
    def test_value(case, dtype):
        check_value(case, dtype)

    @pytest.mark.parametrize("case", chosen(unknown, cases), ids=repr)
    def test_unknown_sizes(case):
        check_unknown_sizes(case)

    @pytest.mark.parametrize("dtype", floats)
    @pytest.mark.parametrize("case", differentiable, ids=repr)
    def test_gradient(case, dtype):
        check_gradient(case, dtype)

    @pytest.mark.parametrize("case", chosen(gradient_unknown, differentiable), ids=repr)
    def test_gradient_unknown_sizes(case):
        """Sizes (and so broadcasting) decided at run time: the driver sums back to the fed shapes."""
        check_gradient(case, np.float64, unknown=True)

    @pytest.mark.parametrize("case", smooth, ids=repr)
    def test_second_order(case):
        check_second_order(case, np.float64)

    @pytest.mark.parametrize("case", [c for c in twice if float32_second is not None and float32_second(c)],
                             ids=repr)
    def test_second_order_float32(case):
        check_second_order(case, np.float32)

    tests = [test_value, test_unknown_sizes, test_gradient, test_gradient_unknown_sizes, test_second_order]
    return {f.__name__: f for f in tests + ([test_second_order_float32] if float32_second else [])}


def with_specials(shape, dtype, seed: int) -> np.ndarray:
    """Normal values with zeros of both signs, infinities and NaNs of both signs sprinkled in."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape).astype(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e30, -1e-30], dtype)
    mask = rng.random(shape) < rng.choice([0.0, 0.002, 0.05])
    values[mask] = rng.choice(specials, int(mask.sum()))
    return values
