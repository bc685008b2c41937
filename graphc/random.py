"""Random streams: ``gc.random.Generator`` and ``gc.dropout``.

A counter-based design (see docs/random.md). A generator is a seed and a state
variable holding a call counter. Each draw (``gen.uniform(...)``, ...) is one
node whose op holds the generator's seed and a *salt*: the generator's draw
index (0 for its first draw, 1 for the second, ...). Its first input is the
state variable. The value is computed by NumPy's ``Philox`` bit generator keyed
by ``(seed, salt)``, with the counter value in its counter, so it is a pure
function of (seed, salt, counter, shape, parameters):

* the same program gives the same streams whatever else the graph holds (no
  global counter: a draw's salt counts only its own generator's draws);
* two draws never share a key, so CSE never merges them (the salt is a
  parameter) and, as every draw reads a variable, folding never folds them;
* every consumer of a draw, and every copy of its node (a clone made by the
  gradient's stabilization, say), sees the same value within a call;
* a call of a Function or ``Session.run`` computing a draw advances the state
  by one as part of the call's atomic updates (``graphc.function`` adds the
  update ``state -> state + 1`` itself), so the next call draws new values;
  two concurrent calls never read the same counter (a call whose only updates
  are such advances reserves its counters under the locks when it starts, then
  runs unlocked; other updating calls hold the locks throughout).

Random tensors have no gradient with respect to their parameters (the ops are
``zero_gradient``); gradients flow through what is built from them.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from typing import ClassVar

import numpy as np

from graphc.errors import DTypeError, ShapeError
from graphc.leaves import constant, variable
from graphc.op import Op, apply, as_tensor, op_dataclass
from graphc.ops import cast, div, equal, mul, stop_gradient, sub, where
from graphc.ops.shape import composite
from graphc.tensor import Tensor, Variable, toposort
from graphc.types import as_dtype, broadcast_shapes, broadcast_to_shape, format_shape, normalize_shape

__all__ = ["Generator", "dropout"]

#: seeds are ints in [0, SEED_LIMIT): one word of the Philox key (and a number the safe file format stores)
SEED_LIMIT = 1 << 62
_WORD = (1 << 64) - 1


#: whether any draw op was ever made in this process: until one is, compiling a function need not
#: look for draws (``graphc.function.random_updates``), so graphs without randomness pay nothing
_drawn = [False]


def draws_exist() -> bool:
    """Whether this process has made any draw op (so a graph may hold one)."""
    return _drawn[0]


_local = threading.local()


def _bit_generator(seed: int, salt: int, counter, step=0) -> np.random.Generator:
    """NumPy's Philox keyed by (seed, salt), its counter at the call counter: this draw's stream.

    Word 0 of the counter counts the blocks of one draw; word 1 is the call counter; word 2
    the step key of a draw inside a loop's body (0 outside loops, see ``step_draws``). Each
    thread keeps one Philox and sets its whole state per draw: constructing one costs a
    system call for OS entropy (later replaced by the key) and ten times as long.
    """
    cached = getattr(_local, "generator", None)
    if cached is None:
        cached = _local.generator = np.random.Generator(np.random.Philox(0))
    cached.bit_generator.state = {
        "bit_generator": "Philox",
        "state": {"counter": np.array([0, int(counter) & _WORD, int(step) & _WORD, 0], dtype=np.uint64),
                  "key": np.array([seed, salt], dtype=np.uint64)},
        "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0}
    return cached


def _param_shape(arrays) -> tuple:
    return np.broadcast_shapes(*(np.shape(a) for a in arrays)) if arrays else ()


@op_dataclass
class RandomOp(Op):
    """Base of the draws: inputs ``(state, *parameters[, like])``; see the module docstring.

    ``shape`` is the draw's static shape (entries int or None); None takes the
    parameters' broadcast shape, or, with ``like``, the ``like`` input's run-time shape.
    An unknown size in ``shape`` is the parameters' size at run time. A ``stepped`` draw
    (made inside a loop's step function, see ``step_draws``) has one more input, last:
    the 0-d int64 key of the loop's step, so that every step draws anew.
    """

    seed: int
    salt: int
    shape: tuple | None
    like: bool
    dtype: np.dtype
    stepped: bool = False

    #: the value depends on more than the inputs' values: never folded (see passes/fold.py)
    random: ClassVar[bool] = True
    zero_gradient = True
    #: how many parameter inputs follow the state
    n_params: ClassVar[int] = 0
    #: the dtype kinds the draw may have
    kinds: ClassVar[str] = "f"

    def __post_init__(self):
        if not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"{self.name}: seed must be an int in [0, 2**62), got {self.seed!r}")
        if not isinstance(self.salt, int) or not 0 <= self.salt < SEED_LIMIT:
            raise ValueError(f"{self.name}: salt must be an int in [0, 2**62), got {self.salt!r}")
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.shape is not None:
            object.__setattr__(self, "shape", normalize_shape(self.shape, f"{self.name} shape"))
        _drawn[0] = True

    def __reduce__(self):
        # unpickled through the constructor, so that ``draws_exist`` knows of it
        return type(self), (self.seed, self.salt, self.shape, self.like, self.dtype, self.stepped)

    def infer(self, *inputs):
        expected = 1 + self.n_params + (1 if self.like else 0) + (1 if self.stepped else 0)
        if len(inputs) != expected:
            raise TypeError(f"{self.name}: expected {expected} inputs, got {len(inputs)}")
        if self.stepped:
            key = inputs[-1]
            if key.shape != () or key.dtype.kind not in "iu":
                raise DTypeError(f"{self.name}: a loop's step key must be a 0-d integer tensor, got "
                                 f"{key.describe()}")
            inputs = inputs[:-1]
        state = inputs[0]
        if state.shape != () or state.dtype.kind not in "iu":
            raise DTypeError(f"{self.name}: the generator state must be a 0-d integer tensor, got "
                             f"{state.describe()}")
        if self.dtype.kind not in self.kinds:
            raise DTypeError(f"{self.name}: dtype {self.dtype} is not supported (kinds {self.kinds!r})")
        params = inputs[1:1 + self.n_params]
        for param in params:
            if param.dtype.kind not in "biuf":
                raise DTypeError(f"{self.name}: parameter {param.describe()} is not a number")
        param_shape = broadcast_shapes(self.name, [p.shape for p in params])
        if self.like:
            shape = inputs[-1].shape
        elif self.shape is None:
            shape = param_shape
        else:
            shape = self._resolve_static(self.shape, param_shape)
        try:
            broadcast_to_shape(self.name, param_shape, shape)
        except ShapeError:
            raise ShapeError(f"{self.name}: parameters of shape {format_shape(param_shape)} do not broadcast to "
                             f"the draw's shape {format_shape(shape)}") from None
        return shape, self.dtype

    def _resolve_static(self, shape: tuple, param_shape: tuple) -> tuple:
        lead = len(shape) - len(param_shape)
        result = list(shape)
        for axis, size in enumerate(shape):
            if size is not None:
                continue
            source = param_shape[axis - lead] if axis >= lead else 1
            if source == 1:
                raise ShapeError(f"{self.name}: shape {format_shape(shape)} has an unknown size at axis {axis} "
                                 f"that no parameter gives at run time; pass like=x to draw x's run-time shape")
            result[axis] = source
        return tuple(result)

    def run_shape(self, params, like) -> tuple:
        """The draw's shape at run time."""
        if self.like:
            return np.shape(like)
        if self.shape is not None and None not in self.shape:
            return self.shape
        param_shape = _param_shape(params)
        if self.shape is None:
            return param_shape
        lead = len(self.shape) - len(param_shape)
        return tuple(param_shape[axis - lead] if size is None else size for axis, size in enumerate(self.shape))

    def impl(self, state, *arrays):
        params = arrays[:self.n_params]
        like = arrays[self.n_params] if self.like else None
        shape = self.run_shape(params, like)
        step = arrays[-1] if self.stepped else 0
        return self.draw(_bit_generator(self.seed, self.salt, state, step), shape, *params)

    def draw(self, generator: np.random.Generator, shape: tuple, *params) -> np.ndarray:
        raise NotImplementedError

    def vjp(self, node, g):  # pragma: no cover - zero_gradient: the driver never asks
        return (None,) * len(node.inputs)


def _unit_uniform(generator: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Uniform in [0, 1) of ``dtype`` (float16 is drawn in float32 and rounded down to stay below 1)."""
    if dtype == np.float64 or dtype == np.float32:
        return generator.random(shape, dtype=dtype)
    wide = generator.random(shape, dtype=np.float32)
    narrow = wide.astype(dtype)
    return np.where(narrow >= 1, np.nextafter(dtype.type(1), dtype.type(0)), narrow).astype(dtype)


@op_dataclass
class RandomUniform(RandomOp):
    """``low + (high - low) * u`` with ``u`` uniform in [0, 1)."""

    name = "random_uniform"
    n_params = 2

    def draw(self, generator, shape, low, high):
        dtype = self.dtype
        low, high = np.asarray(low, dtype), np.asarray(high, dtype)
        unit = _unit_uniform(generator, shape, dtype)
        return np.asarray(low + (high - low) * unit, dtype=dtype)


@op_dataclass
class RandomNormal(RandomOp):
    """``mean + std * z`` with ``z`` standard normal (NumPy's ziggurat)."""

    name = "random_normal"
    n_params = 2

    def draw(self, generator, shape, mean, std):
        dtype = self.dtype
        wide = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)
        z = generator.standard_normal(shape, dtype=wide)
        return np.asarray(np.asarray(mean, dtype) + np.asarray(std, dtype) * z.astype(dtype), dtype=dtype)


@op_dataclass
class RandomBernoulli(RandomOp):
    """1 with probability ``p``, else 0 (``u < p`` for ``u`` uniform in [0, 1))."""

    name = "random_bernoulli"
    n_params = 1
    kinds = "biuf"

    def draw(self, generator, shape, p):
        p = np.asarray(p, dtype=np.float64)
        outside = ~((p >= 0) & (p <= 1))  # (NaN is outside)
        if outside.any():
            raise ValueError(f"probabilities must lie in [0, 1]; got {float(p[outside].ravel()[0])} at "
                             f"{int(np.count_nonzero(outside))} of {p.size} entries")
        return (generator.random(shape) < p).astype(self.dtype, copy=False)


@op_dataclass
class RandomIntegers(RandomOp):
    """Integers uniform in ``[low, high)`` (NumPy's ``Generator.integers``)."""

    name = "random_integers"
    n_params = 2
    kinds = "iu"

    def draw(self, generator, shape, low, high):
        return generator.integers(np.asarray(low, np.int64) if np.ndim(low) else int(low),
                                  np.asarray(high, np.int64) if np.ndim(high) else int(high),
                                  size=shape, dtype=self.dtype)


# ---- draws inside loops ----------------------------------------------------------------------
#
# A loop (``gc.scan``) runs its body many times within one call, at one counter value. So that
# each step draws anew, the loop gives its body one more sequence, the steps' keys (1, 2, ...,
# n), and every draw made by the step function takes the step's key as a last input (its
# Philox counter word 2). The key is a sequence of the loop like any other, so the loop's
# gradient (another loop, over the same sequences) sees every step's very draws again. Inside
# a loop nested in another, a step's key is ``outer key * 2**32 + step + 1``: distinct for
# inner loops of fewer than 2**32 steps (and outer keys below 2**31).

_tracing = threading.local()


@op_dataclass
class StepKeys(Op):
    """The keys of a loop's steps: int64 ``[1, ..., n]``, plus ``parent * 2**32`` when ``nested``.

    Inputs: the step count (a 0-d integer, ``from_count``) or a sequence whose first size it
    is; then, when ``nested``, the enclosing loop's step key.
    """

    from_count: bool
    nested: bool = False

    name = "random_step_keys"
    zero_gradient = True

    def infer(self, *inputs):
        if len(inputs) != 1 + self.nested:
            raise TypeError(f"{self.name}: expected {1 + self.nested} inputs, got {len(inputs)}")
        ref = inputs[0]
        if self.from_count:
            if ref.shape != () or ref.dtype.kind not in "iu":
                raise DTypeError(f"{self.name}: the step count must be a 0-d integer, got {ref.describe()}")
            from graphc.leaves import Constant

            n = int(ref.primitive.value) if isinstance(ref.primitive, Constant) else None
        else:
            if ref.ndim < 1:
                raise ShapeError(f"{self.name}: a sequence has at least one dimension, got {ref.describe()}")
            n = ref.shape[0]
        if self.nested and (inputs[1].shape != () or inputs[1].dtype.kind not in "iu"):
            raise DTypeError(f"{self.name}: the enclosing step key must be a 0-d integer, got "
                             f"{inputs[1].describe()}")
        return (n,), np.dtype(np.int64)

    def impl(self, ref, parent=None):
        n = int(ref) if self.from_count else np.shape(ref)[0]
        keys = np.arange(1, n + 1, dtype=np.int64)
        if self.nested:
            keys += np.int64(parent) << np.int64(32)  # (wraps modulo 2**64, as int64 arithmetic does)
        return keys


def begin_step_function() -> Tensor:
    """Called by a loop before it traces its step function: the step-key placeholder of its body.

    Tensors made from now on (serial numbers from the key's) belong to the step function.
    Pair with :func:`end_step_function`.
    """
    from graphc.leaves import placeholder

    key = placeholder("step key", (), "int64")
    stack = getattr(_tracing, "keys", None)
    if stack is None:
        stack = _tracing.keys = []
    stack.append(key)
    return key


def end_step_function(key: Tensor) -> None:
    stack = _tracing.keys
    if not stack or stack[-1] is not key:  # pragma: no cover - loops pair them in try/finally
        raise RuntimeError("random: step functions traced out of order")
    stack.pop()


def step_draws(outputs: list[Tensor], key: Tensor) -> tuple[list[Tensor], bool]:
    """``outputs`` with every draw the step function made keyed by the step: ``(outputs, used)``.

    The draws made since :func:`begin_step_function` returned ``key`` (and not already
    stepped: a gradient's body holds its forward body's stepped draws) are rebuilt with
    ``key`` as a last input, and everything built on them. ``used`` says whether the outputs
    depend on ``key`` (then the loop must feed it, a sequence made by :func:`step_keys`).
    Only tensors made by the step function are visited, never the outer graph behind them.
    """
    since = key.serial
    mapping: dict[int, Tensor] = {}
    used = False
    for node in toposort(outputs, skip=lambda t: t.serial < since):
        if node is key:
            used = True
            continue
        inputs = [mapping.get(id(p), p) for p in node.inputs]
        op = node.primitive
        if isinstance(op, RandomOp) and not op.stepped:
            mapping[id(node)] = Tensor(dataclasses.replace(op, stepped=True), [*inputs, key], node.shape,
                                       node.dtype, name=node.name, site=node.site, is_gradient=node.is_gradient)
            used = True
        else:
            mapping[id(node)] = node.with_inputs(inputs)  # the node itself when no input changed
    return [mapping.get(id(t), t) for t in outputs], used


def step_keys(n_steps: Tensor | int | None, sequence: Tensor | None) -> Tensor:
    """The outer sequence of a loop's step keys: from a 0-d count, a static count, or a sequence's
    length; nested in the loop whose step function is being traced, if any."""
    from graphc.leaves import constant

    stack = getattr(_tracing, "keys", None) or []
    parent = stack[-1] if stack else None
    if isinstance(n_steps, Tensor):
        ref, from_count = n_steps, True
    elif n_steps is not None:
        ref, from_count = constant(np.int64(n_steps)), True
    else:
        ref, from_count = sequence, False
    op = StepKeys(from_count=from_count, nested=parent is not None)
    return apply(op, ref, parent) if parent is not None else apply(op, ref)


# ---- the generator ---------------------------------------------------------------------------

def _check_seed(seed) -> int:
    if seed is None:
        return secrets.randbelow(SEED_LIMIT)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"Generator: seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"Generator: seed must lie in [0, 2**62), got {seed}")
    return int(seed)


def _float_param(value, what: str, dtype: np.dtype) -> Tensor:
    """A draw parameter as a tensor: a Python number becomes a constant of the draw's dtype."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DTypeError(f"{what} must be a number or a Tensor, got {value!r}")
    return constant(array.astype(dtype if dtype.kind == "f" else np.float64))


class Generator:
    """A random stream: ``gc.random.Generator(seed)``; its state is the variable ``gen.state``.

    Draws (:meth:`uniform`, :meth:`normal`, :meth:`bernoulli`, :meth:`integers`) are
    tensors whose values are fresh at every call of a Function or ``Session.run``
    that computes them: the call advances ``gen.state`` (a 0-d int64 counter) by one
    itself, atomically with its other updates (do not add an ``updates=`` entry for
    it). Two generators with the same seed, drawing the same way, give the same
    values call after call. ``seed`` is an int in [0, 2**62) (None: one from the
    operating system's entropy). A generator pickles with its state and draw count.
    """

    def __init__(self, seed: int | None, name: str | None = None) -> None:
        self.seed = _check_seed(seed)
        self.name = name
        self.state: Variable = variable(np.int64(0), name=f"{name or 'rng'}.state")
        self._draws = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<graphc.random.Generator seed={self.seed} draws={self._draws} state={int(self.state.value)}>"

    def __getstate__(self) -> dict:
        with self._lock:
            return {"seed": self.seed, "name": self.name, "state": self.state, "draws": self._draws}

    def __setstate__(self, state: dict) -> None:
        self.seed, self.name, self.state, self._draws = state["seed"], state["name"], state["state"], state["draws"]
        self._lock = threading.Lock()

    def _salt(self) -> int:
        # per generator, in the order of its draw calls: independent of any other generator or graph
        with self._lock:
            salt = self._draws
            self._draws += 1
        return salt

    def _make(self, cls: type[RandomOp], params: list[Tensor], shape, like, dtype, what: str) -> Tensor:
        if like is not None:
            if shape is not None:
                raise TypeError(f"{what}: give either shape or like=, not both")
            if not isinstance(like, Tensor):
                raise TypeError(f"{what}: like= must be a Tensor, got {type(like).__name__}")
        elif isinstance(shape, Tensor):
            raise TypeError(f"{what}: shape is a tuple of ints or None; to follow a tensor's run-time shape "
                            f"pass like=tensor")
        static = None if shape is None else normalize_shape(shape, f"{what} shape")
        op = cls(seed=self.seed, salt=self._salt(), shape=static, like=like is not None, dtype=as_dtype(dtype))
        inputs = [self.state, *params] + ([like] if like is not None else [])
        return apply(op, *inputs)

    def uniform(self, shape=None, low=0.0, high=1.0, dtype="float64", *, like: Tensor | None = None) -> Tensor:
        """Floats uniform in ``[low, high)``, of ``shape`` (ints or None) or of ``like``'s run-time shape.

        ``low`` and ``high`` are numbers or tensors (broadcast to the shape; no gradient
        flows to them). ``shape=None`` without ``like`` takes their broadcast shape. An
        unknown size (None) in ``shape`` is taken from the parameters at run time.
        """
        dtype = as_dtype(dtype)
        if dtype.kind != "f":
            raise DTypeError(f"uniform: dtype must be a float dtype, got {dtype}")
        _check_order(low, high, "uniform", "low", "high", strict=False)
        params = [_float_param(low, "uniform: low", dtype), _float_param(high, "uniform: high", dtype)]
        return self._make(RandomUniform, params, shape, like, dtype, "uniform")

    def normal(self, shape=None, mean=0.0, std=1.0, dtype="float64", *, like: Tensor | None = None) -> Tensor:
        """Floats from N(mean, std**2), of ``shape`` or of ``like``'s run-time shape (as :meth:`uniform`).

        No gradient flows to ``mean`` and ``std``; for a differentiable draw write
        ``mean + std * gen.normal(...)``.
        """
        dtype = as_dtype(dtype)
        if dtype.kind != "f":
            raise DTypeError(f"normal: dtype must be a float dtype, got {dtype}")
        if not isinstance(std, Tensor) and np.any(np.asarray(std) < 0):
            raise ValueError(f"normal: std must be non-negative, got {std!r}")
        params = [_float_param(mean, "normal: mean", dtype), _float_param(std, "normal: std", dtype)]
        return self._make(RandomNormal, params, shape, like, dtype, "normal")

    def bernoulli(self, p, shape=None, dtype="float64", *, like: Tensor | None = None) -> Tensor:
        """Zeros and ones, 1 with probability ``p`` (in [0, 1]); float64 unless ``dtype`` says otherwise.

        ``shape=None`` (and no ``like``) takes ``p``'s shape (its run-time shape when
        ``p`` is a tensor of unknown sizes).
        """
        dtype = as_dtype(dtype)
        if not isinstance(p, Tensor):
            array = np.asarray(p, dtype=np.float64)
            if not (np.all(array >= 0) and np.all(array <= 1)):
                raise ValueError(f"bernoulli: p must lie in [0, 1], got {p!r}")
        params = [_float_param(p, "bernoulli: p", np.dtype(np.float64))]
        return self._make(RandomBernoulli, params, shape, like, dtype, "bernoulli")

    def integers(self, low, high, shape=None, dtype="int64", *, like: Tensor | None = None) -> Tensor:
        """Integers uniform in ``[low, high)`` (``high`` excluded), of ``shape`` or ``like``'s shape."""
        dtype = as_dtype(dtype)
        if dtype.kind not in "iu":
            raise DTypeError(f"integers: dtype must be an integer dtype, got {dtype}")
        _check_order(low, high, "integers", "low", "high", strict=True)
        params = []
        for value, what in ((low, "low"), (high, "high")):
            if isinstance(value, Tensor):
                if value.dtype.kind not in "iu":
                    raise DTypeError(f"integers: {what} must be an integer tensor, got {value.describe()}")
                params.append(value)
            else:
                array = np.asarray(value)
                if array.dtype.kind not in "iu":
                    raise DTypeError(f"integers: {what} must be an integer, got {value!r}")
                info = np.iinfo(dtype)
                # (the bounds are carried as int64 constants)
                top = min(info.max + (what == "high"), np.iinfo(np.int64).max)
                if np.any(array < info.min) or np.any(array > top):
                    raise ValueError(f"integers: {what}={value!r} is out of range for {dtype}")
                params.append(constant(array.astype(np.int64)))
        return self._make(RandomIntegers, params, shape, like, dtype, "integers")


def _check_order(low, high, what: str, low_name: str, high_name: str, strict: bool) -> None:
    if isinstance(low, Tensor) or isinstance(high, Tensor):
        return
    low_a, high_a = np.asarray(low), np.asarray(high)
    if low_a.dtype.kind not in "biuf" or high_a.dtype.kind not in "biuf":
        return  # reported as a dtype error by the parameter's conversion
    bad = np.any(low_a >= high_a) if strict else np.any(low_a > high_a)
    if bad:
        relation = "<" if strict else "<="
        raise ValueError(f"{what}: needs {low_name} {relation} {high_name}, got {low!r} and {high!r}")


# ---- dropout ----------------------------------------------------------------------------------

def dropout(x, rate, gen: Generator, training=True) -> Tensor:
    """``x * mask / (1 - rate)`` with a Bernoulli mask of keep-probability ``1 - rate``.

    The mask has ``x``'s run-time shape and is drawn afresh at every call (from
    ``gen``). The identity (``x`` itself) when ``training`` is False or ``rate == 0``.
    ``training`` is a Python bool or a 0-d bool tensor (a placeholder or variable,
    to switch between training and evaluation without recompiling: both branches
    are computed and the mask's stream advances either way). ``rate`` is a number
    in [0, 1] (1 drops everything) or a 0-d floating-point tensor (to change the rate
    without recompiling; a value outside [0, 1] fails at run time, and the rate gets no
    gradient: the expected output does not depend on it). The gradient with respect to
    ``x`` is ``mask / (1 - rate)``, with the forward pass's mask. The result's ``op`` is
    ``"dropout"``.
    """
    if not isinstance(gen, Generator):
        raise TypeError(f"dropout: gen must be a gc.random.Generator, got {type(gen).__name__}")
    rate = _dropout_rate(rate)
    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise DTypeError(f"dropout: x must be floating point, got {x.describe()}")
    if isinstance(training, Tensor):
        if training.shape != () or training.dtype != np.dtype(bool):
            raise DTypeError(f"dropout: training must be a Python bool or a 0-d bool tensor, got "
                             f"{training.describe()}")
    elif isinstance(training, (bool, np.bool_)):
        training = bool(training)
        if not training:
            return x
    else:
        raise TypeError(f"dropout: training must be a Python bool or a 0-d bool tensor, got {training!r}")
    if isinstance(rate, Tensor):
        keep = stop_gradient(sub(1.0, rate))
        mask = gen.bernoulli(keep, dtype=bool, like=x)
        # a rate of 1 keeps nothing: x * mask is 0 there, divided by 1 instead of 0
        dropped = div(mul(x, mask), cast(where(equal(keep, 0.0), 1.0, keep), x.dtype))
    elif rate == 0.0:
        return x
    else:
        # a bool mask: multiplying by True/False is multiplying by 1/0 in x's dtype, one byte an entry
        mask = gen.bernoulli(1.0 - rate, dtype=bool, like=x)
        dropped = mul(x, mask) if rate == 1.0 else div(mul(x, mask), constant(np.asarray(1.0 - rate, x.dtype)))
    if isinstance(training, Tensor):
        dropped = where(training, dropped, x)
    return composite(dropped, "dropout")


def _dropout_rate(rate):
    """A Python float in [0, 1], or a 0-d floating-point tensor."""
    if isinstance(rate, Tensor):
        if rate.ndim != 0:
            raise ShapeError(f"dropout: rate must be a number or a 0-d tensor, got {rate.describe()}")
        if rate.dtype.kind != "f":
            raise DTypeError(f"dropout: a rate tensor must be floating point, got {rate.describe()}")
        return rate
    if isinstance(rate, np.ndarray) and rate.ndim == 0:
        rate = rate[()]
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout: rate must be a number in [0, 1] or a 0-d tensor, got {rate!r}")
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout: rate must lie in [0, 1], got {rate}")
    return rate
