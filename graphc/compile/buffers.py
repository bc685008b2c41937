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
from .steps import kernel, static


def assign_buffers(program: Program) -> Program:
    """Stage 4: fills in ``kinds``, the ``out=`` targets (``target``, ``taken_at``) and ``frees``."""
    steps, deps = program.steps, program.deps
    fused, writes = program.fused, program.writes
    returned = {id(t) for t in program.roots}
    last_use: dict[int, int] = {}
    for index, node in enumerate(steps):
        for parent in deps[id(node)]:
            last_use[id(parent)] = index
    owned, buffer_end, ends_at = _buffer_lifetimes(steps, deps, program.leaves, returned, last_use, fused, writes)
    kinds = [_step_kind(node, program.special, fused, writes) for node in steps]
    target, taken_at = ({}, {}) if not program.options.reuse_buffers else _choose_targets(
        steps, deps, kinds, owned, buffer_end, ends_at)
    # the values whose names a step drops: steps' values and feeds (variables and constants stay bound)
    droppable = {id(n) for n in steps} | {id(t) for t in program.inputs}
    frees: dict[int, list[int]] = {}  # step -> values whose names are dropped after it
    for key, index in last_use.items():
        if key in returned or key not in droppable:
            continue
        if key in taken_at and taken_at[key] > index:
            frees.setdefault(taken_at[key], []).append(key)  # held for reuse, dropped once reused
        else:
            frees.setdefault(index, []).append(key)
    program.kinds, program.target, program.taken_at, program.frees = kinds, target, taken_at, frees
    return program


def _buffer_lifetimes(steps, deps, leaves, returned, last_use, fused, writes):
    """(owned buffers, the step after which each buffer is dead, buffers by the step they die at).

    A value may look into the buffers of its inputs (views); only buffers a step allocated are
    "owned", never a variable's storage; a returned buffer never dies.
    """
    # one pass in dependency order: a view's buffers are its inputs' (already known), and a buffer
    # first appears with the value that owns it, so ``buffer_end`` keeps that order (the pool's order)
    never = len(steps) + 1
    buffers: dict[int, tuple[int, ...]] = {}
    owned: dict[int, Tensor] = {}
    buffer_end: dict[int, int] = {}
    for node in leaves:
        key = id(node)
        buffers[key] = (key,)
        end = never if key in returned else last_use.get(key, -1)
        if end > -1:
            buffer_end[key] = end
    for index, node in enumerate(steps):
        key = id(node)
        end = never if key in returned else last_use.get(key, index)
        if node.primitive.view:
            mine = buffers[key] = tuple(dict.fromkeys(b for p in deps[key] for b in buffers[id(p)]))
            for buffer in mine:
                if buffer_end.get(buffer, -1) < end:
                    buffer_end[buffer] = end
        else:
            buffers[key] = (key,)
            buffer_end[key] = end
            # never the storage, nor a buffer an op keeps from call to call (Op.keeps_value; the
            # compiler's own steps are not Ops)
            kept = getattr(node.primitive, "keeps_value", False)
            if key not in writes and key not in fused and static(node) and not kept:
                owned[key] = node
    ends_at: dict[int, list[int]] = {}
    for buffer, end in buffer_end.items():
        if buffer in owned and end < never:
            ends_at.setdefault(end, []).append(buffer)
    return owned, buffer_end, ends_at


def _step_kind(node, special, fused, writes) -> str:
    """How a step is lowered before buffers are chosen: "write", "copy", "special", "ufunc", ..."""
    cls = type(node.primitive)
    if id(node) in fused:
        return "to-var"  # computed straight into the variable's storage (out=)
    if id(node) in writes:
        return "write"
    if cls is CopyStep:
        return "copy"
    if id(node) in special:
        return "special"
    if kernel(node) is not None or cls is Relu:
        return "ufunc"
    if cls is Matmul:
        return "matmul"
    return "call"


def _choose_targets(steps, deps, kinds, owned, buffer_end, ends_at):
    """Where each ``out=`` capable step writes: (step index -> buffer, buffer -> step taking it).

    An input dying at the step (in place, ufuncs only), else a dead buffer of the same shape and
    dtype from the pool. Updates ``kinds`` with "inplace" / "reuse".
    """
    target: dict[int, int] = {}
    taken_at: dict[int, int] = {}
    pool: dict[tuple, list[int]] = {}
    for index, node in enumerate(steps):
        kind = kinds[index]
        if kind in ("ufunc", "matmul") and static(node):  # a special kernel has no out=
            choice = None
            if kind == "ufunc":
                for parent in deps[id(node)]:
                    key = id(parent)
                    if (key in owned and buffer_end[key] == index and key not in taken_at
                            and parent.shape == node.shape and parent.dtype == node.dtype):
                        choice = key
                        kinds[index] = "inplace"
                        break
            if choice is None and pool.get((node.shape, node.dtype)):
                choice = pool[(node.shape, node.dtype)].pop()
                kinds[index] = "reuse"
            if choice is not None:
                target[index] = choice
                taken_at[choice] = index
        for buffer in ends_at.get(index, ()):
            if buffer not in taken_at:
                dead = owned[buffer]
                pool.setdefault((dead.shape, dead.dtype), []).append(buffer)
    return target, taken_at
