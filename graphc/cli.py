"""The ``graphc`` command: look into files saved with ``gc.save``.

    graphc info FILE              inputs, outputs, variables, updates, node counts by op
    graphc dot FILE               the optimized graph as Graphviz DOT, on stdout
    graphc render FILE -o OUT     draw it (format from OUT's extension: svg, png, pdf)
    graphc print FILE             the graph as a text tree (debugprint)

Files are read with the safe loader (``gc.load``): nothing in them is run.
Exit codes: 0 success, 1 the file cannot be read or is not a valid graphc
file, 2 bad command line, 3 rendering failed (for example Graphviz missing).
Also available as ``python -m graphc``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from graphc.errors import GraphcError, LoadError
from graphc.export._common import graph_nodes, node_kind
from graphc.export.dot import render, to_dot
from graphc.printing import debugprint
from graphc.serialize import load
from graphc.types import format_shape

EXIT_OK = 0
EXIT_BAD_FILE = 1
EXIT_USAGE = 2
EXIT_RENDER = 3


def _shape(shape) -> str:
    return format_shape(shape)


def info_text(fn, path: str = "") -> str:
    """The text ``graphc info`` prints for a loaded Function."""
    plan = fn.plan
    order, flat, _ = graph_nodes(fn)
    lines = [f"file: {path}"] if path else []
    lines.append(f"inputs ({len(plan.inputs)}):")
    for position, tensor in enumerate(plan.inputs):
        lines.append(f"  {position}: {tensor.name} {_shape(tensor.shape)} {tensor.dtype}")
    lines.append(f"outputs ({len(plan.outputs)}):")
    for position, tensor in enumerate(plan.outputs):
        label = f" {tensor.name!r}" if tensor.name else ""
        lines.append(f"  {position}: {tensor.op}{label} {_shape(tensor.shape)} {tensor.dtype}")
    variables = plan.variables + tuple(v for v in plan.updated_variables if all(v is not w for w in plan.variables))
    lines.append(f"variables ({len(variables)}):")
    for variable in variables:
        lines.append(f"  {variable.name or '<unnamed>'} {_shape(variable.shape)} {variable.dtype}")
    lines.append(f"updates ({len(plan.updates)}):")
    for variable, value in plan.updates:
        lines.append(f"  {variable.name or '<unnamed>'} <- {value.op} {_shape(value.shape)} {value.dtype}")
    counts = Counter(node.op for node in order)
    kinds = Counter(node_kind(node) for node in order)
    lines.append(f"nodes: {len(order)} ({kinds['op']} ops, {kinds['placeholder']} placeholders, "
                 f"{kinds['constant']} constants, {kinds['variable']} variables; "
                 f"{sum(1 for n in order if n.is_gradient)} gradient nodes)")
    lines.append("nodes by op:")
    width = max((len(name) for name in counts), default=0)
    for name in sorted(counts):
        lines.append(f"  {name:<{width}}  {counts[name]}")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphc", description="Inspect graphc files written by gc.save.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    info = commands.add_parser("info", help="inputs, outputs, variables and node counts by op")
    info.add_argument("file")
    dot = commands.add_parser("dot", help="print the graph as Graphviz DOT")
    dot.add_argument("file")
    dot.add_argument("--no-legend", action="store_true", help="leave out the legend")
    render = commands.add_parser("render", help="draw the graph with Graphviz (svg, png, pdf)")
    render.add_argument("file")
    render.add_argument("-o", "--output", required=True, help="the picture to write, e.g. graph.svg")
    render.add_argument("-f", "--format", default=None, help="format (default: from the output's extension)")
    text = commands.add_parser("print", help="print the graph as a text tree (debugprint)")
    text.add_argument("file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``graphc`` command line; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        fn = load(args.file)
    except LoadError as exc:
        print(f"graphc: error: not a valid graphc file: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    except OSError as exc:
        print(f"graphc: error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    if args.command == "info":
        sys.stdout.write(info_text(fn, args.file))
    elif args.command == "dot":
        sys.stdout.write(to_dot(fn, legend=not args.no_legend))
    elif args.command == "print":
        sys.stdout.write(debugprint(fn))
    else:
        try:
            render(fn, args.output, format=args.format)
        except ValueError as exc:
            print(f"graphc: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (GraphcError, OSError) as exc:
            print(f"graphc: error: cannot render {args.file}: {exc}", file=sys.stderr)
            return EXIT_RENDER
        print(f"wrote {args.output}", file=sys.stderr)
    sys.stdout.flush()
    return EXIT_OK
