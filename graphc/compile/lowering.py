"""Stage 1, lowering: the graph's nodes become steps, and the lowering rules rewrite steps.

Leaves get their names (``x`` feeds, ``w`` variables, ``c`` constants); a placeholder that is
not fed is a ``FeedError`` before anything runs; fused nodes of the optimizer's opt-in fusion
are expanded back into their steps (which then share the plan's buffer reuse). Then the
lowering rules, exact value for value and named in ``plan.explain()``, rewire the steps'
dependencies (``Program.deps``) so that the plan saves passes over memory or buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphc.errors import FeedError
from graphc.leaves import Constant, Placeholder, VariableLeaf
from graphc.ops import elementwise as ew
from graphc.ops import nn, reduce
from graphc.ops import shape as shape_ops
from graphc.tensor import Tensor, toposort

from .plan import Program
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
    deps: dict[int, list[Tensor]] = {id(n): [alias.get(id(p), p) for p in n.inputs] for n in steps}
    if program.options.peepholes:
        inserted: dict[int, list[Tensor]] = {}
        replaced: dict[int, Tensor] = {}
        dropped = _peepholes(steps, deps, root_ids, program.special, inserted, replaced, program.fired)
        steps = [n for node in steps for n in inserted.get(id(node), []) + [node] if id(n) not in dropped]
        if replaced:  # a lowering rule's new op computes these steps' values
            deps = {key: [replaced.get(id(p), p) for p in parents] for key, parents in deps.items()}
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


def _peepholes(steps: list[Tensor], deps: dict[int, list[Tensor]], roots: set[int],
               special: dict[int, Callable], inserted: dict[int, list[Tensor]], replaced: dict[int, Tensor],
               fired: dict[int, str]) -> set[int]:
    """The lowering rules: rewrites of steps that save passes or memory; returns the steps to drop.

    ``special`` receives steps to be computed by another NumPy function of the new inputs;
    ``inserted`` new steps to compute right before a step; ``replaced`` steps whose value a new
    step (another op) computes; ``fired`` the name of the rule that changed each step.
    """
    relu_cls, greater_cls, cast_cls, mul_cls = ew.Relu, ew.Greater, ew.Cast, ew.Mul
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
        if (type(node.primitive) is not shape_ops.BroadcastLike or id(node) in roots
                or not static(node) or len(deps[id(node)]) != 1):
            continue
        users = consumers.get(id(node), [])
        if users and all(kernel(u) is not None and u.shape == node.shape
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
        if type(node.primitive) is not mul_cls or not static(node) or id(node) in dropped:
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
        if type(node.primitive) is not ew.Sub or id(node) in dropped or node.ndim != 2:
            continue
        probs, target = deps[id(node)]
        if (type(probs.primitive) is not nn.Softmax or type(target.primitive) is not shape_ops.OneHot
                or id(probs) in roots or id(target) in roots or id(probs) in dropped
                or len(consumers.get(id(probs), ())) != 1 or len(consumers.get(id(target), ())) != 1):
            continue
        (logits,) = deps[id(probs)]
        (labels,) = deps[id(target)]
        if (probs.primitive.axis in (1, -1) and logits.ndim == 2 and logits.dtype.kind == "f"
                and target.primitive.depth == logits.shape[1] and target.dtype == logits.dtype
                and node.dtype == logits.dtype and labels.ndim == 1 and labels.dtype.kind in "iu"):
            made = Tensor(nn.SoftmaxMinusOneHot(), [logits, labels], node.shape, node.dtype,
                            name=node.name, site=node.site, is_gradient=node.is_gradient)
            deps[id(made)] = [logits, labels]
            inserted.setdefault(id(node), []).append(made)
            replaced[id(node)] = made
            fired[id(made)] = "softmax_minus_one_hot"
            dropped.update((id(node), id(probs), id(target)))
    # sum(square(x)) over every axis is a dot product of x with itself: one BLAS pass, no temporary
    # (the same value up to the order of the additions, which np.sum does not promise either)
    for node in steps:
        if type(node.primitive) is not reduce.Sum or node.shape != () or id(node) in dropped:
            continue
        (square,) = deps[id(node)]
        if (type(square.primitive) is ew.Square and id(square) not in roots
                and square.dtype.kind == "f" and square.dtype == node.dtype and static(square)
                and len(consumers.get(id(square), ())) == 1 and deps[id(square)][0].dtype == square.dtype):
            deps[id(node)] = [deps[id(square)][0]] * 2
            special[id(node)] = np.vdot
            fired[id(node)] = "sum_of_squares_dot"
            dropped.add(id(square))
    return dropped
