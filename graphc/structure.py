"""Nested fetch structures: flatten tensors out of lists/tuples/dicts and rebuild them."""

from __future__ import annotations

from graphc.tensor import Tensor


def flatten(structure) -> tuple[list[Tensor], object]:
    """The tensors of a nested list/tuple/dict structure, and a spec to rebuild it."""
    leaves: list[Tensor] = []

    def walk(item):
        if isinstance(item, Tensor):
            leaves.append(item)
            return None
        if isinstance(item, dict):
            return ("dict", type(item), [(key, walk(value)) for key, value in item.items()])
        if isinstance(item, (list, tuple)):
            return ("seq", type(item), [walk(value) for value in item])
        raise TypeError(f"fetches must be Tensors or nested lists/tuples/dicts of Tensors, "
                        f"got {type(item).__name__}")

    spec = walk(structure)
    return leaves, spec


def unflatten(spec, values):
    """Rebuild the structure described by ``spec`` from ``values`` (in flatten order)."""
    iterator = iter(values)

    def build(node):
        if node is None:
            return next(iterator)
        kind, kind_type, children = node
        if kind == "dict":
            return kind_type((key, build(child)) for key, child in children)
        items = [build(child) for child in children]
        return kind_type(*items) if hasattr(kind_type, "_fields") else kind_type(items)

    return build(spec)
