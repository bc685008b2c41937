"""Stage 2, scheduling: the steps in run order.

Steps follow a topological order; when the graph updates variables, each update's
computation is pulled up right after its gradient is complete (while the arrays are hot
in cache), so the gradient dies early (``_schedule_eager``). For in-place plans the order
also makes each update follow every reader of the variable's old value, runs those readers
early (``_order_for_inplace``), and sinks steps whose values would otherwise live long down
to their first use (``_sink``), so the peak is that of a hand-written ``W -= lr * dW`` step.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from graphc.tensor import Tensor, Variable

from .plan import Program
from .steps import looks_into, nbytes, static


def schedule(program: Program) -> Program:
    """Stage 2: reorders ``program.steps`` (the dependencies stay ``program.deps``)."""
    steps, deps, roots = program.steps, program.deps, program.roots
    n_outputs = program.n_outputs
    updates = program.resolved_updates
    order_deps = deps
    if program.options.inplace:
        steps, order_deps = _order_for_inplace(steps, deps, updates)
    if program.options.schedule_updates and updates:
        steps = _schedule_eager(steps, deps, roots[:n_outputs], roots[n_outputs:], order_deps)
    if program.options.inplace:
        steps = _sink(steps, deps, set(roots), updates)
    program.steps, program.order_deps = steps, order_deps
    return program


#: the most steps an eager consumer may pull forward with it (its missing ancestors)
_PULL_LIMIT = 8


def _schedule_eager(steps: list[Tensor], deps: dict[Tensor, list[Tensor]], outputs: Sequence[Tensor],
                    update_values: Sequence[Tensor], pull_deps: dict[Tensor, list[Tensor]] | None = None
                    ) -> list[Tensor]:
    """Reorder ``steps`` so that update computations run as soon as their inputs exist.

    Nodes needed only by updates are "eager". After any step is emitted, its
    eager consumers are tried, nearest-to-an-update first: a consumer is
    emitted at once, with its missing ancestors (a short, bounded walk that
    must find only eager nodes), and then its own consumers are tried, depth
    first. So each layer's weight gradient and new value are computed right
    after the layer's backpropagated error, while the arrays are hot, and the
    gradient dies at once. Everything else keeps the original order.

    ``pull_deps`` (default ``deps``) are the dependencies a step waits for when it is pulled
    forward: in-place updates add "after every reader of the old value" there, without
    changing the distances that order the candidates.
    """
    pull_deps = deps if pull_deps is None else pull_deps
    index = {n: i for i, n in enumerate(steps)}
    consumers: dict[Tensor, list[Tensor]] = {n: [] for n in steps}
    for node in steps:
        for parent in dict.fromkeys(deps[node]):
            if parent in consumers:
                consumers[parent].append(node)
    distance, eager = _eager_distances(steps, deps, consumers, outputs, update_values, index)
    if not eager:
        return steps
    return _emit_eagerly(steps, consumers, distance, eager, pull_deps, index)


def _eager_distances(steps, deps, consumers, outputs, update_values, index) -> tuple[dict[Tensor, int], set[Tensor]]:
    """(steps from each node to the nearest update value, the nodes only updates need)."""
    for_outputs: set[Tensor] = set()
    stack = [t for t in outputs if t in index]
    while stack:
        node = stack.pop()
        if node in for_outputs:
            continue
        for_outputs.add(node)
        stack.extend(p for p in deps[node] if p in index)
    distance: dict[Tensor, int] = {t: 0 for t in update_values if t in index}
    for node in reversed(steps):
        best = distance.get(node)
        for consumer in consumers[node]:
            dc = distance.get(consumer)
            if dc is not None and (best is None or dc + 1 < best):
                best = dc + 1
        if best is not None:
            distance[node] = best
    return distance, {key for key in distance if key not in for_outputs}


def _emit_eagerly(steps, consumers, distance, eager, pull_deps, index) -> list[Tensor]:
    """``steps`` in order, each followed at once by the eager consumers it completes (see above)."""
    emitted: set[Tensor] = set()
    order: list[Tensor] = []

    def pull(target: Tensor) -> list[Tensor] | None:
        missing, pending, seen = [], [target], {target}
        while pending:
            node = pending.pop()
            if node not in eager or len(missing) >= _PULL_LIMIT:
                return None
            missing.append(node)
            for parent in pull_deps[node]:
                key = parent
                if key in index and key not in emitted and key not in seen:
                    seen.add(key)
                    pending.append(parent)
        missing.sort(key=lambda n: index[n])
        return missing

    def emit(node: Tensor) -> None:
        emitted.add(node)
        order.append(node)

    for node in steps:
        if node in emitted:
            continue
        emit(node)
        # iterative depth-first expansion: a stack of (node, its candidate consumers)
        frames = [iter(sorted((c for c in consumers[node] if c in eager),
                              key=lambda c: distance[c]))]
        while frames:
            consumer = next(frames[-1], None)
            if consumer is None:
                frames.pop()
                continue
            if consumer in emitted:
                continue
            pulled = pull(consumer)
            if pulled is None:
                continue
            for item in pulled:
                emit(item)
            # expand the target's consumers first (top of the stack), then the pulled ancestors'
            for item in pulled:
                frames.append(iter(sorted((c for c in consumers[item] if c in eager),
                                          key=lambda c: distance[c])))
    return order


# ---- in-place plans ----------------------------------------------------------------------------

def _order_for_inplace(steps: list[Tensor], deps: dict[Tensor, list[Tensor]],
                       updates: Sequence[tuple[Variable, Tensor]]) -> tuple[list[Tensor], dict]:
    """Dependencies that make each update's last step follow every reader of the variable's old value.

    Returns the steps in a topological order of the extended dependencies and the
    extended dependencies (for scheduling only; the steps still compute from ``deps``).
    An update whose extra edges would close a cycle (a reader of the old value that
    needs the new value, or two updates reading each other's variable: a swap) gets
    none; its new value is then computed into a buffer of its own and copied in later.
    """
    looks = looks_into(steps, deps, updates)
    index = {n: i for i, n in enumerate(steps)}
    extended = {n: list(deps[n]) for n in steps}
    consumers: dict[Tensor, list[Tensor]] = {}
    for node in steps:
        for parent in deps[node]:
            if parent in index:
                consumers.setdefault(parent, []).append(node)
    for variable, value in updates:
        if value not in index:
            continue
        readers = [n for n in steps if n is not value and (id(variable) in looks.get(id(n), ()) or any(
            id(variable) in looks.get(id(p), ()) for p in deps[n]))]
        # an edge reader -> value would close a cycle if the value reaches a reader
        if not readers or _reaches(value, set(readers), consumers):
            continue
        extended[value] = extended[value] + readers
        for reader in readers:
            consumers.setdefault(reader, []).append(value)
    # a topological order of the extended graph: the original order, except that the readers of an
    # updated variable run as soon as their inputs exist (an L2 term sum(W**2), which the loss needs
    # only at the end, would otherwise hold W's update, and W's gradient, until then)
    def rank(node: Tensor) -> tuple[int, int]:
        reads = any(looks.get(id(p)) for p in deps[node]) and not node.primitive.view
        return (0 if reads else 1, index[node])

    return _by_rank(steps, extended, consumers, index, rank), extended


def _reaches(start: Tensor, targets: set[Tensor], consumers: dict[Tensor, list[Tensor]]) -> bool:
    """Whether a path of consumers leads from ``start`` to one of ``targets``."""
    seen, stack = {start}, [start]
    while stack:
        for nxt in consumers.get(stack.pop(), ()):
            if nxt in targets:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def _by_rank(steps, extended, consumers, index, rank) -> list[Tensor]:
    """A topological order of ``extended`` taking, among the ready steps, the lowest ``rank`` first."""
    waiting = {n: sum(1 for p in extended[n] if p in index) for n in steps}
    ready = [rank(steps[index[key]]) for key, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[Tensor] = []
    while ready:
        node = steps[heapq.heappop(ready)[1]]
        order.append(node)
        for key in consumers.get(node, ()):
            waiting[key] -= 1
            if waiting[key] == 0:
                heapq.heappush(ready, rank(steps[index[key]]))
    if len(order) != len(steps):  # pragma: no cover - the edges added above never close a cycle
        raise AssertionError("plan compiler: a cycle in the in-place update order")
    return order


def _uses(steps, deps, root_ids) -> tuple[dict[Tensor, int], dict[Tensor, int], dict[Tensor, int]]:
    """(position of each step, the first and the last step using each value); a view keeps the
    buffer it looks into alive, so a value lives as long as its views do."""
    position = {n: i for i, n in enumerate(steps)}
    first: dict[Tensor, int] = {}
    last: dict[Tensor, int] = {}
    for i, node in enumerate(steps):
        for parent in deps[node]:
            first.setdefault(parent, i)
            last[parent] = i
    for node in reversed(steps):
        if node.primitive.view:
            end = len(steps) if node in root_ids else last.get(node, position[node])
            for parent in deps[node]:
                if parent in position and last.get(parent, -1) < end:
                    last[parent] = end
    return position, first, last


def _sink(steps: list[Tensor], deps: dict[Tensor, list[Tensor]], root_ids: set[Tensor],
          updates: Sequence[tuple[Variable, Tensor]] = ()) -> list[Tensor]:
    """Move each step down to just before its first consumer when that holds less memory.

    The eager schedule computes e.g. a ReLU mask right after the forward ReLU, and the mask then
    lives until the backward pass; computed right before its use, it lives one step. A step moves
    when the bytes x steps it stops holding exceed what its inputs are held longer (the ReLU's
    output, a few steps past the weight gradient that read it last). Used for in-place updates,
    whose purpose is a small peak. A step reading an updated variable stays: moving it down would
    hold back that variable's update (and keep its gradient alive).
    """
    looks = looks_into(steps, deps, updates)
    position, first, last = _uses(steps, deps, root_ids)
    moved: dict[int, list[Tensor]] = {}
    sunk: set[Tensor] = set()  # (a moved step's inputs stay where they are: they are not moved)
    for i, node in enumerate(steps):
        target = first.get(node)
        if (target is None or target <= i + 1 or node in root_ids or node.primitive.view
                or not static(node) or any(p in sunk or id(p) in looks for p in deps[node])):
            continue
        # bytes x steps: what the moved value no longer holds, against inputs held longer
        saved = nbytes(node) * (target - i - 1)
        cost = sum(nbytes(parent) * (target - last[parent]) if static(parent) else saved
                   for parent in deps[node] if parent in position and last[parent] < target)
        if cost >= saved:
            continue
        for parent in deps[node]:
            if parent in position and last[parent] < target:
                last[parent] = target
        sunk.add(node)
        moved.setdefault(target, []).append(node)
    if not sunk:
        return steps
    order: list[Tensor] = []
    for i, node in enumerate(steps):
        order.extend(moved.get(i, ()))
        if node not in sunk:
            order.append(node)
    return order
