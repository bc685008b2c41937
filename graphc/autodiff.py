"""Symbol-to-symbol differentiation: grad, vjp, jvp, jacobian, hessian.

The reverse pass walks, in reverse topological order, only the tensors on a
path from ``wrt`` to the outputs; it sums every tensor's incoming cotangents
before propagating them (so the gradient graph stays linear in size under
fan-out), calls each op's ``vjp`` rule, undoes broadcasting once here (never in
the rules), and marks every tensor it builds as a gradient node.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.errors import DTypeError, GradientError, ShapeError
from graphc.hooks import Hook
from graphc.op import as_tensor, constant
from graphc.ops.elementwise import add, cast, ones_like, zeros_like
from graphc.ops.shape import broadcast_like, broadcast_to, getitem, identity, reshape, stack, sum_to
from graphc.tensor import Tensor, building_gradient, collector_paused, toposort
from graphc.types import broadcast_to_shape, format_shape

#: ``(outputs, wrt, order) -> outputs``: the forward graph that is differentiated, rewritten first so that
#: the gradient is built from stable primitives (``log(softmax(x)) -> log_softmax(x)``, ...). Rewriting the
#: forward graph later cannot repair a gradient already built from the naive form. ``order`` is
#: ``toposort(outputs)``, which the driver needs anyway (the rewrite need not sort the graph again).
#: ``graphc.passes`` provides its stabilizer; until then the graph is differentiated as it is.
FORWARD_REWRITE = Hook("the forward rewrite before differentiation", "graphc.passes",
                       default=lambda outputs, wrt, order: list(outputs))


def _as_list(value) -> tuple[list, bool]:
    """(items, was_a_sequence)."""
    if isinstance(value, (list, tuple)):
        return list(value), True
    return [value], False


def _restore(items: list, was_sequence: bool, like):
    if not was_sequence:
        return items[0]
    return type(like)(items) if isinstance(like, tuple) else list(items)


def _check_tensors(what: str, items: Sequence) -> None:
    for k, item in enumerate(items):
        if not isinstance(item, Tensor):
            raise TypeError(f"{what} must be a Tensor or a list/tuple of Tensors; item {k} is a "
                            f"{type(item).__name__}")


def _check_wrt(wrt: Sequence[Tensor]) -> None:
    for tensor in wrt:
        if not isinstance(tensor, Tensor):
            raise TypeError(f"wrt must hold Tensors, got {type(tensor).__name__}")
        if tensor.dtype.kind != "f":
            raise DTypeError(f"cannot differentiate with respect to {tensor.describe()}: "
                             f"its dtype {tensor.dtype} is not floating point")


def _fit_to_input(cotangent: Tensor, target: Tensor) -> Tensor:
    """Sum a cotangent back to its input's shape (undo broadcasting) and dtype."""
    fitted = sum_to(cotangent, target)
    if fitted.dtype != target.dtype:
        fitted = cast(fitted, target.dtype)
    return fitted


def _seed_for(seed: Tensor, output: Tensor) -> Tensor:
    """A cotangent seed broadcast to its output's shape and cast to its dtype."""
    if seed.shape != output.shape or None in seed.shape:
        seed = broadcast_like(seed, output)
    return seed if seed.dtype == output.dtype else cast(seed, output.dtype)


def _seeds(function: str, kind: str, items: list, targets: list[Tensor]) -> list[Tensor]:
    """The seeds as tensors; each must broadcast (one way) to its target's shape, never summed down."""
    seeds = []
    for k, (item, target) in enumerate(zip(items, targets)):
        if item is None:
            raise TypeError(f"{function}: {kind} {k} is None; give an array or a tensor (zeros where "
                            f"{target.describe()} should not contribute)")
        seed = as_tensor(item)
        try:
            broadcast_to_shape(function, seed.shape, target.shape)
        except ShapeError:
            raise ShapeError(f"{function}: a {kind} of shape {format_shape(seed.shape)} does not broadcast "
                             f"to the shape {format_shape(target.shape)} of {target.describe()}") from None
        seeds.append(seed)
    return seeds


def zeros_for(tensor: Tensor) -> Tensor:
    """Zeros shaped like ``tensor``; independent of its value when its shape is known."""
    if None in tensor.shape:
        return zeros_like(tensor)
    return broadcast_to(constant(np.zeros((), tensor.dtype)), tensor.shape)


def _sum_all(terms: list[Tensor]) -> Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = add(total, term)
    return total


def _reaching(order: list[Tensor], wrt: Sequence[Tensor]) -> set[Tensor]:
    """The tensors through which a gradient can reach some ``wrt``: float, not piecewise constant.

    (A set of the tensors themselves, which hash by identity, as the sweep's other tables.)"""
    reaches: set[Tensor] = set(wrt)
    for node in order:
        primitive = node.primitive
        if node in reaches or primitive.zero_gradient:
            continue
        if node.dtype.kind != "f" and not primitive.multi_output:
            continue
        skip = primitive.nondiff_inputs
        if skip:
            if any(parent in reaches for i, parent in enumerate(node.inputs) if i not in skip):
                reaches.add(node)
        elif any(map(reaches.__contains__, node.inputs)):
            reaches.add(node)
    return reaches


class _Cotangents:
    """The reverse sweep's bookkeeping: incoming terms per tensor, summed once when the sweep reaches it."""

    def __init__(self) -> None:
        self.pending: dict[Tensor, list[Tensor]] = {}
        self.totals: dict[Tensor, Tensor] = {}
        # several outputs: multi-output node -> {output index: cotangent terms}, filled by its projections
        self.by_output: dict[Tensor, dict[int, list[Tensor]]] = {}

    def add(self, tensor: Tensor, term: Tensor) -> None:
        self.pending.setdefault(tensor, []).append(term)

    def take(self, node: Tensor):
        """The summed cotangent of ``node`` to propagate to its inputs (for a multi-output node, one per
        output, None where none came), or None when there is nothing to propagate."""
        primitive = node.primitive
        if primitive.multi_output:
            slots = self.by_output.pop(node, None)
            if slots is None:
                return None
            count = len(primitive.output_types(*node.inputs))
            return [_sum_all(slots[k]) if k in slots else None for k in range(count)]
        terms = self.pending.pop(node, None)
        if terms is None:
            return None
        total = self.totals[node] = _sum_all(terms)
        if primitive.projection:  # the cotangent of one output of a multi-output node: to its producer
            self.by_output.setdefault(node.inputs[0], {}).setdefault(primitive.index, []).append(total)
            return None
        return total


def _propagate(node: Tensor, total, reaches: set[Tensor], cotangents: _Cotangents) -> None:
    """Call ``node``'s gradient rule and hand each input on a path to ``wrt`` its cotangent."""
    inputs = node.inputs
    skip = node.primitive.nondiff_inputs
    targets = [i for i, parent in enumerate(inputs) if parent in reaches and i not in skip]
    if not targets:
        return
    rules = node.primitive.vjp_needed(node, total, targets)  # no cotangents built for other inputs
    if len(rules) != len(inputs):
        raise GradientError(f"the gradient rule of {node.op!r} returned {len(rules)} cotangents "
                            f"for {len(inputs)} inputs ({node.describe()})")
    for i in targets:
        term = rules[i]
        if term is not None:
            parent = inputs[i]
            if not (type(term) is Tensor and term.shape == parent.shape and term.dtype == parent.dtype
                    and None not in term.shape):  # (the usual case: already of its input's type)
                term = _fit_to_input(as_tensor(term), parent)
            cotangents.add(parent, term)


def backprop(outputs: Sequence[Tensor], seeds: Sequence[Tensor], wrt: Sequence[Tensor]) -> list[Tensor | None]:
    """Cotangents of ``wrt`` given ``seeds`` for ``outputs`` (None where disconnected)."""
    # Differentiate a stabilized clone of the forward graph (see FORWARD_REWRITE). The clone shares
    # every node that needs no rewrite, and the wrt tensors are kept as they are.
    with collector_paused():  # (every node the sort, the rewrite and the sweep make stays alive)
        order = toposort(outputs)
        rewritten = FORWARD_REWRITE(outputs, wrt, order)
        if any(a is not b for a, b in zip(rewritten, outputs)):
            order = toposort(rewritten)
        outputs = rewritten
        reaches = _reaching(order, wrt)
        cotangents = _Cotangents()
        for output, seed in zip(outputs, seeds):
            if output in reaches:
                cotangents.add(output, _seed_for(seed, output))
        for node in reversed(order):
            total = cotangents.take(node)
            if total is not None:
                _propagate(node, total, reaches, cotangents)
    return [cotangents.totals.get(t) for t in wrt]


def gradient_name(cost: Tensor, wrt: Tensor) -> str | None:
    """``"d(loss)/d(W)"`` when both ``cost`` and ``wrt`` have names, else None.

    Like Theano, only names that are known are combined: a made-up name for an
    unnamed cost (``"d(cost)/d(W)"``) would look like a name the user gave.
    """
    if cost.name and wrt.name:
        return f"d({cost.name})/d({wrt.name})"
    return None


def _named(tensor: Tensor, name: str | None) -> Tensor:
    """``tensor`` under ``name``: a renamed twin of a fresh gradient node, else an identity node.

    A twin (same op and inputs) keeps the name where the optimizer keeps the node; an
    identity node would be pruned with its name. Nodes that are not this gradient's own
    (a forward tensor, a leaf, a node that already has a name) get the identity node.
    """
    if name is None or tensor.name == name:
        return tensor
    if tensor.inputs and tensor.is_gradient and tensor.name is None:
        return Tensor(tensor.primitive, tensor.inputs, tensor.shape, tensor.dtype, name=name, site=tensor.site,
                      is_gradient=True)
    return identity(tensor, name=name)


def grad(cost: Tensor, wrt, disconnected: str = "zero"):
    """Gradients of the 0-d float ``cost`` with respect to ``wrt`` (a tensor or a list/tuple).

    The gradient tensors are appended to the same graph and marked as gradient
    nodes. ``disconnected="zero"`` gives zeros for a ``wrt`` that ``cost`` does
    not depend on; ``"raise"`` raises ``GradientError``. Each gradient is named
    ``"d(<cost>)/d(<wrt>)"`` (``"d(loss)/d(W)"``) when both the cost and that
    ``wrt`` have names, and has no name otherwise.
    """
    if disconnected not in ("zero", "raise"):
        raise ValueError(f"disconnected must be 'zero' or 'raise', got {disconnected!r}")
    if not isinstance(cost, Tensor):
        raise TypeError(f"cost must be a Tensor, got {type(cost).__name__}")
    if cost.ndim != 0:
        raise ValueError(f"grad: cost must be a 0-d tensor, got shape {format_shape(cost.shape)} "
                         f"({cost.describe()}); reduce it first, e.g. with gc.sum or gc.mean")
    if cost.dtype.kind != "f":
        raise ValueError(f"grad: cost must be floating point, got {cost.dtype} ({cost.describe()})")
    items, was_sequence = _as_list(wrt)
    _check_wrt(items)
    with building_gradient():
        seed = ones_like(cost)
        results = backprop([cost], [seed], items)
        final = []
        for tensor, result in zip(items, results):
            if result is None:
                if disconnected == "raise":
                    raise GradientError(f"grad: the cost {cost.describe()} does not depend on "
                                        f"{tensor.describe()}")
                result = zeros_for(tensor)
            final.append(_named(result, gradient_name(cost, tensor)))
    return _restore(final, was_sequence, wrt)


def vjp(outputs, wrt, cotangents):
    """Vector-Jacobian products ``sum_k cotangent_k^T d output_k / d wrt`` (reverse mode)."""
    out_items, _ = _as_list(outputs)
    seed_items, _ = _as_list(cotangents)
    wrt_items, was_sequence = _as_list(wrt)
    if len(out_items) != len(seed_items):
        raise ValueError(f"vjp: {len(out_items)} outputs but {len(seed_items)} cotangents")
    _check_tensors("vjp: outputs", out_items)
    _check_wrt(wrt_items)
    with building_gradient():
        seeds = _seeds("vjp", "cotangent", seed_items, out_items)
        results = backprop(out_items, seeds, wrt_items)
        final = [r if r is not None else zeros_for(t) for r, t in zip(results, wrt_items)]
    return _restore(final, was_sequence, wrt)


def jvp(outputs, wrt, tangents):
    """Jacobian-vector products ``sum_k d output / d wrt_k . tangent_k`` (forward mode).

    Derived from reverse mode by the double-VJP trick: the VJP is linear in its
    cotangent ``u``, so differentiating ``<vjp(u), t>`` with respect to ``u`` gives ``J t``.
    """
    out_items, out_sequence = _as_list(outputs)
    wrt_items, _ = _as_list(wrt)
    tangent_items, _ = _as_list(tangents)
    if len(wrt_items) != len(tangent_items):
        raise ValueError(f"jvp: {len(wrt_items)} inputs but {len(tangent_items)} tangents")
    _check_tensors("jvp: outputs", out_items)
    _check_wrt(wrt_items)
    for output in out_items:
        if output.dtype.kind != "f":
            raise DTypeError(f"jvp: outputs must be floating point, got {output.describe()}")
    with building_gradient():
        dummies = [zeros_like(y) for y in out_items]  # any value works: the result does not depend on it
        pullbacks = backprop(out_items, dummies, wrt_items)
        tangent_items = _seeds("jvp", "tangent", tangent_items, wrt_items)
        pairs = [(p, t) for p, t in zip(pullbacks, tangent_items) if p is not None]
        if pairs:
            results = backprop([p for p, _ in pairs], [t for _, t in pairs], dummies)
        else:
            results = [None] * len(out_items)
        final = [r if r is not None else zeros_for(y) for r, y in zip(results, out_items)]
    return _restore(final, out_sequence, outputs)


def _check_single(function: str, **arguments) -> None:
    for label, value in arguments.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{function}: {label} must be one Tensor, got {type(value).__name__}")


def jacobian(y: Tensor, x: Tensor) -> Tensor:
    """The Jacobian ``d y / d x``, of shape ``y.shape + x.shape`` (one VJP per element of y)."""
    _check_single("jacobian", y=y, x=x)
    if None in y.shape or None in x.shape:
        raise GradientError(f"jacobian: needs fully known shapes, got y {format_shape(y.shape)} "
                            f"and x {format_shape(x.shape)}")
    if y.dtype.kind != "f":
        raise DTypeError(f"jacobian: y must be floating point, got {y.describe()}")
    _check_wrt([x])
    if y.ndim == 0:
        return grad(y, x)
    flat = reshape(y, (-1,))
    with building_gradient():
        rows = [grad(getitem(flat, i), x) for i in range(flat.shape[0])]
        if not rows:
            return broadcast_to(zeros_like(x), y.shape + x.shape)
        return reshape(stack(rows, 0), y.shape + x.shape)


def hessian(cost: Tensor, x: Tensor) -> Tensor:
    """The Hessian of a 0-d ``cost``: ``jacobian(grad(cost, x), x)``, shape ``x.shape + x.shape``."""
    _check_single("hessian", cost=cost, x=x)
    return jacobian(grad(cost, x), x)
