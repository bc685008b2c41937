"""Pruning: keep only what the outputs need, without the no-op nodes.

Every pass rebuilds the graph from the outputs, so nodes the outputs do not
need (such as the gradients of inputs nobody asked for) are dropped simply by
not being reached. This pass also removes the nodes that compute nothing.
"""

from __future__ import annotations

from graphc.passes.core import RewriteContext, named, producer, rewrite, same_type
from graphc.tensor import Tensor


@named("prune.identity")
def drop_identity(node: Tensor) -> Tensor | None:
    """identity(x) -> x   (a renaming; the value is the same)"""
    x = node.inputs[0]
    return x if same_type(x, node) else None


@named("prune.stop_gradient_twice")
def stop_gradient_twice(node: Tensor) -> Tensor | None:
    """stop_gradient(stop_gradient(x)) -> stop_gradient(x)"""
    inner = producer(node.inputs[0], "stop_gradient")
    return inner if inner is not None and same_type(inner, node) else None


@named("prune.composite")
def drop_composite(node: Tensor) -> Tensor | None:
    """composite(x) -> x   (the name of the function that built x; the value is the same)"""
    return node.inputs[0]


RULES = {"identity": (drop_identity,), "composite": (drop_composite,), "stop_gradient": (stop_gradient_twice,)}


def prune(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """The graph reachable from ``outputs``, without identity nodes."""
    return rewrite(outputs, RULES, context=context)
