"""Lowering: a graph becomes a Plan, straight-line Python over NumPy calls.

The plan is generated source code with one line per op node, each calling the
op's own ``impl``. Intermediates are deleted right after their last use, so
memory is freed as early as a hand-written program would free it. Outputs
that could alias a feed, a variable, a constant or another output are copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from graphc.errors import ExecutionError, FeedError
from graphc.leaves import Constant, Placeholder, VariableLeaf
from graphc.tensor import Tensor, Variable, toposort
from graphc.types import format_shape


@dataclass
class Plan:
    """A compiled graph: what to feed, what to read, and the generated ``run``."""

    inputs: tuple[Tensor, ...]
    variables: tuple[Variable, ...]
    outputs: tuple[Tensor, ...]
    updates: tuple[tuple[Variable, Tensor], ...]
    steps: tuple[Tensor, ...]
    source: str
    run: Callable = field(repr=False)

    @property
    def updated_variables(self) -> tuple[Variable, ...]:
        return tuple(v for v, _ in self.updates)


def _as_array(value) -> np.ndarray:
    return value if type(value) is np.ndarray else np.asarray(value)


def _copy(value) -> np.ndarray:
    return np.array(value, copy=True)


def _describe_failure(node: Tensor, arrays: Sequence, exc: Exception) -> ExecutionError:
    shapes = ", ".join(format_shape(np.shape(a)) + f" {np.asarray(a).dtype}" if a is not None else "?"
                       for a in arrays)
    site = f" created at {node.site[0]}:{node.site[1]}" if node.site else ""
    label = f" {node.name!r}" if node.name else ""
    return ExecutionError(f"op {node.op!r} (node{label}{site}) failed on inputs of shapes [{shapes}]: "
                          f"{type(exc).__name__}: {exc}")


def build_plan(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
               updates: Sequence[tuple[Variable, Tensor]] = ()) -> Plan:
    """Lower the graph computing ``outputs`` and the update values to a Plan.

    ``inputs`` are the tensors fed at call time, in call order. Every
    placeholder the graph needs must be among them (else ``FeedError``).
    """
    outputs = tuple(outputs)
    updates = tuple(updates)
    roots = list(outputs) + [new for _, new in updates]
    input_ids = {id(t): k for k, t in enumerate(inputs)}
    order = toposort(roots, stop_at=list(inputs))
    names: dict[int, str] = {}
    defaults: dict[str, object] = {}
    variables: list[Variable] = []
    steps: list[Tensor] = []
    for node in order:
        key = id(node)
        if key in input_ids:
            names[key] = f"x{input_ids[key]}"
        elif isinstance(node.primitive, Placeholder):
            raise FeedError(f"the graph needs placeholder {node.name!r} ({node.describe()}), "
                            f"which is not among the inputs")
        elif isinstance(node.primitive, VariableLeaf):
            names[key] = f"w{len(variables)}"
            variables.append(node)
        elif isinstance(node.primitive, Constant):
            names[key] = f"c{len(defaults)}"
            defaults[names[key]] = node.primitive.value
        else:
            names[key] = f"v{len(steps)}"
            steps.append(node)
    # last use of every value, so it can be deleted right after
    returned = {id(t) for t in roots}
    last_use: dict[int, int] = {}
    for index, node in enumerate(steps):
        for parent in node.inputs:
            last_use[id(parent)] = index
    frees: list[list[str]] = [[] for _ in steps]
    for key, index in last_use.items():
        if key not in returned and names[key][0] in "vx":
            frees[index].append(names[key])

    lines = ["def run(feeds, variables" + "".join(f", {n}={n}" for n in defaults)
             + "".join(f", f{i}=f{i}" for i in range(len(steps))) + ", _as_array=_as_array, _copy=_copy):"]
    if inputs:
        lines.append("    " + "".join(f"x{k}, " for k in range(len(inputs))) + "= feeds")
    if variables:
        lines.append("    " + "".join(f"w{k}, " for k in range(len(variables))) + "= variables")
    lines.append("    step = -1")
    lines.append("    try:")
    lines.append("        pass")
    namespace: dict[str, object] = {"_as_array": _as_array, "_copy": _copy, **defaults}
    for index, node in enumerate(steps):
        namespace[f"f{index}"] = node.primitive.impl
        args = ", ".join(names[id(p)] for p in node.inputs)
        lines.append(f"        step = {index}")
        lines.append(f"        v{index} = f{index}({args})")
        for name in sorted(frees[index]):
            lines.append(f"        del {name}")
    lines.append("    except Exception as exc:")
    lines.append("        raise _failure(step, locals(), exc) from exc")
    # outputs and update values escape to the caller: copy whatever could alias
    escaped: list[str] = []
    seen: set[int] = set()
    for tensor in roots:
        name = names[id(tensor)]
        producer_is_view = name[0] == "v" and tensor.primitive.view
        if name[0] != "v" or producer_is_view or id(tensor) in seen:
            escaped.append(f"_copy({name})")
        else:
            escaped.append(f"_as_array({name})")
        seen.add(id(tensor))
    lines.append(f"    return ({''.join(e + ', ' for e in escaped)})")
    source = "\n".join(lines) + "\n"

    def failure(step: int, frame_locals: dict, exc: Exception) -> ExecutionError:
        node = steps[step]
        arrays = [frame_locals.get(names[id(p)]) for p in node.inputs]
        return _describe_failure(node, arrays, exc)

    namespace["_failure"] = failure
    code = compile(source, "<graphc plan>", "exec")
    exec(code, namespace)  # noqa: S102 - our own generated code, from the graph only
    return Plan(tuple(inputs), tuple(variables), outputs, updates, tuple(steps), source, namespace["run"])
