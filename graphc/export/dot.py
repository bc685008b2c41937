"""Graphviz export: DOT text, rendering through the ``dot`` program, and SVG for Jupyter.

The DOT text is deterministic: nodes are numbered ``n0, n1, ...`` in the
graph's topological order, so the same program gives the same bytes in every
process. Each node shows its op, name, shape and dtype. Kinds are told apart by
shape and colour (a legend explains them):

* placeholders: yellow boxes with a slanted top (``invhouse``),
* constants: grey notes (their value when it is small),
* variables: green cylinders,
* forward ops: white ellipses,
* gradient ops (built by ``gc.grad`` and friends): red ellipses, bold outline,
* outputs: a double outline and a line saying which output (``output 'loss'``),
* a Function's update values: a line ``update W`` and a dashed green edge to the variable.

Edges go from an input to its consumer; when the consumer has several inputs
the edge is labelled with the input's position. Op parameters are shown the way
they are written (``getitem [0]``, ``einsum ij,jk->ik (matrix product)``), without
the ones at their defaults. Graphs much wider than deep are laid out left to right.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter

from graphc.errors import GraphcError
from graphc.export._common import (
    constant_text,
    graph_nodes,
    loop_nodes,
    node_kind,
    output_labels,
    readable_params,
    type_text,
)

__all__ = ["GraphvizError", "GraphvizNotFoundError", "render", "repr_svg", "to_dot"]

INSTALL_HINT = ("install Graphviz, which provides it: `apt-get install graphviz` (Debian/Ubuntu), "
                "`dnf install graphviz` (Fedora), `brew install graphviz` (macOS), "
                "`conda install graphviz` (conda) or see https://graphviz.org/download/; "
                "then make sure `dot -V` works in a shell")

#: graphs with more nodes than this are not drawn inline in Jupyter
REPR_SVG_LIMIT = 1500

#: output formats accepted by render (Graphviz supports more; these are the common ones)
FORMATS = ("svg", "png", "pdf", "ps", "eps", "jpg", "jpeg", "gif", "dot", "json", "plain")

_STYLES = {
    "placeholder": 'shape=invhouse, style=filled, fillcolor="#fff2b3", color="#8a6d00"',
    "constant": 'shape=note, style=filled, fillcolor="#e8e8e8", color="#666666"',
    "variable": 'shape=cylinder, style=filled, fillcolor="#c9f0c2", color="#2e7d32"',
    "op": 'shape=ellipse, style=filled, fillcolor="#ffffff", color="#333333"',
    "gradient_constant": 'shape=note, style="filled,bold", fillcolor="#e8e8e8", color="#c62828"',
    "gradient": 'shape=ellipse, style="filled,bold", fillcolor="#ffd6d1", color="#c62828", fontcolor="#7f0000"',
}
_LEGEND = (("placeholder", "placeholder (fed)"), ("constant", "constant"), ("variable", "variable (state)"),
           ("op", "forward op"), ("gradient", "gradient op\n(red border; red edges)"))
_OUTPUT_STYLE = "peripheries=2"
_UPDATE_EDGE = 'style=dashed, color="#2e7d32", fontcolor="#2e7d32", constraint=false'
#: graphs at least this many nodes wide, and over twice as wide as deep, are drawn left to right
WIDE = 12


class GraphvizError(GraphcError):
    """Graphviz's ``dot`` failed to render a graph."""


class GraphvizNotFoundError(GraphvizError):
    """Graphviz's ``dot`` program is not installed (or not on ``PATH``)."""


def _quote(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    return f'"{text}"'


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _label(node, roles: list[str] = ()) -> str:
    kind = node_kind(node)
    lines = [node.op]
    params = readable_params(node)
    if params:
        lines[0] += params if params.startswith("[") else f" {_shorten(params)}"
    if node.name:
        lines.append(_shorten(repr(node.name) if kind == "op" else node.name))
    value = constant_text(node)
    if value is not None:
        lines.append(_shorten(f"= {value}"))
    lines.append(type_text(node))
    lines.extend(_shorten(role) for role in roles)  # "output 'loss'", "update W"
    return "\n".join(lines)


def _is_wide(order, index, labels) -> bool:
    """Much wider than deep (a Jacobian's rows side by side): better drawn left to right.

    Estimates the layout from the longest-path level of each node: the widest level's
    labels (about 6 pt per character, plus the gaps) against the levels' heights.
    """
    level = [0] * len(order)
    for k, node in enumerate(order):
        if node.inputs:
            level[k] = 1 + max(level[index[id(p)]] for p in node.inputs)
    depth = max(level, default=0) + 1
    counts = Counter(level)
    if max(counts.values(), default=0) < WIDE:
        return False
    widths: Counter = Counter()
    heights: dict[int, int] = {}
    for k, label in enumerate(labels):
        rows = label.split("\n")
        widths[level[k]] += 6 * max(len(row) for row in rows) + 30
        heights[level[k]] = max(heights.get(level[k], 0), 14 * len(rows) + 30)
    return max(widths.values()) > 2.5 * sum(heights.values()) and depth > 1


def _style(node) -> str:
    kind = node_kind(node)
    if kind == "op" and node.is_gradient:
        return _STYLES["gradient"]
    if kind == "constant" and node.is_gradient:
        return _STYLES["gradient_constant"]
    return _STYLES[kind]


def to_dot(outputs, legend: bool = True, name: str = "graphc", rankdir: str | None = None) -> str:
    """Graphviz DOT text for the graph computing ``outputs``.

    ``outputs`` is a Tensor, a nested list/tuple/dict of Tensors, or a compiled
    Function (its optimized graph, with a dashed edge from each update's new value
    to the variable it writes). Each output says which one it is (``output 'loss'``).
    ``legend=False`` leaves the legend out; ``rankdir`` is ``"TB"`` (top to bottom),
    ``"LR"``, or None to draw graphs much wider than deep left to right. The text is
    the same in every process.
    """
    from graphc.function import Function

    if not isinstance(name, str):
        raise TypeError(f"to_dot: name (the DOT graph's name) must be a str, got {type(name).__name__}")
    if rankdir not in (None, "TB", "LR", "BT", "RL"):
        raise ValueError(f"to_dot: rankdir must be None, 'TB', 'LR', 'BT' or 'RL', got {rankdir!r}")
    order, flat, index = graph_nodes(outputs)
    roles: dict[int, list[str]] = {}
    for tensor, role in zip(flat, output_labels(outputs)):
        roles.setdefault(index[id(tensor)], []).append(role)
    updates = []  # (value node, variable node) for a Function's updates
    if isinstance(outputs, Function):
        for variable, value in outputs.plan.updates:
            if id(variable) in index:
                updates.append((index[id(value)], index[id(variable)], variable.name or "<unnamed>"))
    labels = [_label(node, roles.get(k, [])) for k, node in enumerate(order)]
    if rankdir is None:
        rankdir = "LR" if _is_wide(order, index, labels) else "TB"
    lines = [f"digraph {_quote(name)} {{",
             f'  graph [rankdir={rankdir}, fontname="Helvetica", fontsize=10, nodesep=0.3, ranksep=0.35];',
             '  node [fontname="Helvetica", fontsize=10, margin="0.08,0.04"];',
             '  edge [fontname="Helvetica", fontsize=8, color="#555555", arrowsize=0.7];']
    for k, node in enumerate(order):
        mine = roles.get(k, [])
        attrs = f"label={_quote(labels[k])}, {_style(node)}"
        if any(role.startswith("output") for role in mine):
            attrs += f", {_OUTPUT_STYLE}, tooltip={_quote('; '.join(mine))}"
        lines.append(f"  n{k} [{attrs}];")
    for k, node in enumerate(order):
        several = len(node.inputs) > 1
        for position, parent in enumerate(node.inputs):
            edge = f"  n{index[id(parent)]} -> n{k}"
            attrs = []
            if several:
                attrs.append(f'label="{position}"')
            if node.is_gradient:
                attrs.append('color="#c62828"')
            lines.append(edge + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for value, variable, variable_name in updates:
        lines.append(f"  n{value} -> n{variable} [label={_quote('update ' + variable_name)}, {_UPDATE_EDGE}];")
    lines.extend(_body_clusters(order, index))
    if legend:
        lines.append("  subgraph cluster_legend {")
        lines.append('    label="legend"; fontsize=9; style=dashed; color="#999999";')
        for kind, text in _LEGEND:
            lines.append(f"    legend_{kind} [label={_quote(text)}, {_STYLES[kind]}, fontsize=8];")
        lines.append(f'    legend_output [label="output\\n(double outline)", {_STYLES["op"]}, {_OUTPUT_STYLE}, '
                     f'fontsize=8];')
        lines.append('    legend_inputs [label="numbers on edges:\\nthe input\'s position", shape=plaintext, '
                     'fontsize=8];')
        chain = " -> ".join([f"legend_{kind}" for kind, _ in _LEGEND] + ["legend_output", "legend_inputs"])
        lines.append(f"    {chain} [style=invis];")
        if updates:
            lines.append(f'    legend_new [label="new value", {_STYLES["op"]}, fontsize=8];')
            lines.append('    legend_update [label="W", shape=cylinder, style=filled, fillcolor="#c9f0c2", '
                         'color="#2e7d32", fontsize=8];')
            lines.append("    legend_inputs -> legend_new [style=invis];")
            lines.append('    legend_new -> legend_update [label="update W", style=dashed, color="#2e7d32", '
                         'fontcolor="#2e7d32"];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _body_clusters(order, index) -> list[str]:
    """Loops: each body drawn once as a dashed cluster, its outputs joined to the loop's node by dashed
    edges (nested bodies get clusters of their own, joined to their loop inside the outer body)."""
    from graphc.tensor import toposort

    lines: list[str] = []
    pending = [(node, f"n{index[id(node)]}") for node in loop_nodes(order)]
    drawn = 0
    while pending:
        node, owner = pending.pop(0)
        for graph in node.primitive.inner_graphs():
            prefix = f"b{drawn}_"
            drawn += 1
            body = toposort(list(graph.outputs), stop_at=list(graph.inputs))
            inner = {id(n): k for k, n in enumerate(body)}
            lines.append(f"  subgraph cluster_body{drawn - 1} {{")
            lines.append(f'    label={_quote(node.op + " body")}; style=dashed; color="#1565c0"; fontsize=9;')
            for k, item in enumerate(body):
                lines.append(f"    {prefix}n{k} [label={_quote(_label(item))}, {_style(item)}];")
            for k, item in enumerate(body):
                several = len(item.inputs) > 1
                for position, parent in enumerate(item.inputs):
                    attrs = f' [label="{position}"]' if several else ""
                    lines.append(f"    {prefix}n{inner[id(parent)]} -> {prefix}n{k}{attrs};")
            lines.append("  }")
            for j, out in enumerate(graph.outputs):
                lines.append(f'  {prefix}n{inner[id(out)]} -> {owner} [style=dashed, color="#1565c0", '
                             f'label="body {j}"];')
            pending.extend((item, f"{prefix}n{inner[id(item)]}") for item in body
                           if item.inputs and item.primitive.inner_graphs())
    return lines


def dot_executable() -> str | None:
    """The path of Graphviz's ``dot``, or None when it is not installed."""
    return shutil.which("dot")


def _run_dot(source: str, fmt: str, timeout: float | None = 120) -> bytes:
    exe = dot_executable()
    if exe is None:
        raise GraphvizNotFoundError(f"cannot render: Graphviz's `dot` program was not found on PATH; {INSTALL_HINT}")
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GraphvizError(f"cannot render: running {exe} failed: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"Graphviz `dot -T{fmt}` failed (exit code {done.returncode}): {message}")
    return done.stdout


def _format_for(path: str, format: str | None) -> str:  # noqa: A002 - the contract's name
    if format is None:
        extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
        if not extension:
            raise ValueError(f"render: cannot tell the format of {path!r}: give the file an extension "
                             f"(.svg, .png, .pdf) or pass format=")
        format = extension
    format = format.lower()
    if not re.fullmatch(r"[a-z0-9]+", format) or format not in FORMATS:
        raise ValueError(f"render: unsupported format {format!r}; use one of {', '.join(FORMATS)}")
    return format


def render(outputs, path, format: str | None = None, legend: bool = True) -> str:  # noqa: A002 - the contract's name
    """Draw the graph computing ``outputs`` into ``path`` through Graphviz's ``dot``.

    The format (svg, png, pdf, ...) comes from ``path``'s extension unless
    ``format`` is given (``ValueError`` for an unknown one); ``legend=False``
    leaves the legend out. Raises :class:`GraphvizNotFoundError` (a ``GraphcError``)
    saying how to install Graphviz when ``dot`` is missing. Returns ``path``.
    """
    fmt = _format_for(path, format)
    data = _run_dot(to_dot(outputs, legend=legend), fmt)
    with open(path, "wb") as handle:
        handle.write(data)
    return os.fspath(path)


def repr_svg(outputs) -> str | None:
    """SVG text of the graph for Jupyter, or None (Jupyter then shows the text repr)."""
    if dot_executable() is None:
        return None
    try:
        if len(graph_nodes(outputs)[0]) > REPR_SVG_LIMIT:
            return None  # too big to lay out interactively; render() it to a file instead
        return _run_dot(to_dot(outputs), "svg", timeout=30).decode("utf-8")
    except GraphcError:
        return None


def _sequence_svg(value) -> str | None:
    """SVG for a list or tuple of tensors (at most 64 of them), else None (IPython falls back)."""
    from graphc.tensor import Tensor

    if not value or len(value) > 64 or not all(isinstance(item, Tensor) for item in value):
        return None
    return repr_svg(list(value))


def register_ipython_display(shell=None) -> bool:
    """Let IPython/Jupyter draw a list or tuple of tensors as one picture, as it draws a tensor.

    Called by ``import graphc`` when IPython is already running (nothing is imported for
    it); other lists and tuples display as before. Returns whether a shell was found.
    """
    import sys

    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None:
        return False
    formatter = shell.display_formatter.formatters["image/svg+xml"]
    for kind in (list, tuple):
        formatter.for_type(kind, _sequence_svg)
    return True
