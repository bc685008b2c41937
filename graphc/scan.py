"""Loops in the graph: ``gc.scan``, ``gc.map`` and ``gc.foldl``.

A loop is one node of the outer graph, a :class:`Scan`, whose body is a closed graphc graph
(:class:`graphc.graph.InnerGraph`) traced once from the user's step function. The node has several
outputs (one per *emit*, see below), read through ``Output`` projections
(:func:`graphc.op.outputs_of`); the gradient driver hands :meth:`Scan.vjp` one cotangent per
output, and the gradient is another ``Scan`` (backpropagation through time) whose body is the
step function's vector-Jacobian product, differentiated once with the ordinary driver.

Body layout (Theano's convention): the inputs are the slices of the sequences, then the
previous values of the fed-back outputs ("states"), then the non-sequences (explicit ones, then
captured outer tensors); the outputs are the states' new values, then the outputs that are not
fed back. The node's inputs are ``[n_steps tensor], sequences, initial states, non-sequences``.

An *emit* ``(j, mode)`` says what the node outputs for body output ``j``:

* ``"trace"``: every step's value stacked, shape ``(n,) + step shape`` (what ``gc.scan`` returns);
* ``"prev"``: (states only) the value *before* each step: the initial state, then every step's
  value but the last (what the gradient needs: the forward keeps it, it is never recomputed);
  ``"trace"`` and ``"prev"`` of one state share one buffer of ``n + 1`` rows;
* ``"last"``: the last step's value (an error when no step runs), for ``trace[-1]``;
* ``"final"``: (states only) the value after the last step, the initial state when no step runs
  (what ``gc.foldl`` returns).

This module sits above ``autodiff`` (the rule differentiates the body) and below the passes
and the compiler: the optimizer handles scans in ``graphc/passes/scan.py``, and the compiler
compiles the body through :meth:`Scan.compiled_impl` (the op never imports the compiler).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence

import numpy as np

from graphc import random as graphc_random
from graphc.autodiff import backprop, zeros_for
from graphc.errors import DTypeError, ExecutionError, GraphcError, ShapeError
from graphc.graph import InnerGraph, clone
from graphc.leaves import Constant, Placeholder, VariableLeaf, placeholder
from graphc.op import MULTI_TYPE, Op, Output, apply, as_tensor, op_dataclass
from graphc.ops.elementwise import add, zeros_like
from graphc.tensor import Tensor, toposort
from graphc.types import format_shape

__all__ = ["Scan", "foldl", "map", "scan"]

MODES = ("trace", "prev", "last", "final")
_REVERSED = (slice(None, None, -1),)


def _compatible(a: tuple, b: tuple) -> bool:
    """Same rank, and every size known on both sides agrees."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _merge(a: tuple, b: tuple) -> tuple:
    """The more specific of two compatible shapes."""
    return tuple(x if x is not None else y for x, y in zip(a, b))


@op_dataclass
class Scan(Op):
    """A loop: run ``body`` ``n`` times, feeding the states back; see the module docstring.

    Parameters: ``body`` (the step's graph), ``n_sequences`` and ``n_states`` (how its inputs
    and outputs are laid out), ``n_steps`` (a static count, or None: from the ``n_steps`` input
    when ``steps_input``, else the sequences' length), ``go_backwards`` (walk the sequences from
    the end), ``emits`` (``(body output, mode)`` per node output) and ``empty_like`` (per body
    output: the node input whose ``shape[1:]`` is the step shape when no step runs, or -1: the
    static shape with unknown sizes 0).
    """

    name = "scan"
    multi_output = True
    body: InnerGraph = None
    n_sequences: int = 0
    n_states: int = 0
    n_steps: int | None = None
    steps_input: bool = False
    go_backwards: bool = False
    emits: tuple = ()
    empty_like: tuple = ()

    def __post_init__(self) -> None:
        body = self.body
        if not isinstance(body, InnerGraph):
            raise TypeError(f"scan: body must be an inner graph, got {type(body).__name__}")
        n_in, n_out = len(body.inputs), len(body.outputs)
        if not (0 <= self.n_sequences and 0 <= self.n_states <= n_out and self.n_sequences + self.n_states <= n_in):
            raise ValueError(f"scan: {self.n_sequences} sequences and {self.n_states} states do not fit a body "
                             f"of {n_in} inputs and {n_out} outputs")
        if self.n_steps is not None and (self.n_steps < 0 or self.steps_input):
            raise ValueError("scan: n_steps must be a non-negative int, and not given twice")
        if self.n_steps is None and not self.steps_input and not self.n_sequences:
            raise ValueError("scan: without sequences the number of steps must be given")
        if not self.emits:
            raise ValueError("scan: needs at least one output")
        for entry in self.emits:
            if (not isinstance(entry, tuple) or len(entry) != 2 or type(entry[0]) is not int
                    or not 0 <= entry[0] < n_out or entry[1] not in MODES):
                raise ValueError(f"scan: bad output {entry!r}")
            if entry[1] in ("prev", "final") and entry[0] >= self.n_states:
                raise ValueError(f"scan: mode {entry[1]!r} is for fed-back outputs only, got {entry!r}")
        if len(self.empty_like) != n_out or any(type(k) is not int or k < -1 for k in self.empty_like):
            raise ValueError("scan: empty_like needs one int per body output")

    # ---- layout -----------------------------------------------------------------------------
    @property
    def nondiff_inputs(self) -> tuple[int, ...]:
        return (0,) if self.steps_input else ()

    @property
    def first(self) -> int:
        """The position of the first sequence among the node's inputs."""
        return 1 if self.steps_input else 0

    def split(self, inputs: Sequence) -> tuple[Sequence, Sequence, Sequence]:
        """(sequences, initial states, non-sequences) of the node's inputs (or arrays)."""
        k, ns, nst = self.first, self.n_sequences, self.n_states
        return inputs[k:k + ns], inputs[k + ns:k + ns + nst], inputs[k + ns + nst:]

    def inner_graphs(self) -> tuple[InnerGraph, ...]:
        return (self.body,)

    def key_bytes(self, node: Tensor) -> bytes:
        return (f"scan|{self.body.key}|{self.n_sequences}|{self.n_states}|{self.n_steps}|{self.steps_input}|"
                f"{self.go_backwards}|{self.emits!r}|{self.empty_like!r}").encode()

    def params(self) -> dict:
        """What printing shows: the layout, not the body (drawn as an inner graph of its own)."""
        shown = {"sequences": self.n_sequences, "states": self.n_states,
                 "outputs": len(self.body.outputs) - self.n_states}
        if self.n_steps is not None:
            shown["n_steps"] = self.n_steps
        if self.go_backwards:
            shown["go_backwards"] = True
        shown["emits"] = ",".join(f"{j}:{mode}" for j, mode in self.emits)
        return shown

    # ---- types ------------------------------------------------------------------------------
    def _static_steps(self, inputs: Sequence[Tensor]) -> int | None:
        if self.steps_input:
            return None
        if self.n_steps is not None:
            return self.n_steps
        sequences = self.split(inputs)[0]
        return next((s.shape[0] for s in sequences if s.shape[0] is not None), None)

    def step_types(self, inputs: Sequence[Tensor]) -> list[tuple[tuple, np.dtype]]:
        """The static (shape, dtype) of one step's value of every body output."""
        inits = self.split(inputs)[1]
        types = []
        for j, out in enumerate(self.body.outputs):
            shape = _merge(out.shape, inits[j].shape) if j < self.n_states else out.shape
            types.append((shape, out.dtype))
        return types

    def output_types(self, *inputs: Tensor) -> list[tuple[tuple, np.dtype]]:
        """The static (shape, dtype) of every output of the node (one per emit)."""
        n = self._static_steps(inputs)
        steps = self.step_types(inputs)
        return [((n,) + steps[j][0] if mode in ("trace", "prev") else steps[j][0], steps[j][1])
                for j, mode in self.emits]

    def infer(self, *inputs: Tensor):
        body = self.body
        expected = self.first + len(body.inputs)
        if len(inputs) != expected:
            raise ShapeError(f"scan: takes {expected} inputs, got {len(inputs)}")
        if self.steps_input:
            count = inputs[0]
            if count.ndim != 0:
                raise ShapeError(f"scan: n_steps must be 0-d, got {count.describe()}")
            if count.dtype.kind not in "iu":
                raise DTypeError(f"scan: n_steps must be an integer, got {count.describe()}")
        sequences, inits, nonseqs = self.split(inputs)
        lengths = set()
        for k, (sequence, arg) in enumerate(zip(sequences, body.inputs)):
            if sequence.ndim < 1:
                raise ShapeError(f"scan: sequence {k} must have at least one dimension, got {sequence.describe()}")
            _check_type(f"scan: sequence {k}'s slices", sequence.shape[1:], sequence.dtype, arg)
            if sequence.shape[0] is not None:
                lengths.add(sequence.shape[0])
        if self.n_steps is not None:
            lengths.add(self.n_steps)
        if len(lengths) > 1:
            listed = ", ".join(format_shape(s.shape) for s in sequences)
            raise ShapeError(f"scan: sequences of different lengths ({listed}"
                             + (f"; n_steps={self.n_steps}" if self.n_steps is not None else "") + ")")
        for j, init in enumerate(inits):
            arg = body.inputs[self.n_sequences + j]
            _check_type(f"scan: initial value {j}", init.shape, init.dtype, arg)
            out = body.outputs[j]
            if out.dtype != init.dtype:
                raise DTypeError(f"scan: output {j} of the step has dtype {out.dtype}, its initial value {init.dtype}")
            if not _compatible(out.shape, init.shape):
                raise ShapeError(f"scan: output {j} of the step has shape {format_shape(out.shape)}, its initial "
                                 f"value {format_shape(init.shape)}")
        offset = self.n_sequences + self.n_states
        for k, value in enumerate(nonseqs):
            _check_type(f"scan: non-sequence {k}", value.shape, value.dtype, body.inputs[offset + k])
        for j, k in enumerate(self.empty_like):
            if k >= 0 and (k >= len(inputs) or inputs[k].ndim != len(body.outputs[j].shape) + 1):
                raise ShapeError(f"scan: empty_like[{j}] = {k} does not name a sequence of the output's rank")
        return MULTI_TYPE

    # ---- running ------------------------------------------------------------------------------
    def impl(self, *arrays):
        """The loop over the reference interpreter of the body (the compiler uses ``compiled_impl``)."""
        return self._run(self.body.evaluate, None, *arrays)

    def compiled_impl(self, compile_graph: Callable) -> Callable:
        """The loop over the body compiled once into a plan (``compile_graph(body)``).

        The compiled loop keeps its last trace buffers: a later call whose traces have the same
        shapes reuses one that nothing refers to any more (every view of it is gone), instead of
        writing into fresh memory (whose page faults cost more than the loop's own overhead).
        """
        return functools.partial(self._run, compile_graph(self.body), {})

    @staticmethod
    def _buffer(spare: dict | None, j: int, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """A trace buffer: the last call's, if nothing refers to it, else a fresh one."""
        if spare is not None:
            old = spare.pop(j, None)  # (atomic: two concurrent calls never take the same buffer)
            # referenced only by `old` and getrefcount's argument: no result, view or call holds it
            if old is not None and old.shape == shape and old.dtype == dtype and sys.getrefcount(old) <= 2:
                spare[j] = old
                return old
            del old
            buffer = np.empty(shape, dtype)
            spare[j] = buffer
            return buffer
        return np.empty(shape, dtype)

    def _count(self, arrays: Sequence, sequences: Sequence[np.ndarray]) -> int:
        if self.steps_input:
            count = np.asarray(arrays[0])
            if count.ndim != 0 or count.dtype.kind not in "iu":
                raise ValueError(f"scan: n_steps must be a 0-d integer, got shape {count.shape} {count.dtype}")
            n = int(count)
            if n < 0:
                raise ValueError(f"scan: n_steps must not be negative, got {n}")
        elif self.n_steps is not None:
            n = self.n_steps
        else:
            n = sequences[0].shape[0]
        for k, sequence in enumerate(sequences):
            if sequence.shape[0] != n:
                lengths = ", ".join(str(s.shape[0]) for s in sequences)
                raise ValueError(f"scan: the sequences must all have the loop's length {n} (sequence {k} "
                                 f"has {sequence.shape[0]}; lengths {lengths})")
        return n

    def _run(self, step: Callable, spare: dict | None, *arrays) -> tuple:
        n_states = self.n_states
        sequences, inits, nonseqs = self.split(arrays)
        n = self._count(arrays, sequences)
        if self.go_backwards:
            sequences = [s[::-1] for s in sequences]
        body_outputs = self.body.outputs
        n_out = len(body_outputs)
        buffered = [False] * n_out
        for j, mode in self.emits:
            if mode in ("trace", "prev"):
                buffered[j] = True
        wanted = [j for j in range(n_out) if buffered[j]]
        buffers: dict[int, np.ndarray] = {}
        states = list(inits)
        shapes = [np.shape(s) for s in states]
        checks = [j for j in range(n_states) if body_outputs[j].shape != self.body.inputs[self.n_sequences + j].shape
                  or None in body_outputs[j].shape]
        for j in wanted:
            if j < n_states:
                buffer = self._buffer(spare, j, (n + 1,) + shapes[j], body_outputs[j].dtype)
                buffer[0] = states[j]
                buffers[j] = buffer
        varying = [j for j in wanted if j >= n_states and None in body_outputs[j].shape]
        last = None
        rest = list(nonseqs)
        for t in range(n):
            try:
                last = step([s[t] for s in sequences] + states + rest)
            except ExecutionError as exc:
                raise ExecutionError(f"scan step {t} (of {n}): {exc}") from exc
            for j in checks:
                if last[j].shape != shapes[j]:
                    raise ValueError(f"scan step {t}: output {j} has shape {last[j].shape}, its initial value "
                                     f"{shapes[j]} (a state must keep its shape)")
            if t == 0:
                for j in wanted:
                    if j >= n_states:
                        buffers[j] = self._buffer(spare, j, (n,) + np.shape(last[j]), body_outputs[j].dtype)
            else:
                for j in varying:  # a trace row must not broadcast a value of another shape silently
                    if np.shape(last[j]) != buffers[j].shape[1:]:
                        raise ValueError(f"scan step {t}: output {j} has shape {np.shape(last[j])}, but it had "
                                         f"{buffers[j].shape[1:]} at step 0 (every step's value must have one shape)")
            for j in wanted:
                buffers[j][t + 1 if j < n_states else t] = last[j]
            states = list(last[:n_states])
        if n == 0:
            for j in wanted:
                if j >= n_states:
                    buffers[j] = np.empty((0,) + self._empty_step_shape(j, arrays), body_outputs[j].dtype)
        results = []
        for j, mode in self.emits:
            if mode == "trace":
                results.append(buffers[j][1:] if j < n_states else buffers[j])
            elif mode == "prev":
                results.append(buffers[j][:-1])
            elif mode == "final":
                # no step: the initial value itself, copied (the executor may recycle the input's buffer)
                results.append(states[j] if n else np.array(states[j], copy=True))
            else:
                if last is None:
                    raise ValueError(f"scan: the last value of output {j} of a loop that ran no step")
                results.append(last[j])
        return tuple(results)

    def _empty_step_shape(self, j: int, arrays: Sequence) -> tuple:
        k = self.empty_like[j]
        if k >= 0:
            return tuple(np.shape(arrays[k])[1:])
        return tuple(0 if s is None else s for s in self.body.outputs[j].shape)

    # ---- the gradient: another scan -------------------------------------------------------------
    def _traces(self, node: Tensor, wanted: list[tuple[int, str]]) -> list[Tensor]:
        """The outputs ``wanted`` (``(body output, mode)`` pairs) of ``node``, kept by the forward loop."""
        position = {entry: k for k, entry in enumerate(self.emits)}
        missing = [entry for entry in wanted if entry not in position]
        source = node
        if missing:  # (a scan built without them, e.g. by hand): a twin node that also emits them
            op = dataclasses.replace(self, emits=self.emits + tuple(missing))
            source = apply(op, *node.inputs)
            position = {entry: k for k, entry in enumerate(op.emits)}
        return [apply(Output(position[entry]), source) for entry in wanted]

    def _values_for_gradient(self, wx, float_states, ww, kept: set[int]) -> list[Tensor]:
        """The body nodes whose values the step's gradient rules read, other than the outputs kept anyway.

        Found by differentiating a probe copy of the body once: the nodes of the forward copy that a
        gradient node reads directly and that change from step to step (they depend on a sequence or
        a state). Loop invariants and constants are recomputed (the optimizer hoists them).
        """
        body = self.body
        ns, nst = self.n_sequences, self.n_states
        probes = [placeholder("probe", t.shape, t.dtype) for t in body.inputs]
        outs, copies = _cloned(body, dict(zip(body.inputs, probes)))
        heads = [o for j, o in enumerate(outs) if o.dtype.kind == "f"]
        cotangents = [placeholder("cotangent", o.shape, o.dtype) for o in heads]
        wrt = [probes[i] for i in wx] + [probes[ns + j] for j in float_states] + [probes[ns + nst + i] for i in ww]
        grads = [g for g in backprop(heads, cotangents, wrt) if g is not None]
        original = {id(copy): node for node, copy in ((n, copies.get(id(n))) for n in body.nodes()) if copy is not None}
        outputs = {id(body.outputs[j]) for j in kept}
        variant_args = {id(t) for t in body.inputs[:ns + nst]}
        variant: dict[int, bool] = {}
        for item in body.nodes():
            variant[id(item)] = id(item) in variant_args or any(variant[id(p)] for p in item.inputs)
        found: dict[int, Tensor] = {}
        for item in toposort(grads, stop_at=probes + cotangents):
            if id(item) in original:
                continue  # a node of the forward copy
            for parent in item.inputs:
                source = original.get(id(parent))
                if (source is not None and source.inputs and variant[id(source)] and id(source) not in outputs
                        and not source.primitive.multi_output):
                    found.setdefault(id(source), source)
        return list(found.values())

    def vjp(self, node: Tensor, gs: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Backpropagation through time: one cotangent per input, computed by another (backward) scan.

        ``gs`` has one cotangent (or None) per output of ``node``. The body is differentiated
        once with the ordinary driver; the backward loop walks the steps in reverse, carrying
        the states' cotangents and summing the non-sequences' gradients (see docs/scan.md).
        """
        body = self.body
        ns, nst = self.n_sequences, self.n_states
        sequences, inits, nonseqs = self.split(node.inputs)
        n_out = len(body.outputs)
        trace_g: dict[int, Tensor] = {}
        prev_g: dict[int, Tensor] = {}
        last_g: dict[int, Tensor] = {}
        for (j, mode), g in zip(self.emits, gs):
            if g is None or body.outputs[j].dtype.kind != "f":
                continue
            table = trace_g if mode == "trace" else prev_g if mode == "prev" else last_g
            table[j] = g if j not in table else add(table[j], g)
        float_states = [j for j in range(nst) if inits[j].dtype.kind == "f"]
        wx = [i for i in range(ns) if sequences[i].dtype.kind == "f"]
        ww = [i for i in range(len(nonseqs)) if nonseqs[i].dtype.kind == "f"]
        if not (wx or float_states or ww) or not (trace_g or prev_g or last_g):
            return [None] * len(node.inputs)
        # sequences in step order (row t is what step t read)
        xs = [s[_REVERSED] if self.go_backwards else s for s in sequences]
        # what the forward loop kept: the states before each step, and the outputs' values (the states after
        # each step, and the traces it emits of the other outputs), so the backward loop recomputes only the
        # body's intermediate values the gradient rules need, never its outputs
        kept = [j for j in range(nst)] + [j for j in range(nst, n_out) if (j, "trace") in self.emits]
        # and the body's intermediate values the gradient rules read (tanh's rule reads its input): a twin
        # of the forward loop emits their traces too; the optimizer merges it with the forward loop
        # (scan.merge), so the forward runs once and the backward recomputes none of them
        stored = self._values_for_gradient(wx, float_states, ww, set(kept))
        source, source_op = node, self
        if stored:
            source_op = dataclasses.replace(
                self, body=InnerGraph(body.inputs, list(body.outputs) + stored),
                emits=self.emits + tuple((n_out + k, "trace") for k in range(len(stored))),
                empty_like=self.empty_like + (-1,) * len(stored))
            source = apply(source_op, *node.inputs)
        found = source_op._traces(source, [(j, "prev") for j in range(nst)] + [(j, "trace") for j in kept]
                                  + [(n_out + k, "trace") for k in range(len(stored))])
        prevs, values = found[:nst], found[nst:]
        trace_keys, prev_keys = sorted(trace_g), sorted(k for k in prev_g if k in float_states)
        q_keys = [j for j in sorted(last_g) if j >= nst]
        back_sequences = (xs + prevs + [trace_g[j] for j in trace_keys] + [prev_g[j] for j in prev_keys]
                          + values)
        infos = ([None] * len(wx)
                 + [last_g[j] if j in last_g else zeros_for(inits[j]) for j in float_states]
                 + [last_g[j] for j in q_keys]
                 + [zeros_for(nonseqs[i]) for i in ww])
        n_seq_args = len(back_sequences)

        def step(*args):
            x = args[:ns]
            s_prev = args[ns:ns + nst]
            offset = ns + nst
            tg = dict(zip(trace_keys, args[offset:offset + len(trace_keys)]))
            offset += len(trace_keys)
            pg = dict(zip(prev_keys, args[offset:offset + len(prev_keys)]))
            offset += len(prev_keys)
            saved = args[offset:offset + len(kept) + len(stored)]
            offset = n_seq_args
            carries = dict(zip(float_states, args[offset:offset + len(float_states)]))
            offset += len(float_states)
            qs = dict(zip(q_keys, args[offset:offset + len(q_keys)]))
            offset += len(q_keys)
            sums = args[offset:offset + len(ww)]
            w = args[offset + len(ww):]
            replace = dict(zip(body.inputs, list(x) + list(s_prev) + list(w)))
            outs, copies = _cloned(body, replace)
            heads, cots = [], []
            for j in range(n_out):
                terms = [t for t in (carries.get(j), tg.get(j), qs.get(j)) if t is not None]
                if terms and outs[j].dtype.kind == "f":
                    total = terms[0]
                    for term in terms[1:]:
                        total = add(total, term)
                    heads.append(outs[j])
                    cots.append(total)
            wrt = [x[i] for i in wx] + [s_prev[j] for j in float_states] + [w[i] for i in ww]
            found = backprop(heads, cots, wrt) if heads else [None] * len(wrt)
            split = len(wx) + len(float_states)
            dx, ds, dw = found[:len(wx)], found[len(wx):split], found[split:]
            new = [d if d is not None else zeros_for(x[i]) for d, i in zip(dx, wx)]
            for d, j in zip(ds, float_states):
                carry = d if d is not None else zeros_for(s_prev[j])
                new.append(add(carry, pg[j]) if j in pg else carry)
            new += [zeros_like(qs[j]) for j in q_keys]
            new += [add(total, d) if d is not None else total for total, d in zip(sums, dw)]
            # the rules read the outputs' values (tanh's rule reads tanh(x)): from what the forward kept
            substitute = {outs[j]: value for j, value in zip(kept, saved) if outs[j] is not value}
            substitute.update((copies[id(r)], value) for r, value in zip(stored, saved[len(kept):]))
            return clone(new, substitute)

        n_steps = node.inputs[0] if self.steps_input else self.n_steps
        modes = (["trace"] * len(wx) + ["final"] * len(float_states) + [None] * len(q_keys)
                 + ["final"] * len(ww))
        first = 1 if self.steps_input else 0
        empty_like = [first + i for i in wx]  # a sequence's gradient has the sequence's shape, also empty
        results = _build(step, back_sequences, infos, list(nonseqs), n_steps, True, None, modes, empty_like)
        rules: list[Tensor | None] = [None] * len(node.inputs)
        for k, i in enumerate(wx):
            trace = results[k]
            rules[self.first + i] = trace if self.go_backwards else trace[_REVERSED]
        for k, j in enumerate(float_states):
            rules[self.first + ns + j] = results[len(wx) + k]
        base = len(wx) + len(float_states) + len(q_keys)
        for k, i in enumerate(ww):
            rules[self.first + ns + nst + i] = results[base + k]
        return rules


def _cloned(body: InnerGraph, replace: dict) -> tuple[list[Tensor], dict[int, Tensor]]:
    """``clone`` of the body's outputs, and ``id(body node) -> its copy`` for every node it copied."""
    mapping: dict[int, Tensor] = {id(old): new for old, new in replace.items()}
    copies: dict[int, Tensor] = {}
    for item in toposort(list(body.outputs), stop_at=list(replace)):
        if id(item) in mapping:
            continue
        inputs = tuple(mapping.get(id(p), p) for p in item.inputs)
        if all(a is b for a, b in zip(inputs, item.inputs)):
            mapping[id(item)] = item
            continue
        shape, dtype = item.primitive.infer(*inputs)
        mapping[id(item)] = copies[id(item)] = Tensor(item.primitive, inputs, shape, dtype, name=item.name,
                                                      site=item.site, is_gradient=item.is_gradient)
    return [mapping.get(id(t), t) for t in body.outputs], copies


def _check_type(what: str, shape: tuple, dtype: np.dtype, arg: Tensor) -> None:
    if dtype != arg.dtype:
        raise DTypeError(f"{what} have dtype {dtype}, the body expects {arg.dtype}")
    if not _compatible(shape, arg.shape):
        raise ShapeError(f"{what} have shape {format_shape(shape)}, the body expects {format_shape(arg.shape)}")


# ---- building ------------------------------------------------------------------------------------

def _tensor_list(function: str, label: str, values) -> list[Tensor]:
    if values is None:
        return []
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    for item in items:
        if isinstance(item, dict):
            raise TypeError(f"{function}: {label} entries must be tensors or arrays; Theano's dicts with taps "
                            f"(several slices per step) are not supported: pass the shifted sequences instead")
    return [as_tensor(v) for v in items]


def _initial(function: str, k: int, info):
    """An outputs_info entry: None, a value, or Theano's ``{"initial": value}`` (taps ``[-1]`` only)."""
    if isinstance(info, dict):
        unknown = set(info) - {"initial", "taps"}
        taps = list(info.get("taps", [-1]) or [])
        if unknown or taps != [-1]:
            raise ValueError(f"{function}: outputs_info[{k}] = {info!r}: only {{'initial': value}} (taps [-1]) is "
                             f"supported; several taps are not")
        info = info.get("initial")
    return None if info is None else as_tensor(info)


def _lift(outputs: list[Tensor], args: list[Tensor]) -> list[Tensor]:
    """The outer tensors the traced step uses without receiving them: its implicit non-sequences.

    A tensor is outer when it does not depend on a step argument but reaches a placeholder or
    variable that is not one (an outer input, or a tensor built outside the step function).
    Constant-only subgraphs stay in the body (the optimizer folds them). Ordered by first use.
    """
    arg_ids = {id(a) for a in args}
    depends: dict[int, bool] = {}
    free: dict[int, bool] = {}
    order = toposort(outputs, stop_at=args)
    for node in order:
        if id(node) in arg_ids:
            depends[id(node)], free[id(node)] = True, False
        elif not node.inputs:
            depends[id(node)] = False
            free[id(node)] = isinstance(node.primitive, (Placeholder, VariableLeaf)) or not isinstance(
                node.primitive, Constant)
        else:
            depends[id(node)] = any(depends[id(p)] for p in node.inputs)
            free[id(node)] = any(free[id(p)] for p in node.inputs)
    captured: dict[int, Tensor] = {}

    def take(tensor: Tensor) -> None:
        if not depends[id(tensor)] and free[id(tensor)]:
            captured.setdefault(id(tensor), tensor)

    for node in order:
        if depends[id(node)] and id(node) not in arg_ids:
            for parent in node.inputs:
                take(parent)
    for tensor in outputs:
        take(tensor)
    return list(captured.values())


def _label(tensor: Tensor, fallback: str) -> str:
    return tensor.name if tensor.name else fallback


def _build(fn: Callable, sequences: list[Tensor], infos: list | None, nonseqs: list[Tensor], n_steps,
           go_backwards: bool, name: str | None, modes: str | list[str | None], empty_like: list[int] | None = None,
           function: str = "scan") -> list[Tensor | None]:
    """Trace ``fn`` once, build the Scan node, and return one projection per output of ``fn``.

    ``infos`` is None when no output is fed back (their number is then ``fn``'s own).
    ``modes[k]`` is the emit returned for output ``k`` of ``fn`` (None: nothing returned; a
    string: that mode for every output);
    every state's ``prev`` trace is emitted too (the gradient reads it; the optimizer drops it
    when nothing does). ``empty_like`` (for internal callers) lists, per output that is not
    fed back, a node input whose shape gives the step shape when no step runs.
    """
    for k, sequence in enumerate(sequences):
        if sequence.ndim < 1:
            raise ShapeError(f"{function}: sequence {k} must have at least one dimension (the steps), "
                             f"got {sequence.describe()}")
    steps_tensor = None
    static_steps = None
    if n_steps is None:
        if not sequences:
            raise ValueError(f"{function}: give n_steps when there are no sequences")
    elif isinstance(n_steps, Tensor):
        if n_steps.ndim != 0:
            raise ShapeError(f"{function}: n_steps must be 0-d, got {n_steps.describe()}")
        if n_steps.dtype.kind not in "iu":
            raise DTypeError(f"{function}: n_steps must be an integer tensor, got {n_steps.describe()}")
        steps_tensor = n_steps  # (the contract: a tensor count gives the outputs an unknown first size)
    elif isinstance(n_steps, (int, np.integer)) and not isinstance(n_steps, (bool, np.bool_)):
        static_steps = int(n_steps)
    else:
        raise TypeError(f"{function}: n_steps must be an int or a 0-d integer tensor, got {n_steps!r}")
    if static_steps is not None and static_steps < 0:
        raise ValueError(f"{function}: n_steps must not be negative, got {static_steps}")
    lengths = [s.shape[0] for s in sequences if s.shape[0] is not None]
    if static_steps is not None:
        lengths.append(static_steps)
    if len(set(lengths)) > 1:
        listed = ", ".join(s.describe() for s in sequences)
        extra = f" and n_steps={static_steps}" if static_steps is not None else ""
        raise ShapeError(f"{function}: the sequences must have one length (the number of steps): {listed}{extra}")

    inits = [] if infos is None else [_initial(function, k, info) for k, info in enumerate(infos)]
    seq_args = [placeholder(f"{_label(s, f'sequence{k}')}[t]", s.shape[1:], s.dtype) for k, s in enumerate(sequences)]
    state_inits = [(k, init) for k, init in enumerate(inits) if init is not None]
    state_args = [placeholder(f"{_label(init, f'state{k}')}[t-1]", init.shape, init.dtype) for k, init in state_inits]
    nonseq_args = [placeholder(_label(v, f"non_sequence{k}"), v.shape, v.dtype) for k, v in enumerate(nonseqs)]
    # random draws made by the step function are keyed by the step (graphc/random.py): each step draws anew
    key = graphc_random.begin_step_function()
    try:
        result = fn(*seq_args, *state_args, *nonseq_args)
        if isinstance(result, dict):
            raise TypeError(f"{function}: the step function returned a dict; return the new outputs (a tensor or "
                            f"a list/tuple of tensors; graphc loops have no updates)")
        outs = [as_tensor(o) for o in (result if isinstance(result, (list, tuple)) else [result])]
        outs, keyed = graphc_random.step_draws(outs, key)
    finally:
        graphc_random.end_step_function(key)
    if keyed:  # the steps' keys are one more sequence of the loop (so its gradient sees the same draws)
        sequences = sequences + [graphc_random.step_keys(
            steps_tensor if steps_tensor is not None else static_steps, sequences[0] if sequences else None)]
        seq_args = seq_args + [key]
    if infos is None:
        inits = [None] * len(outs)
    if isinstance(modes, str):
        modes = [modes] * len(outs)
    if len(outs) != len(inits):
        raise ValueError(f"{function}: the step function returned {len(outs)} outputs, but outputs_info has "
                         f"{len(inits)} entries (one per output; None for one that is not fed back)")
    for k, init in state_inits:
        out = outs[k]
        if out.dtype != init.dtype:
            raise DTypeError(f"{function}: output {k} of the step function has dtype {out.dtype}, but its initial "
                             f"value (outputs_info[{k}], {init.describe()}) has {init.dtype}; a fed-back output "
                             f"must keep its dtype ({out.describe()})")
        if not _compatible(out.shape, init.shape):
            raise ShapeError(f"{function}: output {k} of the step function has shape {format_shape(out.shape)}, "
                             f"but its initial value (outputs_info[{k}], {init.describe()}) has "
                             f"{format_shape(init.shape)}; a fed-back output must keep its shape "
                             f"({out.describe()})")
    state_positions = [k for k, _ in state_inits]
    other_positions = [k for k, init in enumerate(inits) if init is None]
    order = state_positions + other_positions
    body_outputs = [outs[k] for k in order]
    args = seq_args + state_args + nonseq_args
    captured = _lift(body_outputs, args)
    captured_args = [placeholder(_label(c, f"captured{k}"), c.shape, c.dtype) for k, c in enumerate(captured)]
    if captured:
        body_outputs = clone(body_outputs, dict(zip(captured, captured_args)))
    try:
        body = InnerGraph(args + captured_args, body_outputs)
    except GraphcError as exc:  # pragma: no cover - _lift passes every outer leaf as an input
        raise ValueError(f"{function}: {exc}") from exc
    hints = [-1] * len(order)
    for slot, hint in enumerate(empty_like or ()):
        hints[len(state_positions) + slot] = hint
    emits = []
    returned: dict[int, int] = {}
    for body_index, k in enumerate(order):
        if modes[k] is not None:
            returned[k] = len(emits)
            emits.append((body_index, modes[k]))
    # every state's prev trace (and its trace, which shares the buffer) is emitted for the gradient; the
    # optimizer drops what nothing reads
    emits += [(j, "prev") for j in range(len(state_positions))]
    emits += [(j, "trace") for j in range(len(state_positions)) if (j, "trace") not in emits]
    op = Scan(body=body, n_sequences=len(sequences), n_states=len(state_positions), n_steps=static_steps,
              steps_input=steps_tensor is not None, go_backwards=bool(go_backwards), emits=tuple(emits),
              empty_like=tuple(hints))
    inputs = ([steps_tensor] if steps_tensor is not None else []) + sequences + [inits[k] for k in state_positions]
    node = apply(op, *inputs, *nonseqs, *captured, name=name)
    several = sum(1 for m in modes if m is not None) > 1
    results: list[Tensor | None] = []
    for k in range(len(outs)):
        if k not in returned:
            results.append(None)
            continue
        label = None if name is None else (f"{name}[{k}]" if several else name)
        results.append(apply(Output(returned[k]), node, name=label))
    return results


def _infos(outputs_info) -> list | None:
    """The outputs_info entries, or None when not given (then every output of fn is not fed back)."""
    if outputs_info is None:
        return None
    if isinstance(outputs_info, (list, tuple)):
        return list(outputs_info) if outputs_info else None
    return [outputs_info]


def _unwrap(fn: Callable, results: list):
    """A single tensor when the step function returned one tensor (Theano's convention), else a list."""
    return results[0] if getattr(fn, "_graphc_single", False) and len(results) == 1 else results


def scan(fn: Callable, sequences=(), outputs_info=(), non_sequences=(), n_steps=None, go_backwards: bool = False,
         name: str | None = None):
    """A loop as one node of the graph (Theano's ``scan``): the stacked outputs of ``fn``.

    At step ``t``, ``fn`` gets the slices ``seq[t]`` of every sequence, then the previous value
    of every output whose ``outputs_info`` entry is an initial value (``None`` marks an output
    that is not fed back), then the ``non_sequences``; it returns the step's outputs. ``fn`` is
    called once, at build time, on placeholders; outer tensors it uses without receiving them
    are captured as implicit non-sequences. ``n_steps`` is an int or a 0-d integer tensor, and
    may be omitted when there is a sequence (then the sequences' common length, checked at run
    time when unknown). ``go_backwards=True`` walks the sequences from the end (row 0 of each
    output is the first step taken). Returns one tensor of shape ``(n_steps,) + step_shape``
    per output of ``fn`` (a single tensor when ``fn`` returns one tensor).

    A fed-back output must keep its initial value's shape and dtype (``ShapeError`` /
    ``DTypeError`` at build time, naming the output). Values, gradients (any order) and
    optimization go through the loop: see docs/scan.md.
    """
    if not callable(fn):
        raise TypeError(f"scan: fn must be callable, got {type(fn).__name__}")
    seqs = _tensor_list("scan", "sequences", sequences)
    nonseqs = _tensor_list("scan", "non_sequences", non_sequences)
    traced = _Traced(fn)
    results = _build(traced, seqs, _infos(outputs_info), nonseqs, n_steps, go_backwards, name, "trace")
    return _unwrap(traced, results)


class _Traced:
    """The user's step function, remembering whether it returned one bare tensor."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._graphc_single = False

    def __call__(self, *args):
        result = self.fn(*args)
        self._graphc_single = not isinstance(result, (list, tuple))
        return result


def map(fn: Callable, sequences, non_sequences=(), name: str | None = None):  # noqa: A001 - the contract's name
    """``fn(*slices, *non_sequences)`` along axis 0 of the sequences, stacked (``scan`` without state)."""
    if not callable(fn):
        raise TypeError(f"map: fn must be callable, got {type(fn).__name__}")
    seqs = _tensor_list("map", "sequences", sequences)
    if not seqs:
        raise ValueError("map: needs at least one sequence")
    nonseqs = _tensor_list("map", "non_sequences", non_sequences)
    traced = _Traced(fn)
    return _unwrap(traced, _build(traced, seqs, None, nonseqs, None, False, name, "trace", function="map"))


def foldl(fn: Callable, sequences, initial, non_sequences=(), name: str | None = None):
    """The final state of ``state = fn(*slices, state, *non_sequences)`` over the sequences.

    ``initial`` is one initial state (the result is one tensor) or a list/tuple of them (a list
    back). With sequences of length 0 the result is the initial state.
    """
    if not callable(fn):
        raise TypeError(f"foldl: fn must be callable, got {type(fn).__name__}")
    seqs = _tensor_list("foldl", "sequences", sequences)
    if not seqs:
        raise ValueError("foldl: needs at least one sequence")
    nonseqs = _tensor_list("foldl", "non_sequences", non_sequences)
    several = isinstance(initial, (list, tuple))
    infos = list(initial) if several else [initial]
    if any(info is None for info in infos):
        raise ValueError("foldl: every initial state must be a value (None marks scan outputs that are not fed back)")
    results = _build(fn, seqs, infos, nonseqs, None, False, name, "final", function="foldl")
    return list(results) if several else results[0]
