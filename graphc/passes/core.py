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
of 100k nodes are fine) in a deterministic order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError
from graphc.leaves import Constant
from graphc.tensor import Tensor
from graphc.types import format_shape

Rule = Callable[[Tensor], "Tensor | None"]
Pass = Callable[[list[Tensor]], list[Tensor]]

#: a rule fires at most this many times in a row on one node (a guard against rule ping-pong)
MAX_FIRINGS_PER_NODE = 32

_local = threading.local()


# ---- traversal ----------------------------------------------------------------------

def topological(outputs: Iterable[Tensor], stop: frozenset[int] = frozenset()) -> list[Tensor]:
    """Every ancestor of ``outputs`` (inclusive), inputs before consumers.

    The same order as :func:`graphc.tensor.toposort` (depth first, inputs in
    argument order), iterative, and a little faster (the passes call it
    several times per round). Tensors whose id is in ``stop`` are included but
    their inputs are not visited.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    for root in outputs:
        if id(root) in seen:
            continue
        seen.add(id(root))
        stack = [(root, iter(() if id(root) in stop else root.inputs))]
        while stack:
            node, parents = stack[-1]
            for parent in parents:
                if id(parent) not in seen:
                    seen.add(id(parent))
                    stack.append((parent, iter(() if id(parent) in stop else parent.inputs)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


# ---- the report -----------------------------------------------------------------------

def op_counts(outputs: Iterable[Tensor]) -> dict[str, int]:
    """Nodes (leaves included) of the graph computing ``outputs``, by op name, sorted by name."""
    counts: dict[str, int] = {}
    for node in topological(outputs):
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
    """Context manager: rule firings and pass times inside go to ``report``."""

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

def _protected() -> frozenset[int]:
    return getattr(_local, "protected", frozenset())


def producer(tensor: Tensor, *ops: str) -> Tensor | None:
    """``tensor`` if it was made by one of ``ops`` and rules may look inside it, else None.

    Tensors protected by the caller of :func:`rewrite` (e.g. the ``wrt`` of a
    gradient) are opaque: no rule may rewrite them away.
    """
    if tensor.op in ops and id(tensor) not in _protected():
        return tensor
    return None


def pass_cache() -> dict:
    """A dict that lives as long as the current :func:`rewrite` call (for analyses rules share)."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    return cache


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
    while base.op in ("broadcast_to", "broadcast_like") and id(base) not in _protected():
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


class _Rewriter:
    def __init__(self, rules: Mapping[str, Sequence[Rule]], protected: Sequence[Tensor]) -> None:
        self.rules = rules
        self.any_rules = tuple(rules.get("*", ()))
        self.table: dict[str, tuple[Rule, ...]] = {}
        self.protected_ids = frozenset(id(t) for t in protected)
        # id -> tensor for every tensor in final (rewritten) form; holds them alive
        self.settled: dict[int, Tensor] = {}

    def rebuild(self, node: Tensor, inputs: tuple, origin: Tensor, name) -> Tensor:
        """``node`` over ``inputs``, carrying ``origin``'s user site and gradient mark."""
        if name == node.name and all(a is b for a, b in zip(inputs, node.inputs)) and node.site == origin.site \
                and node.is_gradient == origin.is_gradient:
            return node
        return Tensor(node.primitive, inputs, node.shape, node.dtype, name=name, site=origin.site,
                      is_gradient=origin.is_gradient)

    def rules_for(self, op: str) -> tuple[Rule, ...]:
        found = self.table.get(op)
        if found is None:
            found = self.table[op] = (*self.rules.get(op, ()), *self.any_rules)
        return found

    def simplify_node(self, node: Tensor) -> Tensor:
        """Apply rules to a node whose inputs are settled, until none applies."""
        if not node.inputs or id(node) in self.protected_ids:
            return node
        current = node
        for _ in range(MAX_FIRINGS_PER_NODE):
            rules = self.rules_for(current.primitive.name)
            result = None
            for rule in rules:
                try:
                    result = rule(current)
                except GraphcError:  # the replacement could not be built (e.g. a shape it cannot take)
                    result = None
                if result is not None and result is not current:
                    break
            else:
                return current
            name = _rule_name(rule)
            check_type(name, current, result)
            fired(name)
            current = self.adopt(result, current)
            if not current.inputs:
                return current
        return current

    def adopt(self, result: Tensor, origin: Tensor) -> Tensor:
        """Settle the new nodes a rule built (rules may fire on them too)."""
        if id(result) in self.settled:
            return result
        # the new nodes: ancestors of result that are not settled yet (iterative DFS)
        order: list[Tensor] = []
        state: dict[int, bool] = {id(result): False}
        stack = [(result, 0)]
        while stack:
            node, index = stack[-1]
            if index < len(node.inputs):
                stack[-1] = (node, index + 1)
                parent = node.inputs[index]
                if id(parent) not in self.settled and id(parent) not in state:
                    state[id(parent)] = False
                    stack.append((parent, 0))
            else:
                stack.pop()
                order.append(node)
        mapping: dict[int, Tensor] = {}
        for node in order:
            if not node.inputs:
                final = node
            else:
                inputs = tuple(mapping.get(id(p), p) for p in node.inputs)
                name = origin.name if node is result else None
                final = self.simplify_node(self.rebuild(node, inputs, origin, name))
            mapping[id(node)] = final
            self.settled[id(final)] = final
        return mapping[id(result)]

    def run(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        _local.protected = self.protected_ids
        _local.cache = {}
        try:
            memo: dict[int, Tensor] = {}
            settled = self.settled
            protected = self.protected_ids
            for original in topological(outputs, protected):
                parents = original.inputs
                if not parents or id(original) in protected:
                    final = original
                else:
                    node = original
                    inputs = tuple([memo[id(p)] for p in parents])
                    if any(a is not b for a, b in zip(inputs, parents)):
                        node = Tensor(node.primitive, inputs, node.shape, node.dtype, name=node.name,
                                      site=node.site, is_gradient=node.is_gradient)
                    final = self.simplify_node(node) if self.rules_for(node.primitive.name) else node
                memo[id(original)] = final
                settled[id(final)] = final
            return [memo[id(t)] for t in outputs]
        finally:
            _local.protected = frozenset()
            _local.cache = None


def rewrite(outputs: Sequence[Tensor], rules: Mapping[str, Sequence[Rule]],
            protected: Sequence[Tensor] = ()) -> list[Tensor]:
    """Apply ``rules`` (op name -> rules; ``"*"``: rules for every op) bottom-up to a fixed point.

    Returns the same tensor objects where nothing changed. ``protected``
    tensors are kept as they are and rules cannot see through them.
    """
    return _Rewriter(rules, protected).run(list(outputs))


def rule_table(*rules: tuple[str, Rule]) -> dict[str, tuple[Rule, ...]]:
    """Group ``(op name, rule)`` pairs into the mapping :func:`rewrite` takes, keeping their order."""
    table: dict[str, list[Rule]] = {}
    for op, rule in rules:
        table.setdefault(op, []).append(rule)
    return {op: tuple(found) for op, found in table.items()}
