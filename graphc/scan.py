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
from collections.abc import Callable, Sequence

import numpy as np

from graphc import random as graphc_random
from graphc.autodiff import backprop, zeros_for
from graphc.errors import DTypeError, ExecutionError, GraphcError, ShapeError
from graphc.graph import InnerGraph, clone, depending, frontier
from graphc.leaves import Constant, placeholder
from graphc.op import MULTI_TYPE, Op, Output, apply, as_tensor, kept_buffer, op_dataclass
from graphc.ops.elementwise import add, zeros_like
from graphc.tensor import Tensor, toposort
from graphc.types import format_shape

__all__ = ["Scan", "foldl", "map", "scan"]

MODES = ("trace", "prev", "last", "final")
_REVERSED = (slice(None, None, -1),)


def _check_emit(entry, n_out: int, n_states: int) -> None:
    """An emit is ``(body output, mode)``; ``prev`` and ``final`` are for states only."""
    if (not isinstance(entry, tuple) or len(entry) != 2 or type(entry[0]) is not int
            or not 0 <= entry[0] < n_out or entry[1] not in MODES):
        raise ValueError(f"scan: bad output {entry!r}")
    if entry[1] in ("prev", "final") and entry[0] >= n_states:
        raise ValueError(f"scan: mode {entry[1]!r} is for fed-back outputs only, got {entry!r}")


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
            _check_emit(entry, n_out, self.n_states)
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

    def compiled_impl(self, compile_graph: Callable, returned: bool = True) -> Callable:
        """The loop over the body compiled once into a plan (``compile_graph(body)``).

        The compiled loop keeps its last trace buffers: a later call whose traces have the same
        shapes reuses one that nothing refers to any more (every view of it is gone), instead of
        writing into fresh memory (whose page faults cost more than the loop's own overhead).
        """
        return functools.partial(self._run, compile_graph(self.body), {})

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
        """The loop: ``step(values)`` runs the body once (its outputs' values for its inputs', in order);
        ``spare`` keeps trace buffers from call to call (see ``compiled_impl``), or is None."""
        n_states = self.n_states
        sequences, states, rest = self.split(arrays)
        n = self._count(arrays, sequences)
        if self.go_backwards:
            sequences = [s[::-1] for s in sequences]
        traced = sorted({j for j, mode in self.emits if mode in ("trace", "prev")})
        buffers = self._state_traces(spare, n, traced, states)
        rows = [(j, 1 if j < n_states else 0) for j in traced]  # step t goes to row t + offset of buffer j
        checked, varying = self._shape_checks(traced)
        shapes = [np.shape(s) for s in states]
        states, rest, last = list(states), list(rest), None
        for t in range(n):
            try:
                last = step([s[t] for s in sequences] + states + rest)
            except ExecutionError as exc:
                raise ExecutionError(f"scan step {t} (of {n}): {exc}") from exc
            for j in checked:
                if last[j].shape != shapes[j]:
                    raise ValueError(f"scan step {t}: output {j} has shape {last[j].shape}, its initial value "
                                     f"{shapes[j]} (a state must keep its shape)")
            if t == 0:
                buffers.update(self._other_traces(spare, n, traced, last, arrays))
            else:
                for j in varying:  # a trace row must not broadcast a value of another shape silently
                    if np.shape(last[j]) != buffers[j].shape[1:]:
                        raise ValueError(f"scan step {t}: output {j} has shape {np.shape(last[j])}, but it had "
                                         f"{buffers[j].shape[1:]} at step 0 (every step's value must have one shape)")
            for j, offset in rows:
                buffers[j][t + offset] = last[j]
            states = list(last[:n_states])
        if n == 0:
            buffers.update(self._other_traces(None, 0, traced, None, arrays))
        return tuple(self._emitted(j, mode, buffers, states, last) for j, mode in self.emits)

    def _shape_checks(self, traced: list[int]) -> tuple[list[int], list[int]]:
        """The outputs whose shape every step checks: the states whose body types leave their shape open (a
        state must keep its shape), and the traced other outputs of partly unknown shape (one shape per trace)."""
        outputs, args = self.body.outputs, self.body.inputs[self.n_sequences:]
        states = [j for j in range(self.n_states) if outputs[j].shape != args[j].shape or None in outputs[j].shape]
        others = [j for j in traced if j >= self.n_states and None in outputs[j].shape]
        return states, others

    def _state_traces(self, spare: dict | None, n: int, traced: list[int], inits: Sequence) -> dict[int, np.ndarray]:
        """The traced states' buffers: ``n + 1`` rows, the initial value in row 0 (step t's value goes to row t + 1)."""
        buffers = {}
        for j in traced:
            if j < self.n_states:
                buffers[j] = kept_buffer(spare, j, (n + 1,) + np.shape(inits[j]), self.body.outputs[j].dtype)
                buffers[j][0] = inits[j]
        return buffers

    def _other_traces(self, spare: dict | None, n: int, traced: list[int], first, arrays: Sequence) -> dict:
        """The traced other outputs' buffers: ``n`` rows shaped like step 0's values ``first``; when no step
        runs (``first`` None), fresh buffers of 0 rows of the step shape ``empty_like`` gives."""
        buffers = {}
        for j in traced:
            if j >= self.n_states:
                dtype = self.body.outputs[j].dtype
                buffers[j] = (np.empty((0,) + self._empty_step_shape(j, arrays), dtype) if first is None
                              else kept_buffer(spare, j, (n,) + np.shape(first[j]), dtype))
        return buffers

    def _emitted(self, j: int, mode: str, buffers: dict, states: list, last) -> np.ndarray:
        """The node's output ``(j, mode)`` after the loop (``last``: the last step's values, None if none ran)."""
        if mode == "trace":
            return buffers[j][1:] if j < self.n_states else buffers[j]
        if mode == "prev":
            return buffers[j][:-1]
        if mode == "final":
            # no step: the initial value itself, copied (the executor may recycle the input's buffer)
            return states[j] if last is not None else np.array(states[j], copy=True)
        if last is None:
            raise ValueError(f"scan: the last value of output {j} of a loop that ran no step")
        return last[j]

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

    def _values_for_gradient(self, diff: list[int], kept: set[int]) -> list[Tensor]:
        """The body nodes whose values the step's gradient rules read, other than the outputs ``kept`` anyway.

        Found by differentiating a probe copy of the body once with respect to the body inputs ``diff``:
        the nodes of the forward copy that a gradient node reads directly and that change from step to
        step (they depend on a sequence or a state). Loop invariants and constants are recomputed (the
        optimizer hoists them).
        """
        body = self.body
        probes = [placeholder("probe", t.shape, t.dtype) for t in body.inputs]
        outs, copies = _cloned(body, dict(zip(body.inputs, probes)))
        heads = [o for o in outs if o.dtype.kind == "f"]
        cotangents = [placeholder("cotangent", o.shape, o.dtype) for o in heads]
        grads = [g for g in backprop(heads, cotangents, [probes[k] for k in diff]) if g is not None]
        nodes = body.nodes()
        step_args = {id(t) for t in body.inputs[:self.n_sequences + self.n_states]}
        varies = depending(nodes, lambda item: id(item) in step_args)
        outputs = {id(body.outputs[j]) for j in kept}
        # (a copied node has inputs: the leaves are replaced or shared)
        readable = {id(copies[id(item)]): item for item in nodes if id(item) in copies and id(item) in varies
                    and id(item) not in outputs and not item.primitive.multi_output}
        forward = {id(copy) for copy in copies.values()}
        found: dict[int, Tensor] = {}
        for item in toposort(grads, stop_at=probes + cotangents):
            if id(item) not in forward:
                for parent in item.inputs:
                    if id(parent) in readable:
                        found.setdefault(id(parent), readable[id(parent)])
        return list(found.values())

    def _cotangents(self, gs: Sequence[Tensor | None]) -> tuple[dict[int, Tensor], ...]:
        """The cotangents ``gs`` (one per output) per body output ``j`` of the float outputs: those of its
        trace, of its prev-trace, and of its last or final value (summed where two outputs emit the same)."""
        trace_g: dict[int, Tensor] = {}
        prev_g: dict[int, Tensor] = {}
        last_g: dict[int, Tensor] = {}
        for (j, mode), g in zip(self.emits, gs):
            if g is not None and self.body.outputs[j].dtype.kind == "f":
                table = trace_g if mode == "trace" else prev_g if mode == "prev" else last_g
                table[j] = add(table[j], g) if j in table else g
        return trace_g, prev_g, last_g

    def vjp(self, node: Tensor, gs: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Backpropagation through time: one cotangent per input, computed by another (backward) scan.

        ``gs`` has one cotangent (or None) per output of ``node``. The body is differentiated
        once with the ordinary driver; the backward loop walks the steps in reverse, carrying
        the states' cotangents and summing the non-sequences' gradients (see docs/scan.md).
        """
        cotangents = self._cotangents(gs)
        # the body inputs differentiated: the float ones (body input k is node input first + k)
        diff = [k for k, t in enumerate(node.inputs[self.first:]) if t.dtype.kind == "f"]
        if not diff or not any(cotangents):
            return [None] * len(node.inputs)
        return _Backward(self, diff, *cotangents).gradients(node)


class _Backward:
    """The backward loop of a scan node (backpropagation through time), and its step function.

    It walks the forward's steps from the last one. Its sequences, in the forward's step order: the
    forward's sequences, the states before each step, the cotangents of the traces (outputs
    ``trace_keys``) and of the prev-traces (states ``prev_keys``), and the values the forward kept (the
    outputs ``kept``, then the intermediate values ``stored`` its rules read). Its fed-back outputs:
    per float sequence the cotangent of its slice (traced: the sequence's gradient), per float state
    its cotangent (carried back: its final value is the initial state's gradient), per other output read
    as its last value the cotangent of that (``q_keys``: given before the first backward step, zero
    after), and per float non-sequence its gradient summed over the steps. Its non-sequences are the
    forward's.
    """

    def __init__(self, op: Scan, diff: list[int], trace_g: dict, prev_g: dict, last_g: dict) -> None:
        ns, nst, n_out = op.n_sequences, op.n_states, len(op.body.outputs)
        self.op, self.diff = op, diff
        self.trace_g, self.prev_g, self.last_g = trace_g, prev_g, last_g
        self.wx = [k for k in diff if k < ns]
        self.float_states = [k - ns for k in diff if ns <= k < ns + nst]
        self.ww = [k - ns - nst for k in diff if k >= ns + nst]
        self.trace_keys, self.prev_keys = sorted(trace_g), sorted(prev_g)
        self.q_keys = [j for j in sorted(last_g) if j >= nst]
        # what the forward loop kept: the states before each step, and the outputs' values (the states after
        # each step, and the traces it emits of the other outputs), so the backward loop recomputes only the
        # body's intermediate values the gradient rules need, never its outputs
        self.kept = list(range(nst)) + [j for j in range(nst, n_out) if (j, "trace") in op.emits]
        # and the body's intermediate values the gradient rules read (tanh's rule reads its input): a twin
        # of the forward loop emits their traces too; the optimizer merges it with the forward loop
        # (scan.merge), so the forward runs once and the backward recomputes none of them
        self.stored = op._values_for_gradient(diff, set(self.kept))

    def _saved(self, node: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The traces of the forward ``node`` the backward loop reads: the states before each step, and the
        values kept (of ``kept``, then of ``stored``, emitted by a twin of the forward loop)."""
        op, n_out, stored = self.op, len(self.op.body.outputs), self.stored
        source = node
        if stored:
            op = dataclasses.replace(op, body=InnerGraph(op.body.inputs, list(op.body.outputs) + stored),
                                     emits=op.emits + tuple((n_out + k, "trace") for k in range(len(stored))),
                                     empty_like=op.empty_like + (-1,) * len(stored))
            source = apply(op, *node.inputs)
        wanted = ([(j, "prev") for j in range(op.n_states)] + [(j, "trace") for j in self.kept]
                  + [(n_out + k, "trace") for k in range(len(stored))])
        found = op._traces(source, wanted)
        return found[:op.n_states], found[op.n_states:]

    def gradients(self, node: Tensor) -> list[Tensor | None]:
        """The backward loop over the forward ``node``'s traces: the cotangent of each input of ``node``."""
        op, ns = self.op, self.op.n_sequences
        sequences, inits, nonseqs = op.split(node.inputs)
        prevs, values = self._saved(node)
        xs = [s[_REVERSED] if op.go_backwards else s for s in sequences]  # row t: what step t read
        back_sequences = (xs + prevs + [self.trace_g[j] for j in self.trace_keys]
                          + [self.prev_g[j] for j in self.prev_keys] + values)
        infos = ([None] * len(self.wx)
                 + [self.last_g[j] if j in self.last_g else zeros_for(inits[j]) for j in self.float_states]
                 + [self.last_g[j] for j in self.q_keys] + [zeros_for(nonseqs[i]) for i in self.ww])
        modes = (["trace"] * len(self.wx) + ["final"] * len(self.float_states) + [None] * len(self.q_keys)
                 + ["final"] * len(self.ww))
        empty_like = [op.first + i for i in self.wx]  # a sequence's gradient has the sequence's shape, also empty
        n_steps = node.inputs[0] if op.steps_input else op.n_steps
        results = _build(self, back_sequences, infos, list(nonseqs), n_steps, True, None, modes, empty_like)
        carried = len(self.wx) + len(self.float_states)
        rules: list[Tensor | None] = [None] * len(node.inputs)
        for k, grad in zip(self.diff, results[:carried] + results[carried + len(self.q_keys):]):
            rules[op.first + k] = grad[_REVERSED] if k < ns and not op.go_backwards else grad
        return rules

    def __call__(self, *args: Tensor) -> list[Tensor]:
        """One backward step (traced by ``_build``): the new values of the backward loop's fed-back outputs."""
        op = self.op
        body = op.body
        x, s_prev, tg, pg, saved, carries, qs, sums, w = _chunks(
            args, op.n_sequences, op.n_states, len(self.trace_keys), len(self.prev_keys),
            len(self.kept) + len(self.stored), len(self.float_states), len(self.q_keys), len(self.ww))
        inner = [*x, *s_prev, *w]  # the forward body's inputs at this step
        outs, copies = _cloned(body, dict(zip(body.inputs, inner)))
        terms: dict[int, list[Tensor]] = {}  # per body output, the terms of its cotangent
        for keys, values in ((self.float_states, carries), (self.trace_keys, tg), (self.q_keys, qs)):
            for j, value in zip(keys, values):
                terms.setdefault(j, []).append(value)
        heads = sorted(terms)
        wrt = [inner[k] for k in self.diff]
        found = (backprop([outs[j] for j in heads], [functools.reduce(add, terms[j]) for j in heads], wrt)
                 if heads else [None] * len(wrt))
        carried = len(self.wx) + len(self.float_states)
        dx = [d if d is not None else zeros_for(t) for d, t in zip(found[:carried], wrt)]
        adds = dict(zip(self.prev_keys, pg))  # a state's prev-trace cotangent joins its carry
        new = dx[:len(self.wx)] + [add(d, adds[j]) if j in adds else d
                                   for d, j in zip(dx[len(self.wx):], self.float_states)]
        new += [zeros_like(q) for q in qs]
        new += [add(total, d) if d is not None else total for total, d in zip(sums, found[carried:])]
        # the rules read the outputs' values (tanh's rule reads tanh(x)): from what the forward kept
        substitute = {outs[j]: value for j, value in zip(self.kept, saved) if outs[j] is not value}
        substitute.update((copies[id(r)], value) for r, value in zip(self.stored, saved[len(self.kept):]))
        return clone(new, substitute)


def _chunks(items: Sequence, *sizes: int) -> list[Sequence]:
    """``items`` cut into consecutive pieces of ``sizes``, and the rest."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(items[start:start + size])
        start += size
    return pieces + [items[start:]]


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
    order = toposort(outputs, stop_at=args)
    depends = depending(order, lambda node: id(node) in arg_ids)
    free = depending(order, lambda node: not node.inputs and id(node) not in arg_ids
                     and not isinstance(node.primitive, Constant))
    return [t for t in frontier(order, outputs, depends) if id(t) in free]


def _step_count(function: str, sequences: list[Tensor], n_steps) -> tuple[Tensor | None, int | None]:
    """``n_steps`` checked against the sequences: ``(count tensor, None)``, ``(None, static count)``, or
    ``(None, None)`` (the sequences' length)."""
    for k, sequence in enumerate(sequences):
        if sequence.ndim < 1:
            raise ShapeError(f"{function}: sequence {k} must have at least one dimension (the steps), "
                             f"got {sequence.describe()}")
    tensor = static = None
    if n_steps is None:
        if not sequences:
            raise ValueError(f"{function}: give n_steps when there are no sequences")
    elif isinstance(n_steps, Tensor):
        if n_steps.ndim != 0:
            raise ShapeError(f"{function}: n_steps must be 0-d, got {n_steps.describe()}")
        if n_steps.dtype.kind not in "iu":
            raise DTypeError(f"{function}: n_steps must be an integer tensor, got {n_steps.describe()}")
        tensor = n_steps  # (the contract: a tensor count gives the outputs an unknown first size)
    elif isinstance(n_steps, (int, np.integer)) and not isinstance(n_steps, (bool, np.bool_)):
        static = int(n_steps)
        if static < 0:
            raise ValueError(f"{function}: n_steps must not be negative, got {static}")
    else:
        raise TypeError(f"{function}: n_steps must be an int or a 0-d integer tensor, got {n_steps!r}")
    lengths = {s.shape[0] for s in sequences if s.shape[0] is not None} | ({static} if static is not None else set())
    if len(lengths) > 1:
        listed = ", ".join(s.describe() for s in sequences)
        extra = f" and n_steps={static}" if static is not None else ""
        raise ShapeError(f"{function}: the sequences must have one length (the number of steps): {listed}{extra}")
    return tensor, static


def _trace(function: str, fn: Callable, sequences: list[Tensor], inits: list[Tensor | None], nonseqs: list[Tensor],
           count: Tensor | int | None) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Trace ``fn`` once on stand-ins of one step's values: the sequences' slices, the previous values of
    the states (the ``inits`` not None), the non-sequences. Returns its outputs as tensors, the stand-ins
    (the body's inputs so far) and the sequences; when ``fn`` draws random numbers, those draws are
    keyed by the step: the step keys (of ``count`` steps) are one more sequence (so a gradient sees the
    same draws), the key placeholder the last slice."""
    seq_args = [placeholder(f"{s.name or f'sequence{k}'}[t]", s.shape[1:], s.dtype) for k, s in enumerate(sequences)]
    state_args = [placeholder(f"{v.name or f'state{k}'}[t-1]", v.shape, v.dtype)
                  for k, v in enumerate(inits) if v is not None]
    nonseq_args = [placeholder(v.name or f"non_sequence{k}", v.shape, v.dtype) for k, v in enumerate(nonseqs)]
    key = graphc_random.begin_step_function()  # (graphc/random.py)
    try:
        result = fn(*seq_args, *state_args, *nonseq_args)
        if isinstance(result, dict):
            raise TypeError(f"{function}: the step function returned a dict; return the new outputs (a tensor or "
                            f"a list/tuple of tensors; graphc loops have no updates)")
        outs = [as_tensor(o) for o in (result if isinstance(result, (list, tuple)) else [result])]
        outs, keyed = graphc_random.step_draws(outs, key)
    finally:
        graphc_random.end_step_function(key)
    if keyed:
        sequences = sequences + [graphc_random.step_keys(count, sequences[0] if sequences else None)]
        seq_args = seq_args + [key]
    return outs, seq_args + state_args + nonseq_args, sequences


def _emits(order: list[int], modes: list[str | None], n_states: int) -> tuple[list[tuple[int, str]], dict[int, int]]:
    """The node's emits: of each output ``k`` of the step function (body output ``b`` is ``order[b]``)
    whose ``modes[k]`` is not None, then every state's prev trace (and its trace, which shares the buffer)
    for the gradient (the optimizer drops what nothing reads); and ``k -> its emit``."""
    emits, returned = [], {}
    for b, k in enumerate(order):
        if modes[k] is not None:
            returned[k] = len(emits)
            emits.append((b, modes[k]))
    emits += [(j, "prev") for j in range(n_states)]
    emits += [(j, "trace") for j in range(n_states) if (j, "trace") not in emits]
    return emits, returned


def _check_outputs(function: str, outs: list[Tensor], inits: list[Tensor | None]) -> None:
    """One initial value (or None) per output of the step function; a fed-back output keeps its type."""
    if len(outs) != len(inits):
        raise ValueError(f"{function}: the step function returned {len(outs)} outputs, but outputs_info has "
                         f"{len(inits)} entries (one per output; None for one that is not fed back)")
    for k, (out, init) in enumerate(zip(outs, inits)):
        if init is not None and out.dtype != init.dtype:
            raise DTypeError(f"{function}: output {k} of the step function has dtype {out.dtype}, but its initial "
                             f"value (outputs_info[{k}], {init.describe()}) has {init.dtype}; a fed-back output "
                             f"must keep its dtype ({out.describe()})")
        if init is not None and not _compatible(out.shape, init.shape):
            raise ShapeError(f"{function}: output {k} of the step function has shape {format_shape(out.shape)}, "
                             f"but its initial value (outputs_info[{k}], {init.describe()}) has "
                             f"{format_shape(init.shape)}; a fed-back output must keep its shape "
                             f"({out.describe()})")


def _closed_body(function: str, args: list[Tensor], outputs: list[Tensor]) -> tuple[InnerGraph, list[Tensor]]:
    """The body over ``args`` computing ``outputs``, and the outer tensors it captured (its last inputs)."""
    captured = _lift(outputs, args)
    captured_args = [placeholder(c.name or f"captured{k}", c.shape, c.dtype) for k, c in enumerate(captured)]
    if captured:
        outputs = clone(outputs, dict(zip(captured, captured_args)))
    try:
        return InnerGraph(args + captured_args, outputs), captured
    except GraphcError as exc:  # a step function returning no output
        raise ValueError(f"{function}: {exc}") from exc


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
    steps_tensor, static_steps = _step_count(function, sequences, n_steps)
    inits = [] if infos is None else [_initial(function, k, info) for k, info in enumerate(infos)]
    count = steps_tensor if steps_tensor is not None else static_steps
    outs, args, sequences = _trace(function, fn, sequences, inits, nonseqs, count)
    inits = [None] * len(outs) if infos is None else inits
    modes = [modes] * len(outs) if isinstance(modes, str) else modes
    _check_outputs(function, outs, inits)
    states = [k for k, init in enumerate(inits) if init is not None]
    order = states + [k for k, init in enumerate(inits) if init is None]  # body output b is output order[b] of fn
    body, captured = _closed_body(function, args, [outs[k] for k in order])
    emits, returned = _emits(order, modes, len(states))
    hints = [-1] * len(order)
    hints[len(states):len(states) + len(empty_like or ())] = empty_like or ()
    op = Scan(body=body, n_sequences=len(sequences), n_states=len(states), n_steps=static_steps,
              steps_input=steps_tensor is not None, go_backwards=bool(go_backwards), emits=tuple(emits),
              empty_like=tuple(hints))
    inputs = ([steps_tensor] if steps_tensor is not None else []) + sequences + [inits[k] for k in states]
    node = apply(op, *inputs, *nonseqs, *captured, name=name)
    several = len(returned) > 1
    return [apply(Output(returned[k]), node, name=None if name is None else f"{name}[{k}]" if several else name)
            if k in returned else None for k in range(len(outs))]


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


def _loop_arguments(function: str, fn, sequences, non_sequences) -> tuple[list[Tensor], list[Tensor]]:
    """The checked (sequences, non-sequences) of ``map``/``foldl``: ``fn`` callable, at least one sequence."""
    if not callable(fn):
        raise TypeError(f"{function}: fn must be callable, got {type(fn).__name__}")
    seqs = _tensor_list(function, "sequences", sequences)
    if not seqs:
        raise ValueError(f"{function}: needs at least one sequence")
    return seqs, _tensor_list(function, "non_sequences", non_sequences)


def map(fn: Callable, sequences, non_sequences=(), name: str | None = None):  # noqa: A001 - the contract's name
    """``fn(*slices, *non_sequences)`` along axis 0 of the sequences, stacked (``scan`` without state)."""
    seqs, nonseqs = _loop_arguments("map", fn, sequences, non_sequences)
    traced = _Traced(fn)
    return _unwrap(traced, _build(traced, seqs, None, nonseqs, None, False, name, "trace", function="map"))


def foldl(fn: Callable, sequences, initial, non_sequences=(), name: str | None = None):
    """The final state of ``state = fn(*slices, state, *non_sequences)`` over the sequences.

    ``initial`` is one initial state (the result is one tensor) or a list/tuple of them (a list
    back). With sequences of length 0 the result is the initial state.
    """
    seqs, nonseqs = _loop_arguments("foldl", fn, sequences, non_sequences)
    several = isinstance(initial, (list, tuple))
    infos = list(initial) if several else [initial]
    if any(info is None for info in infos):
        raise ValueError("foldl: every initial state must be a value (None marks scan outputs that are not fed back)")
    results = _build(fn, seqs, infos, nonseqs, None, False, name, "final", function="foldl")
    return list(results) if several else results[0]
