"""Stage 4, buffer assignment: how each step is lowered and where it writes.

Every intermediate is dropped right after its last use (views keep the buffer they look
into alive). Element-wise ops whose NumPy ufunc is known, and ``matmul``, write through
``out=``: into an input that dies at this step (in place), or into a dead buffer of the same
shape and dtype. Only buffers this call allocated are ever written to: never a feed, a
variable's value, a constant, a buffer an op keeps from call to call, a view of any of them, or a
broadcast. (Large arrays may also
take a spare buffer the caller passes: code generation decides that, see ``SPARE_MIN_BYTES``.)
"""

from __future__ import annotations

from graphc.ops.elementwise import Relu
from graphc.ops.linalg import Matmul
from graphc.tensor import Tensor

from .inplace import CopyStep
from .plan import Program
from .steps import kernel


def assign_buffers(program: Program) -> Program:
    """Stage 4: fills in ``kinds``, the ``out=`` targets (``target``, ``taken_at``) and ``frees``."""
    steps, deps = program.steps, program.deps
    fused, writes = program.fused, program.writes
    # Values are numbered: steps 0..n-1 in run order, then the leaves. Everything below is lists by
    # number, not dicts: a long plan's dicts outgrow the caches, and each lookup then costs a cache
    # miss (measured 3.4x the time per lookup from 36,000 to 360,000 steps).
    values: list[Tensor] = [*steps, *program.leaves]
    # (keyed by the tensors, which hash by identity: a lookup need not compare a stored int key)
    number = {v: k for k, v in enumerate(values)}
    parents, kinds, layouts, views, kept = _step_facts(steps, deps, number, program.special, fused, writes)
    n = len(steps)
    last_use = [-1] * len(values)
    first_used: list[int] = []  # the values in the order of their first use (the order of ``frees``' lists)
    for index, inputs in enumerate(parents):
        for parent in inputs:
            if last_use[parent] < 0:
                first_used.append(parent)
            last_use[parent] = index
    returned = [False] * len(values)
    for root in program.roots:
        returned[number[root]] = True
    storage = ({k for k, node in enumerate(steps) if id(node) in fused or id(node) in writes}
               if fused or writes else set())
    owned, buffer_end, ends_at = _buffer_lifetimes(n, parents, returned, last_use, storage, layouts, views, kept)
    target, taken_at = _choose_targets(layouts, parents, kinds, owned, buffer_end, ends_at, len(values),
                                       program.options.reuse_buffers)
    # the values whose names a step drops: steps' values and feeds (variables and constants stay bound)
    droppable = {number[t] for t in program.inputs if t in number}
    frees: list = [()] * n  # per step, the values whose names are dropped after it
    for value in first_used:
        if returned[value] or (value >= n and value not in droppable):
            continue
        index = last_use[value]
        taken = taken_at[value]
        after = taken if taken > index else index  # (held for reuse)
        if frees[after]:
            frees[after].append(value)
        else:
            frees[after] = [value]  # (a list only where one is needed; appended to: one step may free many)
    program.values, program.number, program.parents = values, number, parents
    program.kinds, program.frees, program.target, program.taken_at = kinds, frees, target, taken_at
    return program


def _step_facts(steps, deps, number, special, fused, writes):
    """(each step's input numbers, kind, layout, view flag, ``keeps_value`` flag), in one pass over the
    steps' nodes (scattered over memory in a long plan) for every fact ``assign_buffers`` reads.

    A layout is an int per (shape, dtype), -1 if not static: the later passes compare and pool it
    instead of each node's shape tuple.
    """
    parents: list[list[int]] = []
    kinds: list[str] = []
    layouts: list[int] = []
    layout_of: dict[tuple, int] = {}
    shape = dtype = layout = None  # the last step's (steps mostly share their shape and dtype objects)
    views: list[bool] = []
    kept: list[bool] = []  # (Op.keeps_value: a buffer the op keeps from call to call)
    for node in steps:
        primitive = node.primitive
        parents.append([number[p] for p in deps.get(node, node.inputs)])  # (``Deps`` stores few steps)
        kinds.append(_step_kind(node, special, fused, writes))
        if node.shape is not shape or node.dtype is not dtype:
            shape, dtype = node.shape, node.dtype
            layout = layout_of.setdefault((shape, dtype), len(layout_of)) if shape and None not in shape else -1
        layouts.append(layout)
        views.append(primitive.view)
        kept.append(getattr(primitive, "keeps_value", False))
    return parents, kinds, layouts, views, kept


def _buffer_lifetimes(n, parents, returned, last_use, storage, layouts, views, kept):
    """(owned buffers, the step after which each buffer is dead, per step the buffers dying there),
    by value number (``assign_buffers``; the steps' layouts, view flags and ``keeps_value`` flags by
    step); a buffer's end is -1 if it is never used.

    A value may look into the buffers of its inputs (views); only buffers a step allocated are
    "owned", never a variable's storage; a returned buffer never dies.
    """
    never = n + 1
    buffer_end = [never if returned[k] else last_use[k] for k in range(len(returned))]
    owned = [False] * n
    view_buffers: dict[int, tuple[int, ...]] = {}  # a view's buffers (any other value's is its own)
    for index in range(n):
        if views[index]:
            end = buffer_end[index] if buffer_end[index] >= 0 else index
            mine = view_buffers[index] = tuple(dict.fromkeys(b for p in parents[index]
                                                             for b in view_buffers.get(p, (p,))))
            for buffer in mine:
                if buffer_end[buffer] < end:
                    buffer_end[buffer] = end
        else:
            if buffer_end[index] < 0:
                buffer_end[index] = index  # (a step nobody reads dies where it is made)
            # a static shape (layout >= 0), never the storage, nor a buffer an op keeps from call to
            # call (Op.keeps_value; the compiler's own steps are not Ops)
            if layouts[index] >= 0 and index not in storage and not kept[index]:
                owned[index] = True
    ends_at: list = [()] * n
    for buffer in range(n):  # (in step order: the order the pool takes dead buffers in)
        end = buffer_end[buffer]
        if owned[buffer] and end < never:
            if ends_at[end]:
                ends_at[end].append(buffer)
            else:
                ends_at[end] = [buffer]
    return owned, buffer_end, ends_at


def _step_kind(node, special, fused, writes) -> str:
    """How a step is lowered before buffers are chosen: "write", "copy", "special", "ufunc", ..."""
    cls = type(node.primitive)
    if fused and id(node) in fused:  # (the tests of emptiness first: most plans have none of these)
        return "to-var"  # computed straight into the variable's storage (out=)
    if writes and id(node) in writes:
        return "write"
    if cls is CopyStep:
        return "copy"
    if special and id(node) in special:
        return "special"
    if kernel(node) is not None or cls is Relu:
        return "ufunc"
    if cls is Matmul:
        return "matmul"
    return "call"


def _choose_targets(layouts, parents, kinds, owned, buffer_end, ends_at, n_values, reuse):
    """Where each ``out=`` capable step writes: (per step, the buffer or None; per value, the step taking
    its buffer or -1), buffers by value number (``assign_buffers``; the steps' layouts by step: equal
    layouts, equal shapes and dtypes). Lists, not dicts: see ``assign_buffers``.

    An input dying at the step (in place, ufuncs only), else a dead buffer of the same shape and
    dtype from the pool; nothing without ``reuse``. Updates ``kinds`` with "inplace" / "reuse".
    """
    n = len(layouts)
    target: list[int | None] = [None] * n
    taken_at = [-1] * n_values
    if not reuse:
        return target, taken_at
    pool: dict[int, list[int]] = {}  # layout -> dead buffers of that layout
    for index, layout in enumerate(layouts):
        kind = kinds[index]
        if (kind == "ufunc" or kind == "matmul") and layout >= 0:  # static; no special kernel
            choice = None
            if kind == "ufunc":
                for parent in parents[index]:
                    if (parent < n and owned[parent] and buffer_end[parent] == index and taken_at[parent] < 0
                            and layouts[parent] == layout):
                        choice = parent
                        kinds[index] = "inplace"
                        break
            if choice is None:
                free = pool.get(layout)
                if free:
                    choice = free.pop()
                    kinds[index] = "reuse"
            if choice is not None:
                target[index] = choice
                taken_at[choice] = index
        for buffer in ends_at[index]:
            if taken_at[buffer] < 0:
                pool.setdefault(layouts[buffer], []).append(buffer)
    return target, taken_at
