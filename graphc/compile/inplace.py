"""Stage 3, in-place planning (``inplace_updates=True``): where each new value is written.

Each new value is written into its variable's storage at the earliest point where every
reader of the old value (views included) has run (the schedule put them first): by the step
computing it (``out=`` the storage) when that step is the last reader and a float ufunc or
matmul of the variable's shape and dtype, else by a write step right after the last reader.
Outputs and new values that look into an updated variable's storage are copied first, as
soon as they exist. Plans without in-place updates pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graphc.ops.elementwise import Relu
from graphc.ops.linalg import Matmul
from graphc.tensor import Tensor, Variable

from .plan import Program
from .runtime import copy
from .steps import kernel, looks_into, static


def plan_inplace(program: Program) -> Program:
    """Stage 3: inserts the copy and write steps, and makes the roots what each update returns."""
    if not program.options.inplace:
        return program
    roots = program.roots
    steps, outputs, fused, writes = _stage_inplace(program.steps, program.deps, list(roots[:program.n_outputs]),
                                                   program.resolved_updates, program.special)
    program.steps, program.fused, program.writes = steps, fused, writes
    program.roots = outputs + [n for n in steps if id(n) in fused]
    return program


@dataclass(frozen=True)
class CopyStep:
    """A pseudo-step: a fresh copy of a value that looks into an updated variable's storage,
    taken before that storage is overwritten (an output, or a new value such as a swap's)."""

    name = "copy"
    view = False

    def impl(self, array):  # pragma: no cover - lowered to ``_copy`` directly
        return copy(array)


@dataclass(frozen=True)
class WriteStep:
    """A pseudo-step: copy update ``index``'s new value into the variable's storage."""

    index: int
    variable: str
    name = "update"
    view = False


def _computes_into(value: Tensor, variable: Variable, deps, looks) -> bool:
    """Whether the step computing ``value`` can write it with ``out=`` the variable's storage: a float
    ufunc or matmul (which does not read the variable) of the variable's shape and dtype."""
    cls = type(value.primitive)
    if (isinstance(value.primitive, CopyStep) or value.primitive.view or not static(value)
            or value.shape != variable.shape or value.dtype != variable.dtype or value.dtype.kind != "f"):
        return False
    if kernel(value) is not None or cls is Relu:
        return True
    return cls is Matmul and not any(id(variable) in looks.get(id(p), ()) for p in deps[value])


def _stage_inplace(steps: list[Tensor], deps: dict[Tensor, list[Tensor]], outputs: list[Tensor],
                   updates: Sequence[tuple[Variable, Tensor]],
                   special: dict) -> tuple[list[Tensor], list[Tensor], dict[int, int], dict[int, int]]:
    """Insert the copies and writes of in-place updates into the schedule.

    Each new value is written into its variable's storage at the earliest point
    where every reader of the old value (views included) has run: by the step
    computing it (``out=`` the storage) when that step is the last reader and a
    ufunc or matmul of the variable's shape and dtype, else by a write step right
    after the last reader. Outputs and new values that look into an updated
    variable's storage are copied first, as soon as they exist.

    Returns the new steps, the outputs (copies substituted), the steps writing
    straight into a variable (id -> update index) and the write steps (id -> index).
    """
    position = {n: i for i, n in enumerate(steps)}
    looks = looks_into(steps, deps, updates)
    last_read: dict[int, int] = {}  # variable id -> the last step reading its storage (views included)
    for i, node in enumerate(steps):
        for key in looks.get(id(node), frozenset()).union(*(looks.get(id(p), ()) for p in deps[node])):
            last_read[key] = i
    copies_at: dict[int, list[Tensor]] = {}
    copies: dict[Tensor, Tensor] = {}

    def copy_of(node: Tensor) -> Tensor:
        made = copies.get(node)
        if made is None:
            made = copies[node] = Tensor(CopyStep(), [node], node.shape, node.dtype, site=node.site,
                                             is_gradient=False)
            deps[made] = [node]
            at = position.get(node, -1)
            position[made] = at
            copies_at.setdefault(at, []).append(made)
            for key in looks[id(node)]:
                last_read[key] = max(last_read.get(key, -1), at)
        return made

    outputs = [copy_of(t) if looks.get(id(t)) else t for t in outputs]
    values = [copy_of(value) if looks.get(id(value)) else value for _, value in updates]
    used = {p for n in steps for p in deps[n]}
    returned = set(outputs)
    counts: dict[Tensor, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    fused: dict[int, int] = {}
    writes: dict[int, int] = {}
    writes_at: dict[int, list[Tensor]] = {}
    for k, ((variable, _), value) in enumerate(zip(updates, values)):
        at = position.get(value, -1)
        if (at >= 0 and value not in used and value not in returned and counts[value] == 1
                and id(value) not in special and last_read.get(id(variable), -1) <= at
                and _computes_into(value, variable, deps, looks)):
            fused[id(value)] = k
            continue
        write = Tensor(WriteStep(k, variable.name or f"<variable {k}>"), [value], variable.shape,
                       variable.dtype, site=value.site if value.site else variable.site, is_gradient=False)
        deps[write] = [value]
        writes[id(write)] = k
        writes_at.setdefault(max(at, last_read.get(id(variable), -1)), []).append(write)
    staged = copies_at.get(-1, []) + writes_at.get(-1, [])
    for i, node in enumerate(steps):
        staged.append(node)
        staged.extend(copies_at.get(i, ()))
        staged.extend(writes_at.get(i, ()))
    return staged, outputs, fused, writes
