"""The ``graphc`` command: look into (and run) files saved with ``gc.save``.

    graphc info FILE [--json]     inputs, outputs, variables, updates, node counts by op
    graphc dot FILE               the optimized graph as Graphviz DOT, on stdout
    graphc render FILE [-o OUT]   draw it (format from OUT's extension, or -f; default FILE.svg)
    graphc print FILE             the graph as a text tree (debugprint)
    graphc run FILE -i NAME=VALUE call the function: values from .npy files or literals
    graphc --version

A model file (``gc.save({"train": ..., "predict": ...}, path)``) holds several
functions: ``info`` describes each one and the variables they share; ``dot``,
``render`` and ``print`` show all of them (shared nodes once) or, with
``--function NAME``, one; ``run`` needs ``--function NAME``.

Files are read with the safe loader (``gc.load``): nothing in them is run but the graph
itself (and only by ``run``). Exit codes: 0 success, 1 the file cannot be read or is not a
valid graphc file, 2 bad command line (or bad input values for ``run``), 3 rendering failed
(for example Graphviz missing), 4 running the function failed. Also ``python -m graphc``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np

from graphc.errors import GraphcError, LoadError
from graphc.export._common import graph_nodes, loop_nodes, node_kind
from graphc.export.dot import render, to_dot
from graphc.printing import debugprint
from graphc.serialize import load
from graphc.types import format_shape
from graphc.version import __version__

EXIT_OK = 0
EXIT_BAD_FILE = 1
EXIT_USAGE = 2
EXIT_RENDER = 3
EXIT_RUN = 4


def _shape(shape) -> str:
    return format_shape(shape)


def _variables(plan) -> tuple:
    return plan.variables + tuple(v for v in plan.updated_variables if all(v is not w for w in plan.variables))


def _section(title: str, rows: list[str]) -> list[str]:
    """``title (count):`` and the rows, indented."""
    return [f"{title} ({len(rows)}):"] + [f"  {row}" for row in rows]


def _described(tensor) -> str:
    return f"{_shape(tensor.shape)} {tensor.dtype}"


def _loop_lines(order) -> list[str]:
    """One line per inner graph of each loop node: its size and its ops (none if there are no loops)."""
    loops = loop_nodes(order)
    lines = [f"loops ({len(loops)}):"] if loops else []
    for node in loops:
        label = f" {node.name}" if node.name else ""
        for graph in node.primitive.inner_graphs():
            ops = Counter(n.op for n in graph.nodes() if n.inputs)
            listed = ", ".join(f"{name} {ops[name]}" for name in sorted(ops))
            lines.append(f"  {node.op}{label}: body of {graph.size} nodes "
                         f"({len(graph.inputs)} inputs, {len(graph.outputs)} outputs; {listed})")
    return lines


def _count_lines(order) -> tuple[list[str], list[str]]:
    """The ``nodes:`` summary line, and the ``nodes by op:`` table."""
    kinds = Counter(node_kind(node) for node in order)
    summary = [f"nodes: {len(order)} ({kinds['op']} ops, {kinds['placeholder']} placeholders, "
               f"{kinds['constant']} constants, {kinds['variable']} variables; "
               f"{sum(1 for n in order if n.is_gradient)} gradient nodes)"]
    counts = Counter(node.op for node in order)
    width = max((len(name) for name in counts), default=0)
    return summary, ["nodes by op:"] + [f"  {name:<{width}}  {counts[name]}" for name in sorted(counts)]


def info_text(fn, path: str = "") -> str:
    """The text ``graphc info`` prints for a loaded Function."""
    plan = fn.plan
    order, _, _ = graph_nodes(fn)
    lines = [f"file: {path}"] if path else []
    lines += _section("inputs", [f"{k}: {t.name} {_described(t)}" for k, t in enumerate(plan.inputs)])
    lines += _section("outputs", [f"{k}: {t.op}{f' {t.name!r}' if t.name else ''} {_described(t)}"
                                  for k, t in enumerate(plan.outputs)])
    lines += _section("variables", [f"{v.name or '<unnamed>'} {_described(v)}" for v in _variables(plan)])
    lines += _section("updates", [f"{v.name or '<unnamed>'} <- {value.op} {_described(value)}"
                                  for v, value in plan.updates])
    named = [node for node in order if node.is_gradient and node.name]
    if named:  # gradients gc.grad named d(cost)/d(wrt)
        lines += _section("named gradients", [f"{n.name} {n.op} {_described(n)}" for n in named])
    summary, by_op = _count_lines(order)
    return "\n".join(lines + summary + _loop_lines(order) + by_op) + "\n"


def info_json(fn, path: str = "") -> dict:
    """What ``graphc info --json`` prints: the same facts as :func:`info_text`, as a JSON object."""
    plan = fn.plan
    order, _, _ = graph_nodes(fn)

    def described(tensor, **extra) -> dict:
        return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype), **extra}

    kinds = Counter(node_kind(node) for node in order)
    return {
        "file": path,
        "inputs": [described(t) for t in plan.inputs],
        "outputs": [described(t, op=t.op) for t in plan.outputs],
        "variables": [described(v) for v in _variables(plan)],
        "updates": [{"variable": v.name, "op": value.op, "shape": list(value.shape), "dtype": str(value.dtype)}
                    for v, value in plan.updates],
        "nodes": {"total": len(order), "ops": kinds["op"], "placeholders": kinds["placeholder"],
                  "constants": kinds["constant"], "variables": kinds["variable"],
                  "gradient": sum(1 for n in order if n.is_gradient)},
        "nodes_by_op": dict(sorted(Counter(node.op for node in order).items())),
    }


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
    parser = argparse.ArgumentParser(prog="graphc", description="Inspect and run graphc files written by gc.save.")
    parser.add_argument("--version", action="version", version=f"graphc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    info = commands.add_parser("info", help="inputs, outputs, variables and node counts by op")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    dot = commands.add_parser("dot", help="print the graph as Graphviz DOT")
    dot.add_argument("file")
    dot.add_argument("--no-legend", action="store_true", help="leave out the legend")
    dot.add_argument("--function", default=None, help="in a model file, only this function")
    render = commands.add_parser("render", help="draw the graph with Graphviz (svg, png, pdf)")
    render.add_argument("file")
    render.add_argument("-o", "--output", default=None,
                        help="the picture to write, e.g. graph.svg (default: FILE with the format's extension)")
    render.add_argument("-f", "--format", default=None,
                        help="svg, png, pdf, ... (default: from the output's extension, else svg)")
    render.add_argument("--no-legend", action="store_true", help="leave out the legend")
    render.add_argument("--function", default=None, help="in a model file, only this function")
    text = commands.add_parser("print", help="print the graph as a text tree (debugprint)")
    text.add_argument("file")
    text.add_argument("--function", default=None, help="in a model file, only this function")
    run = commands.add_parser("run", help="call the function on input values and print its outputs",
                              description="Call the saved function. Each input is NAME=VALUE: VALUE is a .npy "
                                          "file (read without pickle) or a Python literal (3, 2.5, [[1, 2]], "
                                          "True). Updates change the variables of this run only: the file is "
                                          "not written.")
    run.add_argument("file")
    run.add_argument("-i", "--input", action="append", default=[], metavar="NAME=VALUE",
                     help="an input value (repeat for each input)")
    run.add_argument("--save", metavar="DIR", default=None,
                     help="also write each output to DIR/output_<k>.npy")
    run.add_argument("--json", action="store_true", help="print the outputs as JSON (nested lists)")
    run.add_argument("--function", default=None, help="in a model file, the function to run")
    return parser


def _input_value(text: str, name: str):
    if text.endswith(".npy"):
        try:
            return np.load(text, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"input {name!r}: cannot read {text}: {exc}") from exc
    try:
        return np.asarray(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f"input {name!r}: {text[:60]!r} is neither a .npy file nor a literal "
                         f"(a number, True/False, or a nested list of them)") from exc


def _flat_values(result) -> list:
    """The arrays of a function's result in the order of its outputs (as graphc.structure.flatten)."""
    flat, stack = [], [result]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _run(fn, args) -> int:
    values = {}
    for item in args.input:
        name, sep, text = item.partition("=")
        if not sep or not name:
            print(f"graphc: error: --input takes NAME=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        if name in values:
            print(f"graphc: error: input {name!r} is given twice", file=sys.stderr)
            return EXIT_USAGE
        try:
            values[name] = _input_value(text, name)
        except ValueError as exc:
            print(f"graphc: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    names = [t.name for t in fn.inputs]
    missing = [n for n in names if n not in values]
    unknown = [n for n in values if n not in names]
    if missing or unknown:
        parts = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unknown {', '.join(map(repr, unknown))}"] if unknown else [])
        print(f"graphc: error: inputs: {'; '.join(parts)}; the function takes "
              f"{', '.join(map(repr, names)) or 'no inputs'} (give each as -i NAME=VALUE)", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = fn(**values) if values else fn()
    except GraphcError as exc:
        print(f"graphc: error: running {args.file} failed: {exc}", file=sys.stderr)
        return EXIT_USAGE if type(exc).__name__ == "FeedError" else EXIT_RUN
    outputs = _flat_values(result)
    if args.save is not None:
        os.makedirs(args.save, exist_ok=True)
        for k, value in enumerate(outputs):
            np.save(os.path.join(args.save, f"output_{k}.npy"), value, allow_pickle=False)
    if args.json:
        json.dump([np.asarray(v).tolist() for v in outputs], sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    for k, (tensor, value) in enumerate(zip(fn.plan.outputs, outputs)):
        value = np.asarray(value)
        label = f" {tensor.name!r}" if tensor.name else ""
        sys.stdout.write(f"output {k}{label}: {_shape(value.shape)} {value.dtype}\n"
                         f"{np.array2string(value, threshold=200)}\n")
    return EXIT_OK


def _render(fn, args) -> int:
    fmt = args.format
    output = args.output
    if output is None:
        output = os.path.splitext(os.path.basename(args.file))[0] + "." + (fmt or "svg").lower()
    elif fmt is None and not os.path.splitext(output)[1]:
        print(f"graphc: error: cannot tell the format of {output!r}: give it an extension (.svg, .png, .pdf) "
              f"or pass -f FORMAT", file=sys.stderr)
        return EXIT_USAGE
    try:
        render(fn, output, format=fmt, legend=not args.no_legend)
    except ValueError as exc:
        print(f"graphc: error: {str(exc).replace('pass format=', 'pass -f FORMAT')}", file=sys.stderr)
        return EXIT_USAGE
    except (GraphcError, OSError) as exc:
        print(f"graphc: error: cannot render {args.file}: {exc}", file=sys.stderr)
        return EXIT_RENDER
    print(f"wrote {output}", file=sys.stderr)
    return EXIT_OK


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
    code = EXIT_OK
    if args.command == "info":
        if args.json:
            described = ({name: info_json(f) for name, f in fn.items()} if isinstance(fn, dict)
                         else info_json(fn, args.file))
            json.dump(described, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(model_info_text(fn, args.file) if isinstance(fn, dict) else info_text(fn, args.file))
        sys.stdout.flush()
        return EXIT_OK
    try:
        shown = _shown(fn, args.function)
    except LookupError as exc:
        print(f"graphc: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run" and isinstance(shown, dict):
        print(f"graphc: error: this file holds several functions ({', '.join(shown)}): choose one with "
              f"--function NAME", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "dot":
        sys.stdout.write(to_dot(shown, legend=not args.no_legend))
    elif args.command == "print":
        if isinstance(shown, dict):
            for name, outputs in shown.items():
                sys.stdout.write(f"function {name!r}:\n{debugprint(outputs)}")
        else:
            sys.stdout.write(debugprint(shown))
    elif args.command == "run":
        code = _run(shown, args)
    else:
        code = _render(shown, args)
    sys.stdout.flush()
    return code
