"""Common-subexpression elimination (merge): twins become one node.

Two tensors are twins when they have the same op, parameters, dtype, shape
and (merged) inputs: the same :attr:`Tensor.key`, graphc's one structural key
(a blake2b digest, no ``id()`` or ``hash()``), so merging is identical in every
process and under any ``PYTHONHASHSEED``. Commutative ops get their two
inputs in a canonical order (sorted by key) first, so ``a + b`` and ``b + a``
merge. Placeholders and variables are never merged (their keys are unique);
equal constants are.
"""

from __future__ import annotations

from graphc.passes.core import fired
from graphc.tensor import Tensor, toposort


def cse(outputs: list[Tensor]) -> list[Tensor]:
    """Merge twins (commutative operands in canonical order)."""
    by_key: dict[str, Tensor] = {}
    memo: dict[int, Tensor] = {}
    merged = reordered = 0
    for node in toposort(outputs):
        inputs = [memo[id(p)] for p in node.inputs]
        if node.primitive.commutative and len(inputs) == 2 and inputs[1].key < inputs[0].key:
            inputs.reverse()
            reordered += 1
        candidate = node.with_inputs(inputs)
        key = candidate.key  # the inputs are keyed already: this digests one node
        twin = by_key.setdefault(key, candidate)
        if twin is not candidate:
            merged += 1
        memo[id(node)] = twin
    if merged:
        fired("cse.merge", merged)
    if reordered:
        fired("cse.commutative_order", reordered)
    return [memo[id(t)] for t in outputs]
