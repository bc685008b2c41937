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

from graphc.graph import InnerGraph, clone
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
    result = []
    for out in body_outputs:
        result.append({position[id(n)] for n in toposort([out], stop_at=inputs) if id(n) in position})
    return result





def _hoist(op: Scan, body_inputs: list[Tensor], body_outputs: list[Tensor], outer_nonseqs: list[Tensor],
           count: Count):
    """Move loop-invariant body nodes out; returns (body inputs, body outputs, outer non-sequences)."""
    first_nonseq = op.n_sequences + op.n_states
    variant: dict[int, bool] = {}
    invariant: dict[int, bool] = {}  # depends on a non-sequence, on no sequence or state
    order = toposort(body_outputs, stop_at=body_inputs)
    position = {id(t): k for k, t in enumerate(body_inputs)}
    for node in order:
        k = position.get(id(node))
        if k is not None:
            variant[id(node)] = k < first_nonseq
            invariant[id(node)] = k >= first_nonseq
            continue
        primitive = node.primitive
        fixed = getattr(primitive, "random", False) or getattr(primitive, "stateful", False)
        variant[id(node)] = fixed or any(variant[id(p)] for p in node.inputs)
        invariant[id(node)] = not variant[id(node)] and any(invariant[id(p)] for p in node.inputs)
    roots: dict[int, Tensor] = {}
    for node in order:
        if variant[id(node)] and id(node) not in position:
            for parent in node.inputs:
                if invariant[id(parent)] and id(parent) not in position:
                    roots.setdefault(id(parent), parent)
    for out in body_outputs:
        if invariant[id(out)] and id(out) not in position:
            roots.setdefault(id(out), out)
    if not roots:
        return body_inputs, body_outputs, outer_nonseqs
    hoisted = list(roots.values())
    count("scan.hoist", len(hoisted))
    binding = dict(zip(body_inputs[first_nonseq:], outer_nonseqs))
    outer = clone(hoisted, binding)
    new_args = [placeholder(f"hoisted {t.op}", t.shape, t.dtype) for t in hoisted]
    body_outputs = clone(body_outputs, dict(zip(hoisted, new_args)))
    return body_inputs + new_args, body_outputs, outer_nonseqs + outer


class _ScanRewrite:
    """The new node for one scan node, and where each old output (and ``trace[-1]`` reader) went."""

    def __init__(self, node: Tensor, inputs: list[Tensor], consumers: dict[int, list[Tensor]],
                 output_ids: set[int], optimize_body, count: Count) -> None:
        op: Scan = node.primitive
        self.node = None          # the new scan node (None: unchanged)
        self.emit_map: dict[int, int] = {}
        self.last_readers: dict[int, int] = {}  # id(getitem node) -> new emit index
        body = op.body
        changed = any(a is not b for a, b in zip(inputs, node.inputs))
        # the body, optimized
        body_outputs = optimize_body(list(body.outputs))
        changed |= any(a is not b for a, b in zip(body_outputs, body.outputs))
        body_inputs = list(body.inputs)
        first = op.first
        ns, nst = op.n_sequences, op.n_states
        steps = inputs[:first]
        sequences = inputs[first:first + ns]
        inits = inputs[first + ns:first + ns + nst]
        nonseqs = inputs[first + ns + nst:]
        hints = list(op.empty_like)
        nonseqs = list(nonseqs)
        # which outputs are read, and how
        projections = [c for c in consumers.get(id(node), ()) if isinstance(c.primitive, Output)]
        if id(node) in output_ids or not projections:  # the loop node itself is an output: keep its outputs
            projections = [apply(Output(k), node) for k in range(len(op.emits))]
        used_modes: dict[int, set[str]] = {}
        for projection in projections:
            j, mode = op.emits[projection.primitive.index]
            used_modes.setdefault(j, set()).add(mode)
        # trace[-1] only: keep the last value
        switch: dict[int, list[Tensor]] = {}
        for j, modes in used_modes.items():
            if "trace" not in modes or "prev" in modes:
                continue
            readers = []
            for projection in projections:
                if op.emits[projection.primitive.index] != (j, "trace"):
                    continue
                users = consumers.get(id(projection), [])
                if id(projection) in output_ids or not users or not all(
                        u.op == "getitem" and u.primitive.index == _LAST and len(u.inputs) == 1 for u in users):
                    readers = None
                    break
                readers.extend(users)
            if readers:
                switch[j] = readers
        # the body outputs needed: the read ones, and the states they depend on
        reached = _reached_inputs(body_outputs, body_inputs)
        needed = set(used_modes)
        pending = list(needed)
        while pending:
            j = pending.pop()
            for k in reached[j]:
                if ns <= k < ns + nst and (k - ns) not in needed:
                    needed.add(k - ns)
                    pending.append(k - ns)
        kept_states = [j for j in range(nst) if j in needed]
        kept_others = [j for j in range(nst, len(body_outputs)) if j in needed]
        new_index = {j: k for k, j in enumerate(kept_states + kept_others)}
        emits: list[tuple[int, str]] = []
        where: dict[tuple[int, str], int] = {}
        for projection in projections:
            j, mode = op.emits[projection.primitive.index]
            if j in switch and mode == "trace":
                continue
            entry = (new_index[j], mode)
            if entry not in where:
                where[entry] = len(emits)
                emits.append(entry)
            self.emit_map[projection.primitive.index] = where[entry]
        for j, readers in switch.items():
            entry = (new_index[j], "last")
            if entry not in where:
                where[entry] = len(emits)
                emits.append(entry)
            for reader in readers:
                self.last_readers[id(reader)] = where[entry]
        if switch:
            count("scan.last_state", len(switch))
        dropped_emits = len(op.emits) - len({e for e in op.emits if e[0] in used_modes
                                             and e[1] in used_modes[e[0]]})
        if dropped_emits:
            count("scan.drop_output", dropped_emits)
        changed |= bool(dropped_emits) or bool(switch) or len(emits) != len(op.emits)
        changed |= [op.emits[i] for i in sorted(self.emit_map)] != [emits[self.emit_map[i]]
                                                                     for i in sorted(self.emit_map)]
        # the new body: kept states, kept outputs, loop invariants out; inputs the outputs still read
        new_outputs = [body_outputs[j] for j in kept_states + kept_others]
        before = len(body_inputs)
        body_inputs, new_outputs, nonseqs = _hoist(op, body_inputs, new_outputs, nonseqs, count)
        changed |= len(body_inputs) != before
        reached_any = set().union(*_reached_inputs(new_outputs, body_inputs)) if new_outputs else set()
        hinted = {hints[j] for j in kept_others if hints[j] >= 0}
        keep_seqs = [i for i in range(ns) if i in reached_any or first + i in hinted]
        if not keep_seqs and ns and op.n_steps is None and not op.steps_input:
            keep_seqs = [0]  # the loop's length
        keep_nonseqs = [i for i in range(len(nonseqs)) if ns + nst + i in reached_any]
        dropped_inputs = (ns - len(keep_seqs)) + (len(nonseqs) - len(keep_nonseqs))
        if dropped_inputs:
            count("scan.drop_input", dropped_inputs)
        changed |= bool(dropped_inputs) or len(kept_states) != nst or len(kept_others) != len(body_outputs) - nst
        if not changed:
            return
        new_inputs = ([body_inputs[i] for i in keep_seqs] + [body_inputs[ns + j] for j in kept_states]
                      + [body_inputs[ns + nst + i] for i in keep_nonseqs])
        position = {}  # old node input position -> new
        for new, i in enumerate(keep_seqs):
            position[first + i] = first + new
        new_hints = tuple(position.get(hints[j], -1) if hints[j] >= 0 else -1 for j in kept_states + kept_others)
        new_op = dataclasses.replace(op, body=InnerGraph(new_inputs, new_outputs), n_sequences=len(keep_seqs),
                                     n_states=len(kept_states), emits=tuple(emits), empty_like=new_hints)
        outer = (list(steps) + [sequences[i] for i in keep_seqs] + [inits[j] for j in kept_states]
                 + [nonseqs[i] for i in keep_nonseqs])
        self.node = Tensor(new_op, outer, *new_op.infer(*outer), name=node.name, site=node.site,
                           is_gradient=node.is_gradient)


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


def _merge_twins(outputs: list[Tensor], order: list[Tensor], count: Count) -> list[Tensor]:
    """scan(...) and a twin emitting more of the same loop's values, on the same inputs -> one loop."""
    groups: dict[tuple, list[Tensor]] = {}
    for node in order:
        if isinstance(node.primitive, Scan):
            groups.setdefault(tuple(id(p) for p in node.inputs), []).append(node)
    into: dict[int, Tensor] = {}  # id(merged node) -> the node it merges into
    roots = {id(t) for t in outputs}
    for nodes in groups.values():
        nodes = [n for n in nodes if id(n) not in roots]
        if len(nodes) < 2:
            continue
        nodes = sorted(nodes, key=lambda n: -len(n.primitive.body.outputs))
        for small in nodes[1:]:
            big = next((b for b in nodes if _extends(small.primitive, b.primitive)), None)
            if big is not None and id(big) not in into:
                into[id(small)] = big
    if not into:
        return outputs
    # the merged node: the big one, emitting what the small ones emitted too
    merged: dict[int, Tensor] = {}
    index_of: dict[int, dict[int, int]] = {}  # id(old node) -> {old output index: new output index}
    smalls: dict[int, list[Tensor]] = {}
    for node in order:
        if id(node) in into:
            smalls.setdefault(id(into[id(node)]), []).append(node)
    count("scan.merge", len(into))
    memo: dict[int, Tensor] = {}
    for node in order:
        inputs = [memo[id(p)] for p in node.inputs]
        primitive = node.primitive
        if id(node) in smalls or id(node) in into:
            big = node if id(node) in smalls else into[id(node)]
            if id(big) not in merged:
                emits = list(big.primitive.emits)
                maps: dict[int, dict[int, int]] = {id(big): {k: k for k in range(len(emits))}}
                for small in smalls[id(big)]:
                    table = {}
                    for k, entry in enumerate(small.primitive.emits):
                        if entry not in emits:
                            emits.append(entry)
                        table[k] = emits.index(entry)
                    maps[id(small)] = table
                op = dataclasses.replace(big.primitive, emits=tuple(emits))
                big_inputs = [memo[id(p)] for p in big.inputs]
                # named and placed like the user's loop (the twin was built by a gradient)
                first = smalls[id(big)][0]
                name = next((n.name for n in smalls[id(big)] + [big] if n.name), None)
                merged[id(big)] = Tensor(op, big_inputs, *op.infer(*big_inputs), name=name, site=first.site,
                                         is_gradient=big.is_gradient and all(s.is_gradient for s in smalls[id(big)]))
                index_of.update(maps)
            memo[id(node)] = merged[id(big)]
            continue
        if isinstance(primitive, Output) and id(node.inputs[0]) in index_of:
            memo[id(node)] = Tensor(Output(index_of[id(node.inputs[0])][primitive.index]), inputs, node.shape,
                                    node.dtype, name=node.name, site=node.site, is_gradient=node.is_gradient)
            continue
        if all(a is b for a, b in zip(inputs, node.inputs)):
            memo[id(node)] = node
        else:
            memo[id(node)] = Tensor(primitive, inputs, node.shape, node.dtype, name=node.name, site=node.site,
                                    is_gradient=node.is_gradient)
    return [memo[id(t)] for t in outputs]


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
    memo: dict[int, Tensor] = {}
    rewrites: dict[int, _ScanRewrite] = {}   # id(old scan node) -> its rewrite
    last_readers: dict[int, Tensor] = {}     # id(old getitem node) -> the new scan node's projection
    for node in order:
        inputs = [memo[id(p)] for p in node.inputs]
        primitive = node.primitive
        if isinstance(primitive, Scan):
            rewrite = _ScanRewrite(node, inputs, consumers, output_ids, optimize_body, count)
            if rewrite.node is not None:
                rewrites[id(node)] = rewrite
                memo[id(node)] = rewrite.node
                for reader, index in rewrite.last_readers.items():
                    last_readers[reader] = apply(Output(index), rewrite.node)
                continue
        elif isinstance(primitive, Output) and id(node.inputs[0]) in rewrites:
            rewrite = rewrites[id(node.inputs[0])]
            if primitive.index in rewrite.emit_map:
                memo[id(node)] = Tensor(Output(rewrite.emit_map[primitive.index]), [rewrite.node], node.shape,
                                        node.dtype, name=node.name, site=node.site, is_gradient=node.is_gradient)
            else:  # a projection read only as trace[-1]: its readers now read the last value
                memo[id(node)] = node
            continue
        elif id(node) in last_readers:
            found = last_readers[id(node)]
            memo[id(node)] = Tensor(found.primitive, found.inputs, node.shape, node.dtype, name=node.name,
                                    site=node.site, is_gradient=node.is_gradient)
            continue
        if all(a is b for a, b in zip(inputs, node.inputs)):
            memo[id(node)] = node
        else:
            memo[id(node)] = Tensor(primitive, inputs, node.shape, node.dtype, name=node.name, site=node.site,
                                    is_gradient=node.is_gradient)
    return [memo[id(t)] for t in outputs]
