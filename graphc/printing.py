"""``debugprint``: the graph as an indented text tree.

Every node gets an id (``A``, ``B``, ..., ``Z``, ``AA``, ...) in the order it
is first printed. A node's inputs are printed under it once; later references
to the same node print one line, ``op [id X] (see above)``, so shared subgraphs
(common after differentiation) are not repeated. Very deep graphs are cut into
blocks: past :data:`MAX_DEPTH` levels a node is printed as
``(continued below)`` and its subtree starts a new block at the end, so the
text stays linear in the graph's size. Traversal is iterative and ordered by
the graph alone, so the text is the same in every process.
"""

from __future__ import annotations

import sys
from typing import TextIO

from graphc.export._common import constant_text, flat_outputs, loop_nodes, param_text
from graphc.tensor import toposort

__all__ = ["debugprint"]

#: indentation levels in one block before a subtree is moved to its own block
MAX_DEPTH = 32


def _letters(number: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, ..."""
    text = ""
    number += 1
    while number:
        number, rest = divmod(number - 1, 26)
        text = chr(ord("A") + rest) + text
    return text


def _describe(node, ident: str) -> str:
    params = param_text(node)
    head = node.op + (f"{{{params}}}" if params else "")
    if node.name:
        head += f" {node.name!r}"
    head += f" [id {ident}]"
    if node.primitive.multi_output:  # a loop: its outputs are the projections below it
        head += f" ({len(node.primitive.output_types(*node.inputs))} outputs)"
    else:
        shape = "(" + ", ".join("?" if s is None else str(s) for s in node.shape) + (
            "," if len(node.shape) == 1 else "")
        head += f" {shape}) {node.dtype}"
    value = constant_text(node)
    if value is not None:
        head += f" = {value}"
    if node.is_gradient:
        head += " (grad)"
    return head


def _inner_graph_nodes(roots) -> list:
    """The nodes of the graph that run inner graphs (loops), in topological order."""
    return loop_nodes(toposort(roots))


def _tree(roots, ids: dict[int, str], lines: list[str], max_depth: int) -> None:
    """Append the text tree of the graph computing ``roots`` to ``lines`` (ids shared through ``ids``)."""
    expanded: set[int] = set()
    deferred: set[int] = set()
    blocks: list = list(roots)

    def ident(node) -> str:
        key = id(node)
        if key not in ids:
            ids[key] = _letters(len(ids))
        return ids[key]

    block = 0
    while block < len(blocks):
        root = blocks[block]
        block += 1
        is_continuation = block > len(roots)
        if is_continuation and id(root) in expanded:
            continue
        stack = [(root, "", "", 0, is_continuation)]
        while stack:
            node, prefix, branch, depth, force = stack.pop()
            label = ident(node)
            key = id(node)
            if not node.inputs:
                lines.append(prefix + branch + _describe(node, label))
                continue
            if key in expanded:
                lines.append(f"{prefix}{branch}{node.op} [id {label}] (see above)")
                continue
            if key in deferred and not force:
                lines.append(f"{prefix}{branch}{node.op} [id {label}] (continued below)")
                continue
            if depth >= max_depth:
                lines.append(prefix + branch + _describe(node, label) + " (continued below)")
                deferred.add(key)
                blocks.append(node)
                continue
            expanded.add(key)
            lines.append(prefix + branch + _describe(node, label))
            child_prefix = prefix + ("" if not branch else ("|   " if branch == "|-- " else "    "))
            count = len(node.inputs)
            for position in range(count - 1, -1, -1):
                connector = "`-- " if position == count - 1 else "|-- "
                stack.append((node.inputs[position], child_prefix, connector, depth + 1, False))


def debugprint(outputs, file: TextIO | None = None, max_depth: int = MAX_DEPTH) -> str:
    """The graph computing ``outputs`` as a text tree; also written to ``file`` if given.

    ``outputs`` is a Tensor, a nested list/tuple/dict of Tensors, or a compiled
    Function (its optimized graph: outputs, then update values). Pass
    ``file=sys.stdout`` to print it.
    """
    if file is not None and not callable(getattr(file, "write", None)):
        raise TypeError(f"debugprint: file must be a text stream such as sys.stdout, got {type(file).__name__}")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"debugprint: max_depth must be an int (at least 1), got {type(max_depth).__name__}")
    if max_depth < 1:
        raise ValueError("debugprint: max_depth must be at least 1")
    roots = flat_outputs(outputs)
    ids: dict[int, str] = {}
    lines: list[str] = []
    _tree(roots, ids, lines, max_depth)
    # loops: each body once, after the graph that uses it (nested bodies after theirs)
    shown: set[int] = set()
    graphs = _inner_graph_nodes(roots)
    position = 0
    while position < len(graphs):
        node = graphs[position]
        position += 1
        for k, graph in enumerate(node.primitive.inner_graphs()):
            if id(graph) in shown:
                continue
            shown.add(id(graph))
            if not shown - {id(graph)}:
                lines.append("")
                lines.append("Inner graphs:")
            lines.append("")
            ident = ids.get(id(node), "?")
            lines.append(f"{node.op} [id {ident}] inner graph {k} ({len(graph.inputs)} inputs, "
                         f"{len(graph.outputs)} outputs):")
            inputs = ", ".join(f"{t.name!r}" for t in graph.inputs)
            lines.append(f" inputs: {inputs}")
            body: list[str] = []
            _tree(list(graph.outputs), ids, body, max_depth)
            lines.extend(" > " + line for line in body)
            graphs.extend(n for n in _inner_graph_nodes(list(graph.outputs)) if n not in graphs)
    text = "\n".join(lines) + ("\n" if lines else "")
    if file is not None:
        file.write(text)
        if file is sys.stdout:
            file.flush()
    return text
