"""Common-subexpression elimination (merge): twins become one node.

Two tensors are twins when they have the same op, parameters, dtype, shape
and (merged) inputs. The structural key is the same blake2b digest as
``Tensor.key`` (no ``id()`` or ``hash()``), so it is identical in every
process and under any ``PYTHONHASHSEED``. Commutative ops get their two
inputs in a canonical order (sorted by key) first, so ``a + b`` and ``b + a``
merge. Placeholders and variables are never merged (their keys are unique);
equal constants are.
"""

from __future__ import annotations

import hashlib

from graphc.passes.core import fired, topological
from graphc.tensor import Tensor

_DTYPE_TEXT: dict = {}


def node_key(node: Tensor, input_keys: list[str]) -> str:
    """The structural key of ``node`` given its inputs' keys (``Tensor.key``'s digest)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(node.primitive.key_bytes(node))
    text = _DTYPE_TEXT.get(node.dtype)
    if text is None:
        text = _DTYPE_TEXT[node.dtype] = str(node.dtype).encode()
    digest.update(text)
    digest.update(repr(node.shape).encode())
    for key in input_keys:
        digest.update(key.encode())
    return digest.hexdigest()


def structural_keys(outputs: list[Tensor]) -> dict[int, str]:
    """``id(tensor) -> key`` for every node of the graph, in one linear pass."""
    keys: dict[int, str] = {}
    for node in topological(outputs):
        keys[id(node)] = node_key(node, [keys[id(p)] for p in node.inputs])
    return keys


def cse(outputs: list[Tensor]) -> list[Tensor]:
    """Merge twins (commutative operands in canonical order)."""
    keys: dict[int, str] = {}
    by_key: dict[str, Tensor] = {}
    memo: dict[int, Tensor] = {}
    merged = reordered = 0
    for node in topological(outputs):
        inputs = tuple(memo[id(p)] for p in node.inputs)
        input_keys = [keys[id(p)] for p in inputs]
        if node.primitive.commutative and len(inputs) == 2 and input_keys[1] < input_keys[0]:
            inputs = inputs[::-1]
            input_keys = input_keys[::-1]
            reordered += 1
        if all(a is b for a, b in zip(inputs, node.inputs)):
            candidate = node
        else:
            candidate = Tensor(node.primitive, inputs, node.shape, node.dtype, name=node.name, site=node.site,
                               is_gradient=node.is_gradient)
        key = node_key(candidate, input_keys)
        twin = by_key.get(key)
        if twin is None:
            by_key[key] = candidate
            twin = candidate
        else:
            merged += 1
        keys[id(twin)] = key
        memo[id(node)] = twin
    if merged:
        fired("cse.merge", merged)
    if reordered:
        fired("cse.commutative_order", reordered)
    return [memo[id(t)] for t in outputs]
