"""Stage 1, lowering: the graph's nodes become steps, and the lowering rules rewrite steps.

Leaves get their names (``x`` feeds, ``w`` variables, ``c`` constants); a placeholder that is
not fed is a ``FeedError`` before anything runs; fused nodes of the optimizer's opt-in fusion
are expanded back into their steps (which then share the plan's buffer reuse). Then the
lowering rules, exact value for value and named in ``plan.explain()``, rewire the steps'
dependencies (``Program.deps``) so that the plan saves passes over memory or buffers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from graphc.errors import FeedError
from graphc.leaves import Constant, Placeholder, VariableLeaf
from graphc.op import Op, Output
from graphc.ops import elementwise as ew
from graphc.ops import nn, reduce
from graphc.ops import shape as shape_ops
from graphc.tensor import Tensor, toposort

from . import numba_loss
from .numba_kernels import replace_nodes
from .plan import Deps, Options, Program
from .steps import kernel, static


def lower(program: Program) -> Program:
    """Stage 1: names the leaves, lists the steps (fused nodes expanded), applies the lowering rules."""
    outputs, updates = program.outputs, program.updates
    roots = list(outputs) + [new for _, new in updates]
    program.order = toposort(roots, stop_at=list(program.inputs))
    alias = _collect(program)
    roots = [alias.get(id(t), t) for t in roots]
    root_ids = {id(t) for t in roots}
    steps = program.steps
    # a step's own inputs where no fused node was expanded (nothing stored: see ``Deps``); the rules
    # replace entries, never mutate them
    deps = Deps() if not alias else Deps({n: [alias.get(id(p), p) for p in n.inputs] for n in steps})
    if program.options.peepholes:
        rewrites = apply_rules(steps, deps, root_ids, program.special, program.fired, program.options)
        inserted, replaced, dropped = rewrites.inserted, rewrites.replaced, rewrites.dropped
        if inserted or dropped:
            steps = [n for node in steps for n in (*inserted.get(id(node), ()), node) if id(n) not in dropped]
        if replaced:  # a lowering rule's new op computes these steps' values
            deps = Deps({n: [replaced.get(id(p), p) for p in deps[n]] for n in steps})
            roots = [replaced.get(id(t), t) for t in roots]
    program.steps, program.deps, program.roots = steps, deps, roots
    return program


def _collect(program: Program) -> dict[int, Tensor]:
    """Fill in the leaves' names, the constants' values, the variables and the steps; returns each
    expanded fused node's last step (by the fused node's id)."""
    input_ids = {id(t): k for k, t in enumerate(program.inputs)}
    names, defaults, variables = program.names, program.defaults, program.variables
    steps, leaves = program.steps, program.leaves
    expand = program.options.expand_fused
    alias: dict[int, Tensor] = {}  # a fused node -> the last of the steps it expands to
    for node in program.order:
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
        elif not (expand and _expand_fused(node, alias, steps)):
            steps.append(node)
    return alias


def _expand_fused(node: Tensor, alias: dict[int, Tensor], steps: list[Tensor]) -> bool:
    """Append the steps of a ``fused`` node as ordinary nodes; False if it is not one.

    The executor then lowers every step itself, with buffer reuse across node
    boundaries (a fused node cannot write into its dying inputs) and without
    the fused node's per-call bookkeeping. Each step keeps its user source line.
    """
    op = node.primitive
    if op.name != "fused" or not all(hasattr(op, a) for a in ("steps", "n_inputs", "dtypes")):
        return False
    if getattr(op, "kernel", None) is not None:
        return False  # a backend's compiled kernel computes it: lowered as one ufunc-like step
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


# ---- lowering rules ---------------------------------------------------------------------------
#
# A lowering rule starts from a step of one op class and rewires the plan's dependencies
# (``Rewrites.deps``), never the user's graph: it may make a step read other values, compute a
# step with another NumPy function (``special``), insert a new step before it, or have a new op
# compute its value (``replaced``); steps nobody reads any more are dropped. Every rule is exact
# value for value under IEEE rules (its comment says why) and records itself in ``fired``, which
# ``plan.explain()`` shows. Register a rule for a new op here, with ``@lowering_rule(ItsOpClass)``.

#: a lowering rule: looks at one step (of its op class) and rewrites through the ``Rewrites``
LoweringRule = Callable[[Tensor, "Rewrites"], None]

#: the lowering rules by the exact op class of the step they start from (a subclass may compute
#: something else). They run class by class in the order the classes were registered, a class's
#: rules in registration order, each over that class's steps in dependency order.
RULES: dict[type[Op], list[LoweringRule]] = {}


def lowering_rule(op_class: type[Op]) -> Callable[[LoweringRule], LoweringRule]:
    """Register the decorated function as a lowering rule for steps of ``op_class``; its name is the
    rule's name in ``plan.explain()``."""
    def register(rule: LoweringRule) -> LoweringRule:
        RULES.setdefault(op_class, []).append(rule)
        return rule
    return register


@dataclass
class Rewrites:
    """What the lowering rules read and write (ids are ``id(tensor)``).

    ``position`` and ``consumers`` are made on first use (a full pass over a long plan, and a list
    per value, that a plan whose rules never look at readers does not pay for). A rule looks at the
    readers it needs before it rewires anything, so they are the same as if made up front.
    """

    #: each step's inputs, as the plan computes it
    deps: dict[Tensor, list[Tensor]]
    #: the outputs and update values: their values must stay what they are
    roots: set[int]
    #: the steps in dependency order
    steps: list[Tensor]
    #: steps computed by another NumPy function of their (rewired) inputs
    special: dict[int, Callable]
    #: the rule that changed each step
    fired: dict[int, str]
    #: new steps to compute right before a step
    inserted: dict[int, list[Tensor]] = field(default_factory=dict)
    #: steps whose value a new step (of another op) computes
    replaced: dict[int, Tensor] = field(default_factory=dict)
    #: steps no longer needed
    dropped: set[int] = field(default_factory=set)
    #: the name of the rule running
    rule: str = ""
    #: ``build_plan``'s switches
    options: Options = field(default_factory=Options)

    @cached_property
    def position(self) -> dict[int, int]:
        """Each step's position in dependency order."""
        return {id(n): i for i, n in enumerate(self.steps)}

    @cached_property
    def consumers(self) -> dict[int, list[Tensor]]:
        """Each value's readers (appended to as rules rewire; readers a rule drops may stay listed)."""
        consumers: dict[int, list[Tensor]] = {}
        deps = self.deps
        for node in self.steps:
            for parent in deps[node]:
                consumers.setdefault(id(parent), []).append(node)
        return consumers

    def users(self, node: Tensor) -> list[Tensor]:
        return self.consumers.get(id(node), [])

    def sole_use(self, node: Tensor) -> bool:
        """``node`` is an intermediate step (not a root, not dropped) read by exactly one step."""
        return id(node) not in self.roots and id(node) not in self.dropped and len(self.users(node)) == 1

    def rewire(self, user: Tensor, old: Tensor, new: Tensor) -> None:
        """``user`` reads ``new`` where it read ``old``."""
        self.deps[user] = [new if p is old else p for p in self.deps[user]]
        self.consumers.setdefault(id(new), []).append(user)

    def fire(self, node: Tensor) -> None:
        self.fired[id(node)] = self.rule


def apply_rules(steps: list[Tensor], deps: dict[Tensor, list[Tensor]], roots: set[int],
                special: dict[int, Callable], fired: dict[int, str], options: Options | None = None) -> Rewrites:
    """Run every registered rule over the steps of its op class (see ``RULES``) for a plan of ``options``."""
    by_class: dict[type, list[Tensor]] = {}
    for node in steps:
        if type(node.primitive) in RULES:
            by_class.setdefault(type(node.primitive), []).append(node)
    rewrites = Rewrites(deps, roots, steps, special, fired, options=options or Options())
    for op_class, rules in RULES.items():
        for rule in rules:
            rewrites.rule = rule.__name__
            for node in by_class.get(op_class, ()):
                rule(node, rewrites)
    return rewrites


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


@lowering_rule(ew.Greater)
def relu_mask(node: Tensor, rw: Rewrites) -> None:
    # x > 0 -> relu(x) > 0: the same mask for every x (NaN included), read from the ReLU's output, so
    # the pre-activation can die at the ReLU (which then runs in place) instead of living until backprop
    x, zero = rw.deps[node]
    if x.dtype.kind != "f" or not _is_zero_scalar_constant(zero):
        return
    for user in rw.users(x):
        if (type(user.primitive) is ew.Relu and user.dtype == x.dtype and user.shape == x.shape
                and rw.position[id(user)] < rw.position[id(node)]):
            rw.deps[node] = [user, zero]
            rw.consumers.setdefault(id(user), []).append(node)
            rw.fire(node)
            return


def _multiplies_by(user: Tensor, factor: Tensor, rw: Rewrites) -> bool:
    """``user`` is ``g * factor`` (or ``factor * g``) with ``g`` and the product of ``factor``'s dtype."""
    operands = rw.deps[user]
    others = [p for p in operands if p is not factor]
    return (type(user.primitive) is ew.Mul and len(operands) == 2 and len(others) == 1
            and others[0].dtype == factor.dtype and user.dtype == factor.dtype)


@lowering_rule(ew.Cast)
def bool_mask_mul(node: Tensor, rw: Rewrites) -> None:
    # g * cast(mask, g.dtype) -> g * mask: NumPy multiplies by True/False as 1/0 in g's dtype
    (mask,) = rw.deps[node]
    if id(node) in rw.roots or mask.dtype != np.dtype(bool) or node.dtype.kind != "f":
        return
    users = rw.users(node)
    if not users or not all(_multiplies_by(user, node, rw) for user in users):
        return
    for user in list(users):
        rw.rewire(user, node, mask)
        rw.fire(user)
    rw.dropped.add(id(node))


def _full_shape_kernel(user: Tensor, broadcast: Tensor, rw: Rewrites) -> bool:
    """``user`` is a kernel step of the broadcast's shape with another input of that shape."""
    return (kernel(user) is not None and user.shape == broadcast.shape
            and any(p is not broadcast and p.shape == broadcast.shape for p in rw.deps[user]))


@lowering_rule(shape_ops.BroadcastLike)
def drop_scalar_broadcast(node: Tensor, rw: Rewrites) -> None:
    # ufunc(broadcast(s), y) -> ufunc(s, y) when y already has the broadcast shape: NumPy broadcasts s
    # itself, the same values, and no view is built
    if id(node) in rw.roots or not static(node) or len(rw.deps[node]) != 1:
        return
    users = rw.users(node)
    if not users or not all(_full_shape_kernel(user, node, rw) for user in users):
        return
    source = rw.deps[node][0]
    for user in list(users):
        rw.rewire(user, node, source)
        rw.fire(user)
    rw.dropped.add(id(node))


def _scaled_weight(scaled: Tensor, scale: Tensor, node: Tensor, rw: Rewrites) -> tuple[Tensor, Tensor] | None:
    """(w, c) when ``scaled`` is ``w * c`` (either order) for a constant c = +-2**k, k >= 0, that only
    ``node`` (``scaled * scale``, ``scale`` of one element) reads, all of ``node``'s type; else None."""
    # (the cheap tests first; the readers' lookup last)
    if (type(scaled.primitive) is not ew.Mul or scaled is scale or len(scale.shape) > len(node.shape)
            or any(d != 1 for d in scale.shape) or scale.dtype != node.dtype or scaled.dtype != node.dtype):
        return None
    w, c = rw.deps[scaled]
    if not _is_exact_scale(c):
        w, c = c, w
    if (not _is_exact_scale(c) or w.shape != node.shape or w.dtype != node.dtype or c.dtype != node.dtype
            or not rw.sole_use(scaled)):
        return None
    return w, c


@lowering_rule(ew.Mul)
def exact_scale(node: Tensor, rw: Rewrites) -> None:
    # (w * c) * s -> w * (s * c) for a one-element s and a constant c = +-2**k, k >= 0: both products are
    # exact scalings, so the result is the same single rounding of w*s*c (barring overflow to inf).
    # This is the weight-decay gradient's shape; it saves one pass over the weights.
    if not static(node) or id(node) in rw.dropped:
        return
    operands = rw.deps[node]
    for k, scaled in enumerate(operands):
        scale = operands[1 - k]
        found = _scaled_weight(scaled, scale, node, rw)
        if found is None:
            continue
        w, c = found
        factor = Tensor(ew.Mul(), [scale, c], scale.shape, node.dtype, site=node.site, is_gradient=node.is_gradient)
        rw.deps[factor] = [scale, c]
        rw.deps[node] = [w, factor]
        rw.consumers.setdefault(id(w), []).append(node)
        rw.inserted.setdefault(id(node), []).append(factor)
        rw.dropped.add(id(scaled))
        rw.fire(node)
        return


def _cross_entropy_operands(probs: Tensor, target: Tensor, node: Tensor, deps: Deps,
                            sole_use: Callable[[Tensor], bool]) -> tuple | None:
    """(logits, labels) when ``node`` is ``softmax(logits, axis=-1) - one_hot(labels, depth)`` of 2-d float
    logits and 1-d integer labels, with the softmax and the one-hot read by nothing else; else None."""
    if (type(probs.primitive) is not nn.Softmax or type(target.primitive) is not shape_ops.OneHot
            or not sole_use(probs) or not sole_use(target)):
        return None
    (logits,) = deps[probs]
    (labels,) = deps[target]
    if (probs.primitive.axis in (1, -1) and logits.ndim == 2 and logits.dtype.kind == "f"
            and target.primitive.depth == logits.shape[1] and target.dtype == logits.dtype
            and node.dtype == logits.dtype and labels.ndim == 1 and labels.dtype.kind in "iu"):
        return logits, labels
    return None


@lowering_rule(ew.Sub)
def softmax_minus_one_hot(node: Tensor, rw: Rewrites) -> None:
    # softmax(z) - one_hot(labels) -> softmax_minus_one_hot(z, labels): the sparse cross-entropy's gradient,
    # computed by the op that does the same arithmetic in one buffer, as by hand
    if id(node) in rw.dropped or node.ndim != 2:
        return
    probs, target = rw.deps[node]
    found = _cross_entropy_operands(probs, target, node, rw.deps, rw.sole_use)
    if found is None:
        return
    rw.dropped.update((id(node), id(probs), id(target)))
    # (a checked plan checks each op's own value: ``numerics.instrument`` skips a step of several values)
    loss = None if rw.options.check_numerics else _loss_before(node, found, rw)
    if loss is not None:
        _with_its_loss(node, loss, found, rw)
        return
    made = Tensor(nn.SoftmaxMinusOneHot(), list(found), node.shape, node.dtype, name=node.name, site=node.site,
                  is_gradient=node.is_gradient)
    rw.deps[made] = list(found)
    rw.inserted.setdefault(id(node), []).append(made)
    rw.replaced[id(node)] = made
    rw.fire(made)


@lowering_rule(nn.SoftmaxMinusOneHot)
def softmax_minus_one_hot_with_its_loss(node: Tensor, rw: Rewrites) -> None:
    # a graph's own softmax_minus_one_hot (the numba backend makes them: ``softmax_minus_one_hot_nodes``)
    # after the loss of the same logits and labels -> one LossAndGradient step, as the rule above makes
    if id(node) in rw.dropped or rw.options.check_numerics:
        return
    found = tuple(rw.deps[node])
    loss = _loss_before(node, found, rw)
    if loss is not None:
        rw.dropped.add(id(node))
        _with_its_loss(node, loss, found, rw)


def _with_its_loss(node: Tensor, loss: Tensor, operands: tuple, rw: Rewrites) -> None:
    """The gradient ``node`` and its ``loss`` of the same ``operands`` as one LossAndGradient step."""
    # softmax_cross_entropy(z, labels) ... softmax(z) - one_hot(labels) -> one LossAndGradient(z, labels)
    # step where the loss ran, read through Output(0) and Output(1): the same arithmetic, done once
    both = Tensor(LossAndGradient(LOSS_AND_GRADIENT[rw.options.backend]), list(operands), (), np.dtype("V1"),
                  name=loss.name, site=loss.site, is_gradient=loss.is_gradient)
    rw.deps[both] = list(operands)
    rw.inserted.setdefault(id(loss), []).append(both)
    rw.fire(both)
    for index, old in enumerate((loss, node)):
        projection = Tensor(Output(index), [both], old.shape, old.dtype, name=old.name, site=old.site,
                            is_gradient=old.is_gradient)
        rw.deps[projection] = [both]
        rw.inserted.setdefault(id(old), []).append(projection)
        rw.replaced[id(old)] = projection
    rw.dropped.add(id(loss))


def softmax_minus_one_hot_nodes(roots: Sequence[Tensor]) -> list[Tensor]:
    """``roots`` with each ``softmax(logits) - one_hot(labels)`` that the rule ``softmax_minus_one_hot`` would
    lower made that rule's ``SoftmaxMinusOneHot(logits, labels)`` node (the same values). The numba backend
    does this before fusing its kernels, which would hide the subtraction in its consumer's kernel (at a
    batch size known only at run time); ``softmax_minus_one_hot_with_its_loss`` then merges it with its loss."""
    readers = Counter(id(p) for node in toposort(roots) for p in node.inputs)
    readers.update(id(root) for root in roots)
    graph = Deps()  # (each node's inputs: the graph's own)

    def replace(node: Tensor, inputs: list[Tensor]) -> Tensor | None:
        if type(node.primitive) is not ew.Sub or node.ndim != 2:
            return None
        if _cross_entropy_operands(*node.inputs, node, graph, lambda t: readers[id(t)] == 1) is None:
            return None
        operands = [inputs[0].inputs[0], inputs[1].inputs[0]]  # (the rebuilt softmax's and one-hot's inputs)
        return Tensor(nn.SoftmaxMinusOneHot(), operands, node.shape, node.dtype, name=node.name, site=node.site,
                      is_gradient=node.is_gradient)

    return replace_nodes(list(roots), replace)


def _loss_before(node: Tensor, operands: tuple, rw: Rewrites) -> Tensor | None:
    """The step ``softmax_cross_entropy(logits, labels)`` (integer labels, the last axis) of the same
    ``operands`` as the gradient ``node``, running before it; else None."""
    logits, labels = operands
    position = rw.position[id(node)]
    for user in rw.users(logits):
        op = user.primitive
        if (type(op) is nn.SoftmaxCrossEntropy and op.sparse and op.axis in (1, -1) and id(user) not in rw.dropped
                and rw.deps[user][0] is logits and rw.deps[user][1] is labels and user.dtype == logits.dtype
                and rw.position.get(id(user), position) < position):
            return user
    return None


@dataclass(frozen=True)
class LossAndGradient:
    """A step of the compiler's own (not an Op of graphs): the sparse cross-entropy's loss and its gradient
    ``softmax - one_hot`` from one pass, read through ``Output`` projections. It stands where the loss ran
    and reports itself as the loss (``Tensor.op``, errors). ``impl`` is the backend's function of
    ``LOSS_AND_GRADIENT`` (the same values)."""

    impl: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] = nn.sparse_cross_entropy_and_gradient
    name = "softmax_cross_entropy"
    view = False
    multi_output = True
    projection = False
    labelled = False


#: per backend, the function a ``LossAndGradient`` step calls: ``(logits, labels) -> (loss, gradient)``
LOSS_AND_GRADIENT: dict[str, Callable] = {"numpy": nn.sparse_cross_entropy_and_gradient,
                                          "numba": numba_loss.loss_and_gradient}


@lowering_rule(reduce.Sum)
def sum_of_squares_dot(node: Tensor, rw: Rewrites) -> None:
    # sum(square(x)) over every axis -> vdot(x, x): one BLAS pass, no temporary (the same value up to the
    # order of the additions, which np.sum does not promise either)
    if node.shape != () or id(node) in rw.dropped:
        return
    (square,) = rw.deps[node]
    if (type(square.primitive) is ew.Square and rw.sole_use(square) and square.dtype.kind == "f"
            and square.dtype == node.dtype and static(square) and rw.deps[square][0].dtype == square.dtype):
        x = rw.deps[square][0]
        rw.deps[node] = [x, x]
        rw.special[id(node)] = np.vdot
        rw.dropped.add(id(square))
        rw.fire(node)
