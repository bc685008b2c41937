"""gc.custom_op: a NumPy forward with a symbolic backward."""

import pickle

import numpy as np
import pytest

import graphc as gc


def swish_forward(x, beta):
    return x / (1.0 + np.exp(-beta * x))


def swish_grad(inputs, output, output_grad):
    x, beta = inputs
    s = gc.sigmoid(beta * x)
    dx = s + beta * x * s * (1.0 - s)
    dbeta = x * x * s * (1.0 - s)
    return output_grad * dx, output_grad * dbeta


swish_op = gc.custom_op("my_swish", swish_forward, swish_grad)


def test_value_and_gradient():
    x = gc.placeholder("x", (4,))
    beta = gc.variable(1.5, name="beta")
    y = swish_op(x, beta)
    assert y.op == "my_swish" and y.shape == (4,) and y.dtype == np.float64
    xv = np.array([-1.0, 0.0, 0.5, 2.0])
    np.testing.assert_allclose(gc.Session().run(y, {x: xv}), swish_forward(xv, 1.5))
    assert gc.check_grad(gc.sum(y), [x, beta], {x: xv}) < 1e-6


def test_second_order_through_a_custom_op():
    x = gc.placeholder("x")
    beta = gc.constant(1.0)
    y = swish_op(x, beta)
    d2 = gc.grad(gc.grad(y, x), x)
    xv = 0.4
    s = 1 / (1 + np.exp(-xv))
    expected = s * (1 - s) * (2 + xv * (1 - 2 * s))
    assert gc.Session().run(d2, {x: xv}) == pytest.approx(expected, rel=1e-10)


def test_custom_infer_and_dtype_checks():
    def row_sums(x):
        return x.sum(axis=1)

    op = gc.custom_op("row_sums", row_sums, lambda inputs, out, g: gc.broadcast_to(
        gc.reshape(g, (-1, 1)), inputs[0].shape), infer=lambda x: ((x.shape[0],), x.dtype))
    x = gc.placeholder("x", (2, 3))
    y = op(x)
    assert y.shape == (2,)
    np.testing.assert_allclose(gc.Session().run(y, {x: np.ones((2, 3))}), [3.0, 3.0])
    assert gc.check_grad(gc.sum(y * gc.constant([1.0, 2.0])), x, {x: np.ones((2, 3))}) < 1e-6


def test_forward_with_a_wrong_shape_is_an_execution_error():
    op = gc.custom_op("liar", lambda x: np.zeros(5), None)
    x = gc.placeholder("x", (2,))
    with pytest.raises(gc.ExecutionError, match="liar"):
        gc.Session().run(op(x), {x: np.ones(2)})


def test_missing_gradient_raises_only_when_needed():
    op = gc.custom_op("opaque", lambda x: x * 2, None)
    x = gc.placeholder("x")
    y = gc.placeholder("y")
    cost = op(x) + y
    assert gc.Session().run(gc.grad(cost, y), {x: 1.0, y: 1.0}) == 1.0
    with pytest.raises(gc.GradientError, match="opaque"):
        gc.grad(cost, x)


def test_function_with_custom_op_pickles():
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], swish_op(x, gc.constant(1.0)))
    restored = pickle.loads(pickle.dumps(fn))
    xv = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(restored(xv), fn(xv))


def test_ops_from_one_factory_are_never_merged_by_cse():
    # same name, same forward qualname (a closure): still different ops
    def scaled(k):
        return gc.custom_op("scale", lambda a: a * k, lambda inputs, output, g: [g * k])

    x = gc.placeholder("x", (3,))
    two, three = scaled(2.0), scaled(3.0)
    for optimize in (False, True):
        fn = gc.function([x], [two(x), three(x), gc.grad(gc.sum(two(x) + three(x)), x)], optimize=optimize)
        assert [out.tolist() for out in fn(np.ones(3))] == [[2.0] * 3, [3.0] * 3, [5.0] * 3]
    assert two(x).key == two(x).key != three(x).key  # one op applied twice still merges


def test_infer_must_return_a_shape_and_a_dtype():
    op = gc.custom_op("junk", lambda a: a, None, infer=lambda a: "junk")
    with pytest.raises(TypeError, match=r"custom op 'junk': infer must return \(shape, dtype\), got 'junk'"):
        op(gc.placeholder("x", (3,)))


def test_forward_dtype_must_cast_safely_to_the_inferred_one():
    x = gc.placeholder("x", (3,))
    widened = gc.custom_op("count", lambda a: np.arange(3), None)(x)  # int -> float64 is fine
    assert gc.function([x], widened)(np.ones(3)).dtype == np.float64
    lossy = gc.custom_op("complexify", lambda a: a + 1j, None)(x)  # used to drop the imaginary part
    with pytest.raises(gc.ExecutionError, match="forward returned dtype complex128.*float64"):
        gc.function([x], lossy)(np.ones(3))


def test_forward_gets_read_only_arrays_so_feeds_stay_untouched():
    def scribble(a):
        a[0] = 42.0
        return a * 1.0

    x = gc.placeholder("x", (3,))
    fed = np.ones(3)
    with pytest.raises(gc.ExecutionError, match="read-only"):
        gc.function([x], gc.custom_op("scribble", scribble, None)(x))(fed)
    assert fed.tolist() == [1.0, 1.0, 1.0]
