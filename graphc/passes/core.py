"""Shared machinery of the passes: the report, the rewrite context, and the local-rewrite engine.

A *pass* is a named function ``(outputs[, context]) -> outputs`` (the outputs of a graph in,
the outputs of the rewritten graph out); a pass that takes a second parameter receives the
:class:`RewriteContext` of the optimization it runs in (its report, its cache). Tensors are
immutable, so rewriting means building new tensors; a pass that changes nothing returns the
very same tensor objects, which is how the pipeline detects a fixed point.

A *rule* is a small function ``Tensor -> Tensor | None`` that looks at one node (and, through
:func:`producer`, at the nodes feeding it) and returns a replacement computing the same value
with the same shape and dtype, or None when it does not apply. :func:`rewrite` is the one
rewrite engine: a single pass over the graph in topological order (iterative, deterministic),
where every node, once its inputs are final, gets its rules applied until none fires (the new
nodes a rule builds are settled the same way), and, with ``merge=True``, is merged with its
structural twin (common-subexpression elimination by :attr:`Tensor.key`, which is cached on
each tensor, so keying is one digest per node). Rules only look upward (at inputs), so that one
pass reaches the fixed point: no whole-graph rounds. What a rewrite shares with its rules (the
protected tensors, a cache, the report) is an explicit :class:`RewriteContext`, never ambient
state; a rule that takes a second parameter receives it. The helpers rules use
(:func:`producer`, :func:`uniform_value`, ...) are pure functions of the graph: protected
tensors are hidden from the rules structurally.
"""

from __future__ import annotations

import hashlib
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError
from graphc.graph import substitute
from graphc.leaves import Constant, Leaf
from graphc.op import Op
from graphc.tensor import Tensor, rebuilt, toposort, type_text
from graphc.types import format_shape

#: ``rule(node)`` or ``rule(node, context)`` (a :class:`RewriteContext`) -> replacement or None
Rule = Callable[..., "Tensor | None"]
#: ``pass(outputs)`` or ``pass(outputs, context)`` -> outputs
Pass = Callable[..., list[Tensor]]
#: rules by op name (``"*"``: for every op)
RuleTable = Mapping[str, Sequence[Rule]]

#: a rule fires at most this many times in a row on one node (a guard against rule ping-pong)
MAX_FIRINGS_PER_NODE = 32


# ---- the report -----------------------------------------------------------------------

def op_counts(outputs: Iterable[Tensor]) -> dict[str, int]:
    """Nodes (leaves included) of the graph computing ``outputs``, by op name, sorted by name."""
    counts: dict[str, int] = {}
    for node in toposort(outputs):
        counts[node.op] = counts.get(node.op, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class Report:
    """What ``optimize(..., report=True)`` did. ``str(report)`` is a readable table."""

    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    #: rule name -> how many times it fired
    rules: dict[str, int] = field(default_factory=dict)
    #: pass name -> seconds spent in it (in the one canonicalizing pass: each rule family's time)
    pass_seconds: dict[str, float] = field(default_factory=dict)
    #: pass name -> how many times it ran
    pass_runs: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    seconds: float = 0.0

    @property
    def nodes_before(self) -> int:
        return sum(self.before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.after.values())

    def count(self, rule: str, times: int = 1) -> None:
        self.rules[rule] = self.rules.get(rule, 0) + times

    def timed(self, name: str, seconds: float) -> None:
        self.pass_seconds[name] = self.pass_seconds.get(name, 0.0) + seconds
        self.pass_runs[name] = self.pass_runs.get(name, 0) + 1

    def __str__(self) -> str:
        lines = [f"graphc optimizer report: {self.nodes_before} -> {self.nodes_after} nodes, "
                 f"{self.rounds} canonicalization round(s), {self.seconds * 1e3:.2f} ms"]
        lines.append("")
        lines.append(f"{'op':<24}{'before':>8}{'after':>8}")
        for op in sorted(set(self.before) | set(self.after)):
            lines.append(f"{op:<24}{self.before.get(op, 0):>8}{self.after.get(op, 0):>8}")
        lines.append(f"{'total':<24}{self.nodes_before:>8}{self.nodes_after:>8}")
        lines.append("")
        lines.append(f"{'rule':<40}{'fired':>8}")
        for rule in sorted(self.rules):
            lines.append(f"{rule:<40}{self.rules[rule]:>8}")
        if not self.rules:
            lines.append("(no rule fired)")
        lines.append("")
        lines.append(f"{'pass':<24}{'runs':>6}{'ms':>10}")
        for name, seconds in self.pass_seconds.items():
            lines.append(f"{name:<24}{self.pass_runs[name]:>6}{seconds * 1e3:>10.2f}")
        return "\n".join(lines)

    __repr__ = __str__


def takes_context(function: Callable) -> bool:
    """Whether a rule or pass takes a second parameter (the :class:`RewriteContext`)."""
    code = getattr(function, "__code__", None)
    return code is not None and code.co_argcount >= 2


def run_pass(name: str, function: Pass, outputs: list[Tensor], context: RewriteContext) -> list[Tensor]:
    """Run one pass (giving it ``context`` if it takes one), timing it into the context's report."""
    start = time.perf_counter()
    result = function(outputs, context) if takes_context(function) else function(outputs)
    context.timed(name, time.perf_counter() - start)
    return result


# ---- matching helpers used by rules -----------------------------------------------------

def producer(tensor: Tensor, *ops: str) -> Tensor | None:
    """``tensor`` if it was made by one of ``ops``, else None (a rule's way to look at an input).

    Pure: protected tensors (e.g. the ``wrt`` of a gradient) never reach a rule as what they
    are, :func:`rewrite` hides them behind opaque leaves while its rules run.
    """
    return tensor if tensor.op in ops else None


def constant_value(tensor: Tensor) -> np.ndarray | None:
    """The value of a constant leaf, else None."""
    if isinstance(tensor.primitive, Constant):
        return tensor.primitive.value
    return None


def uniform_value(tensor: Tensor):
    """The single value every entry of a (non-empty) constant holds, else None.

    Sees through ``broadcast_to``/``broadcast_like`` of a constant.
    """
    base = tensor
    # (``primitive.name``: these two ops are neither projections nor labelled, so it is ``base.op``)
    while base.primitive.name in ("broadcast_to", "broadcast_like"):
        base = base.inputs[0]
    primitive = base.primitive
    if not isinstance(primitive, Constant):  # most inputs: asked of every input of every add and mul
        return None
    return primitive.uniform()  # (found once per constant, which rules ask again and again)


def is_uniform(tensor: Tensor, number: float) -> bool:
    """Whether ``tensor`` is a constant whose entries all equal ``number`` (0 matches -0 too)."""
    value = uniform_value(tensor)
    return value is not None and bool(value == number)


def same_type(a: Tensor, b: Tensor) -> bool:
    """Same static shape and dtype (``None`` sizes must agree too)."""
    return a.shape == b.shape and a.dtype == b.dtype


def _cannot_grow(x: Tensor, other: Tensor) -> bool:
    """Whether broadcasting ``other`` against ``x`` surely keeps ``x``'s run-time shape.

    Per aligned dimension: ``other``'s size is 1, or ``x``'s size is known (and not 1)
    and ``other``'s is the same or unknown (then it is 1 or that size, else an error).
    """
    if other.ndim > x.ndim:
        return False
    return all(b == 1 or (a is not None and a != 1 and b in (None, a))
               for a, b in zip(x.shape[x.ndim - other.ndim:], other.shape))


def replaces(x: Tensor, node: Tensor) -> bool:
    """Whether ``x``, one of ``node``'s inputs, can stand for ``node``: same static type, and no
    other input broadcasts it to a bigger shape at run time (``None`` sizes may differ then)."""
    return same_type(x, node) and all(_cannot_grow(x, other) for other in node.inputs if other is not x)


def check_type(rule: str, before: Tensor, after: Tensor) -> None:
    """Every rule must keep the tensor's shape and dtype."""
    if before.shape != after.shape or before.dtype != after.dtype:
        raise AssertionError(f"rule {rule!r} changed {format_shape(before.shape)} {before.dtype} into "
                             f"{format_shape(after.shape)} {after.dtype} ({before.describe()})")


# ---- the local-rewrite engine -------------------------------------------------------------

def _rule_name(rule: Rule) -> str:
    return getattr(rule, "rule_name", rule.__name__)


def named(name: str) -> Callable[[Rule], Rule]:
    """Decorator giving a rule the name it is counted under in the report."""
    def wrap(rule: Rule) -> Rule:
        rule.rule_name = name  # type: ignore[attr-defined]
        return rule
    return wrap


@dataclass
class RewriteContext:
    """What one optimization shares with its passes and rules, passed explicitly (never ambient).

    ``protected``: tensors kept as they are and opaque to the rules; ``cache``: a dict living
    as long as the context, for analyses rules share (keyed by the analysis' name); ``report``:
    where firings and pass times are counted (None: not counted). ``loops`` is set by
    :func:`rewrite` when the graph it rewrote has a multi-output node (a loop), so the pipeline
    runs the loop pass only where there are loops.
    """

    protected: tuple[Tensor, ...] = ()
    cache: dict = field(default_factory=dict)
    report: Report | None = None
    loops: bool = False

    def count(self, rule: str, times: int = 1) -> None:
        """Count ``times`` firings of ``rule`` in the report (if any)."""
        if self.report is not None and times:
            self.report.count(rule, times)

    def timed(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to pass ``name``'s time in the report (if any)."""
        if self.report is not None:
            self.report.timed(name, seconds)

    def order(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        """``toposort(outputs)``, remembered for the next pass over the very same outputs: a pass
        that changes nothing returns them (the default pipeline's prune), so the next one walks
        the graph without sorting it again. Tensors are immutable: the same outputs, the same order."""
        last = self.cache.get("toposort")
        if last is not None and len(last[0]) == len(outputs) and all(map(operator.is_, last[0], outputs)):
            return last[1]
        order = toposort(outputs)
        self.known_order(outputs, order)
        return order

    def known_order(self, outputs: Sequence[Tensor], order: list[Tensor]) -> None:
        """Remember ``order``, which must be ``toposort(outputs)``, for :meth:`order`."""
        self.cache["toposort"] = (tuple(outputs), order)


class _Hidden(Leaf):
    """Stands for a protected tensor while the rules run: a leaf, so no rule can look inside it."""

    def key_bytes(self, node: Tensor) -> bytes:
        return f"hidden#{node.serial}".encode()

    def order_bytes(self, node: Tensor) -> bytes:
        return f"hidden:{node.name}".encode()

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


_Hidden.name = "protected"  # set after the class body: not a registered (loadable) op

_OP_KEY_BYTES, _OP_ORDER_BYTES = Op.key_bytes, Op.order_bytes
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


def _digest(message: bytes) -> bytes:
    """The 16-byte blake2b digest of ``message`` (of a node's order text, type text and inputs'
    digests in one message: the digest of the parts fed one by one), from a copy of a fresh
    state, which costs less than making one with its keyword arguments."""
    state = _BLAKE2B_16.copy()
    state.update(message)
    return state.digest()

#: one op's rules, by family: ((family index, ((rule, name, takes context), ...)), ...)
_OpRules = tuple[tuple[int, tuple[tuple[Rule, str, bool], ...]], ...]


class _Rewriter:
    """One bottom-up pass: every node settled (rules to a fixed point, then merged) after its inputs."""

    def __init__(self, families: Sequence[tuple[str, RuleTable]], context: RewriteContext, merge: bool,
                 timed: bool) -> None:
        self.families = families
        self.context = context
        self.table: dict[str, _OpRules] = {}
        # every tensor in final (rewritten) form (tensors hash by identity: sets and dicts of tensors
        # themselves, faster than keyed by ``id()``)
        self.settled: set[Tensor] = set()
        # tensor -> a digest of its structure without creation counters (``Op.order_bytes``):
        # commutative inputs sorted by it come out the same however many tensors were built before
        # (keys digest leaves' creation serials); only for settled tensors and their ancestors
        self.order_keys: dict[Tensor, bytes] = {}
        # (op key text, type text, each input) -> the settled node (see ``_merged``)
        self.by_key: dict[tuple, Tensor] | None = {} if merge else None
        # id(op) -> (op, its key text), for ops keyed by ``Op.key_bytes`` (see ``_key_text``)
        self.key_texts: dict[int, tuple[Op, bytes]] = {}
        # seconds per family (None: not timed, no clock read per node)
        self.seconds: list[float] | None = [0.0] * len(families) if timed else None
        self.merge_seconds = 0.0
        self.merged = self.reordered = 0

    def rules_for(self, op: str) -> _OpRules:
        found = self.table.get(op)
        if found is None:
            entries = []
            for index, (_, rules) in enumerate(self.families):
                chosen = (*rules.get(op, ()), *rules.get("*", ()))
                if chosen:
                    entries.append((index, tuple((rule, _rule_name(rule), takes_context(rule)) for rule in chosen)))
            found = self.table[op] = tuple(entries)
        return found

    def first_firing(self, node: Tensor, families: _OpRules) -> tuple[Tensor, str] | None:
        """The first rule (families in order) that rewrites ``node``: (its result, its name), or None."""
        context, seconds = self.context, self.seconds
        if seconds is None:  # not timed
            for _, rules in families:
                for rule, name, with_context in rules:
                    try:
                        result = rule(node, context) if with_context else rule(node)
                    except GraphcError:
                        continue
                    if result is not None and result is not node:
                        return result, name
            return None
        clock = time.perf_counter()
        for index, rules in families:
            for rule, name, with_context in rules:
                try:
                    result = rule(node, context) if with_context else rule(node)
                except GraphcError:  # the replacement could not be built (e.g. a shape it cannot take)
                    result = None
                if result is not None and result is not node:
                    now = time.perf_counter()
                    seconds[index] += now - clock
                    return result, name
            now = time.perf_counter()
            seconds[index] += now - clock
            clock = now
        return None

    def settle(self, node: Tensor, depth: int = 0, ordered: bool = False) -> Tensor:
        """The final form of a node whose inputs are final: its rules until none applies, then its twin.

        A rule's result is settled the same way (``adopt``), so it comes back final; ``depth``
        counts the firings in a row (a guard against rules undoing each other); ``ordered``: the
        inputs of a commutative node are in canonical order already.
        """
        current = node
        inputs = current.inputs
        if inputs:
            primitive = current.primitive
            if not ordered and self.by_key is not None and primitive.commutative and len(inputs) == 2:
                current = self._canonical_order(current)
            families = self.table.get(primitive.name)
            if families is None:
                families = self.rules_for(primitive.name)
            fired = self.first_firing(current, families) if families and depth < MAX_FIRINGS_PER_NODE else None
            if fired is not None:
                result, name = fired
                check_type(name, current, result)
                self.context.count(name)
                return self.adopt(result, current, depth + 1)
            if primitive.multi_output:
                self.context.loops = True
        return self._merged(current)

    def _order_digest(self, node: Tensor, order_text: bytes | None = None, type_bytes: bytes | None = None) -> bytes:
        """``node``'s structural digest, from its inputs' (which must have theirs already): the
        blake2b digest of its op's ``order_bytes``, its type text and its inputs' digests."""
        keys = self.order_keys
        if order_text is None:
            order_text = node.primitive.order_bytes(node)
        if type_bytes is None:
            type_bytes = type_text(node)
        key = keys[node] = _digest(b"".join((order_text, type_bytes, *map(keys.__getitem__, node.inputs))))
        return key

    def _order_key(self, tensor: Tensor) -> bytes:
        """The structural digest of a settled tensor (made when it was settled; else made now, and
        its ancestors' on the way)."""
        keys = self.order_keys
        found = keys.get(tensor)
        if found is None:
            for node in toposort([tensor], skip=keys.__contains__):
                found = self._order_digest(node)
        return found

    def _canonical_order(self, node: Tensor) -> Tensor:
        """A commutative node's two inputs sorted by structure (so ``a + b`` and ``b + a`` merge).

        By structural digest, then (structurally identical twins) by creation order: never by keys,
        which hold leaves' creation serials, so the same program gets the same order whatever was
        built before it, and sorting is idempotent (optimizing an optimized graph changes nothing)."""
        a, b = node.inputs
        if self._swapped(a, b):
            self.reordered += 1
            return node.with_inputs((b, a))
        return node

    def _swapped(self, a: Tensor, b: Tensor) -> bool:
        """Whether ``b`` comes before ``a`` in the canonical order of commutative inputs."""
        keys = self.order_keys
        key_a = keys.get(a) or self._order_key(a)  # (settled: made already, the usual case)
        key_b = keys.get(b) or self._order_key(b)
        # a tie is two structurally identical tensors (over two placeholders both named "x"): their
        # creation order, which is the program's (how many tensors came before moves both serials)
        return key_b < key_a or (key_b == key_a and b.serial < a.serial)

    def _key_text(self, node: Tensor) -> bytes:
        """``node.primitive.key_bytes(node)``, once per op instance where the op's key is its own
        (``Op.key_bytes``: its class and parameters), which the nodes of a graph share."""
        primitive = node.primitive
        if type(primitive).key_bytes is not _OP_KEY_BYTES:
            return primitive.key_bytes(node)
        found = self.key_texts.get(id(primitive))
        if found is None or found[0] is not primitive:
            found = self.key_texts[id(primitive)] = (primitive, primitive.key_bytes(node))
        return found[1]

    def _merged(self, node: Tensor) -> Tensor:
        """``node`` (inputs final, rules done) if it has no twin yet, else its twin.

        Twins are found by (op key text, type, inputs): the inputs are merged already, so among
        the settled nodes that is :attr:`Tensor.key` equality without a digest per node (a
        hash-consing table). A new settled node gets its structural order digest."""
        by_key = self.by_key
        if by_key is None:
            self.settled.add(node)
            return node
        start = time.perf_counter() if self.seconds is not None else 0.0
        primitive = node.primitive
        found = self.key_texts.get(id(primitive))  # (the usual case of ``_key_text``, inline)
        key_text = found[1] if found is not None and found[0] is primitive else self._key_text(node)
        type_bytes = type_text(node)
        twin = by_key.setdefault((key_text, type_bytes, *node.inputs), node)
        if twin is node:
            self.settled.add(node)
            keys = self.order_keys
            if node not in keys:  # (merging orders commutative inputs by these digests)
                if type(primitive).order_bytes is not _OP_ORDER_BYTES:
                    self._order_digest(node, primitive.order_bytes(node), type_bytes)
                else:  # the order text is the key text; ``_order_digest`` inline
                    keys[node] = _digest(b"".join((key_text, type_bytes, *map(keys.__getitem__, node.inputs))))
        else:
            self.merged += 1
        if self.seconds is not None:
            self.merge_seconds += time.perf_counter() - start
        return twin

    def adopt(self, result: Tensor, origin: Tensor, depth: int) -> Tensor:
        """Settle the new nodes a rule built (rules may fire on them too)."""
        settled = self.settled
        if result in settled:
            return result
        mapping: dict[Tensor, Tensor] = {}
        for node in toposort([result], skip=settled.__contains__):
            if not node.inputs:
                final = self._merged(node)
            else:
                inputs = [mapping.get(p, p) for p in node.inputs]
                rebuilt = node.with_inputs(inputs, name=origin.name if node is result else None,
                                           site=origin.site, is_gradient=origin.is_gradient)
                final = self.settle(rebuilt, depth if node is result else 0)
            mapping[node] = final
        return mapping[result]

    def run(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        memo: dict[Tensor, Tensor] = {}  # (tensors hash by identity, faster than by ``id()``)
        order = self.context.order(outputs)
        if self.by_key is None and not any(map(self.rules_for, {node.primitive.name for node in order})):
            return list(outputs)  # no rule for any op here, and no merging: nothing can change
        settle, merged, final = self.settle, self._merged, memo.__getitem__
        merging = self.by_key is not None
        for original in order:
            inputs = original.inputs
            if inputs:
                new = tuple(map(final, inputs))
                if merging and original.primitive.commutative and len(new) == 2 and self._swapped(*new):
                    # (in canonical order before it is rebuilt: one new node, not two)
                    self.reordered += 1
                    new = (new[1], new[0])
                # (``==`` of tuples of tensors is identity, element by element)
                node = settle(original if new == inputs else rebuilt(original, new), ordered=True)
            else:
                node = merged(original)
            memo[original] = node
        return [memo[t] for t in outputs]


def _families(rules) -> tuple[tuple[str, RuleTable], ...]:
    if isinstance(rules, Mapping):
        return (("rewrite", rules),)
    return tuple(rules)


def rewrite(outputs: Sequence[Tensor], rules, protected: Sequence[Tensor] = (), *,
            context: RewriteContext | None = None, merge: bool = False, timed: bool = False) -> list[Tensor]:
    """Apply ``rules`` bottom-up to a fixed point, in one pass over the graph.

    ``rules`` maps op names to rules (``"*"``: rules for every op), or is a sequence of
    ``(family name, mapping)`` pairs whose rules are tried in that order at each node (each
    family's time is reported under its name). ``merge=True`` also merges structural twins
    (common-subexpression elimination, commutative inputs in canonical order; counted as
    ``cse.merge`` and ``cse.commutative_order``, timed as ``cse``).

    Returns the same tensor objects where nothing changed. ``protected`` tensors are kept as
    they are and rules cannot see through them: while the rules run, each protected non-leaf
    stands behind an opaque leaf of its type. Firings are counted in ``context.report``, and with
    ``timed=True`` each family's time too (a pass run by the pipeline is timed as a whole instead).
    """
    if context is None:
        context = RewriteContext(tuple(protected))
    elif protected:
        context.protected = tuple(protected)
    families = _families(rules)
    outputs = list(outputs)
    hidden = {t: Tensor(_Hidden(), (), t.shape, t.dtype, name=t.name, site=t.site, is_gradient=t.is_gradient)
              for t in protected if t.inputs}
    timed = timed and context.report is not None
    rewriter = _Rewriter(families, context, merge, timed)
    if not hidden:
        result = rewriter.run(outputs)
    else:
        forward = substitute(outputs, hidden)
        result = _restore(outputs, hidden, forward, rewriter.run([forward[id(t)] for t in outputs]))
    if timed:
        for (name, _), seconds in zip(families, rewriter.seconds):
            context.timed(name, seconds)
        if merge:
            context.timed("cse", rewriter.merge_seconds)
    if merge:
        context.count("cse.merge", rewriter.merged)
        context.count("cse.commutative_order", rewriter.reordered)
    return result


def _restore(outputs: list[Tensor], hidden: dict[Tensor, Tensor], forward: dict[int, Tensor],
             result: list[Tensor]) -> list[Tensor]:
    """The stand-ins become the protected tensors again, and every node no rule changed becomes
    its original again (so an unchanged graph comes back as the same objects)."""
    originals = {id(t): t for t in toposort(outputs, stop_at=list(hidden))}
    # (a protected tensor the outputs do not reach is in ``forward`` but not in ``originals``)
    back = {copy: originals[key] for key, copy in forward.items() if key in originals and copy is not originals[key]}
    back.update({stand_in: tensor for tensor, stand_in in hidden.items()})
    restored = substitute(result, back)
    return [restored[id(t)] for t in result]


def rule_table(*rules: tuple[str, Rule]) -> dict[str, tuple[Rule, ...]]:
    """Group ``(op name, rule)`` pairs into the mapping :func:`rewrite` takes, keeping their order."""
    table: dict[str, list[Rule]] = {}
    for op, rule in rules:
        table.setdefault(op, []).append(rule)
    return {op: tuple(found) for op, found in table.items()}
