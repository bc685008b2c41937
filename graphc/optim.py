"""Optimizers as graph updates: ``gc.optim.sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``.

Each optimizer takes a 0-d cost (it calls ``gc.grad``) or a list of gradient
tensors (one per parameter), and returns an updates dict ``{variable:
new_value}`` for ``gc.function(..., updates=...)``: the new parameter values and
the new values of the optimizer's own state, all computed from the values at the
start of the call and installed together (one atomic training step).

The update rules are the ones PyTorch documents for ``torch.optim`` (SGD with
``dampening=0``, Adam, AdamW, RMSprop with ``alpha=rho`` and neither
``centered`` nor ``momentum``, Adagrad with ``lr_decay=0`` and
``initial_accumulator_value=0``); ``docs/training.md`` writes them out. The
state lives in variables named after the parameter (``"W/adam_m"``,
``"W/adam_v"``, ``"W/momentum"``, ...) plus one step counter per optimizer call
(``"adam/step"``, an int64 0-d variable), all starting at zero; they are
ordinary variables, so pickle and ``gc.save``/``gc.load`` keep them.

Hyper-parameters are Python numbers or 0-d tensors: a ``gc.variable`` (change
it with ``set_value`` between calls: nothing is recompiled) or a schedule built
in the graph (``base_lr * 0.5 ** (step // 1000)``). Python numbers are checked
here (a negative learning rate is a ``ValueError``); a tensor's value cannot be
checked before it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.autodiff import grad
from graphc.errors import DTypeError, ShapeError
from graphc.leaves import variable
from graphc.ops import cast, maximum, sqrt, square
from graphc.ops import sum as reduce_sum
from graphc.tensor import Tensor, Variable
from graphc.types import format_shape, shapes_match

__all__ = ["adagrad", "adam", "adamw", "clip_by_global_norm", "rmsprop", "sgd"]

# ---- argument checking ------------------------------------------------------------------

def _params(params, where: str) -> list[Variable]:
    """The parameters as a list of distinct float Variables (one Variable is accepted alone)."""
    if isinstance(params, Variable):
        params = [params]
    elif isinstance(params, Tensor) or not isinstance(params, Sequence) or isinstance(params, str):
        raise TypeError(f"{where}: params must be a list of variables (gc.variable), got "
                        f"{type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError(f"{where}: params is empty; give the variables to train")
    seen: set[int] = set()
    for k, param in enumerate(params):
        if not isinstance(param, Variable):
            what = param.describe() if isinstance(param, Tensor) else type(param).__name__
            raise TypeError(f"{where}: params[{k}] is not a variable (gc.variable) but {what}; only "
                            f"variables can be updated")
        if param.dtype.kind != "f":
            raise DTypeError(f"{where}: params[{k}] ({param.describe()}) has dtype {param.dtype}; only "
                             f"floating-point variables can be trained")
        if id(param) in seen:
            raise ValueError(f"{where}: params[{k}] ({param.describe()}) is listed twice")
        seen.add(id(param))
    return params


def _gradients(loss_or_grads, params: list[Variable], where: str) -> list[Tensor]:
    """``gc.grad(cost, params)`` for a 0-d cost, or the given gradients, checked against params."""
    if isinstance(loss_or_grads, Tensor):
        if loss_or_grads.ndim != 0:
            raise ValueError(f"{where}: loss_or_grads is a tensor of shape {format_shape(loss_or_grads.shape)}; "
                             f"give a 0-d cost (reduce it with gc.mean or gc.sum) or a list of gradients, "
                             f"one per parameter")
        return list(grad(loss_or_grads, params))
    if not isinstance(loss_or_grads, Sequence) or isinstance(loss_or_grads, str):
        raise TypeError(f"{where}: loss_or_grads must be a 0-d cost tensor or a list of gradient tensors, got "
                        f"{type(loss_or_grads).__name__}")
    grads = list(loss_or_grads)
    if len(grads) != len(params):
        raise ValueError(f"{where}: {len(grads)} gradients for {len(params)} parameters; give one gradient "
                         f"per parameter, in the same order")
    for k, (g, param) in enumerate(zip(grads, params)):
        if not isinstance(g, Tensor):
            raise TypeError(f"{where}: gradient {k} is a {type(g).__name__}, not a Tensor")
        if g.dtype.kind != "f":
            raise DTypeError(f"{where}: gradient {k} ({g.describe()}) has dtype {g.dtype}, not floating point")
        if not shapes_match(g.shape, param.shape):
            raise ShapeError(f"{where}: gradient {k} has shape {format_shape(g.shape)}, but its parameter "
                             f"{param.describe()} has shape {format_shape(param.shape)}")
    return grads


def _hyper(value, name: str, where: str, low: float = 0.0, high: float | None = None,
           high_open: bool = False, low_open: bool = False):
    """A Python number checked against its range (as a float), or a 0-d numeric tensor; a 0-d
    NumPy array is the number it holds (``np.asarray(0.01)``, a value read back from a file)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ShapeError(f"{where}: {name} must be a number or a 0-d tensor, got {value.describe()}")
        if value.dtype.kind not in "fiu":
            raise DTypeError(f"{where}: {name} must be a number or a numeric 0-d tensor, got {value.describe()}")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: {name} must be a number or a 0-d tensor, got {type(value).__name__}")
    number = float(value)
    below = number <= low if low_open else number < low
    above = high is not None and (number >= high if high_open else number > high)
    if not np.isfinite(number) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{where}: {name} = {number!r} is out of range: it must be in {left}{low:g}, {upper}{right}")
    return number


def _typed(value, dtype: np.dtype):
    """A hyper-parameter in the arithmetic of ``dtype``: numbers stay Python (weak) scalars, tensors are cast."""
    if isinstance(value, Tensor) and value.dtype != dtype:
        return cast(value, dtype)
    return value


def _is_zero(value) -> bool:
    return not isinstance(value, Tensor) and value == 0.0


def _label(param: Variable, k: int) -> str:
    return param.name if param.name else f"param{k}"


def _slot(param: Variable, k: int, suffix: str) -> Variable:
    """A state variable shaped like ``param``, zero, named ``"<param>/<suffix>"``."""
    return variable(np.zeros(param.shape, dtype=param.dtype), name=f"{_label(param, k)}/{suffix}")


def _counter(name: str) -> Variable:
    return variable(np.zeros((), dtype=np.int64), name=f"{name}/step")


def _with_decay(g: Tensor, param: Variable, weight_decay) -> Tensor:
    """``g + weight_decay * param`` (L2 added to the gradient), nothing when the decay is the number 0."""
    if _is_zero(weight_decay):
        return g
    return g + _typed(weight_decay, param.dtype) * param


def _bias_correction(beta, step: Tensor, dtype: np.dtype) -> Tensor:
    """``1 - beta ** step``, computed in float64 (the step count is exact there) and cast to ``dtype``."""
    beta64 = _typed(beta, np.dtype(np.float64))
    correction = 1.0 - beta64 ** cast(step, np.float64)
    return correction if correction.dtype == dtype else cast(correction, dtype)


# ---- the optimizers ---------------------------------------------------------------------

def sgd(loss_or_grads, params, lr, momentum=0.0, nesterov: bool = False, weight_decay=0.0) -> dict:
    """Stochastic gradient descent, PyTorch's ``torch.optim.SGD`` with ``dampening=0``.

    Per parameter ``p`` with gradient ``g``::

        g = g + weight_decay * p
        b = momentum * b + g                  (b starts at 0, in "p/momentum")
        g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    Without momentum (the number 0) there is no state. ``nesterov=True`` needs a
    momentum. Returns the updates dict for ``gc.function``.
    """
    where = "gc.optim.sgd"
    params = _params(params, where)
    lr = _hyper(lr, "lr", where)
    momentum = _hyper(momentum, "momentum", where)
    weight_decay = _hyper(weight_decay, "weight_decay", where)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"{where}: nesterov must be True or False, got {nesterov!r}")
    if nesterov and _is_zero(momentum):
        raise ValueError(f"{where}: nesterov=True needs a momentum (got momentum=0)")
    grads = _gradients(loss_or_grads, params, where)
    updates: dict = {}
    for k, (param, g) in enumerate(zip(params, grads)):
        g = _with_decay(g, param, weight_decay)
        if not _is_zero(momentum):
            mu = _typed(momentum, param.dtype)
            buffer = _slot(param, k, "momentum")
            new_buffer = mu * buffer + g
            updates[buffer] = new_buffer
            g = g + mu * new_buffer if nesterov else new_buffer
        updates[param] = param - _typed(lr, param.dtype) * g
    return _ordered(updates, params)


def _adam_like(where: str, name: str, loss_or_grads, params, lr, beta1, beta2, eps, weight_decay,
               decoupled: bool) -> dict:
    params = _params(params, where)
    lr = _hyper(lr, "lr", where)
    beta1 = _hyper(beta1, "beta1", where, 0.0, 1.0, high_open=True)
    beta2 = _hyper(beta2, "beta2", where, 0.0, 1.0, high_open=True)
    eps = _hyper(eps, "eps", where)
    weight_decay = _hyper(weight_decay, "weight_decay", where)
    grads = _gradients(loss_or_grads, params, where)
    step = _counter(name)
    new_step = step + 1
    updates: dict = {step: new_step}
    for k, (param, g) in enumerate(zip(params, grads)):
        dtype = param.dtype
        b1, b2 = _typed(beta1, dtype), _typed(beta2, dtype)
        rate = _typed(lr, dtype)
        if decoupled:
            # AdamW: the decay shrinks the parameter itself, outside the moments
            start = param if _is_zero(weight_decay) else param * (1.0 - rate * _typed(weight_decay, dtype))
        else:
            g = _with_decay(g, param, weight_decay)
            start = param
        m, v = _slot(param, k, f"{name}_m"), _slot(param, k, f"{name}_v")
        new_m = b1 * m + (1.0 - b1) * g
        new_v = b2 * v + (1.0 - b2) * square(g)
        m_hat = new_m / _bias_correction(beta1, new_step, dtype)
        v_hat = new_v / _bias_correction(beta2, new_step, dtype)
        updates[m], updates[v] = new_m, new_v
        updates[param] = start - rate * m_hat / (sqrt(v_hat) + _typed(eps, dtype))
    return _ordered(updates, params)


def adam(loss_or_grads, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0) -> dict:
    """Adam with bias correction, PyTorch's ``torch.optim.Adam`` (``amsgrad=False``).

    With ``t`` the step count (1 at the first call)::

        g = g + weight_decay * p              (L2 added to the gradient)
        m = beta1 * m + (1 - beta1) * g       ("p/adam_m")
        v = beta2 * v + (1 - beta2) * g**2    ("p/adam_v")
        p = p - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    ``t`` is the int64 variable ``"adam/step"``. Returns the updates dict.
    """
    return _adam_like("gc.optim.adam", "adam", loss_or_grads, params, lr, beta1, beta2, eps, weight_decay,
                      decoupled=False)


def adamw(loss_or_grads, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01) -> dict:
    """AdamW (decoupled weight decay), PyTorch's ``torch.optim.AdamW``.

    As :func:`adam` without the L2 term, the parameter being shrunk first::

        p = p * (1 - lr * weight_decay)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)

    State: ``"p/adamw_m"``, ``"p/adamw_v"``, ``"adamw/step"``. Returns the updates dict.
    """
    return _adam_like("gc.optim.adamw", "adamw", loss_or_grads, params, lr, beta1, beta2, eps, weight_decay,
                      decoupled=True)


def rmsprop(loss_or_grads, params, lr=1e-3, rho=0.9, eps=1e-8, weight_decay=0.0) -> dict:
    """RMSprop, PyTorch's ``torch.optim.RMSprop`` with ``alpha=rho``, not centered, no momentum::

        g = g + weight_decay * p
        s = rho * s + (1 - rho) * g**2        ("p/rmsprop_s")
        p = p - lr * g / (sqrt(s) + eps)

    Returns the updates dict.
    """
    where = "gc.optim.rmsprop"
    params = _params(params, where)
    lr = _hyper(lr, "lr", where)
    rho = _hyper(rho, "rho", where, 0.0, 1.0, high_open=True)
    eps = _hyper(eps, "eps", where)
    weight_decay = _hyper(weight_decay, "weight_decay", where)
    grads = _gradients(loss_or_grads, params, where)
    updates: dict = {}
    for k, (param, g) in enumerate(zip(params, grads)):
        dtype = param.dtype
        g = _with_decay(g, param, weight_decay)
        r = _typed(rho, dtype)
        s = _slot(param, k, "rmsprop_s")
        new_s = r * s + (1.0 - r) * square(g)
        updates[s] = new_s
        updates[param] = param - _typed(lr, dtype) * g / (sqrt(new_s) + _typed(eps, dtype))
    return _ordered(updates, params)


def adagrad(loss_or_grads, params, lr=1e-2, eps=1e-10, weight_decay=0.0) -> dict:
    """Adagrad, PyTorch's ``torch.optim.Adagrad`` with ``lr_decay=0`` and ``initial_accumulator_value=0``::

        g = g + weight_decay * p
        s = s + g**2                          ("p/adagrad_s")
        p = p - lr * g / (sqrt(s) + eps)

    Returns the updates dict.
    """
    where = "gc.optim.adagrad"
    params = _params(params, where)
    lr = _hyper(lr, "lr", where)
    eps = _hyper(eps, "eps", where)
    weight_decay = _hyper(weight_decay, "weight_decay", where)
    grads = _gradients(loss_or_grads, params, where)
    updates: dict = {}
    for k, (param, g) in enumerate(zip(params, grads)):
        dtype = param.dtype
        g = _with_decay(g, param, weight_decay)
        s = _slot(param, k, "adagrad_s")
        new_s = s + square(g)
        updates[s] = new_s
        updates[param] = param - _typed(lr, dtype) * g / (sqrt(new_s) + _typed(eps, dtype))
    return _ordered(updates, params)


def clip_by_global_norm(grads, max_norm) -> tuple[list[Tensor], Tensor]:
    """``(clipped_grads, global_norm)``: the gradients scaled together so that their joint norm is at most ``max_norm``.

    ``global_norm = sqrt(sum_k sum(g_k**2))`` (a 0-d float64 tensor, named
    ``"global_norm"``) and ``clipped_k = g_k * max_norm / maximum(global_norm,
    max_norm)``: gradients whose joint norm is within the limit come back
    unchanged (multiplied by exactly 1), larger ones keep their direction. A
    NaN or infinite norm makes every clipped gradient NaN, which a NaN check
    (``check_numerics``) then reports. ``max_norm`` is a positive number or a 0-d tensor.
    """
    where = "gc.optim.clip_by_global_norm"
    if isinstance(grads, Tensor) or not isinstance(grads, Sequence) or isinstance(grads, str):
        raise TypeError(f"{where}: grads must be a list of gradient tensors, got {type(grads).__name__}")
    grads = list(grads)
    if not grads:
        raise ValueError(f"{where}: grads is empty")
    for k, g in enumerate(grads):
        if not isinstance(g, Tensor):
            raise TypeError(f"{where}: grads[{k}] is a {type(g).__name__}, not a Tensor")
        if g.dtype.kind != "f":
            raise DTypeError(f"{where}: grads[{k}] ({g.describe()}) has dtype {g.dtype}, not floating point")
    max_norm = _hyper(max_norm, "max_norm", where, low_open=True)
    float64 = np.dtype(np.float64)
    total = None
    for g in grads:
        term = reduce_sum(square(g if g.dtype == float64 else cast(g, float64)))
        total = term if total is None else total + term
    global_norm = sqrt(total).with_name("global_norm")
    limit = _typed(max_norm, float64)
    scale = limit / maximum(global_norm, limit)
    clipped = [g * (scale if g.dtype == float64 else cast(scale, g.dtype)) for g in grads]
    return clipped, global_norm


def _ordered(updates: dict, params: list[Variable]) -> dict:
    """The parameters first (in the caller's order), then the optimizer's state."""
    result = {param: updates[param] for param in params}
    for key, value in updates.items():
        if key not in result:
            result[key] = value
    return result
