"""The ``graphc`` command: look into files saved with ``gc.save``.

    graphc info FILE              inputs, outputs, variables, updates, node counts by op
    graphc dot FILE               the optimized graph as Graphviz DOT, on stdout
    graphc render FILE -o OUT     draw it (format from OUT's extension: svg, png, pdf)
    graphc print FILE             the graph as a text tree (debugprint)

A model file (``gc.save({"train": ..., "predict": ...}, path)``) holds several
functions: ``info`` describes each one and the variables they share; ``dot``,
``render`` and ``print`` show all of them (shared nodes once) or, with
``--function NAME``, one.

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

EXIT_OK = 0
EXIT_BAD_FILE = 1
EXIT_USAGE = 2
EXIT_RENDER = 3


def _shape(shape) -> str:
    from graphc.types import format_shape

    return format_shape(shape)


def _load(path: str):
    from graphc import load

    return load(path)


def info_text(fn, path: str = "") -> str:
    """The text ``graphc info`` prints for a loaded Function."""
    from graphc.export._common import graph_nodes, node_kind

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
    named = [node for node in order if node.is_gradient and node.name]
    if named:  # gradients gc.grad named d(cost)/d(wrt)
        lines.append(f"named gradients ({len(named)}):")
        for node in named:
            lines.append(f"  {node.name} {node.op} {_shape(node.shape)} {node.dtype}")
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


def model_info_text(fns: dict, path: str = "") -> str:
    """The text ``graphc info`` prints for a model file: every function, then the shared variables."""
    lines = [f"file: {path}"] if path else []
    lines.append(f"functions ({len(fns)}): {', '.join(fns)}")
    users: dict[int, list[str]] = {}
    variables: dict[int, object] = {}
    for name, fn in fns.items():
        plan = fn.plan
        for variable in plan.variables + plan.updated_variables:
            if name not in users.setdefault(id(variable), []):
                users[id(variable)].append(name)
            variables[id(variable)] = variable
        lines.append("")
        lines.append(f"function {name!r}:")
        lines.extend("  " + line for line in info_text(fn).splitlines())
    shared = [(variables[key], names) for key, names in users.items() if len(names) > 1]
    lines.append("")
    lines.append(f"shared variables ({len(shared)}):")
    for variable, names in shared:
        lines.append(f"  {variable.name or '<unnamed>'} {_shape(variable.shape)} {variable.dtype}: "
                     f"{', '.join(names)}")
    return "\n".join(lines) + "\n"


def _shown(loaded, name: str | None):
    """What dot/render/print show: one Function, or every function's graph (a dict of output lists)."""
    if not isinstance(loaded, dict):
        if name is not None:
            raise LookupError("--function: this file holds a single function, not a model of named functions")
        return loaded
    if name is not None:
        if name not in loaded:
            raise LookupError(f"--function: no function {name!r} in this file; it holds {', '.join(loaded)}")
        return loaded[name]
    return {key: fn._graph_outputs() for key, fn in loaded.items()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphc", description="Inspect graphc files written by gc.save.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    info = commands.add_parser("info", help="inputs, outputs, variables and node counts by op")
    info.add_argument("file")
    dot = commands.add_parser("dot", help="print the graph as Graphviz DOT")
    dot.add_argument("file")
    dot.add_argument("--no-legend", action="store_true", help="leave out the legend")
    dot.add_argument("--function", default=None, help="in a model file, only this function")
    render = commands.add_parser("render", help="draw the graph with Graphviz (svg, png, pdf)")
    render.add_argument("file")
    render.add_argument("-o", "--output", required=True, help="the picture to write, e.g. graph.svg")
    render.add_argument("-f", "--format", default=None, help="format (default: from the output's extension)")
    render.add_argument("--function", default=None, help="in a model file, only this function")
    text = commands.add_parser("print", help="print the graph as a text tree (debugprint)")
    text.add_argument("file")
    text.add_argument("--function", default=None, help="in a model file, only this function")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``graphc`` command line; returns the exit code."""
    from graphc.errors import GraphcError, LoadError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        fn = _load(args.file)
    except LoadError as exc:
        print(f"graphc: error: not a valid graphc file: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    except OSError as exc:
        print(f"graphc: error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    if args.command == "info":
        sys.stdout.write(model_info_text(fn, args.file) if isinstance(fn, dict) else info_text(fn, args.file))
        sys.stdout.flush()
        return EXIT_OK
    try:
        shown = _shown(fn, args.function)
    except LookupError as exc:
        print(f"graphc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "dot":
        from graphc.export.dot import to_dot

        sys.stdout.write(to_dot(shown, legend=not args.no_legend))
    elif args.command == "print":
        from graphc.printing import debugprint

        if isinstance(shown, dict):
            for name, outputs in shown.items():
                sys.stdout.write(f"function {name!r}:\n{debugprint(outputs)}")
        else:
            sys.stdout.write(debugprint(shown))
    else:
        from graphc.export.dot import render

        try:
            render(shown, args.output, format=args.format)
        except ValueError as exc:
            print(f"graphc: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (GraphcError, OSError) as exc:
            print(f"graphc: error: cannot render {args.file}: {exc}", file=sys.stderr)
            return EXIT_RENDER
        print(f"wrote {args.output}", file=sys.stderr)
    sys.stdout.flush()
    return EXIT_OK
