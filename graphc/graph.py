"""Whole-graph utilities shared by autodiff, the passes and the executor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from graphc.tensor import Tensor, toposort


def substitute(outputs: Sequence[Tensor], replace: Mapping[Tensor, Tensor]) -> dict[int, Tensor]:
    """``id(tensor) -> its copy`` for every tensor of the graph of ``outputs``, with ``replace`` applied.

    Nodes that do not depend on a replaced tensor are shared, not copied (they map to
    themselves); the others are rebuilt with :meth:`Tensor.with_inputs`, their types
    inferred again, so a replacement may have a more specific shape.
    """
    mapping: dict[int, Tensor] = {id(old): new for old, new in replace.items()}
    for node in toposort(outputs, stop_at=list(replace)):
        if id(node) not in mapping:
            mapping[id(node)] = node.with_inputs([mapping[id(p)] for p in node.inputs], retype=True)
    return mapping


def clone(outputs: Sequence[Tensor], replace: Mapping[Tensor, Tensor]) -> list[Tensor]:
    """Copies of ``outputs`` with the tensors in ``replace`` substituted (see :func:`substitute`)."""
    mapping = substitute(outputs, replace)
    return [mapping[id(t)] for t in outputs]
