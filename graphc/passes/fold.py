"""Constant folding: a node whose inputs are all constants becomes a constant.

The value is computed by the op's own ``impl`` (the function the executor
would call), so folding can never disagree with running the graph. A size cap
keeps folding from bloating the graph with huge constants (``zeros((10**4,
10**4))`` stays a node computed at run time). Placeholders and variables are
never folded (they are leaves, not constants); custom ops and draws (ops whose
class says ``random = True``: their value depends on more than their inputs, see
graphc/random.py) are left alone; an op that fails on its constant inputs is
left for the executor to report, with the user's line.
"""

from __future__ import annotations

import numpy as np

from graphc.custom import CustomOp
from graphc.leaves import Constant, constant
from graphc.passes.core import RewriteContext, named, rewrite
from graphc.tensor import Tensor

#: the largest constant folding may create, in bytes (and elements)
MAX_FOLD_BYTES = 64 * 1024


def foldable(node: Tensor) -> bool:
    """Whether ``node`` may be replaced by its value: constant inputs, a pure op, a small result."""
    inputs = node.inputs
    if not inputs:
        return False
    for t in inputs:  # the test that fails on most nodes first (every node of a graph is asked)
        if type(t.primitive) is not Constant and not isinstance(t.primitive, Constant):
            return False
    op = node.primitive
    if isinstance(op, CustomOp) or getattr(op, "random", False):
        return False
    if op.multi_output:  # a loop: its values are several arrays (and running it may take long)
        return False
    size = node.size
    return size is not None and size * max(node.dtype.itemsize, 1) <= MAX_FOLD_BYTES


@named("fold.constant")
def fold_node(node: Tensor) -> Tensor | None:
    """op(constant, ...) -> constant   (computed by op.impl; result within MAX_FOLD_BYTES)"""
    for t in node.inputs:  # (``foldable``'s first test, here: every node of a graph is asked)
        if not isinstance(t.primitive, Constant):
            return None
    if not foldable(node):
        return None
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(node.primitive.impl(*(t.primitive.value for t in node.inputs)))
    except Exception:  # noqa: BLE001 - left for the executor, which names the node and the user's line
        return None
    if value.shape != node.shape or value.dtype != node.dtype:
        return None
    return constant(value)


RULES = {"*": (fold_node,)}


def fold_constants(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """Replace every foldable node by a constant holding its value."""
    return rewrite(outputs, RULES, context=context)
