"""Common-subexpression elimination (merge): twins become one node.

Two tensors are twins when they have the same op, parameters, dtype, shape
and (merged) inputs: the same :attr:`Tensor.key`, graphc's one structural key
(a blake2b digest, no ``id()`` or ``hash()``), so merging is identical in every
process and under any ``PYTHONHASHSEED``. Commutative ops get their two
inputs in a canonical order (sorted by key) first, so ``a + b`` and ``b + a``
merge. Placeholders and variables are never merged (their keys are unique);
equal constants are. The merging is the rewrite engine's (``rewrite(..., merge=True)``),
which the canonicalizing pass runs together with the rules; this pass is it without rules.
"""

from __future__ import annotations

from graphc.passes.core import RewriteContext, rewrite
from graphc.tensor import Tensor


def cse(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """Merge twins (commutative operands in canonical order)."""
    return rewrite(outputs, {}, context=context, merge=True)
