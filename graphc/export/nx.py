"""networkx export. This is the only module of graphc that imports networkx."""

from __future__ import annotations

import networkx

from graphc.export._common import constant_text, graph_nodes, node_kind, param_text, type_text

__all__ = ["to_networkx"]


def to_networkx(outputs) -> networkx.DiGraph:
    """A ``networkx.DiGraph`` of the graph computing ``outputs``.

    Nodes are the integers ``0..n-1`` in topological order. Node attributes:
    ``op``, ``name``, ``shape`` (tuple, ``None`` for unknown sizes), ``dtype``
    (str), ``is_gradient``, ``kind`` (placeholder/constant/variable/op),
    ``params`` (the op's parameters as text), ``label`` (a one-line summary),
    ``outputs`` (the positions of this node among the outputs, empty if none),
    ``value`` (small constants only). A loop's node (``gc.scan``) also has ``loop=True`` and
    ``bodies``: a tuple holding its body as a ``DiGraph`` of the same form.
    Edges go from an input to its consumer with ``position`` (the first input
    position) and ``positions`` (every position, e.g. ``(0, 1)`` for ``x * x``).
    """
    order, flat, index = graph_nodes(outputs)
    graph = networkx.DiGraph()
    output_positions: dict[int, list[int]] = {}
    for position, tensor in enumerate(flat):
        output_positions.setdefault(index[id(tensor)], []).append(position)
    for k, node in enumerate(order):
        attrs = {
            "op": node.op,
            "name": node.name,
            "shape": tuple(node.shape),
            "dtype": str(node.dtype),
            "is_gradient": bool(node.is_gradient),
            "kind": node_kind(node),
            "params": param_text(node),
            "label": f"{node.op} {node.name or ''} {type_text(node)}".replace("  ", " "),
            "outputs": tuple(output_positions.get(k, ())),
        }
        value = constant_text(node)
        if value is not None:
            attrs["value"] = value
        inner = node.primitive.inner_graphs() if node.inputs else ()
        if inner:  # a loop: marked, with its body as a graph of its own
            attrs["loop"] = True
            attrs["bodies"] = tuple(to_networkx(list(body.outputs)) for body in inner)
        graph.add_node(k, **attrs)
    for k, node in enumerate(order):
        for position, parent in enumerate(node.inputs):
            source = index[id(parent)]
            if graph.has_edge(source, k):
                graph.edges[source, k]["positions"] += (position,)
            else:
                graph.add_edge(source, k, position=position, positions=(position,))
    return graph
