"""Shared machinery of the passes: the report, rule counting, and the local-rewrite engine.

A *pass* is a named function ``list[Tensor] -> list[Tensor]`` (the outputs of
a graph in, the outputs of the rewritten graph out). Tensors are immutable,
so rewriting means building new tensors; a pass that changes nothing returns
the very same tensor objects, which is how the pipeline detects a fixed point.

A *rule* is a small function ``Tensor -> Tensor | None`` that looks at one
node (and, through :func:`producer`, at the nodes feeding it) and returns a
replacement computing the same value with the same shape and dtype, or None
when it does not apply. :func:`rewrite` applies rules bottom-up over the whole
graph with iterative traversals only (no recursion over the graph, so graphs
of 100k nodes are fine) in a deterministic order. What one rewrite shares with
its rules (the protected tensors, a cache, the report) is an explicit
:class:`RewriteContext`; a rule that takes a second parameter receives it. The
helpers rules use (:func:`producer`, :func:`uniform_value`, ...) are pure
functions of the graph: protected tensors are hidden from the rules structurally.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError
from graphc.graph import substitute
from graphc.leaves import Constant, Leaf
from graphc.tensor import Tensor, toposort
from graphc.types import format_shape

#: ``rule(node)`` or ``rule(node, context)`` (a :class:`RewriteContext`) -> replacement or None
Rule = Callable[..., "Tensor | None"]
Pass = Callable[[list[Tensor]], list[Tensor]]

#: a rule fires at most this many times in a row on one node (a guard against rule ping-pong)
MAX_FIRINGS_PER_NODE = 32

_local = threading.local()


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
    #: pass name -> seconds spent in it (summed over fixed-point rounds)
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


class recording:
    """Context manager: rule firings and pass times inside go to ``report``.

    The report is the only state a pass reads from its surroundings, and it is written, never
    read: what a pass computes never depends on it. (A thread-local stack, so that concurrent
    ``optimize`` calls in several threads keep their reports apart.)
    """

    def __init__(self, report: Report) -> None:
        self.report = report

    def __enter__(self) -> Report:
        stack = getattr(_local, "reports", None)
        if stack is None:
            stack = _local.reports = []
        stack.append(self.report)
        return self.report

    def __exit__(self, *exc_info) -> None:
        _local.reports.pop()


def current_report() -> Report | None:
    stack = getattr(_local, "reports", None)
    return stack[-1] if stack else None


def fired(rule: str, times: int = 1) -> None:
    """Count one firing of ``rule`` in the active report (if any)."""
    report = current_report()
    if report is not None:
        report.count(rule, times)


def run_pass(name: str, function: Pass, outputs: list[Tensor]) -> list[Tensor]:
    """Run one pass, timing it into the active report."""
    start = time.perf_counter()
    result = function(outputs)
    report = current_report()
    if report is not None:
        report.timed(name, time.perf_counter() - start)
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
    while base.op in ("broadcast_to", "broadcast_like"):
        base = base.inputs[0]
    value = constant_value(base)
    if value is None or value.size == 0:
        return None
    flat = value.reshape(-1)
    first = flat[0]
    if value.size > 1:
        same = flat == first
        if value.dtype.kind == "f":
            same &= np.signbit(flat) == np.signbit(first)
        if not np.all(same):
            return None
    if value.dtype.kind == "f" and np.isnan(first):
        return None
    return first


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


def _takes_context(rule: Rule) -> bool:
    code = getattr(rule, "__code__", None)
    return code is not None and code.co_argcount >= 2


@dataclass
class RewriteContext:
    """What one :func:`rewrite` shares with its rules, passed explicitly (never ambient).

    ``protected``: tensors kept as they are and opaque to the rules; ``cache``: a dict living
    as long as the rewrite, for analyses rules share (keyed by the analysis' name); ``report``:
    where firings are counted (None: not counted).
    """

    protected: tuple[Tensor, ...] = ()
    cache: dict = field(default_factory=dict)
    report: Report | None = None

    def count(self, rule: str, times: int = 1) -> None:
        if self.report is not None:
            self.report.count(rule, times)


class _Hidden(Leaf):
    """Stands for a protected tensor while the rules run: a leaf, so no rule can look inside it."""

    def key_bytes(self, node: Tensor) -> bytes:
        return f"hidden#{node.serial}".encode()

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


_Hidden.name = "protected"  # set after the class body: not a registered (loadable) op


class _Rewriter:
    def __init__(self, rules: Mapping[str, Sequence[Rule]], context: RewriteContext) -> None:
        self.rules = rules
        self.context = context
        self.any_rules = tuple(rules.get("*", ()))
        self.table: dict[str, tuple[tuple[Rule, str, bool], ...]] = {}
        # id -> tensor for every tensor in final (rewritten) form; holds them alive
        self.settled: dict[int, Tensor] = {}

    def rules_for(self, op: str) -> tuple[tuple[Rule, str, bool], ...]:
        found = self.table.get(op)
        if found is None:
            found = self.table[op] = tuple((rule, _rule_name(rule), _takes_context(rule))
                                           for rule in (*self.rules.get(op, ()), *self.any_rules))
        return found

    def simplify_node(self, node: Tensor) -> Tensor:
        """Apply rules to a node whose inputs are settled, until none applies."""
        current = node
        for _ in range(MAX_FIRINGS_PER_NODE):
            if not current.inputs:
                return current
            result = None
            for entry in self.rules_for(current.primitive.name):
                rule, _, takes_context = entry
                try:
                    result = rule(current, self.context) if takes_context else rule(current)
                except GraphcError:  # the replacement could not be built (e.g. a shape it cannot take)
                    result = None
                if result is not None and result is not current:
                    break
            else:
                return current
            name = entry[1]
            check_type(name, current, result)
            self.context.count(name)
            current = self.adopt(result, current)
        return current

    def adopt(self, result: Tensor, origin: Tensor) -> Tensor:
        """Settle the new nodes a rule built (rules may fire on them too)."""
        settled = self.settled
        if id(result) in settled:
            return result
        mapping: dict[int, Tensor] = {}
        for node in toposort([result], skip=lambda t: id(t) in settled):
            if not node.inputs:
                final = node
            else:
                inputs = [mapping.get(id(p), p) for p in node.inputs]
                rebuilt = node.with_inputs(inputs, name=origin.name if node is result else None,
                                           site=origin.site, is_gradient=origin.is_gradient)
                final = self.simplify_node(rebuilt)
            mapping[id(node)] = final
            settled[id(final)] = final
        return mapping[id(result)]

    def run(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        memo: dict[int, Tensor] = {}
        settled = self.settled
        for original in toposort(outputs):
            node = original
            if node.inputs:
                node = node.with_inputs([memo[id(p)] for p in node.inputs])
                if self.rules_for(node.primitive.name):
                    node = self.simplify_node(node)
            memo[id(original)] = node
            settled[id(node)] = node
        return [memo[id(t)] for t in outputs]


def rewrite(outputs: Sequence[Tensor], rules: Mapping[str, Sequence[Rule]],
            protected: Sequence[Tensor] = ()) -> list[Tensor]:
    """Apply ``rules`` (op name -> rules; ``"*"``: rules for every op) bottom-up to a fixed point.

    Returns the same tensor objects where nothing changed. ``protected``
    tensors are kept as they are and rules cannot see through them: while the
    rules run, each protected non-leaf stands behind an opaque leaf of its type.
    Firings are counted in the report being recorded (see :class:`recording`).
    """
    context = RewriteContext(tuple(protected), report=current_report())
    outputs = list(outputs)
    hidden = {t: Tensor(_Hidden(), (), t.shape, t.dtype, name=t.name, site=t.site, is_gradient=t.is_gradient)
              for t in context.protected if t.inputs}
    if not hidden:
        return _Rewriter(rules, context).run(outputs)
    forward = substitute(outputs, hidden)
    result = _Rewriter(rules, context).run([forward[id(t)] for t in outputs])
    # back: the stand-ins become the protected tensors again, and every node no rule changed
    # becomes its original again (so an unchanged graph comes back as the same objects)
    originals = {id(t): t for t in toposort(outputs, stop_at=list(hidden))}
    back = {copy: originals[key] for key, copy in forward.items() if copy is not originals.get(key)}
    back.update({stand_in: tensor for tensor, stand_in in hidden.items()})
    restored = substitute(result, back)
    return [restored[id(t)] for t in result]


def rule_table(*rules: tuple[str, Rule]) -> dict[str, tuple[Rule, ...]]:
    """Group ``(op name, rule)`` pairs into the mapping :func:`rewrite` takes, keeping their order."""
    table: dict[str, list[Rule]] = {}
    for op, rule in rules:
        table.setdefault(op, []).append(rule)
    return {op: tuple(found) for op, found in table.items()}
