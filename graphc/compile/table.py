"""Long plans as a step table: the generated lines run by a small interpreter, with no ``compile()``.

Python's ``compile()`` of generated source costs 10-15 us a line, about half of the compile phase
of a long plan. So a plan of more than ``TABLE_STEPS`` steps (and not in place or checked, whose
error reports read ``run``'s frame) is not compiled: its first call runs the table, and each later
call first compiles the next ``PIECE_LINES`` lines into a piece of code that replaces their entries
(``Tiers``), until the plan is all code, at the speed of generated code (a table entry costs
0.1-0.4 us more per call than a line of code; measured: docs/performance.md, "Long plans as a step
table"). Shorter plans are generated code from the start.

The table is an exact reading of the lines code generation writes (``name = f(a, b, out)`` and
``del a, b``): every value lives in a slot of a per-call list ``R`` (feeds, variables, ``_spare``,
then registers and the namespace values the lines read, in order of appearance), and an entry
``(function, getter, slot)`` runs ``R[slot] = function(*getter(R))``: the same calls with the same
arguments in the same order, so the same values, and a value dies at the same step (its slot is
rebound or cleared, as the name was). A line that is not a plain call of names (``x.T``, a keyword
``out=``, a spare buffer, ``_fresh(...)``) becomes a ``lambda`` of its names, compiled once per
distinct text.
"""

from __future__ import annotations

import re
import threading
from array import array
from collections.abc import Callable, Sequence
from operator import itemgetter

from graphc.errors import ExecutionError
from graphc.tensor import Tensor

from . import runtime

#: plans of more steps than this run as a step table (see the module docstring); shorter plans, where
#: compiling costs under ~50 ms, keep the generated code's lower cost per call
TABLE_STEPS = 2000

#: the lines of a piece the table compiles per call from its second call on (see ``Tiers``)
PIECE_LINES = 2000

_CALL = re.compile(r"(\w+) = (\w+)\(([\w, ]*)\)\Z")  # name = function(name, name, ...)
_ASSIGN = re.compile(r"(\w+) = (.*)\Z", re.S)
_ESCAPE = re.compile(r"(?:(\w+)\()?(\w+)\)?\Z")  # name, or wrapper(name)
# the names in an expression: identifiers not after a dot (an attribute) and not inside a string
_NAME = re.compile(r"'[^']*'|\"[^\"]*\"|(?<![.\w])([A-Za-z_]\w*)(?!\s*=[^=])")
_VALUE = re.compile(r"[rxw]\d+\Z")
_NOTHING = itemgetter(slice(0, 0))  # R -> []: an entry clearing its slot is (NoneType, _NOTHING, slot)
_CLEAR = type(None)


class _Builder:
    """Slots for names, getters (those of one slot shared), and the lambdas of non-call lines."""

    def __init__(self, n_feeds: int, n_variables: int, namespace: dict) -> None:
        self.namespace = namespace
        self.slots: dict[str, int] = {f"x{k}": k for k in range(n_feeds)}
        self.slots.update((f"w{k}", n_feeds + k) for k in range(n_variables))
        self.slots["_spare"] = n_feeds + n_variables
        self.fixed = len(self.slots)
        self.template: list = []  # the initial values of the slots after the fixed ones
        self.getters: dict[tuple[int, ...], Callable] = {}  # the getters of no slot or one
        self.lambdas: dict[str, Callable] = {}

    def slot(self, name: str) -> int:
        found = self.slots.get(name)
        if found is None:
            found = self.slots[name] = self.fixed + len(self.template)
            self.template.append(self.namespace.get(name))  # (a register starts empty)
        return found

    def getter(self, key: tuple[int, ...]) -> Callable:
        """``R -> the values of these slots``, as a sequence to unpack into a call."""
        if len(key) > 1:
            # (not shared: in a long plan nearly every step reads its own slots, so a dict of these
            # would hold one entry per step, and each lookup would miss the caches)
            return itemgetter(*key)
        found = self.getters.get(key)
        if found is None:
            found = self.getters[key] = _NOTHING if not key else itemgetter(slice(key[0], key[0] + 1))
        return found

    def slots_of(self, text: str) -> tuple[int, ...] | None:
        """The slots of a call's argument text ``a, b, c``, or None if an argument is a literal."""
        slots, key = self.slots, []
        for name in text.split(", ") if text else ():
            found = slots.get(name)
            if found is None:
                if not (_VALUE.match(name) or name in self.namespace):
                    return None
                found = self.slot(name)
            key.append(found)
        return tuple(key)

    def entries(self, lines: list[str], line_step: dict[int, int]) -> tuple[list[tuple], array, array]:
        """The entries of ``lines``, the plan step of each (-1: an entry clearing a slot), and the first
        entry of each line (and, last, the entry count)."""
        entries: list[tuple] = []
        entry_step = array("q")
        line_entry = array("q")
        slots, namespace, match_call = self.slots, self.namespace, _CALL.match
        for k, line in enumerate(lines):
            line_entry.append(len(entries))
            if line.startswith("del "):
                for name in line[4:].split(", "):  # (a dying value was bound before: it has a slot)
                    entries.append((_CLEAR, _NOTHING, slots[name]))
                    entry_step.append(-1)
                continue
            match = match_call(line)  # the common line: name = function(names)
            function = namespace.get(match.group(2)) if match is not None else None
            key = self.slots_of(match.group(3)) if function is not None else None
            if key is not None:
                entries.append((function, self.getter(key), self.slot(match.group(1))))
            else:
                entries.append(self.entry(line))
            entry_step.append(line_step.get(k, -1))
        line_entry.append(len(entries))
        return entries, entry_step, line_entry

    def entry(self, line: str) -> tuple:
        """The entry running ``name = expression`` as a lambda of the expression's names."""
        target, expression = _ASSIGN.match(line).groups()
        params: list[str] = []

        def parameter(found: re.Match) -> str:
            name = found.group(1)
            if name is None or not (_VALUE.match(name) or name in self.namespace or name == "_spare"):
                return found.group(0)  # a string, a keyword, an attribute
            if name not in params:
                params.append(name)
            return f"p{params.index(name)}"

        body = _NAME.sub(parameter, expression)
        text = f"lambda {', '.join(f'p{k}' for k in range(len(params)))}: {body}"
        function = self.lambdas.get(text)
        if function is None:
            function = self.lambdas[text] = eval(text, {})  # noqa: S307 - our own generated expression
        return function, self.getter(tuple(map(self.slot, params))), self.slot(target)


def tabulate(lines: list[str], line_step: dict[int, int], escaped: list[str], n_feeds: int,
             n_variables: int, namespace: dict) -> tuple[Callable, Callable]:
    """(``run(feeds, variables, _spare=None)`` running ``lines``, its ``Tiers``); the caller sets
    ``namespace["_failure"]`` to ``tiers.failure(...)`` (``run`` looks it up when a step raises)."""
    build = _Builder(n_feeds, n_variables, namespace)
    entries, entry_step, line_entry = build.entries(lines, line_step)
    returns = []
    for expression in escaped:
        wrapper, name = _ESCAPE.match(expression).groups()
        returns.append((namespace[wrapper] if wrapper else None, build.slot(name)))
    scratch = build.slot("_scratch")  # where a compiled piece's None goes
    tiers = Tiers(tuple(entries), entry_step, line_entry, lines, line_step, build.slots, namespace, scratch)
    template, returns_t = tuple(build.template), tuple(returns)

    def run(feeds, variables, _spare=None):
        if tiers.pending:
            tiers.upgrade()
        # (the entries before the table: an error in an older table, a call that began before the
        # last piece was swapped in, still finds its step; see ``Tiers.failure``)
        tabled = tiers.tabled
        table = tiers.table
        R = [*feeds, *variables, _spare, *template]  # noqa: N806 - the register list of the docs
        step = None
        try:
            for step in table:
                function, get, slot = step
                R[slot] = function(*get(R))
        except Exception as exc:
            raise namespace["_failure"](exc, step, R, tabled) from exc
        tiers.called()
        return tuple([R[s] if wrapper is None else wrapper(R[s]) for wrapper, s in returns_t])

    run.tiers = tiers  # (for tests and measurements)
    return run, tiers


def _alone(R: list) -> tuple:  # noqa: N803
    return (R,)


class Tiers:
    """The table and its compiled pieces: from the second call on, each call first compiles the next
    ``PIECE_LINES`` lines into one function over ``R`` (the same lines, value names read as slots)
    that replaces their entries, until the whole plan is code. So the first result costs no
    ``compile()``, and a plan called many times runs at the speed of generated code after a number
    of calls that grows with its length (one piece, about 25 ms of compiling, per call)."""

    def __init__(self, table: tuple, entry_step: array, line_entry: array, lines: list[str],
                 line_step: dict[int, int], slots: dict[str, int], namespace: dict, scratch: int) -> None:
        self.table = self.original = table
        #: (the entries of the table, the step of each): what ``failure`` reads, replaced at once
        self.tabled = (table, entry_step)
        self.entry_step, self.line_entry, self.lines, self.line_step = entry_step, line_entry, lines, line_step
        self.slots, self.namespace, self.scratch = slots, namespace, scratch
        self.pieces: tuple = ()
        self.live = {name for name in slots if name[0] in "xw" or name == "_spare"}  # bound before a piece
        self.codes: dict = {}  # a piece's code object -> the plan step of each of its lines
        self.pending = False  # set after the first call while pieces remain
        self._lock = threading.Lock()

    def called(self) -> None:
        self.pending = self.lines is not None

    def upgrade(self) -> None:
        """Compile the next piece and swap in the table using it (a call already running keeps its table)."""
        if not self._lock.acquire(blocking=False):
            return  # another call is compiling it
        try:
            if self.lines is None:  # (a call ending as the last piece was swapped in set ``pending`` again)
                self.pending = False
                return
            start = len(self.pieces) * PIECE_LINES
            end = min(start + PIECE_LINES, len(self.lines))
            self.pieces += ((self._compile(start, end), _alone, self.scratch),)
            self.table = self.pieces + self.original[self.line_entry[end]:]
            if end == len(self.lines):  # all code: the table and the lines are no longer needed
                self.original, self.entry_step, self.lines, self.line_step = (), array("q"), None, {}
                self.tabled = ((), self.entry_step)  # (after the swap: a call reading ``()`` runs all code)
                self.pending = False
        finally:
            self._lock.release()

    def _compile(self, start: int, end: int) -> Callable:
        """Lines ``start:end`` as one function of ``R``: the very lines, on locals loaded from ``R`` at its
        start (their slots cleared, so a value still dies where the plan drops it) and stored back at
        its end where they still hold live values."""
        # (``live`` is a copy, kept only once the piece compiled: a compile that raises, a
        # KeyboardInterrupt say, leaves the tiers as they were, and the next call compiles it again)
        slots, namespace, live = self.slots, self.namespace, set(self.live)
        shared: dict[str, None] = {}
        reads: dict[str, None] = {}
        written: set[str] = set()
        live_at_start = set(live)
        body = self.lines[start:end]
        for line in body:
            if line.startswith("del "):  # (the names it deletes must be bound: read from R if not written here)
                dead = line[4:].split(", ")
                reads.update(dict.fromkeys(dead))
                live.difference_update(dead)
                continue
            target, expression = line.split(" = ", 1)
            for found in _NAME.finditer(expression):
                name = found.group(1)
                if name is None:
                    continue
                if _VALUE.match(name) or name == "_spare":
                    reads[name] = None
                elif name in namespace:
                    shared[name] = None
            written.add(target)
            live.add(target)
        loads = [n for n in reads if n in live_at_start]
        stores = [n for n in dict.fromkeys([*loads, *sorted(written)]) if n in live]
        head = [f"def piece(R{''.join(f', {n}={n}' for n in shared)}):"]
        for k in range(0, len(loads), 32):  # (in groups: a short line compiles faster than a long one)
            group = loads[k:k + 32]
            slot_text = ", ".join(f"R[{slots[n]}]" for n in group)
            head += [f"    {', '.join(group)}, = {slot_text},", f"    {slot_text.replace(', ', ' = ')} = None"]
        tail = [f"    {', '.join(f'R[{slots[n]}]' for n in stores[k:k + 32])}, = {', '.join(stores[k:k + 32])},"
                for k in range(0, len(stores), 32)]
        text = "\n".join(head + [f"    {line}" for line in body] + (tail or ["    pass"])) + "\n"
        scope: dict = {}
        exec(compile(text, "<graphc plan>", "exec"), namespace, scope)  # noqa: S102 - our own generated code
        function = scope["piece"]
        # the step at each line number of the piece (its def line is 1)
        self.codes[function.__code__] = array("q", [-1] * (1 + len(head))
                                              + [self.line_step.get(k, -1) for k in range(start, end)])
        self.live = live
        return function

    def failure(self, steps: Sequence[Tensor], parents: Sequence[Sequence[int]], value_names: Sequence[str]
                ) -> Callable:
        """The plan's ``_failure(exc, entry, R, tabled)``: the ExecutionError naming the failing step's op,
        input shapes and user line (as a generated plan's); ``tabled``: the ``Tiers.tabled`` the call
        read before its table (the entries are freed once the plan is all code, maybe during the call)."""
        def failure(exc: Exception, entry: tuple, R: list, tabled: tuple) -> ExecutionError:  # noqa: N803
            step = -1
            code = getattr(entry[0], "__code__", None) if entry else None
            if code in self.codes:  # a compiled piece: the line of its frame tells the step
                tb = exc.__traceback__
                while tb is not None and tb.tb_frame.f_code is not code:
                    tb = tb.tb_next
                if tb is not None and 0 < tb.tb_lineno < len(self.codes[code]):
                    step, frame_locals = self.codes[code][tb.tb_lineno], tb.tb_frame.f_locals
            else:
                original, entry_step = tabled
                index = next((k for k, e in enumerate(original) if e is entry), -1)
                step = entry_step[index] if index >= 0 else -1
            if step < 0:  # pragma: no cover - only the steps' entries can raise
                return ExecutionError(f"graph execution failed: {type(exc).__name__}: {exc}")
            node = steps[step]
            slots, local = self.slots, frame_locals if code in self.codes else {}
            arrays = [local[n] if n in local else R[slots[n]] if n in slots else None
                      for n in (value_names[k] for k in parents[step])]
            return runtime.describe_failure(node, arrays, exc)

        return failure
