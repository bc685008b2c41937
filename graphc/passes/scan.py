"""Optimizing loops: each ``gc.scan`` node's body, and the loop around it.

For every :class:`graphc.scan.Scan` node of the graph, in topological order:

* ``scan.merge``: a loop and its twin (the same loop emitting more of its values, which a
  gradient builds to keep the intermediate values its rules read) become one loop.
* ``scan.body``: the body is optimized with the default pipeline (nested loops included);
  the rules that fire inside are counted under their own names.
* ``scan.hoist``: loop-invariant work, a body node that depends on non-sequences (and
  constants) only, is computed once outside the loop and passed in as a new non-sequence.
* ``scan.drop_output``: outputs nobody reads are no longer emitted; a body output is computed
  only when an emitted output, or a state feeding one, needs it (states a needed output does
  not depend on are dropped with their initial values).
* ``scan.last_state``: a trace whose only use is its last entry (``trace[-1]``) keeps only the
  last value (no ``(n, ...)`` buffer).
* ``scan.drop_input``: sequences and non-sequences the body does not read are no longer inputs
  (the loop keeps one sequence when its length is the number of steps; a dropped sequence's
  length is no longer compared with the others').

Each firing is counted in ``optimize(report=True)``. The pass returns the very same tensors
when nothing applies, so the pipeline reaches its fixed point (an optimized body optimizes to
itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from graphc.graph import InnerGraph, clone, depending, frontier
from graphc.leaves import placeholder
from graphc.op import Output, apply
from graphc.scan import Scan
from graphc.tensor import Tensor, toposort

_LAST = (("int", -1),)
#: ``count(rule name, times)``: where the loop rewrites count their firings
Count = Callable[[str, int], None]


def _not_counted(rule: str, times: int = 1) -> None:
    """The default ``count``: firings go nowhere."""


def _reached_inputs(body_outputs, inputs) -> list[set[int]]:
    """Per body output, the positions of the body inputs it depends on."""
    position = {id(t): k for k, t in enumerate(inputs)}
    return [{position[id(n)] for n in toposort([out], stop_at=inputs) if id(n) in position} for out in body_outputs]


def _hoist(op: Scan, body_inputs: list[Tensor], body_outputs: list[Tensor], args: list[Tensor], count: Count):
    """Move loop-invariant body nodes out: returns (body inputs, body outputs, outer arguments), where the
    outer arguments (the node's inputs after the count) match the body inputs one to one."""
    first_nonseq = op.n_sequences + op.n_states
    order = toposort(body_outputs, stop_at=body_inputs)
    position = {id(t): k for k, t in enumerate(body_inputs)}
    # step-dependent: reads a sequence or a state, or draws (a draw is new every step)
    variant = depending(order, lambda node: position.get(id(node), first_nonseq) < first_nonseq
                        or getattr(node.primitive, "random", False))
    invariant = depending(order, lambda node: position.get(id(node), -1) >= first_nonseq) - variant
    hoisted = [t for t in frontier(order, body_outputs, variant) if id(t) in invariant and id(t) not in position]
    if not hoisted:
        return body_inputs, body_outputs, args
    count("scan.hoist", len(hoisted))
    outer = clone(hoisted, dict(zip(body_inputs[first_nonseq:], args[first_nonseq:])))
    new_args = [placeholder(f"hoisted {t.op}", t.shape, t.dtype) for t in hoisted]
    body_outputs = clone(body_outputs, dict(zip(hoisted, new_args)))
    return body_inputs + new_args, body_outputs, args + outer


def _projections(node: Tensor, consumers: dict[int, list[Tensor]], output_ids: set[int]) -> list[Tensor]:
    """The projections reading the scan ``node``'s outputs; every output, when the node is itself a result."""
    found = [c for c in consumers.get(id(node), ()) if isinstance(c.primitive, Output)]
    if id(node) in output_ids or not found:
        found = [apply(Output(k), node) for k in range(len(node.primitive.emits))]
    return found


def _reads_last(tensor: Tensor) -> bool:
    return tensor.op == "getitem" and tensor.primitive.index == _LAST and len(tensor.inputs) == 1


def _read_as_last(op: Scan, projections: list[Tensor], consumers: dict[int, list[Tensor]],
                  output_ids: set[int]) -> dict[int, list[Tensor]]:
    """Body output -> the ``trace[-1]`` readers of its trace, for the outputs whose trace is read only
    so (and whose prev-trace is not read): they can read its last value instead."""
    readers: dict[int, list[Tensor] | None] = {}  # None: read otherwise
    for projection in projections:
        j, mode = op.emits[projection.primitive.index]
        users = consumers.get(id(projection), [])
        found = readers.setdefault(j, [])
        if found is None or mode in ("last", "final"):
            continue
        if mode == "trace" and id(projection) not in output_ids and users and all(map(_reads_last, users)):
            found.extend(users)
        else:
            readers[j] = None
    return {j: found for j, found in readers.items() if found}


def _needed(op: Scan, reached: list[set[int]], read: set[int]) -> list[int]:
    """The body outputs to compute: those ``read``, and the states they depend on (``reached``: per body
    output, the body inputs it depends on); in order."""
    ns, nst = op.n_sequences, op.n_states
    needed, pending = set(read), list(read)
    while pending:
        for k in reached[pending.pop()]:
            if ns <= k < ns + nst and (k - ns) not in needed:
                needed.add(k - ns)
                pending.append(k - ns)
    return sorted(needed)


def _new_emits(op: Scan, projections: list[Tensor], last: dict[int, list[Tensor]], kept: list[int]):
    """The new node's emits (over the body outputs ``kept``), and where each read output went: ``(emits,
    {old output index: new}, {id(trace[-1] reader): new output index})``."""
    new_index = {j: k for k, j in enumerate(kept)}
    where: dict[tuple[int, str], int] = {}  # new emit -> its index
    moved = {}
    for projection in projections:
        j, mode = op.emits[projection.primitive.index]
        if not (mode == "trace" and j in last):
            moved[projection.primitive.index] = where.setdefault((new_index[j], mode), len(where))
    readers = {id(reader): where.setdefault((new_index[j], "last"), len(where))
               for j, found in last.items() for reader in found}
    return tuple(where), moved, readers


def _kept_inputs(op: Scan, reached: set[int], kept: list[int], n_args: int) -> list[int]:
    """The body inputs the new body keeps: the sequences it reads or an ``empty_like`` hint of a kept
    output names (one, when a sequence gives the number of steps), the kept states, and the
    non-sequences it reads."""
    ns, nst = op.n_sequences, op.n_states
    hinted = {op.empty_like[j] for j in kept if j >= nst and op.empty_like[j] >= 0}
    sequences = [k for k in range(ns) if k in reached or op.first + k in hinted]
    if not sequences and ns and op.n_steps is None and not op.steps_input:
        sequences = [0]  # the loop's length
    return sequences + [ns + j for j in kept if j < nst] + [k for k in range(ns + nst, n_args) if k in reached]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _rewrite(node: Tensor, inputs: list[Tensor], consumers: dict[int, list[Tensor]], output_ids: set[int],
             optimize_body, count: Count) -> tuple[Tensor, dict[int, int], dict[int, int]] | None:
    """The scan ``node`` (on its new ``inputs``) optimized: ``(new node, {old output index: new},
    {id(trace[-1] reader): new output index})``, or None when nothing changes."""
    op: Scan = node.primitive
    ns, nst, first = op.n_sequences, op.n_states, op.first
    body_outputs = optimize_body(list(op.body.outputs))
    projections = _projections(node, consumers, output_ids)
    last = _read_as_last(op, projections, consumers, output_ids)
    if last:
        count("scan.last_state", len(last))
    read = {op.emits[p.primitive.index] for p in projections}
    if len(op.emits) > len(read):
        count("scan.drop_output", len(op.emits) - len(read))
    kept = _needed(op, _reached_inputs(body_outputs, op.body.inputs), {j for j, _ in read})
    emits, moved, readers = _new_emits(op, projections, last, kept)
    # the new body: kept states, kept outputs, loop invariants out; inputs the outputs still read
    body_inputs, outputs, args = _hoist(op, list(op.body.inputs), [body_outputs[j] for j in kept], inputs[first:],
                                    count)
    keep = _kept_inputs(op, set().union(*_reached_inputs(outputs, body_inputs)), kept, len(body_inputs))
    n_states = sum(1 for j in kept if j < nst)
    if len(body_inputs) - len(keep) > nst - n_states:
        count("scan.drop_input", len(body_inputs) - len(keep) - (nst - n_states))
    body_inputs, outer = [body_inputs[k] for k in keep], inputs[:first] + [args[k] for k in keep]
    if (sorted(emits) == sorted(op.emits) and _same(outer, node.inputs) and _same(body_inputs, op.body.inputs)
            and _same(outputs, op.body.outputs)):
        return None  # (the same emits in another order are no change)
    n_sequences = sum(1 for k in keep if k < ns)
    position = {first + k: first + new for new, k in enumerate(keep[:n_sequences])}  # old node input -> new
    new_op = dataclasses.replace(op, body=InnerGraph(body_inputs, outputs), n_sequences=n_sequences,
                                 n_states=n_states, emits=emits,
                                 empty_like=tuple(position.get(op.empty_like[j], -1) for j in kept))
    return Tensor(new_op, outer, *new_op.infer(*outer), name=node.name, site=node.site,
                  is_gradient=node.is_gradient), moved, readers


def _extends(small: Scan, big: Scan) -> bool:
    """Whether ``big`` is ``small`` with more outputs appended (the twin a gradient builds)."""
    if small is big or len(big.body.outputs) <= len(small.body.outputs):
        return False
    if (small.n_sequences, small.n_states, small.n_steps, small.steps_input, small.go_backwards) != (
            big.n_sequences, big.n_states, big.n_steps, big.steps_input, big.go_backwards):
        return False
    if len(small.body.inputs) != len(big.body.inputs) or big.empty_like[:len(small.empty_like)] != small.empty_like:
        return False
    prefix = InnerGraph(big.body.inputs, big.body.outputs[:len(small.body.outputs)])
    return prefix.key == small.body.key


def _twins(outputs: list[Tensor], order: list[Tensor]) -> dict[int, Tensor]:
    """``id(scan node) -> the twin it merges into``: a scan on the same inputs that extends it (neither a result)."""
    groups: dict[tuple, list[Tensor]] = {}
    roots = {id(t) for t in outputs}
    for node in order:
        if isinstance(node.primitive, Scan) and id(node) not in roots:
            groups.setdefault(tuple(id(p) for p in node.inputs), []).append(node)
    into: dict[int, Tensor] = {}
    for nodes in groups.values():
        nodes.sort(key=lambda n: -len(n.primitive.body.outputs))
        for small in nodes[1:]:
            big = next((b for b in nodes if _extends(small.primitive, b.primitive)), None)
            if big is not None and id(big) not in into:
                into[id(small)] = big
    return into


def _merged(big: Tensor, smalls: list[Tensor], inputs: list[Tensor]) -> tuple[Tensor, dict[int, dict[int, int]]]:
    """The loop ``big`` (on ``inputs``) emitting what its twins ``smalls`` emit too, and per node merged
    (``id``), ``{its output index: the merged node's}``."""
    emits = list(big.primitive.emits)
    tables = {id(big): {k: k for k in range(len(emits))}}
    for small in smalls:
        emits += [entry for entry in dict.fromkeys(small.primitive.emits) if entry not in emits]
        tables[id(small)] = {k: emits.index(entry) for k, entry in enumerate(small.primitive.emits)}
    op = dataclasses.replace(big.primitive, emits=tuple(emits))
    # named and placed like the user's loop (the twin was built by a gradient)
    name = next((n.name for n in smalls + [big] if n.name), None)
    is_gradient = big.is_gradient and all(s.is_gradient for s in smalls)
    return Tensor(op, inputs, *op.infer(*inputs), name=name, site=smalls[0].site, is_gradient=is_gradient), tables


def _merge_twins(outputs: list[Tensor], order: list[Tensor], count: Count) -> list[Tensor]:
    """scan(...) and a twin emitting more of the same loop's values, on the same inputs -> one loop."""
    into = _twins(outputs, order)
    if not into:
        return outputs
    count("scan.merge", len(into))
    smalls: dict[int, list[Tensor]] = {}  # id(big) -> the nodes merging into it
    for node in order:
        if id(node) in into:
            smalls.setdefault(id(into[id(node)]), []).append(node)
    merged: dict[int, tuple] = {}  # id(big) -> (the merged node, its index tables)

    def merge(node: Tensor, inputs: list[Tensor]):
        big = into.get(id(node), node)
        if id(big) not in smalls:
            return None
        if id(big) not in merged:
            merged[id(big)] = _merged(big, smalls[id(big)], inputs)
        new, tables = merged[id(big)]
        return new, tables[id(node)], {}

    return _rebuild(outputs, order, merge)


def _rebuild(outputs: list[Tensor], order: list[Tensor], rewrite) -> list[Tensor]:
    """``outputs`` rebuilt over ``order`` (their nodes, inputs first), each scan node replaced as
    ``rewrite(node, new inputs)`` says: None (kept), or ``(new node, {old output index: new}, {id(reader):
    new output index})``; a reader so named becomes that projection of the new node (and the old
    projection it read is left behind)."""
    memo: dict[int, Tensor] = {}
    moved: dict[int, tuple[Tensor, dict[int, int]]] = {}  # id(old scan node) -> (new node, index map)
    readers: dict[int, tuple[Tensor, int]] = {}            # id(old reader) -> (new node, output index)
    for node in order:
        inputs = [memo[id(p)] for p in node.inputs]
        primitive = node.primitive
        found = rewrite(node, inputs) if isinstance(primitive, Scan) else None
        if found is not None:
            new, index, read = found
            memo[id(node)], moved[id(node)] = new, (new, index)
            readers.update((reader, (new, k)) for reader, k in read.items())
        elif isinstance(primitive, Output) and id(node.inputs[0]) in moved:
            new, index = moved[id(node.inputs[0])]
            memo[id(node)] = _projection(node, new, index[primitive.index]) if primitive.index in index else node
        elif id(node) in readers:
            memo[id(node)] = _projection(node, *readers[id(node)])
        else:
            memo[id(node)] = node.with_inputs(inputs)
    return [memo[id(t)] for t in outputs]


def _projection(old: Tensor, node: Tensor, index: int) -> Tensor:
    """Output ``index`` of ``node``, in place of ``old`` (its name, site and type)."""
    return Tensor(Output(index), [node], old.shape, old.dtype, name=old.name, site=old.site,
                  is_gradient=old.is_gradient)


def optimize_scans(outputs: list[Tensor], optimize_body=None, count: Count | None = None) -> list[Tensor]:
    """Optimize every scan node's body and loop (see the module docstring).

    ``optimize_body(outputs)`` optimizes a body's outputs: the default pipeline, which
    graphc/passes/pipeline.py passes in (this module does not import the pipeline back); by
    default bodies are left as they are. ``count(rule, times)`` counts firings (the pipeline
    passes its context's; by default they are not counted).
    """
    count = count if count is not None else _not_counted
    optimize_body = optimize_body if optimize_body is not None else (lambda body_outputs: body_outputs)
    order = toposort(outputs)
    if not any(isinstance(node.primitive, Scan) for node in order):
        return outputs
    merged = _merge_twins(outputs, order, count)
    if any(a is not b for a, b in zip(merged, outputs)):
        outputs = merged
        order = toposort(outputs)
    consumers: dict[int, list[Tensor]] = {}
    for node in order:
        for parent in node.inputs:
            users = consumers.setdefault(id(parent), [])
            if not users or users[-1] is not node:
                users.append(node)
    output_ids = {id(t) for t in outputs}
    return _rebuild(outputs, order, lambda node, inputs: _rewrite(node, inputs, consumers, output_ids, optimize_body,
                                                                 count))
