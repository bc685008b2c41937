"""Lowering: a graph becomes a Plan, straight-line Python over NumPy calls.

The plan is generated source code with one line per step. Everything that
can be decided once is decided here, at compile time, so that a call does
nothing but the NumPy work (measurements: docs/performance.md):

* **Schedule.** Steps follow a topological order; when the graph updates
  variables, each update's computation is pulled up right after its gradient
  is complete (while the arrays are hot in cache), so the gradient dies early.
* **Liveness.** Every intermediate is dropped right after its last use (views
  keep the buffer they look into alive). Values live in recycled local names:
  a result takes the name of an input that dies at its step.
* **Buffers.** Element-wise ops whose NumPy ufunc is known, and ``matmul``,
  write through ``out=``: into an input that dies at this step (in place), or
  into a dead buffer of the same shape and dtype, or (large arrays) into a
  spare buffer the caller passes (old variable values nobody references).
  Only buffers this call allocated, or spares, are ever written to: never a
  feed, a variable's value, a constant, a view of any of them, or a broadcast.
* **Lowering.** Each op says how it lowers (``Op.lowering()``: the NumPy
  function called with ``out=``; otherwise a call of ``impl``). The lowering
  rules, exact value for value and named in ``plan.explain()``: a ReLU mask
  ``x > 0`` is read from ``relu(x)`` (so the pre-activation dies at the ReLU,
  which then runs in place); ``g * cast(mask)`` multiplies by the boolean mask;
  a broadcast of one element feeding a ufunc is dropped; ``(w * 2**k) * s``
  becomes ``w * (s * 2**k)``; ``softmax - one_hot`` becomes the op
  ``softmax_minus_one_hot`` (one buffer). ``sum(square(x))`` over all axes is
  a dot product (the same value up to the order of the additions).
* **Fused nodes** from the optimizer's opt-in fusion are expanded back into
  their steps, which then share the plan's buffer reuse.
* **Scalar graphs** (every value 0-d) run on NumPy scalars with Python
  operators, an order of magnitude cheaper per op than ufunc calls on 0-d
  arrays; the results are the same IEEE operations.
* **Escapes.** Outputs and update values that could alias a feed, a variable,
  a constant or another output are copied; everything else is returned as is.
* **In-place updates** (opt-in, ``inplace_updates=True``): each new value is
  written into its variable's storage (``out=`` it, or a copy step) right after
  the last reader of the old value; readers of updated variables are scheduled
  early, updates wait for them, and late-used steps sink to their use, so the
  peak is that of a hand-written ``W -= lr * dW`` step (see ``_stage_inplace``).
* **Errors.** No per-step bookkeeping: when an op raises, the failing line of
  the generated code tells which step it was, and an ``ExecutionError`` names
  the op, its input shapes and the user's source line.
"""

from __future__ import annotations

import functools
import gc
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import ExecutionError, FeedError
from graphc.leaves import Constant, Placeholder, VariableLeaf
from graphc.numerics import instrument
from graphc.tensor import Tensor, Variable, toposort
from graphc.types import format_shape


@dataclass
class Plan:
    """A compiled graph: what to feed, what to read, and the generated ``run``.

    ``run(feeds, variables)`` takes the validated feed arrays (in ``inputs``
    order) and the variables' current values (in ``variables`` order) and
    returns the output values followed by the update values, none of them
    aliasing its arguments or each other.

    An ``inplace`` plan is ``run(feeds, variables, targets)``: ``targets`` has
    one entry per update, the writeable array the new value is written into
    (normally the variable's own storage, also passed in ``variables``) or
    None (the new value then goes into a fresh array). It returns the outputs
    followed by the arrays holding the new values (the targets, or the fresh
    arrays). When it fails, the ``ExecutionError`` lists the variables already
    written and carries ``_graphc_written`` ({update index: array}).
    """

    inputs: tuple[Tensor, ...]
    variables: tuple[Variable, ...]
    outputs: tuple[Tensor, ...]
    updates: tuple[tuple[Variable, Tensor], ...]
    steps: tuple[Tensor, ...]
    source: str
    run: Callable = field(repr=False)
    #: how each step was lowered (for tests and ``explain``): "call", "ufunc", "inplace", "reuse", "scalar", ...
    kinds: tuple[str, ...] = ()
    #: True when the plan runs on NumPy scalars (every value 0-d)
    scalar: bool = False
    #: True when the plan writes new values into the variables' storage (see ``build_plan``)
    inplace: bool = False
    #: True when every float step's value is checked for NaN and infinities (graphc/numerics.py)
    check_numerics: bool = False
    #: per step, the lowering rule that rewrote it ("" if none; see ``_peepholes``)
    rules: tuple[str, ...] = ()

    @property
    def updated_variables(self) -> tuple[Variable, ...]:
        return tuple(v for v, _ in self.updates)

    def graph_order(self) -> list[Tensor]:
        """Every node of the plan's graph, inputs before consumers (the order pickles and saved files use)."""
        roots = (list(self.inputs) + list(self.outputs) + [value for _, value in self.updates]
                 + list(self.updated_variables))
        return toposort(roots, stop_at=list(self.inputs))

    def explain(self) -> str:
        """One line per step: its lowering, op and type, and the lowering rule that made it, if one did."""
        rules = self.rules or ("",) * len(self.steps)
        return "\n".join(f"{i:4d} {kind:8s} {node.op} {format_shape(node.shape)} {node.dtype}"
                         + (f"  [rule {rule}]" if rule else "")
                         for i, (kind, node, rule) in enumerate(zip(self.kinds, self.steps, rules)))


def _as_array(value) -> np.ndarray:
    return value if type(value) is np.ndarray else np.asarray(value)


def _copy(value) -> np.ndarray:
    return np.array(value, copy=True)


def _fresh(result, *inputs):
    """``result`` if the plan may later write into it (``out=``), else a copy of it.

    Applied to steps whose code is not known to allocate (an op's ``impl``): an impl
    may hand back one of its inputs or a view of one (a fused op of a tampered file,
    ``stop_gradient``-like identities), and writing into that would overwrite a feed,
    a variable or a constant.
    """
    if (type(result) is np.ndarray and result.flags.writeable
            and not any(type(a) is np.ndarray and np.may_share_memory(result, a) for a in inputs)):
        return result
    return np.array(result, copy=True)


#: arrays at least this large try a spare buffer (see ``Plan.run``) before allocating
SPARE_MIN_BYTES = 1 << 20


def _grab(spare: dict | None, key: tuple) -> np.ndarray | None:
    """A spare buffer of this (shape, dtype) if the caller gave one, else None (allocate)."""
    if spare:
        free = spare.get(key)
        if free:
            return free.pop()
    return None


def _describe_failure(node: Tensor, arrays: Sequence, exc: Exception) -> ExecutionError:
    shapes = ", ".join(format_shape(np.shape(a)) + f" {np.asarray(a).dtype}" if a is not None else "?"
                       for a in arrays)
    site = f" created at {node.site[0]}:{node.site[1]}" if node.site else ""
    label = f" {node.name!r}" if node.name else ""
    return ExecutionError(f"op {node.op!r} (node{label}{site}) failed on inputs of shapes [{shapes}]: "
                          f"{type(exc).__name__}: {exc}")


# ---- op classes the backend lowers in its own way (exact classes: a subclass may compute something else) ----

_TABLES: dict[str, dict] = {}


def _tables() -> dict[str, dict]:
    """The op classes with lowerings of this backend's own (the ops declare everything else), by class."""
    if _TABLES:
        return _TABLES
    from graphc.ops import elementwise as ew
    from graphc.ops import linalg, nn, reduce, shape

    _TABLES.update(classes={"relu": ew.Relu, "cast": ew.Cast, "greater": ew.Greater, "mul": ew.Mul,
                            "sum": reduce.Sum, "square": ew.Square, "transpose": shape.Transpose,
                            "sum_to": shape.SumTo, "broadcast_like": shape.BroadcastLike,
                            "one_hot": shape.OneHot, "sub": ew.Sub, "softmax": nn.Softmax, "mean": reduce.Mean,
                            "zeros_like": ew.ZerosLike, "ones_like": ew.OnesLike, "matmul": linalg.Matmul,
                            "softmax_minus_one_hot": nn.SoftmaxMinusOneHot})
    return _TABLES


def _kernel(node: Tensor):
    """The function the op declares for a direct ``f(*arrays, out=...)`` call, or None (a call of ``impl``)."""
    lowering = getattr(node.primitive, "lowering", None)
    return lowering() if lowering is not None else None


def _static(node: Tensor) -> bool:
    """A known, non-empty-rank shape: its buffers can be reused through ``out=``."""
    return bool(node.shape) and None not in node.shape


# ---- scheduling ----------------------------------------------------------------------------

#: the most steps an eager consumer may pull forward with it (its missing ancestors)
_PULL_LIMIT = 8


def _schedule_eager(steps: list[Tensor], deps: dict[int, list[Tensor]], outputs: Sequence[Tensor],
                    update_values: Sequence[Tensor], pull_deps: dict[int, list[Tensor]] | None = None
                    ) -> list[Tensor]:
    """Reorder ``steps`` so that update computations run as soon as their inputs exist.

    Nodes needed only by updates are "eager". After any step is emitted, its
    eager consumers are tried, nearest-to-an-update first: a consumer is
    emitted at once, with its missing ancestors (a short, bounded walk that
    must find only eager nodes), and then its own consumers are tried, depth
    first. So each layer's weight gradient and new value are computed right
    after the layer's backpropagated error, while the arrays are hot, and the
    gradient dies at once. Everything else keeps the original order.

    ``pull_deps`` (default ``deps``) are the dependencies a step waits for when it is pulled
    forward: in-place updates add "after every reader of the old value" there, without
    changing the distances that order the candidates.
    """
    pull_deps = deps if pull_deps is None else pull_deps
    index = {id(n): i for i, n in enumerate(steps)}
    consumers: dict[int, list[Tensor]] = {id(n): [] for n in steps}
    for node in steps:
        for parent in dict.fromkeys(deps[id(node)]):
            if id(parent) in consumers:
                consumers[id(parent)].append(node)
    distance, eager = _eager_distances(steps, deps, consumers, outputs, update_values, index)
    if not eager:
        return steps
    return _emit_eagerly(steps, consumers, distance, eager, pull_deps, index)


def _eager_distances(steps, deps, consumers, outputs, update_values, index) -> tuple[dict[int, int], set[int]]:
    """(steps from each node to the nearest update value, the nodes only updates need)."""
    for_outputs: set[int] = set()
    stack = [t for t in outputs if id(t) in index]
    while stack:
        node = stack.pop()
        if id(node) in for_outputs:
            continue
        for_outputs.add(id(node))
        stack.extend(p for p in deps[id(node)] if id(p) in index)
    distance: dict[int, int] = {id(t): 0 for t in update_values if id(t) in index}
    for node in reversed(steps):
        best = distance.get(id(node))
        for consumer in consumers[id(node)]:
            dc = distance.get(id(consumer))
            if dc is not None and (best is None or dc + 1 < best):
                best = dc + 1
        if best is not None:
            distance[id(node)] = best
    return distance, {key for key in distance if key not in for_outputs}


def _emit_eagerly(steps, consumers, distance, eager, pull_deps, index) -> list[Tensor]:
    """``steps`` in order, each followed at once by the eager consumers it completes (see above)."""
    emitted: set[int] = set()
    order: list[Tensor] = []

    def pull(target: Tensor) -> list[Tensor] | None:
        missing, pending, seen = [], [target], {id(target)}
        while pending:
            node = pending.pop()
            if id(node) not in eager or len(missing) >= _PULL_LIMIT:
                return None
            missing.append(node)
            for parent in pull_deps[id(node)]:
                key = id(parent)
                if key in index and key not in emitted and key not in seen:
                    seen.add(key)
                    pending.append(parent)
        missing.sort(key=lambda n: index[id(n)])
        return missing

    def emit(node: Tensor) -> None:
        emitted.add(id(node))
        order.append(node)

    for node in steps:
        if id(node) in emitted:
            continue
        emit(node)
        # iterative depth-first expansion: a stack of (node, its candidate consumers)
        frames = [iter(sorted((c for c in consumers[id(node)] if id(c) in eager),
                              key=lambda c: distance[id(c)]))]
        while frames:
            consumer = next(frames[-1], None)
            if consumer is None:
                frames.pop()
                continue
            if id(consumer) in emitted:
                continue
            pulled = pull(consumer)
            if pulled is None:
                continue
            for item in pulled:
                emit(item)
            # expand the target's consumers first (top of the stack), then the pulled ancestors'
            for item in pulled:
                frames.append(iter(sorted((c for c in consumers[id(item)] if id(c) in eager),
                                          key=lambda c: distance[id(c)])))
    return order


# ---- lowering peepholes ----------------------------------------------------------------------

def _is_zero_scalar_constant(node: Tensor) -> bool:
    if not isinstance(node.primitive, Constant) or node.shape != ():
        return False
    value = node.primitive.value
    return value.dtype.kind in "biuf" and bool(value == 0)


def _is_exact_scale(node: Tensor) -> bool:
    """A 0-d float constant +-2**k with k >= 0: multiplying by it only shifts the exponent."""
    if not isinstance(node.primitive, Constant) or node.shape != () or node.dtype.kind != "f":
        return False
    value = abs(float(node.primitive.value))
    return value >= 1.0 and math.isfinite(value) and math.frexp(value)[0] == 0.5


def _peepholes(steps: list[Tensor], deps: dict[int, list[Tensor]], roots: set[int], tables: dict,
               special: dict[int, Callable], inserted: dict[int, list[Tensor]], replaced: dict[int, Tensor],
               fired: dict[int, str]) -> set[int]:
    """The lowering rules: rewrites of steps that save passes or memory; returns the steps to drop.

    ``special`` receives steps to be computed by another NumPy function of the new inputs;
    ``inserted`` new steps to compute right before a step; ``replaced`` steps whose value a new
    step (another op) computes; ``fired`` the name of the rule that changed each step.
    """
    classes = tables["classes"]
    relu_cls, greater_cls, cast_cls, mul_cls = classes["relu"], classes["greater"], classes["cast"], classes["mul"]
    position = {id(n): i for i, n in enumerate(steps)}
    consumers: dict[int, list[Tensor]] = {}
    for node in steps:
        for parent in deps[id(node)]:
            consumers.setdefault(id(parent), []).append(node)
    # x > 0 == relu(x) > 0 for every x (NaN included): read the mask from the ReLU output, so the
    # pre-activation can die at the ReLU (which then runs in place) instead of living until backprop.
    for node in steps:
        if type(node.primitive) is not greater_cls:
            continue
        x, zero = deps[id(node)]
        if x.dtype.kind != "f" or not _is_zero_scalar_constant(zero):
            continue
        for user in consumers.get(id(x), ()):
            if (type(user.primitive) is relu_cls and user.dtype == x.dtype and user.shape == x.shape
                    and position[id(user)] < position[id(node)]):
                deps[id(node)] = [user, zero]
                fired[id(node)] = "relu_mask"
                consumers.setdefault(id(user), []).append(node)
                break
    # g * cast(mask, g.dtype) == g * mask (NumPy multiplies by True/False as 1/0 in g's dtype)
    dropped: set[int] = set()
    for node in steps:
        if type(node.primitive) is not cast_cls or id(node) in roots:
            continue
        (mask,) = deps[id(node)]
        if mask.dtype != np.dtype(bool) or node.dtype.kind != "f":
            continue
        users = consumers.get(id(node), [])
        fits = bool(users)
        for user in users:
            operands = deps[id(user)]
            others = [p for p in operands if p is not node]
            if (type(user.primitive) is not mul_cls or len(operands) != 2 or len(others) != 1
                    or others[0].dtype != node.dtype or user.dtype != node.dtype):
                fits = False
                break
        if fits:
            for user in users:
                deps[id(user)] = [mask if p is node else p for p in deps[id(user)]]
                fired[id(user)] = "bool_mask_mul"
            dropped.add(id(node))
    # ufunc(broadcast(s), y) == ufunc(s, y) when y already has the broadcast shape: no view to build
    for node in steps:
        if (type(node.primitive) is not classes["broadcast_like"] or id(node) in roots
                or not _static(node) or len(deps[id(node)]) != 1):
            continue
        users = consumers.get(id(node), [])
        if users and all(_kernel(u) is not None and u.shape == node.shape
                         and any(p is not node and p.shape == node.shape for p in deps[id(u)])
                         for u in users):
            source = deps[id(node)][0]
            for user in users:
                deps[id(user)] = [source if p is node else p for p in deps[id(user)]]
                fired[id(user)] = "drop_scalar_broadcast"
                consumers.setdefault(id(source), []).append(user)
            dropped.add(id(node))
    # (w * c) * s -> w * (s * c) for a one-element s and a constant c = +-2**k, k >= 0: both products are
    # exact scalings, so the result is the same single rounding of w*s*c (barring overflow to inf).
    # This is the weight-decay gradient's shape; it saves one pass over the weights.
    for node in steps:
        if type(node.primitive) is not mul_cls or not _static(node) or id(node) in dropped:
            continue
        operands = deps[id(node)]
        for k, scaled in enumerate(operands):
            scale = operands[1 - k]
            if (type(scaled.primitive) is not mul_cls or id(scaled) in roots or id(scaled) in dropped
                    or any(d != 1 for d in scale.shape) or len(scale.shape) > len(node.shape)
                    or scale.dtype != node.dtype or scaled.dtype != node.dtype
                    or len(consumers.get(id(scaled), ())) != 1 or scaled is scale):
                continue
            w, c = deps[id(scaled)]
            if not _is_exact_scale(c):
                w, c = c, w
            if not _is_exact_scale(c) or w.shape != node.shape or w.dtype != node.dtype or c.dtype != node.dtype:
                continue
            factor = Tensor(mul_cls(), [scale, c], scale.shape, node.dtype, site=node.site,
                            is_gradient=node.is_gradient)
            deps[id(factor)] = [scale, c]
            deps[id(node)] = [w, factor]
            fired[id(node)] = "exact_scale"
            inserted.setdefault(id(node), []).append(factor)
            consumers.setdefault(id(w), []).append(node)
            dropped.add(id(scaled))
            break
    # softmax(z) - one_hot(labels) (the sparse cross-entropy's gradient) becomes the op that computes it
    # in one buffer, as by hand
    for node in steps:
        if type(node.primitive) is not classes["sub"] or id(node) in dropped or node.ndim != 2:
            continue
        probs, target = deps[id(node)]
        if (type(probs.primitive) is not classes["softmax"] or type(target.primitive) is not classes["one_hot"]
                or id(probs) in roots or id(target) in roots or id(probs) in dropped
                or len(consumers.get(id(probs), ())) != 1 or len(consumers.get(id(target), ())) != 1):
            continue
        (logits,) = deps[id(probs)]
        (labels,) = deps[id(target)]
        if (probs.primitive.axis in (1, -1) and logits.ndim == 2 and logits.dtype.kind == "f"
                and target.primitive.depth == logits.shape[1] and target.dtype == logits.dtype
                and node.dtype == logits.dtype and labels.ndim == 1 and labels.dtype.kind in "iu"):
            kernel = Tensor(classes["softmax_minus_one_hot"](), [logits, labels], node.shape, node.dtype,
                            name=node.name, site=node.site, is_gradient=node.is_gradient)
            deps[id(kernel)] = [logits, labels]
            inserted.setdefault(id(node), []).append(kernel)
            replaced[id(node)] = kernel
            fired[id(kernel)] = "softmax_minus_one_hot"
            dropped.update((id(node), id(probs), id(target)))
    # sum(square(x)) over every axis is a dot product of x with itself: one BLAS pass, no temporary
    # (the same value up to the order of the additions, which np.sum does not promise either)
    for node in steps:
        if type(node.primitive) is not classes["sum"] or node.shape != () or id(node) in dropped:
            continue
        (square,) = deps[id(node)]
        if (type(square.primitive) is classes["square"] and id(square) not in roots
                and square.dtype.kind == "f" and square.dtype == node.dtype and _static(square)
                and len(consumers.get(id(square), ())) == 1 and deps[id(square)][0].dtype == square.dtype):
            deps[id(node)] = [deps[id(square)][0]] * 2
            special[id(node)] = np.vdot
            fired[id(node)] = "sum_of_squares_dot"
            dropped.add(id(square))
    return dropped


# ---- scalar graphs ---------------------------------------------------------------------------

def _scalar_dtype(expression: str, dtypes: list[np.dtype]) -> np.dtype | None:
    """The dtype ``expression`` gives on NumPy scalars (ones) of these dtypes, or None if it fails there."""
    names = [f"a{k}" for k in range(len(dtypes))]
    try:
        with np.errstate(all="ignore"):
            value = eval(expression.format(*names), {"__builtins__": {}},  # noqa: S307 - the op's own declaration
                         {n: d.type(1) for n, d in zip(names, dtypes)})
    except Exception:  # noqa: BLE001 - then the ufunc lowering is used
        return None
    return getattr(value, "dtype", None)


def _scalar_expression(node: Tensor, args: list[str], inputs: list[Tensor], tables: dict,
                       namespace: dict, tag: str) -> str | None:
    """A Python expression computing ``node`` on NumPy scalars, or None."""
    classes = tables["classes"]
    op = node.primitive
    cls = type(op)
    expression = getattr(op, "scalar_expr", None)
    if expression is not None:
        skip = op.nondiff_inputs
        operands = {p.dtype for k, p in enumerate(inputs) if k not in skip}
        # The same IEEE operation when the operands have the node's dtype or, for a comparison, share one.
        # Operators on NumPy scalars call the very ufuncs, so they also do for mixed dtypes, as long as they
        # give the node's dtype (np.square of a bool is int8, bool * bool stays bool); a conditional picks
        # one operand, so it needs them all of the node's dtype.
        if operands == {node.dtype} or (node.dtype == np.bool_ and len(operands) == 1) or (
                " if " not in expression and _scalar_dtype(expression, [p.dtype for p in inputs]) == node.dtype):
            return expression.format(*args)
    if cls is classes["zeros_like"] or cls is classes["ones_like"]:
        namespace[f"_k{tag}"] = node.dtype.type(0 if cls is classes["zeros_like"] else 1)
        return f"_k{tag}"
    if cls is classes["cast"]:
        if inputs[0].dtype == np.dtype(bool):
            namespace[f"_one{tag}"], namespace[f"_zero{tag}"] = node.dtype.type(1), node.dtype.type(0)
            return f"(_one{tag} if {args[0]} else _zero{tag})"
        if node.dtype.kind == "f" and inputs[0].dtype.kind in "biuf":
            namespace[f"_t{tag}"] = node.dtype.type
            return f"_t{tag}({args[0]})"
        return None
    kernel = _kernel(node)
    if kernel is not None:
        namespace[f"_u{tag}"] = kernel
        return f"_u{tag}({', '.join(args)})"
    if cls is classes["relu"]:
        namespace[f"_u{tag}"], namespace[f"_z{tag}"] = np.maximum, np.zeros((), node.dtype)[()]
        return f"_u{tag}({args[0]}, _z{tag})"
    return None


def _expand_fused(node: Tensor, alias: dict[int, Tensor], steps: list[Tensor]) -> bool:
    """Append the steps of a ``fused`` node as ordinary nodes; False if it is not one.

    The executor then lowers every step itself, with buffer reuse across node
    boundaries (a fused node cannot write into its dying inputs) and without
    the fused node's per-call bookkeeping. Each step keeps its user source line.
    """
    op = node.primitive
    if op.name != "fused" or not all(hasattr(op, a) for a in ("steps", "n_inputs", "dtypes")):
        return False
    values: list[Tensor] = [alias.get(id(p), p) for p in node.inputs]
    if len(values) != op.n_inputs:
        return False
    sites = tuple(getattr(op, "sites", ()) or ())
    made: list[Tensor] = []
    for k, (step_op, args) in enumerate(op.steps):
        operands = [values[a] for a in args]
        shape, dtype = step_op.infer(*operands)
        if k < len(op.dtypes) and np.dtype(dtype) != np.dtype(op.dtypes[k]):
            return False
        last = k == len(op.steps) - 1
        site = sites[k] if k < len(sites) and sites[k] else node.site
        tensor = Tensor(step_op, operands, shape, dtype, name=node.name if last else None, site=site,
                        is_gradient=node.is_gradient)
        values.append(tensor)
        made.append(tensor)
    if not made or made[-1].shape != node.shape or made[-1].dtype != node.dtype:
        return False
    steps.extend(made)
    alias[id(node)] = made[-1]
    return True


# ---- in-place updates -------------------------------------------------------------------------

@dataclass(frozen=True)
class _CopyStep:
    """A pseudo-step: a fresh copy of a value that looks into an updated variable's storage,
    taken before that storage is overwritten (an output, or a new value such as a swap's)."""

    name = "copy"
    view = False

    def impl(self, array):  # pragma: no cover - lowered to ``_copy`` directly
        return _copy(array)


@dataclass(frozen=True)
class _WriteStep:
    """A pseudo-step: copy update ``index``'s new value into the variable's storage."""

    index: int
    variable: str
    name = "update"
    view = False


def _write(shape: tuple, dtype: np.dtype, variable: str, target, value) -> np.ndarray:
    """Write ``value`` into ``target`` (a variable's storage), or into a fresh array if None."""
    value = _as_array(value)
    if value.shape != shape:
        raise ValueError(f"the new value of variable {variable!r} has shape {format_shape(value.shape)}, "
                         f"the variable {format_shape(shape)}")
    if target is None:
        return np.array(value, dtype=dtype, order="C", copy=True)
    np.copyto(target, value, casting="unsafe")  # the dtype was checked (same_kind) when the function was built
    return target


def _order_for_inplace(steps: list[Tensor], deps: dict[int, list[Tensor]],
                       updates: Sequence[tuple[Variable, Tensor]]) -> tuple[list[Tensor], dict]:
    """Dependencies that make each update's last step follow every reader of the variable's old value.

    Returns the steps in a topological order of the extended dependencies and the
    extended dependencies (for scheduling only; the steps still compute from ``deps``).
    An update whose extra edges would close a cycle (a reader of the old value that
    needs the new value, or two updates reading each other's variable: a swap) gets
    none; its new value is then computed into a buffer of its own and copied in later.
    """
    looks = _looks_into(steps, deps, updates)
    index = {id(n): i for i, n in enumerate(steps)}
    extended = {key: list(parents) for key, parents in deps.items()}
    consumers: dict[int, list[int]] = {}
    for node in steps:
        for parent in deps[id(node)]:
            if id(parent) in index:
                consumers.setdefault(id(parent), []).append(id(node))
    for variable, value in updates:
        if id(value) not in index:
            continue
        readers = [n for n in steps if n is not value and (id(variable) in looks.get(id(n), ()) or any(
            id(variable) in looks.get(id(p), ()) for p in deps[id(n)]))]
        # an edge reader -> value would close a cycle if the value reaches a reader
        if not readers or _reaches(id(value), {id(r) for r in readers}, consumers):
            continue
        extended[id(value)] = extended[id(value)] + readers
        for reader in readers:
            consumers.setdefault(id(reader), []).append(id(value))
    # a topological order of the extended graph: the original order, except that the readers of an
    # updated variable run as soon as their inputs exist (an L2 term sum(W**2), which the loss needs
    # only at the end, would otherwise hold W's update, and W's gradient, until then)
    def rank(node: Tensor) -> tuple[int, int]:
        reads = any(looks.get(id(p)) for p in deps[id(node)]) and not node.primitive.view
        return (0 if reads else 1, index[id(node)])

    return _by_rank(steps, extended, consumers, index, rank), extended


def _reaches(start: int, targets: set[int], consumers: dict[int, list[int]]) -> bool:
    """Whether a path of consumers leads from ``start`` to one of ``targets`` (ids)."""
    seen, stack = {start}, [start]
    while stack:
        for nxt in consumers.get(stack.pop(), ()):
            if nxt in targets:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _by_rank(steps, extended, consumers, index, rank) -> list[Tensor]:
    """A topological order of ``extended`` taking, among the ready steps, the lowest ``rank`` first."""
    waiting = {id(n): sum(1 for p in extended[id(n)] if id(p) in index) for n in steps}
    ready = [rank(steps[index[key]]) for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[Tensor] = []
    while ready:
        node = steps[heapq.heappop(ready)[1]]
        order.append(node)
        for key in consumers.get(id(node), ()):
            waiting[key] -= 1
            if waiting[key] == 0:
                heapq.heappush(ready, rank(steps[index[key]]))
    if len(order) != len(steps):  # pragma: no cover - the edges added above never close a cycle
        raise AssertionError("plan compiler: a cycle in the in-place update order")
    return order


def _looks_into(steps, deps, updates) -> dict[int, frozenset]:
    """For each value, the updated variables whose storage it may look into (itself or a view)."""
    looks: dict[int, frozenset] = {id(v): frozenset((id(v),)) for v, _ in updates}
    for node in steps:
        if node.primitive.view:
            seen = frozenset().union(*(looks.get(id(p), frozenset()) for p in deps[id(node)]))
            if seen:
                looks[id(node)] = seen
    return looks


def _nbytes(node: Tensor) -> int:
    return int(np.prod(node.shape, dtype=np.int64)) * node.dtype.itemsize


def _uses(steps, deps, root_ids) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """(position of each step, the first and the last step using each value); a view keeps the
    buffer it looks into alive, so a value lives as long as its views do."""
    position = {id(n): i for i, n in enumerate(steps)}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, node in enumerate(steps):
        for parent in deps[id(node)]:
            first.setdefault(id(parent), i)
            last[id(parent)] = i
    for node in reversed(steps):
        if node.primitive.view:
            end = len(steps) if id(node) in root_ids else last.get(id(node), position[id(node)])
            for parent in deps[id(node)]:
                if id(parent) in position and last.get(id(parent), -1) < end:
                    last[id(parent)] = end
    return position, first, last


def _sink(steps: list[Tensor], deps: dict[int, list[Tensor]], root_ids: set[int],
          updates: Sequence[tuple[Variable, Tensor]] = ()) -> list[Tensor]:
    """Move each step down to just before its first consumer when that holds less memory.

    The eager schedule computes e.g. a ReLU mask right after the forward ReLU, and the mask then
    lives until the backward pass; computed right before its use, it lives one step. A step moves
    when the bytes x steps it stops holding exceed what its inputs are held longer (the ReLU's
    output, a few steps past the weight gradient that read it last). Used for in-place updates,
    whose purpose is a small peak. A step reading an updated variable stays: moving it down would
    hold back that variable's update (and keep its gradient alive).
    """
    looks = _looks_into(steps, deps, updates)
    position, first, last = _uses(steps, deps, root_ids)
    moved: dict[int, list[Tensor]] = {}
    sunk: set[int] = set()  # (a moved step's inputs stay where they are: they are not moved)
    for i, node in enumerate(steps):
        target = first.get(id(node))
        if (target is None or target <= i + 1 or id(node) in root_ids or node.primitive.view
                or not _static(node) or any(id(p) in sunk or id(p) in looks for p in deps[id(node)])):
            continue
        # bytes x steps: what the moved value no longer holds, against inputs held longer
        saved = _nbytes(node) * (target - i - 1)
        cost = sum(_nbytes(parent) * (target - last[id(parent)]) if _static(parent) else saved
                   for parent in deps[id(node)] if id(parent) in position and last[id(parent)] < target)
        if cost >= saved:
            continue
        for parent in deps[id(node)]:
            if id(parent) in position and last[id(parent)] < target:
                last[id(parent)] = target
        sunk.add(id(node))
        moved.setdefault(target, []).append(node)
    if not sunk:
        return steps
    order: list[Tensor] = []
    for i, node in enumerate(steps):
        order.extend(moved.get(i, ()))
        if id(node) not in sunk:
            order.append(node)
    return order


def _computes_into(value: Tensor, variable: Variable, deps, looks, tables) -> bool:
    """Whether the step computing ``value`` can write it with ``out=`` the variable's storage: a float
    ufunc or matmul (which does not read the variable) of the variable's shape and dtype."""
    cls = type(value.primitive)
    if (isinstance(value.primitive, _CopyStep) or value.primitive.view or not _static(value)
            or value.shape != variable.shape or value.dtype != variable.dtype or value.dtype.kind != "f"):
        return False
    if _kernel(value) is not None or cls is tables["classes"]["relu"]:
        return True
    return cls is tables["classes"]["matmul"] and not any(id(variable) in looks.get(id(p), ()) for p in deps[id(value)])


def _stage_inplace(steps: list[Tensor], deps: dict[int, list[Tensor]], outputs: list[Tensor],
                   updates: Sequence[tuple[Variable, Tensor]], tables: dict,
                   special: dict) -> tuple[list[Tensor], list[Tensor], dict[int, int], dict[int, int]]:
    """Insert the copies and writes of in-place updates into the schedule.

    Each new value is written into its variable's storage at the earliest point
    where every reader of the old value (views included) has run: by the step
    computing it (``out=`` the storage) when that step is the last reader and a
    ufunc or matmul of the variable's shape and dtype, else by a write step right
    after the last reader. Outputs and new values that look into an updated
    variable's storage are copied first, as soon as they exist.

    Returns the new steps, the outputs (copies substituted), the steps writing
    straight into a variable (id -> update index) and the write steps (id -> index).
    """
    position = {id(n): i for i, n in enumerate(steps)}
    looks = _looks_into(steps, deps, updates)
    last_read: dict[int, int] = {}  # variable id -> the last step reading its storage (views included)
    for i, node in enumerate(steps):
        for key in looks.get(id(node), frozenset()).union(*(looks.get(id(p), ()) for p in deps[id(node)])):
            last_read[key] = i
    copies_at: dict[int, list[Tensor]] = {}
    copies: dict[int, Tensor] = {}

    def copy_of(node: Tensor) -> Tensor:
        made = copies.get(id(node))
        if made is None:
            made = copies[id(node)] = Tensor(_CopyStep(), [node], node.shape, node.dtype, site=node.site,
                                             is_gradient=False)
            deps[id(made)] = [node]
            at = position.get(id(node), -1)
            position[id(made)] = at
            copies_at.setdefault(at, []).append(made)
            for key in looks[id(node)]:
                last_read[key] = max(last_read.get(key, -1), at)
        return made

    outputs = [copy_of(t) if looks.get(id(t)) else t for t in outputs]
    values = [copy_of(value) if looks.get(id(value)) else value for _, value in updates]
    used = {id(p) for n in steps for p in deps[id(n)]}
    returned = {id(t) for t in outputs}
    counts: dict[int, int] = {}
    for value in values:
        counts[id(value)] = counts.get(id(value), 0) + 1
    fused: dict[int, int] = {}
    writes: dict[int, int] = {}
    writes_at: dict[int, list[Tensor]] = {}
    for k, ((variable, _), value) in enumerate(zip(updates, values)):
        at = position.get(id(value), -1)
        if (at >= 0 and id(value) not in used and id(value) not in returned and counts[id(value)] == 1
                and id(value) not in special and last_read.get(id(variable), -1) <= at
                and _computes_into(value, variable, deps, looks, tables)):
            fused[id(value)] = k
            continue
        write = Tensor(_WriteStep(k, variable.name or f"<variable {k}>"), [value], variable.shape,
                       variable.dtype, site=value.site if value.site else variable.site, is_gradient=False)
        deps[id(write)] = [value]
        writes[id(write)] = k
        writes_at.setdefault(max(at, last_read.get(id(variable), -1)), []).append(write)
    staged = copies_at.get(-1, []) + writes_at.get(-1, [])
    for i, node in enumerate(steps):
        staged.append(node)
        staged.extend(copies_at.get(i, ()))
        staged.extend(writes_at.get(i, ()))
    return staged, outputs, fused, writes


# ---- the plan ----------------------------------------------------------------------------------

def build_plan(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
               updates: Sequence[tuple[Variable, Tensor]] = (), *, reuse_buffers: bool = True,
               schedule_updates: bool = True, scalar_mode: bool = True, peepholes: bool = True,
               expand_fused: bool = True, inplace_updates: bool = False, check_numerics: bool = False) -> Plan:
    """Lower the graph computing ``outputs`` and the update values to a Plan.

    ``inputs`` are the tensors fed at call time, in call order. Every
    placeholder the graph needs must be among them (else ``FeedError``). The
    keyword switches turn individual executor optimizations off (for tests and
    measurements); results are the same either way.

    ``inplace_updates=True`` (with updates) makes an in-place plan (see
    :class:`Plan`): each new value is written into its variable's storage as
    soon as every reader of the old value has run, and the update of a
    variable is scheduled after those readers where that is possible.

    ``check_numerics=True`` makes a checked plan (graphc/numerics.py): the first
    step whose value holds a NaN or an infinity while its inputs do not, or a
    non-finite feed or variable value, raises ``NumericsError`` (an
    ``ExecutionError``). It writes no step into its inputs' buffers, and cannot be
    an in-place plan. Without it the generated code is what it always was.
    """
    # Lowering allocates many small, long-lived objects; the cyclic collector would rescan the
    # whole graph again and again (measured: 40% of the time at 35,000 steps). Pause it.
    if check_numerics:
        if inplace_updates and updates:
            raise ValueError("check_numerics=True cannot be combined with inplace_updates=True: an in-place "
                             "call writes variables before it ends, so a failed check could not leave them "
                             "unchanged")
        reuse_buffers = False  # a step's inputs must still hold their values when its check runs
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build_plan(outputs, inputs, updates, reuse_buffers, schedule_updates, scalar_mode, peepholes,
                           expand_fused, inplace_updates, check_numerics)
    finally:
        if collecting:
            gc.enable()


def _build_plan(outputs, inputs, updates, reuse_buffers, schedule_updates, scalar_mode, peepholes,
                expand_fused, inplace_updates=False, check_numerics=False) -> Plan:
    outputs = tuple(outputs)
    updates = tuple(updates)
    inplace = bool(inplace_updates and updates)
    inputs = tuple(inputs)
    update_values = [new for _, new in updates]
    roots = list(outputs) + update_values
    order = toposort(roots, stop_at=list(inputs))
    names, defaults, variables, steps, leaves, alias = _collect(order, inputs, expand_fused)
    tables = _tables()
    roots = [alias.get(id(t), t) for t in roots]
    update_values = roots[len(outputs):]
    root_ids = {id(t) for t in roots}
    deps: dict[int, list[Tensor]] = {id(n): [alias.get(id(p), p) for p in n.inputs] for n in steps}
    special: dict[int, Callable] = {}
    fired: dict[int, str] = {}
    if peepholes:
        inserted: dict[int, list[Tensor]] = {}
        replaced: dict[int, Tensor] = {}
        dropped = _peepholes(steps, deps, root_ids, tables, special, inserted, replaced, fired)
        steps = [n for node in steps for n in inserted.get(id(node), []) + [node] if id(n) not in dropped]
        if replaced:  # a lowering rule's new op computes these steps' values
            deps = {key: [replaced.get(id(p), p) for p in parents] for key, parents in deps.items()}
            roots = [replaced.get(id(t), t) for t in roots]
            update_values = roots[len(outputs):]
            root_ids = {id(t) for t in roots}
    resolved_updates = [(var, value) for (var, _), value in zip(updates, update_values)]
    steps, roots, fused, writes = _schedule(steps, deps, roots, len(outputs), resolved_updates, inplace,
                                            schedule_updates, tables, special)
    for index, node in enumerate(steps):
        names[id(node)] = f"v{index}"
    namespace: dict[str, object] = {"_as_array": _as_array, "_copy": _copy, "_nd": np.array, "_grab": _grab,
                                    "_fresh": _fresh}
    scalar = not inplace and scalar_mode and bool(steps) and all(n.shape == () for n in order)
    if scalar:
        lines, kinds, line_step = _scalar_body(steps, deps, names, tables, namespace)
        scalar = lines is not None
    if scalar:
        namespace.update((key, value[()]) for key, value in defaults.items())
    else:
        namespace.update(defaults)
        lines, kinds, line_step = _array_body(steps, deps, names, leaves, roots, tables, namespace,
                                              reuse_buffers, special, fused, writes)
    if check_numerics:
        instrument(lines, line_step, steps, deps, names, namespace, inputs, variables)
    escaped = _escapes(roots[:len(outputs)] if inplace else roots, names, steps, scalar)
    if inplace:
        escaped.extend(f"t{k}" for k in range(len(updates)))  # the storage written, or fresh arrays
    source, offset = _source(len(inputs), len(variables), len(updates), namespace, lines, escaped, scalar,
                             inplace, check_numerics)
    step_of_line = {offset + line: step for line, step in line_step.items()}
    namespace["_failure"] = _failure_handler(steps, deps, names, defaults, step_of_line, fused, writes, updates,
                                             inplace)
    exec(compile(source, "<graphc plan>", "exec"), namespace)  # noqa: S102 - our own generated code
    return Plan(inputs, tuple(variables), outputs, updates, tuple(steps), source, namespace["run"],
                tuple(kinds), scalar, inplace, bool(check_numerics), tuple(fired.get(id(n), "") for n in steps))


def _schedule(steps, deps, roots, n_outputs, updates, inplace, schedule_updates, tables, special):
    """The steps in run order, the roots (outputs, then what each update returns), and for in-place
    plans the steps writing into a variable's storage (``fused``) and the write steps (``writes``)."""
    fused: dict[int, int] = {}
    writes: dict[int, int] = {}
    order_deps = deps
    if inplace:
        steps, order_deps = _order_for_inplace(steps, deps, updates)
    if schedule_updates and updates:
        steps = _schedule_eager(steps, deps, roots[:n_outputs], roots[n_outputs:], order_deps)
    if inplace:
        steps = _sink(steps, deps, {id(t) for t in roots}, updates)
        steps, staged_outputs, fused, writes = _stage_inplace(steps, deps, list(roots[:n_outputs]), updates,
                                                              tables, special)
        roots = staged_outputs + [n for n in steps if id(n) in fused]
    return steps, roots, fused, writes


def _collect(order: list[Tensor], inputs: tuple, expand_fused: bool):
    """(names, constants' values by name, variables, steps, leaves, fused node -> its last step).

    Leaves get their names (``x`` feeds, ``w`` variables, ``c`` constants); a placeholder that is
    not fed is a FeedError before anything runs; fused nodes are expanded into steps if asked.
    """
    input_ids = {id(t): k for k, t in enumerate(inputs)}
    names: dict[int, str] = {}
    defaults: dict[str, object] = {}
    variables: list[Variable] = []
    steps: list[Tensor] = []
    leaves: list[Tensor] = []
    alias: dict[int, Tensor] = {}  # a fused node -> the last of the steps it expands to
    for node in order:
        key = id(node)
        if key in input_ids:
            names[key] = f"x{input_ids[key]}"
            leaves.append(node)
        elif isinstance(node.primitive, Placeholder):
            raise FeedError(f"missing feed: the graph needs placeholder {node.name!r} ({node.describe()}), "
                            f"which is not fed (not in the feed_dict, or not among the function's inputs)")
        elif isinstance(node.primitive, VariableLeaf):
            names[key] = f"w{len(variables)}"
            variables.append(node)
            leaves.append(node)
        elif isinstance(node.primitive, Constant):
            names[key] = f"c{len(defaults)}"
            defaults[names[key]] = node.primitive.value
            leaves.append(node)
        elif not (expand_fused and _expand_fused(node, alias, steps)):
            steps.append(node)
    return names, defaults, variables, steps, leaves, alias



def _escapes(escaping: list[Tensor], names: dict[int, str], steps: list[Tensor], scalar: bool) -> list[str]:
    """The returned expressions: outputs and update values escape to the caller, so whatever could
    alias a feed, a variable, a constant, a view or another output is copied."""
    escaped: list[str] = []
    seen: set[int] = set()
    step_ids = {id(n) for n in steps}
    for tensor in escaping:
        name = names[id(tensor)]  # (roots are resolved: a fused root is its last expanded step)
        if scalar:
            escaped.append(f"_nd({name})")  # a fresh 0-d array from an immutable scalar
        elif id(tensor) not in step_ids or tensor.primitive.view or id(tensor) in seen:
            escaped.append(f"_copy({name})")
        elif _static(tensor):
            escaped.append(name)  # a fresh ndarray this call allocated
        else:
            escaped.append(f"_as_array({name})")  # fresh, but maybe a NumPy scalar
        seen.add(id(tensor))
    return escaped


def _source(n_inputs: int, n_variables: int, n_updates: int, namespace: dict, lines: list[str],
            escaped: list[str], scalar: bool, inplace: bool, check_numerics: bool) -> tuple[str, int]:
    """The ``run`` function's source, and the line number of its first body line minus one."""
    params = "feeds, variables, targets, _spare=None" if inplace else "feeds, variables, _spare=None"
    header = [f"def run({params}" + "".join(f", {n}={n}" for n in sorted(namespace)) + "):"]
    if n_inputs:
        header.append("    " + "".join(f"x{k}, " for k in range(n_inputs)) + "= feeds")
    if n_variables:
        header.append("    " + "".join(f"w{k}, " for k in range(n_variables)) + "= variables")
    if inplace:
        header.append("    " + "".join(f"t{k}, " for k in range(n_updates)) + "= targets")
    if scalar:
        header.extend(f"    x{k} = x{k}[()]" for k in range(n_inputs))
        header.extend(f"    w{k} = w{k}[()]" for k in range(n_variables))
    if check_numerics:
        header.insert(1, "    _check_leaves(feeds, variables)")
    header.append("    try:")
    body = [f"        {line}" for line in lines] or ["        pass"]
    footer = (["    except _NumericsError:", "        raise"] if check_numerics else []) + [
              "    except Exception as exc:",
              "        raise _failure(exc) from exc",
              f"    return ({''.join(e + ', ' for e in escaped)})"]
    return "\n".join(header + body + footer) + "\n", len(header) + 1  # line numbers start at 1


def _failure_handler(steps, deps, names, defaults, step_of_line, fused, writes, updates, inplace):
    """The plan's ``_failure``: the ExecutionError for an exception raised at a line of ``run``."""
    # in-place plans: the line writing each update (a write step, or a step computing into the storage)
    write_lines = sorted((line, fused.get(id(steps[step]), writes.get(id(steps[step]))))
                         for line, step in step_of_line.items()
                         if id(steps[step]) in fused or id(steps[step]) in writes)
    update_names = [var.name or f"<variable {k}>" for k, (var, _) in enumerate(updates)]

    def failure(exc: Exception) -> ExecutionError:
        tb = exc.__traceback__
        step = step_of_line.get(tb.tb_lineno) if tb is not None else None
        if step is None:  # pragma: no cover - only the op lines can raise
            return ExecutionError(f"graph execution failed: {type(exc).__name__}: {exc}")
        node = steps[step]
        frame_locals = tb.tb_frame.f_locals
        arrays = [frame_locals.get(names[id(p)], defaults.get(names[id(p)])) for p in deps[id(node)]]
        if id(node) in writes:
            error = ExecutionError(f"update of variable {update_names[writes[id(node)]]!r} failed: {exc}")
        else:
            error = _describe_failure(node, arrays, exc)
        if inplace:
            _report_written(error, tb.tb_lineno, write_lines, fused.get(id(node)), frame_locals, update_names)
        return error

    return failure


def compile_inner(graph) -> Callable:
    """An inner graph (a loop's body) compiled once into its own plan: ``run(arrays) -> tuple``."""
    plan = build_plan(list(graph.outputs), list(graph.inputs))
    return functools.partial(plan.run, variables=())


def _report_written(error: ExecutionError, line: int, write_lines: list, partial: int | None,
                    frame_locals: dict, update_names: list[str]) -> None:
    """Say in ``error`` which variables an in-place plan had already written when it failed."""
    written: dict[int, np.ndarray] = {}
    for write_line, k in write_lines:
        if write_line < line:
            written[k] = frame_locals.get(f"t{k}")
    changed = [update_names[k] for k in sorted(written)]
    # ``partial``: the failing step computes straight into a variable's storage. It is a float ufunc or
    # matmul, and NumPy checks shapes and casting before writing anything (float loops do not raise
    # with errors ignored), so it wrote nothing: that variable is unchanged.
    note = ("in-place updates: variables already updated by this call: " + ", ".join(map(repr, changed))
            if changed else "in-place updates: no variable had been updated yet")
    unchanged = [name for k, name in enumerate(update_names) if k not in written]
    if unchanged:
        note += "; unchanged: " + ", ".join(map(repr, unchanged))
    error.args = (f"{error.args[0]} [{note}]",) if error.args else (note,)
    error._graphc_written = {k: a for k, a in written.items() if a is not None}


def _scalar_body(steps, deps, names, tables, namespace):
    lines: list[str] = []
    kinds: list[str] = []
    line_step: dict[int, int] = {}
    for index, node in enumerate(steps):
        inputs = deps[id(node)]
        expression = _scalar_expression(node, [names[id(p)] for p in inputs], inputs, tables, namespace,
                                        str(index))
        if expression is None:
            return None, None, None
        line_step[len(lines)] = index
        lines.append(f"v{index} = {expression}")
        kinds.append("scalar")
    return lines, kinds, line_step


def _array_body(steps, deps, names, leaves, roots, tables, namespace, reuse_buffers, special, fused=None,
                writes=None):
    """Straight-line code over arrays, with ``out=`` buffer reuse decided here, once.

    ``fused`` (step id -> update index) are steps writing straight into target ``t{k}``;
    ``writes`` (step id -> update index) are in-place write steps (see ``_stage_inplace``).
    Three stages: buffer lifetimes, where each step writes (``_choose_targets``), and the
    code itself, a line per step (``_emit_lines``).
    """
    fused = fused or {}
    writes = writes or {}
    returned = {id(t) for t in roots}
    last_use: dict[int, int] = {}
    for index, node in enumerate(steps):
        for parent in deps[id(node)]:
            last_use[id(parent)] = index
    owned, buffer_end, ends_at = _buffer_lifetimes(steps, deps, leaves, returned, last_use, fused, writes)
    kinds = [_step_kind(node, tables, special, fused, writes) for node in steps]
    target, taken_at = ({}, {}) if not reuse_buffers else _choose_targets(steps, deps, kinds, owned, buffer_end,
                                                                         ends_at)
    frees: dict[int, list[int]] = {}  # step -> values whose names are dropped after it
    for key, index in last_use.items():
        if key in returned or names[key][0] not in "vx":
            continue
        if key in taken_at and taken_at[key] > index:
            frees.setdefault(taken_at[key], []).append(key)  # held for reuse, dropped once reused
        else:
            frees.setdefault(index, []).append(key)
    lines, line_step = _emit_lines(steps, deps, names, kinds, target, taken_at, frees, tables, namespace, special,
                                   fused, writes)
    return lines, kinds, line_step


def _buffer_lifetimes(steps, deps, leaves, returned, last_use, fused, writes):
    """(owned buffers, the step after which each buffer is dead, buffers by the step they die at).

    A value may look into the buffers of its inputs (views); only buffers a step allocated are
    "owned", never a variable's storage; a returned buffer never dies.
    """
    position = {id(n): i for i, n in enumerate(steps)}
    never = len(steps) + 1
    buffers: dict[int, tuple[int, ...]] = {id(n): (id(n),) for n in leaves}
    owned: dict[int, Tensor] = {}
    for node in steps:
        if node.primitive.view:
            buffers[id(node)] = tuple(dict.fromkeys(b for p in deps[id(node)] for b in buffers[id(p)]))
        else:
            buffers[id(node)] = (id(node),)
            if _static(node) and id(node) not in writes and id(node) not in fused:  # never the storage
                owned[id(node)] = node
    buffer_end: dict[int, int] = {}
    for node in list(leaves) + steps:
        end = never if id(node) in returned else last_use.get(id(node), position.get(id(node), -1))
        for buffer in buffers[id(node)]:
            if buffer_end.get(buffer, -1) < end:
                buffer_end[buffer] = end
    ends_at: dict[int, list[int]] = {}
    for buffer, end in buffer_end.items():
        if buffer in owned and end < never:
            ends_at.setdefault(end, []).append(buffer)
    return owned, buffer_end, ends_at


def _step_kind(node, tables, special, fused, writes) -> str:
    """How a step is lowered before buffers are chosen: "write", "copy", "special", "ufunc", ..."""
    cls = type(node.primitive)
    if id(node) in fused:
        return "to-var"  # computed straight into the variable's storage (out=)
    if id(node) in writes:
        return "write"
    if cls is _CopyStep:
        return "copy"
    if id(node) in special:
        return "special"
    if _kernel(node) is not None or cls is tables["classes"]["relu"]:
        return "ufunc"
    if cls is tables["classes"]["matmul"]:
        return "matmul"
    return "call"


def _choose_targets(steps, deps, kinds, owned, buffer_end, ends_at):
    """Where each ``out=`` capable step writes: (step index -> buffer, buffer -> step taking it).

    An input dying at the step (in place, ufuncs only), else a dead buffer of the same shape and
    dtype from the pool. Updates ``kinds`` with "inplace" / "reuse".
    """
    target: dict[int, int] = {}
    taken_at: dict[int, int] = {}
    pool: dict[tuple, list[int]] = {}
    for index, node in enumerate(steps):
        kind = kinds[index]
        if kind in ("ufunc", "matmul") and _static(node):  # a special kernel has no out=
            choice = None
            if kind == "ufunc":
                choice = next((id(p) for p in deps[id(node)]
                               if id(p) in owned and buffer_end[id(p)] == index and id(p) not in taken_at
                               and p.shape == node.shape and p.dtype == node.dtype), None)
                if choice is not None:
                    kinds[index] = "inplace"
            if choice is None and pool.get((node.shape, node.dtype)):
                choice = pool[(node.shape, node.dtype)].pop()
                kinds[index] = "reuse"
            if choice is not None:
                target[index] = choice
                taken_at[choice] = index
        for buffer in ends_at.get(index, ()):
            if buffer not in taken_at:
                dead = owned[buffer]
                pool.setdefault((dead.shape, dead.dtype), []).append(buffer)
    return target, taken_at


def _emit_lines(steps, deps, names, kinds, target, taken_at, frees, tables, namespace, special, fused, writes):
    """One line per step (plus ``del`` lines), values living in recycled local names.

    A step's result takes the name ("register") of an input that dies there, so rebinding
    drops the old value with no ``del`` line (fewer lines to compile, the same lifetimes).
    ``names`` ends up mapping each value to its name while it lives.
    """
    lines: list[str] = []
    line_step: dict[int, int] = {}
    register: dict[int, str] = {}
    free_registers: list[str] = []
    registers_made = 0
    live: dict[str, int] = {}  # name -> the value it holds
    for index, node in enumerate(steps):
        dying = frees.get(index, ())
        mine = target.get(index)
        if id(node) in fused or id(node) in writes:
            name = f"t{fused.get(id(node), writes.get(id(node)))}"
        elif mine is not None and mine in register and mine in dying:
            name = register[mine]
        else:
            name = next((register[k] for k in dying if k in register), None)
            if name is None:
                if not free_registers:
                    free_registers.append(f"r{registers_made}")
                    registers_made += 1
                name = free_registers.pop()
        out = f", out={names[target[index]]}" if index in target else ""
        if id(node) in fused:
            out = f", out={name}"
        call = _step_call(index, node, deps, names, kinds, out, name, tables, namespace, special)
        if id(node) in taken_at and kinds[index] in ("call", "special", "T", "reshape"):
            # a later step writes into this value's buffer: it must be one the plan allocated
            call = f"_fresh({call}{''.join(', ' + names[id(p)] for p in deps[id(node)])})"
        line_step[len(lines)] = index
        lines.append(f"{name} = {call}")
        dead = []
        for key in dying:
            old = names[key]
            if old != name:
                dead.append(old)
                if key in register:
                    free_registers.append(old)
        # invariant: a name is rebound only when the value it held has died here
        if name in live and live[name] not in dying:
            raise AssertionError(f"plan compiler: step {index} would overwrite a live value")
        for key in dying:
            live.pop(names[key], None)
        register[id(node)] = names[id(node)] = name
        live[name] = id(node)
        if dead:
            lines.append("del " + ", ".join(sorted(dead)))
    return lines, line_step


def _step_call(index, node, deps, names, kinds, out, name, tables, namespace, special) -> str:
    """The expression computing step ``index`` (its callables go into ``namespace``)."""
    cls = type(node.primitive)
    classes = tables["classes"]
    args = [names[id(p)] for p in deps[id(node)]]
    kind = kinds[index]
    if (not out and kind in ("ufunc", "matmul") and _static(node)
            and int(np.prod(node.shape)) * node.dtype.itemsize >= SPARE_MIN_BYTES):
        out = f", out=_grab(_spare, {(node.shape, node.dtype.str)!r})"
        kinds[index] = kind + "+spare"
    if kind == "call":
        return _cheap_call(index, node, deps, args, kinds, classes, namespace)
    if kind == "write":
        namespace[f"f{index}"] = functools.partial(_write, node.shape, node.dtype, node.primitive.variable)
        return f"f{index}({name}, {args[0]})"
    if kind == "copy":
        return f"_copy({args[0]})"
    if kind == "special":
        namespace[f"f{index}"] = special[id(node)]
        return f"f{index}({', '.join(args)})"
    if cls is classes["relu"]:
        namespace[f"f{index}"], namespace[f"z{index}"] = np.maximum, np.zeros((), node.dtype)
        return f"f{index}({args[0]}, z{index}{out})"
    # Matmul.impl is exactly np.matmul
    namespace[f"f{index}"] = np.matmul if cls is classes["matmul"] else _kernel(node)
    return f"f{index}({', '.join(args)}{out})"


def _cheap_call(index, node, deps, args, kinds, classes, namespace) -> str:
    """A step without ``out=``: ``x.T``, ``sum_to`` and ``mean`` as one reduction, else the op's impl."""
    cls = type(node.primitive)
    source = deps[id(node)][0].shape if deps[id(node)] else ()
    if cls is classes["transpose"] and tuple(node.primitive.axes) == tuple(reversed(range(len(node.shape)))):
        kinds[index] = "T"
        return f"{args[0]}.T"
    if (cls is classes["sum_to"] and _static(node) and len(args) == 1 and _static(deps[id(node)][0])
            and node.dtype.kind == "f"):
        lead = len(source) - len(node.shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, size in enumerate(node.shape)
                                          if size == 1 and source[lead + i] != 1)
        if not axes:
            kinds[index] = "reshape"
            return f"{args[0]}.reshape({node.shape!r})"
        namespace[f"f{index}"] = np.add.reduce
        kinds[index] = "reduce"
        keep = len(axes) != lead  # size-1 axes kept: reduce with keepdims, then drop the lead
        call = f"f{index}({args[0]}, axis={axes!r}, keepdims={keep})"
        return call + f".reshape({node.shape!r})" if keep else call
    if (cls is classes["mean"] and node.dtype.kind == "f" and len(args) == 1
            and deps[id(node)][0].dtype == node.dtype and None not in source):
        # np.mean's own arithmetic (a sum, then a true division by the count) without its
        # Python-level wrapper
        items = int(np.prod([source[a] for a in node.primitive.axes], dtype=np.int64))
        namespace[f"f{index}"] = np.add.reduce
        kinds[index] = "reduce"
        return (f"f{index}({args[0]}, axis={tuple(node.primitive.axes)!r}, "
                f"keepdims={bool(node.primitive.keepdims)}) / {items}")
    compiled = getattr(node.primitive, "compiled_impl", None)  # an op running inner graphs compiles them
    namespace[f"f{index}"] = compiled(compile_inner) if compiled is not None else node.primitive.impl
    return f"f{index}({', '.join(args)})"
