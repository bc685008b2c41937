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
* outputs: a double outline.

Edges go from an input to its consumer; when the consumer has several inputs
the edge is labelled with the input's position.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from graphc.errors import GraphcError
from graphc.export._common import constant_text, graph_nodes, node_kind, param_text, type_text

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
           ("op", "forward op"), ("gradient", "gradient op"))


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


def _label(node) -> str:
    kind = node_kind(node)
    lines = [node.op]
    params = param_text(node)
    if params:
        lines[0] += f" ({_shorten(params)})"
    if node.name:
        lines.append(_shorten(repr(node.name) if kind == "op" else node.name))
    value = constant_text(node)
    if value is not None:
        lines.append(_shorten(f"= {value}"))
    lines.append(type_text(node))
    return "\n".join(lines)


def _style(node) -> str:
    kind = node_kind(node)
    if kind == "op" and node.is_gradient:
        return _STYLES["gradient"]
    if kind == "constant" and node.is_gradient:
        return _STYLES["gradient_constant"]
    return _STYLES[kind]


def to_dot(outputs, legend: bool = True, name: str = "graphc") -> str:
    """Graphviz DOT text for the graph computing ``outputs``.

    ``outputs`` is a Tensor, a nested list/tuple/dict of Tensors, or a compiled
    Function (its optimized graph). The text is the same in every process.
    """
    if not isinstance(name, str):
        raise TypeError(f"to_dot: name (the DOT graph's name) must be a str, got {type(name).__name__}")
    order, flat, index = graph_nodes(outputs)
    output_positions: dict[int, list[int]] = {}
    for position, tensor in enumerate(flat):
        output_positions.setdefault(index[id(tensor)], []).append(position)
    lines = [f"digraph {_quote(name)} {{",
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=10, nodesep=0.3, ranksep=0.35];',
             '  node [fontname="Helvetica", fontsize=10, margin="0.08,0.04"];',
             '  edge [fontname="Helvetica", fontsize=8, color="#555555", arrowsize=0.7];']
    for k, node in enumerate(order):
        attrs = f"label={_quote(_label(node))}, {_style(node)}"
        if k in output_positions:
            outs = ", ".join(str(p) for p in output_positions[k])
            attrs += f', peripheries=2, tooltip={_quote("output " + outs)}'
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
    if legend:
        lines.append("  subgraph cluster_legend {")
        lines.append('    label="legend"; fontsize=9; style=dashed; color="#999999";')
        for kind, text in _LEGEND:
            lines.append(f"    legend_{kind} [label={_quote(text)}, {_STYLES[kind]}, fontsize=8];")
        chain = " -> ".join(f"legend_{kind}" for kind, _ in _LEGEND)
        lines.append(f"    {chain} [style=invis];")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


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
