"""Whole-graph utilities shared by autodiff, the passes and the executor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from graphc.tensor import Tensor, toposort


def clone(outputs: Sequence[Tensor], replace: Mapping[Tensor, Tensor]) -> list[Tensor]:
    """Copies of ``outputs`` with the tensors in ``replace`` substituted.

    Nodes that do not depend on a replaced tensor are shared, not copied. Types
    are re-inferred, so a replacement may have a more specific shape.
    """
    mapping: dict[int, Tensor] = {id(old): new for old, new in replace.items()}
    for node in toposort(outputs, stop_at=list(replace)):
        if id(node) in mapping:
            continue
        new_inputs = tuple(mapping.get(id(p), p) for p in node.inputs)
        if all(a is b for a, b in zip(new_inputs, node.inputs)):
            mapping[id(node)] = node
            continue
        shape, dtype = node.primitive.infer(*new_inputs)
        mapping[id(node)] = Tensor(node.primitive, new_inputs, shape, dtype, name=node.name,
                                   site=node.site, is_gradient=node.is_gradient)
    return [mapping.get(id(t), t) for t in outputs]
