"""gc.optim: every optimizer follows PyTorch's documented update rule to 1e-12 over 20 steps.

The references below are written in NumPy from the pseudo-code of the ``torch.optim``
documentation (SGD, Adam, AdamW, RMSprop, Adagrad), with the gradient of a small
non-linear least-squares problem computed by hand, so that neither graphc's gradient nor
its optimizer is used to check itself. When PyTorch is installed, one more test runs
``torch.optim`` itself on the same problem.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import graphc as gc

STEPS = 20
RTOL = 1e-12


# ---- the problem: mean((tanh(x @ W + b) - t)**2), its gradient by hand ---------------------

def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 3))
    t = rng.uniform(-0.8, 0.8, size=(8, 2))
    w0 = rng.normal(size=(3, 2))
    b0 = rng.normal(size=(2,)) * 0.1
    return x, t, w0, b0


def numpy_loss_and_grads(x, t, w, b):
    z = x @ w + b
    a = np.tanh(z)
    r = a - t
    loss = np.mean(r * r)
    dz = 2.0 * r * (1.0 - a * a) / r.size
    return loss, [x.T @ dz, dz.sum(axis=0)]


def graph(x_value, t_value, w0, b0):
    x = gc.placeholder("x", shape=(None, 3))
    t = gc.placeholder("t", shape=(None, 2))
    w = gc.variable(w0, name="W")
    b = gc.variable(b0, name="b")
    loss = gc.mean(gc.square(gc.tanh(x @ w + b) - t)).with_name("loss")
    return x, t, w, b, loss


# ---- references, from the documented algorithms ---------------------------------------

class SGD:
    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.b = None
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        if self.b is None:
            self.b = [None] * len(params)
        out = []
        for k, (p, g) in enumerate(zip(params, grads)):
            if self.wd != 0:
                g = g + self.wd * p
            if self.mu != 0:
                # documented: b_1 = g_1, then b_t = mu * b_{t-1} + (1 - dampening) g_t (dampening 0)
                self.b[k] = g.copy() if self.t == 1 else self.mu * self.b[k] + g
                g = g + self.mu * self.b[k] if self.nesterov else self.b[k]
            out.append(p - self.lr * g)
        return out


class Adam:
    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
        self.lr, self.b1, self.b2, self.eps, self.wd, self.decoupled = lr, beta1, beta2, eps, weight_decay, decoupled
        self.m = self.v = None
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        out = []
        for k, (p, g) in enumerate(zip(params, grads)):
            if self.decoupled:
                p = p * (1.0 - self.lr * self.wd)        # AdamW: theta <- theta - gamma lambda theta
            elif self.wd != 0:
                g = g + self.wd * p                      # Adam: g <- g + lambda theta
            self.m[k] = self.b1 * self.m[k] + (1.0 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1.0 - self.b2) * g * g
            m_hat = self.m[k] / (1.0 - self.b1 ** self.t)
            v_hat = self.v[k] / (1.0 - self.b2 ** self.t)
            out.append(p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps))
        return out


class RMSprop:
    def __init__(self, lr=1e-3, rho=0.9, eps=1e-8, weight_decay=0.0):
        self.lr, self.alpha, self.eps, self.wd = lr, rho, eps, weight_decay
        self.v = None

    def step(self, params, grads):
        if self.v is None:
            self.v = [np.zeros_like(p) for p in params]
        out = []
        for k, (p, g) in enumerate(zip(params, grads)):
            if self.wd != 0:
                g = g + self.wd * p
            self.v[k] = self.alpha * self.v[k] + (1.0 - self.alpha) * g * g
            out.append(p - self.lr * g / (np.sqrt(self.v[k]) + self.eps))
        return out


class Adagrad:
    def __init__(self, lr=1e-2, eps=1e-10, weight_decay=0.0):
        self.lr, self.eps, self.wd = lr, eps, weight_decay
        self.s = None

    def step(self, params, grads):
        if self.s is None:
            self.s = [np.zeros_like(p) for p in params]
        out = []
        for k, (p, g) in enumerate(zip(params, grads)):
            if self.wd != 0:
                g = g + self.wd * p
            self.s[k] = self.s[k] + g * g                # lr_decay = 0: the step size stays lr
            out.append(p - self.lr * g / (np.sqrt(self.s[k]) + self.eps))
        return out


CASES = {
    "sgd": (gc.optim.sgd, SGD, {"lr": 0.3}),
    "sgd_weight_decay": (gc.optim.sgd, SGD, {"lr": 0.3, "weight_decay": 0.05}),
    "sgd_momentum": (gc.optim.sgd, SGD, {"lr": 0.1, "momentum": 0.9}),
    "sgd_nesterov": (gc.optim.sgd, SGD, {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.02}),
    "adam": (gc.optim.adam, Adam, {"lr": 0.05}),
    "adam_all": (gc.optim.adam, Adam, {"lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1}),
    "adamw": (gc.optim.adamw, lambda **kw: Adam(decoupled=True, **kw), {"lr": 0.05, "weight_decay": 0.1}),
    "adamw_default_decay": (gc.optim.adamw, lambda **kw: Adam(decoupled=True, weight_decay=0.01, **kw),
                            {"lr": 0.03}),
    "rmsprop": (gc.optim.rmsprop, RMSprop, {"lr": 0.01, "rho": 0.9}),
    "rmsprop_decay": (gc.optim.rmsprop, RMSprop, {"lr": 0.01, "rho": 0.7, "eps": 1e-6, "weight_decay": 0.1}),
    "adagrad": (gc.optim.adagrad, Adagrad, {"lr": 0.1}),
    "adagrad_decay": (gc.optim.adagrad, Adagrad, {"lr": 0.1, "eps": 1e-8, "weight_decay": 0.05}),
}


def _as_variables(hyper: dict) -> dict:
    """The float hyper-parameters as 0-d variables (the tensor path), the rest unchanged."""
    return {k: gc.variable(v, name=k) if isinstance(v, float) else v for k, v in hyper.items()}


@pytest.mark.parametrize("as_tensors", [False, True], ids=["floats", "tensors"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_the_documented_rule(case, as_tensors):
    build, reference_class, hyper = CASES[case]
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    updates = build(loss, [w, b], **(_as_variables(hyper) if as_tensors else hyper))
    # the gradient graphc computes in the same call (at the values before the update) goes into the
    # reference, so that the comparison is of the update rules alone: an adaptive rule divides by
    # sqrt(v) and so magnifies the rounding of a gradient entry near zero, which is not the rule's doing
    step = gc.function([x, t], [loss, *gc.grad(loss, [w, b])], updates=updates)
    reference = reference_class(**hyper)
    params = [w0, b0]
    for k in range(STEPS):
        expected_loss, expected_grads = numpy_loss_and_grads(x_value, t_value, *params)
        got_loss, *grads = step(x_value, t_value)
        np.testing.assert_allclose(got_loss, expected_loss, rtol=1e-12)
        for got, expected in zip(grads, expected_grads):  # graphc's gradient is the hand-derived one
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)
        params = reference.step(params, grads)
        np.testing.assert_allclose(w.value, params[0], rtol=RTOL, atol=1e-15, err_msg=f"W after step {k + 1}")
        np.testing.assert_allclose(b.value, params[1], rtol=RTOL, atol=1e-15, err_msg=f"b after step {k + 1}")
    assert not np.allclose(w.value, w0)  # it moved


def test_gradients_may_be_given_instead_of_the_cost():
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    step = gc.function([x, t], loss, updates=gc.optim.adam(gc.grad(loss, [w, b]), [w, b], lr=0.05))
    reference, params = Adam(lr=0.05), [w0, b0]
    for _ in range(5):
        params = reference.step(params, numpy_loss_and_grads(x_value, t_value, *params)[1])
        step(x_value, t_value)
    np.testing.assert_allclose(w.value, params[0], rtol=RTOL)


# ---- state ----------------------------------------------------------------------------------

def test_state_variables_are_named_after_the_parameter_and_start_at_zero():
    _, _, w0, b0 = make_data()
    _, _, w, b, loss = graph(None, None, w0, b0)
    updates = gc.optim.adam(loss, [w, b])
    names = [v.name for v in updates]
    assert names[:2] == ["W", "b"]  # the parameters first, in order
    assert sorted(names[2:]) == ["W/adam_m", "W/adam_v", "adam/step", "b/adam_m", "b/adam_v"]
    for variable in list(updates)[2:]:
        assert not np.any(variable.value)
        assert variable.dtype == (np.int64 if variable.name == "adam/step" else np.float64)
    assert {v.name for v in gc.optim.sgd(loss, [w, b], 0.1, momentum=0.9)} == {"W", "b", "W/momentum", "b/momentum"}
    assert {v.name for v in gc.optim.sgd(loss, [w, b], 0.1)} == {"W", "b"}  # no momentum, no state
    assert {v.name for v in gc.optim.rmsprop(loss, [w])} == {"W", "W/rmsprop_s"}
    assert {v.name for v in gc.optim.adagrad(loss, [w])} == {"W", "W/adagrad_s"}
    assert {v.name for v in gc.optim.adamw(loss, [w])} == {"W", "W/adamw_m", "W/adamw_v", "adamw/step"}
    unnamed = gc.variable(np.ones(2))
    assert {v.name for v in gc.optim.adam(gc.sum(unnamed * unnamed), [unnamed])} == {
        None, "param0/adam_m", "param0/adam_v", "adam/step"}


def test_state_is_updated_in_the_same_atomic_call():
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    updates = gc.optim.adam(loss, [w, b], lr=0.05)
    counter = next(v for v in updates if v.name == "adam/step")
    m = next(v for v in updates if v.name == "W/adam_m")
    step = gc.function([x, t], [counter, m], updates=updates)  # the outputs see the values before the call
    for k in range(3):
        seen_counter, seen_m = step(x_value, t_value)
        assert seen_counter == k
        assert counter.value == k + 1
    assert np.any(seen_m) and not np.array_equal(seen_m, m.value)


def test_pickle_keeps_the_state_and_continues_the_trajectory():
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    step = gc.function([x, t], loss, updates=gc.optim.adam(loss, [w, b], lr=0.05))
    for _ in range(5):
        step(x_value, t_value)
    clone = pickle.loads(pickle.dumps(step))
    for _ in range(5):
        assert step(x_value, t_value) == clone(x_value, t_value)  # the same step count and moments
    reference, params = Adam(lr=0.05), [w0, b0]
    for _ in range(10):
        params = reference.step(params, numpy_loss_and_grads(x_value, t_value, *params)[1])
    np.testing.assert_allclose(w.value, params[0], rtol=RTOL)


def test_save_and_load_keep_the_state_and_continue_the_trajectory(tmp_path):
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    step = gc.function([x, t], loss, updates=gc.optim.sgd(loss, [w, b], 0.1, momentum=0.9, nesterov=True))
    for _ in range(4):
        step(x_value, t_value)
    gc.save(step, tmp_path / "step.gcf")
    loaded = gc.load(tmp_path / "step.gcf")
    for _ in range(6):
        assert step(x_value, t_value) == loaded(x_value, t_value)


# ---- hyper-parameters as tensors -------------------------------------------------------------

def test_learning_rate_changed_through_a_variable_without_recompiling():
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    lr = gc.variable(0.0, name="lr")
    step = gc.function([x, t], loss, updates=gc.optim.sgd(loss, [w, b], lr, momentum=0.5))
    plan = step.plan
    reference, params = SGD(0.0, momentum=0.5), [w0, b0]
    for rate in [0.0, 0.0, 0.3, 0.1, 0.0, 0.2]:
        lr.set_value(rate)
        reference.lr = rate
        params = reference.step(params, numpy_loss_and_grads(x_value, t_value, *params)[1])
        step(x_value, t_value)
        np.testing.assert_allclose(w.value, params[0], rtol=RTOL, atol=1e-15)
        if rate == 0.0 and reference.t <= 2:
            np.testing.assert_array_equal(w.value, w0)  # a zero rate does not move (momentum builds up)
    assert step.plan is plan
    assert not np.allclose(w.value, w0)


def test_a_schedule_computed_in_the_graph():
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    epoch = gc.variable(0.0, name="epoch")
    lr = 0.05 * 0.5 ** epoch                   # halves with every call
    updates = gc.optim.adam(loss, [w, b], lr=lr)
    updates[epoch] = epoch + 1.0
    step = gc.function([x, t], loss, updates=updates)
    reference, params = Adam(lr=0.05), [w0, b0]
    for k in range(8):
        reference.lr = 0.05 * 0.5 ** k
        params = reference.step(params, numpy_loss_and_grads(x_value, t_value, *params)[1])
        step(x_value, t_value)
    np.testing.assert_allclose(w.value, params[0], rtol=RTOL)


def test_float32_parameters_stay_float32():
    x_value, t_value, w0, b0 = make_data()
    x = gc.placeholder("x", shape=(None, 3), dtype="float32")
    t = gc.placeholder("t", shape=(None, 2), dtype="float32")
    w = gc.variable(w0.astype(np.float32), name="W")
    b = gc.variable(b0.astype(np.float32), name="b")
    loss = gc.mean(gc.square(gc.tanh(x @ w + b) - t))
    lr = gc.variable(0.05, name="lr")  # a float64 rate, cast to the parameters' dtype
    updates = gc.optim.adam(loss, [w, b], lr=lr)
    assert all(new.dtype == v.dtype for v, new in updates.items())
    step = gc.function([x, t], loss, updates=updates)
    reference, params = Adam(lr=0.05), [w0, b0]
    for _ in range(10):
        params = reference.step(params, numpy_loss_and_grads(x_value, t_value, *params)[1])
        step(x_value.astype(np.float32), t_value.astype(np.float32))
    assert w.value.dtype == np.float32
    np.testing.assert_allclose(w.value, params[0], rtol=1e-4, atol=1e-5)


# ---- clip_by_global_norm ---------------------------------------------------------------------

def test_clip_by_global_norm_values():
    a = gc.placeholder("a", shape=(3,))
    c = gc.placeholder("c", shape=(2, 2))
    (ca, cc), norm = gc.optim.clip_by_global_norm([a, c], 1.0)
    run = gc.function([a, c], [ca, cc, norm])
    small = (np.array([0.1, -0.2, 0.3]), np.array([[0.1, 0.0], [0.2, -0.1]]))
    got_a, got_c, got_norm = run(*small)
    np.testing.assert_array_equal(got_a, small[0])  # within the limit: unchanged, bit for bit
    np.testing.assert_array_equal(got_c, small[1])
    assert np.isclose(got_norm, np.sqrt(sum(np.sum(v * v) for v in small)), rtol=1e-15)
    large = (np.array([3.0, 0.0, 4.0]), np.array([[12.0, 0.0], [0.0, 0.0]]))
    got_a, got_c, got_norm = run(*large)
    assert got_norm == 13.0
    np.testing.assert_allclose(got_a, large[0] / 13.0, rtol=1e-15)
    np.testing.assert_allclose(got_c, large[1] / 13.0, rtol=1e-15)
    assert np.isclose(np.sqrt(np.sum(got_a ** 2) + np.sum(got_c ** 2)), 1.0, rtol=1e-15)
    assert norm.name == "global_norm"


def test_clip_by_global_norm_feeds_an_optimizer_with_a_tensor_limit():
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    limit = gc.variable(0.05, name="max_norm")
    clipped, norm = gc.optim.clip_by_global_norm(gc.grad(loss, [w, b]), limit)
    step = gc.function([x, t], norm, updates=gc.optim.sgd(clipped, [w, b], lr=0.5))
    params = [w0, b0]
    for _ in range(5):
        _, grads = numpy_loss_and_grads(x_value, t_value, *params)
        total = np.sqrt(sum(np.sum(g * g) for g in grads))
        scale = 0.05 / max(total, 0.05)
        params = [p - 0.5 * g * scale for p, g in zip(params, grads)]
        assert np.isclose(step(x_value, t_value), total, rtol=1e-12)
    np.testing.assert_allclose(w.value, params[0], rtol=RTOL)


def test_clip_by_global_norm_mixed_dtypes():
    a = gc.placeholder("a", shape=(2,), dtype="float32")
    b = gc.placeholder("b", shape=(2,))
    (ca, cb), norm = gc.optim.clip_by_global_norm([a, b], 2.5)
    assert ca.dtype == np.float32 and cb.dtype == np.float64 and norm.dtype == np.float64
    got = gc.function([a, b], [ca, cb, norm])(np.array([3.0, 0.0], np.float32), np.array([0.0, 4.0]))
    np.testing.assert_allclose(got[0], [1.5, 0.0], rtol=1e-7)
    np.testing.assert_allclose(got[1], [0.0, 2.0], rtol=1e-15)
    assert got[2] == 5.0


# ---- bad arguments -----------------------------------------------------------------------------

def _model():
    w = gc.variable(np.ones((2, 2)), name="W")
    b = gc.variable(np.zeros(2), name="b")
    return w, b, gc.sum(gc.square(w)) + gc.sum(b)


@pytest.mark.parametrize("build", [gc.optim.sgd, gc.optim.adam, gc.optim.adamw, gc.optim.rmsprop, gc.optim.adagrad])
def test_bad_arguments_are_clear_errors(build):
    w, b, loss = _model()
    with pytest.raises(ValueError, match="lr = -0.1 is out of range"):
        build(loss, [w, b], lr=-0.1)
    with pytest.raises(TypeError, match=r"params\[1\] is not a variable"):
        build(loss, [w, gc.placeholder("p", (2,))], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\] is not a variable .* ndarray"):
        build(loss, [np.ones(2)], lr=0.1)
    with pytest.raises(TypeError, match="params must be a list of variables"):
        build(loss, "W", lr=0.1)
    with pytest.raises(ValueError, match="params is empty"):
        build(loss, [], lr=0.1)
    with pytest.raises(ValueError, match="listed twice"):
        build(loss, [w, w], lr=0.1)
    with pytest.raises(gc.DTypeError, match="only floating-point variables can be trained"):
        build(loss, [gc.variable(np.arange(3), name="counts")], lr=0.1)
    with pytest.raises(ValueError, match="1 gradients for 2 parameters"):
        build([gc.grad(loss, w)], [w, b], lr=0.1)
    with pytest.raises(gc.ShapeError, match=r"gradient 1 has shape \(2, 2\), but its parameter .*'b'"):
        build([gc.grad(loss, w), gc.grad(loss, w)], [w, b], lr=0.1)
    with pytest.raises(TypeError, match="gradient 0 is a ndarray"):
        build([np.ones((2, 2))], [w], lr=0.1)
    with pytest.raises(ValueError, match="give a 0-d cost"):
        build(w * 2.0, [w], lr=0.1)
    with pytest.raises(TypeError, match="lr must be a number or a 0-d tensor, got str"):
        build(loss, [w], lr="0.1")
    with pytest.raises(TypeError, match="got bool"):
        build(loss, [w], lr=True)
    with pytest.raises(gc.ShapeError, match="lr must be a number or a 0-d tensor"):
        build(loss, [w], lr=gc.variable(np.ones(2), name="rates"))
    with pytest.raises(ValueError, match="out of range"):
        build(loss, [w], lr=float("nan"))
    build(loss, (w, b), lr=0.0)  # a zero rate is allowed, tuples too
    build(loss, w, lr=gc.variable(1, name="integer rate"))  # a single variable; an integer tensor is cast


def test_bad_hyper_parameters_of_each_rule():
    w, _, loss = _model()
    with pytest.raises(ValueError, match="momentum = -0.5"):
        gc.optim.sgd(loss, [w], 0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        gc.optim.sgd(loss, [w], 0.1, nesterov=True)
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        gc.optim.sgd(loss, [w], 0.1, momentum=0.9, nesterov="yes")
    with pytest.raises(ValueError, match="weight_decay = -1.0"):
        gc.optim.sgd(loss, [w], 0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"beta1 = 1.0 is out of range: it must be in \[0, 1\)"):
        gc.optim.adam(loss, [w], beta1=1.0)
    with pytest.raises(ValueError, match="beta2 = 1.5"):
        gc.optim.adamw(loss, [w], beta2=1.5)
    with pytest.raises(ValueError, match="eps = -1e-08"):
        gc.optim.adam(loss, [w], eps=-1e-8)
    with pytest.raises(ValueError, match="rho = 1.0"):
        gc.optim.rmsprop(loss, [w], rho=1.0)
    with pytest.raises(ValueError, match=r"max_norm = 0.0 is out of range: it must be in \(0, inf\]"):
        gc.optim.clip_by_global_norm([w], 0.0)
    with pytest.raises(TypeError, match="grads must be a list"):
        gc.optim.clip_by_global_norm(w, 1.0)
    with pytest.raises(ValueError, match="grads is empty"):
        gc.optim.clip_by_global_norm([], 1.0)
    with pytest.raises(gc.DTypeError, match=r"grads\[0\]"):
        gc.optim.clip_by_global_norm([gc.placeholder("n", (2,), "int64")], 1.0)


# ---- cross-check with PyTorch itself, when it is installed -------------------------------------

TORCH_CASES = {
    "sgd_nesterov": (lambda torch, ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.02),
                     lambda loss, ps: gc.optim.sgd(loss, ps, 0.1, momentum=0.8, nesterov=True, weight_decay=0.02)),
    "sgd_momentum": (lambda torch, ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                     lambda loss, ps: gc.optim.sgd(loss, ps, 0.1, momentum=0.9)),
    "adam": (lambda torch, ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
             lambda loss, ps: gc.optim.adam(loss, ps, lr=0.02, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1)),
    "adamw": (lambda torch, ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
              lambda loss, ps: gc.optim.adamw(loss, ps, lr=0.05, weight_decay=0.1)),
    "rmsprop": (lambda torch, ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1),
                lambda loss, ps: gc.optim.rmsprop(loss, ps, lr=0.01, rho=0.9, weight_decay=0.1)),
    "adagrad": (lambda torch, ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10),
                lambda loss, ps: gc.optim.adagrad(loss, ps, lr=0.1)),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_against_torch_optim_itself(case):
    torch = pytest.importorskip("torch")
    make_torch, make_graphc = TORCH_CASES[case]
    x_value, t_value, w0, b0 = make_data()
    x, t, w, b, loss = graph(x_value, t_value, w0, b0)
    step = gc.function([x, t], loss, updates=make_graphc(loss, [w, b]))
    tw = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    optimizer = make_torch(torch, [tw, tb])
    tx, tt = torch.tensor(x_value), torch.tensor(t_value)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch_loss = torch.mean((torch.tanh(tx @ tw + tb) - tt) ** 2)
        torch_loss.backward()
        optimizer.step()
        np.testing.assert_allclose(step(x_value, t_value), torch_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(w.value, tw.detach().numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(b.value, tb.detach().numpy(), rtol=1e-11, atol=1e-14)
