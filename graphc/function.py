"""Compiled functions: validated feeds, thread-safe calls, atomic updates."""

from __future__ import annotations

import functools
import operator
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from graphc.compile import SPARE_MIN_BYTES, Plan, build_plan
from graphc.errors import DTypeError, ExecutionError, FeedError, ShapeError
from graphc.graph import clone
from graphc.hooks import Hook
from graphc.leaves import Constant, Placeholder, placeholder
from graphc.op import as_tensor
from graphc.ops import add
from graphc.passes import optimize_tensors
from graphc.random import draws_exist
from graphc.structure import flatten, unflatten
from graphc.tensor import Tensor, Variable, toposort
from graphc.types import format_shape, shapes_match

#: the views of a Function's optimized graph (``to_dot``, ``to_networkx``, ``debugprint``, ``repr_svg``,
#: each taking a list of tensors), provided by ``graphc.export`` (a layer above)
VIEWS = Hook("Function's graph views", "graphc.export")
#: ``Function -> (callable, args)`` for ``Function.__reduce__``, provided by ``graphc.pickling``
PICKLING = Hook("pickling a Function", "graphc.pickling")


def normalize_updates(updates) -> list[tuple[Variable, Tensor]]:
    """``{variable: new_value}`` or a list of pairs, checked: variables only, once each."""
    if updates is None:
        return []
    if not isinstance(updates, (Mapping, list, tuple)):
        raise TypeError(f"updates must be a dict {{variable: new_value}} or a list of (variable, new_value) pairs, "
                        f"got {type(updates).__name__}")
    pairs = list(updates.items()) if isinstance(updates, Mapping) else list(updates)
    result, seen = [], set()
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"updates must be a dict or a list of (variable, new_value) pairs, got {pair!r}")
        variable, new = pair
        if not isinstance(variable, Variable):
            raise TypeError(f"updates: {variable!r} is not a variable")
        if id(variable) in seen:
            raise ValueError(f"updates: variable {variable.name!r} is updated twice")
        seen.add(id(variable))
        new = as_tensor(new)
        if not shapes_match(new.shape, variable.shape):  # sizes unknown in new are checked at run time
            raise ShapeError(f"updates: new value of variable {variable.name!r} has shape "
                             f"{format_shape(new.shape)}, the variable {format_shape(variable.shape)}")
        if not np.can_cast(new.dtype, variable.dtype, casting="same_kind"):
            raise DTypeError(f"updates: new value of variable {variable.name!r} has dtype {new.dtype}, "
                             f"which cannot be cast safely to the variable's {variable.dtype}")
        result.append((variable, new))
    return result


def random_updates(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
                   updates: Sequence[tuple[Variable, Tensor]]) -> list[tuple[Variable, Tensor]]:
    """The implicit updates ``state -> state + 1`` of every generator whose draws the call computes.

    A draw is a node whose op is marked ``random`` (graphc/random.py); its first input
    is its generator's state variable. Nothing is added for draws behind a fed tensor
    (they are not computed) or whose state is fed. A user update of such a state is an
    error: the call advances it itself.
    """
    if not draws_exist():  # no draw was ever made: nothing to look for
        return []
    roots = list(outputs) + [new for _, new in updates]
    states = drawn_states(roots, inputs)
    if not states:
        return []
    for variable, _ in updates:
        if id(variable) in states:
            raise ValueError(f"updates: variable {variable.name!r} is the state of a random generator whose "
                             f"draws this call computes; the call advances it by itself (remove this update)")
    return [(state, add(state, np.int64(1))) for state in states.values()]


def drawn_states(roots: Sequence[Tensor], inputs: Sequence[Tensor] = ()) -> dict[int, Variable]:
    """The state variables of the draws computing ``roots`` (by id), in order of discovery.

    A draw's first input is its generator's state. Draws inside the graphs an op runs
    (a loop's body: an op with ``inner_graphs()``, whose body inputs are the node's last
    inputs, in order) count too: their state input is a body input bound, maybe through
    several nested bodies, to the outer state variable. Fed tensors (``inputs``) are not
    computed: nothing behind them counts, nor a fed state.
    """
    fed = {id(t) for t in inputs}
    states: dict[int, Variable] = {}
    # work: (roots, where to stop, body input id -> the outer Variable it is bound to)
    work: list[tuple[list, list, dict]] = [(list(roots), list(inputs), {})]
    while work:
        graph_roots, stop, binding = work.pop()
        for node in toposort(graph_roots, stop_at=stop):
            if id(node) in fed:
                continue
            if getattr(node.primitive, "random", False) and node.inputs:
                state = node.inputs[0]
                state = binding.get(id(state), state) if not isinstance(state, Variable) else state
                if isinstance(state, Variable) and id(state) not in fed:
                    states.setdefault(id(state), state)
            inner = getattr(node.primitive, "inner_graphs", None)
            if callable(inner):
                for body in inner():
                    offset = len(node.inputs) - len(body.inputs)
                    bound = {}
                    for k, arg in enumerate(body.inputs):
                        outer = node.inputs[offset + k] if offset + k >= 0 else None
                        outer = binding.get(id(outer), outer) if outer is not None else None
                        if isinstance(outer, Variable) and id(outer) not in fed:
                            bound[id(arg)] = outer
                    if bound:
                        work.append((list(body.outputs), list(body.inputs), bound))
    return states


def prepare_graph(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
                  updates: Sequence[tuple[Variable, Tensor]], optimize: bool,
                  inplace_updates: bool = False, check_numerics: bool = False, backend: str = "numpy") -> Plan:
    """Cut fed non-placeholder tensors, optimize if asked, and lower to a Plan (on ``backend``)."""
    replace = {}
    for tensor in inputs:
        if not isinstance(tensor.primitive, Placeholder):
            replace[tensor] = placeholder(tensor.name or f"fed {tensor.op}", tensor.shape, tensor.dtype)
    values = list(outputs) + [new for _, new in updates]
    if replace:
        values = clone(values, replace)
    if optimize:
        values = optimize_tensors(values)
    plan_inputs = [replace.get(t, t) for t in inputs]
    n = len(outputs)
    new_updates = [(var, value) for (var, _), value in zip(updates, values[n:])]
    # (separate plan options, passed only when set: the default plan is built exactly as before)
    options = {"check_numerics": True} if check_numerics else {}
    if backend != "numpy":
        options["backend"] = backend
    return build_plan(values[:n], plan_inputs, new_updates, inplace_updates=inplace_updates, **options)


def check_feed(tensor: Tensor, value) -> np.ndarray:
    """The fed value as an array of the placeholder's dtype, or a FeedError naming it."""
    label = f"placeholder {tensor.name!r}" if isinstance(tensor.primitive, Placeholder) else tensor.describe()
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything NumPy cannot turn into an array
        raise FeedError(f"feed for {label}: cannot convert {type(value).__name__} "
                        f"to an array ({exc})") from exc
    if array.dtype != tensor.dtype:
        if array.dtype.kind not in "biuf" or not np.can_cast(array.dtype, tensor.dtype, casting="same_kind"):
            raise FeedError(f"feed for {label}: dtype {array.dtype} cannot be cast safely "
                            f"(same_kind) to the declared {tensor.dtype}")
        array = array.astype(tensor.dtype)
    if not shapes_match(tensor.shape, array.shape):
        raise FeedError(f"feed for {label}: shape {format_shape(array.shape)} does not match "
                        f"the declared {format_shape(tensor.shape)}")
    return array


# Floating-point warnings inside a graph are ignored (like ``np.errstate(all="ignore")``): the
# graph, not the user, chose e.g. to evaluate both branches of a ``where``. ``np.errstate``
# costs over a microsecond per call; setting NumPy's context variable directly costs ~0.1 us.
try:  # pragma: no branch
    from numpy._core.umath import _extobj_contextvar, _make_extobj

    _IGNORE_ALL = _make_extobj(all="ignore")
    _errors_ignored = _extobj_contextvar.set
    _errors_restored = _extobj_contextvar.reset
except (ImportError, AttributeError, TypeError):  # pragma: no cover - another NumPy layout
    def _errors_ignored(_unused=None):
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def _errors_restored(state):
        state.__exit__(None, None, None)

    _IGNORE_ALL = None


def _feed_checks(inputs: Sequence[Tensor], namespace: dict) -> list[str]:
    """Lines validating positional feeds ``x0, x1, ...``: a few identity tests per array.

    Arrays of exactly the declared dtype and shape pass straight through; anything else goes
    to :func:`check_feed` (conversion, or a FeedError naming the placeholder). The names the
    lines use are added to ``namespace``.
    """
    namespace.update(_nd=np.ndarray, _slow=check_feed)
    lines = []
    for k, tensor in enumerate(inputs):
        namespace[f"_t{k}"], namespace[f"_d{k}"] = tensor, tensor.dtype
        if None in tensor.shape:
            known = "".join(f" or x{k}.shape[{i}] != {n}" for i, n in enumerate(tensor.shape) if n is not None)
            shape_test = f"x{k}.ndim != {len(tensor.shape)}{known}"
        else:
            namespace[f"_s{k}"] = tensor.shape
            shape_test = f"x{k}.shape != _s{k}"
        lines.append(f"    if type(x{k}) is not _nd or x{k}.dtype is not _d{k} or {shape_test}:")
        lines.append(f"        x{k} = _slow(_t{k}, x{k})")
    return lines


def _generated(argument: str, body: list[str], namespace: dict, label: str) -> Callable:
    """``def f(argument): body`` compiled with ``namespace``'s entries as default arguments (locals,
    read faster than globals)."""
    params = "".join(f", {n}={n}" for n in sorted(namespace))
    source = f"def generated({argument}{params}):\n" + "\n".join(body) + "\n"
    exec(compile(source, label, "exec"), namespace)  # noqa: S102 - generated here
    return namespace["generated"]


def _feed_checker(inputs: Sequence[Tensor]):
    """A generated function validating positional feeds (see :func:`_feed_checks`): ``args -> feeds``."""
    namespace: dict[str, object] = {}
    names = "".join(f"x{k}, " for k in range(len(inputs)))
    body = [f"    ({names}) = args", *_feed_checks(inputs, namespace), f"    return ({names})"]
    return _generated("args", body, namespace, "<graphc feed check>")


_set_value = Variable._value.__set__  # the slot's setter: what ``object.__setattr__`` does, without the lookup


def _update_error(variable: Variable, value: np.ndarray) -> ExecutionError:
    return ExecutionError(f"update of variable {variable.name!r}: new value has shape "
                          f"{format_shape(value.shape)}, the variable {format_shape(variable.shape)}; "
                          f"no variable was changed")


def _call_body(executable: Executable, namespace: dict) -> list[str]:
    """The lines of ``executable``'s call on the validated ``feeds``, straight-line for its plan.

    What a shared call method would decide at every call is decided here once: which
    locks (in the global order; ``with`` releases them in reverse, on failure too), which
    variables are read, and for each update whether its new value needs a shape check or a cast
    and whether its old value may be recycled. Every check runs before the first install: a
    failure changes no variable. The plan's ``run`` returns fresh arrays (none aliases a feed,
    a variable or another result), installed read-only.
    """
    plan, n = executable.plan, executable._n
    namespace.update(_run=executable._run, _ignored=_errors_ignored, _restored=_errors_restored,
                     _IGNORE_ALL=_IGNORE_ALL)
    names = {}
    for k, variable in enumerate(executable._locked):
        names[id(variable)] = f"_w{k}"
        namespace[f"_w{k}"], namespace[f"_l{k}"] = variable, variable.lock
    values = "(" + "".join(f"{names[id(v)]}._value, " for v in plan.variables) + ")"
    locks = ", ".join(f"_l{k}" for k in range(len(executable._locked))) if executable._locks else ""
    body = ["    token = _ignored(_IGNORE_ALL)", "    try:"]
    if not executable._updated:
        if locks:
            body += [f"        with {locks}:", f"            values = {values}"]
        elif plan.variables:  # one variable, no lock: an in-place call writing it has set it to None
            first = names[id(plan.variables[0])]
            body += [f"        values = ({first}._value,)",
                     "        if values[0] is None:", f"            values = ({first}.value,)"]
        else:
            body += ["        values = ()"]
        body += ["        return _run(feeds, values)"]
    elif executable._inplace:
        body += _inplace_lines(executable, namespace, names, locks)
    elif executable._reserved:
        body += _reserving_lines(executable, namespace, names, locks, values)
    else:
        namespace.update(_box=executable._spare_box, _recyclable=_recyclable, _set=_set_value,
                         _update_error=_update_error)
        body += [f"        with {locks}:", "            spare = _box[0]", "            _box[0] = None",
                 f"            results = _run(feeds, {values}, spare)", "            del spare"]
        installs = []
        for k, (variable, check_shape, cast) in enumerate(executable._installs):
            name, new = names[id(variable)], f"new{k}"
            body.append(f"            {new} = results[{n + k}]")
            if check_shape:
                namespace[f"_s{name}"] = variable.shape
                body += [f"            if {new}.shape != _s{name}:",
                         f"                raise _update_error({name}, {new})"]
            if cast:
                namespace[f"_d{name}"] = variable.dtype
                body.append(f"            {new} = {new}.astype(_d{name})")
            # (``setflags`` costs a fifth of ``flags.writeable = False``: no flags object is made)
            installs += [f"            {new}.setflags(write=False)", f"            _set({name}, {new})"]
        # every new value is a fresh array of this call: install them all, or (above) none
        if executable._large:
            body.append("            olds = [" + ", ".join(f"{names[id(v)]}._value" for v in executable._large) + "]")
        body += installs
        if executable._large:
            body.append("            _box[0] = _recyclable(olds)")
        body.append(f"        return results[:{n}]")
    body += ["    finally:", "        _restored(token)"]
    return body


def _inplace_lines(executable: Executable, namespace: dict, names: dict, locks: str) -> list[str]:
    """The in-place call's lines, written out for this plan (new values go into the variables'
    storage: ``Plan``'s in-place ``run``). The locks are held for the whole call; while it runs each updated variable's
    ``_value`` is None (``Variable.value`` waits for the lock); storage someone else refers to is
    never written (``_claim``); on failure, variables already written keep their new values (the
    ``ExecutionError`` names them), the others get their old ones back."""
    plan, n, updated = executable.plan, executable._n, executable._updated
    namespace.update(_kept=executable._kept_box, _claim=_claim, _lend=_lend, _still_ours=_still_ours,
                     _install=Variable._install, _set=_set_value, _ExecutionError=ExecutionError,
                     _updated=updated)
    slot = {id(v): k for k, v in enumerate(updated)}
    olds = "[" + ", ".join(f"{names[id(v)]}._value" for v in updated) + "]"
    reads = "(" + "".join(f"olds[{slot[id(v)]}], " if id(v) in slot else f"{names[id(v)]}._value, "
                          for v in plan.variables) + ")"
    body = [f"        with {locks}:", f"            olds = {olds}"]
    body += [f"            _set({names[id(v)]}, None)" for v in updated]
    body += ["            kept = _kept[0]", "            try:", "                targets = tuple(_claim(olds))",
             f"                results = _run(feeds, {reads}, targets, _lend(kept, None) if kept else None)",
             "            except BaseException as exc:",
             "                _kept[0] = None  # (the failed call's frames may still refer to them)",
             "                written = getattr(exc, '_graphc_written', None) or {}",
             "                if isinstance(exc, _ExecutionError):",
             "                    exc.changed_variables = tuple(_updated[k] for k in sorted(written))"]
    body += [f"                _install({names[id(v)]}, written.get({k}, olds[{k}]))" for k, v in enumerate(updated)]
    body.append("                raise")
    body += [f"            _install({names[id(v)]}, results[{n + k}])" for k, v in enumerate(updated)]
    body += ["            if kept:", "                _kept[0] = _still_ours(kept)"]
    if executable._dispatch is not None:  # keep the buffers of a plan just made for a call shape too
        namespace["_dispatch"] = executable._dispatch
        body += ["            if _dispatch.new_buffers:",
                 "                new, _dispatch.new_buffers = _dispatch.new_buffers, []",
                 "                _kept[0] = (_kept[0] or []) + new"]
    body.append(f"            return results[:{n}]")
    return body


def _reserving_lines(executable: Executable, namespace: dict, names: dict, locks: str, values: str) -> list[str]:
    """The lines of a call whose only updates are random generators' ``state -> state + 1``.

    Under the locks: read every variable, and install each state's next value at once (the call
    reserves its counter). Then run without the locks: a concurrent call reads the next counter,
    so no two calls draw the same numbers, and they overlap. If the run fails, each state goes
    back to its old value unless another call has advanced it since (then the counter stays
    used: giving it back would let a later call repeat it).
    """
    namespace.update(_install=Variable._install, _array=np.array, _int64=np.int64)
    states = [names[id(state)] for state in executable._reserved]
    body = [f"        with {locks}:", f"            values = {values}"]
    for k, name in enumerate(states):
        body += [f"            old{k} = {name}._value", f"            new{k} = _array(old{k} + 1, dtype=_int64)",
                 f"            _install({name}, new{k})"]
    body += ["        try:", "            results = _run(feeds, values)", "        except BaseException:"]
    for k, name in enumerate(states):
        body += [f"            with {name}.lock:", f"                if {name}._value is new{k}:",
                 f"                    _install({name}, old{k})"]
    body += ["            raise", f"        return results[:{executable._n}]"]
    return body


def _call_wrapper(executable: Executable) -> tuple[Callable, Callable]:
    """``(execute, execute_args)`` generated for ``executable`` (see :func:`_call_body`)."""
    inputs = executable.plan.inputs
    namespace: dict[str, object] = {}
    body = _call_body(executable, namespace)
    execute = _generated("feeds", body, dict(namespace), "<graphc call>")
    names = "".join(f"x{k}, " for k in range(len(inputs)))
    checks = [f"    ({names}) = args", *_feed_checks(inputs, namespace), f"    feeds = ({names})"]
    return execute, _generated("args", checks + body, namespace, "<graphc call>")


def _claim(arrays: list) -> list:
    """For each old value: the array itself, made writeable, if nothing but this call refers to it.

    The caller has already taken the arrays out of their variables, so the only references
    left are ``arrays``, the local name and ``getrefcount``'s argument; anything more (a user's
    ``v.value`` or a view of it, another call's snapshot) means someone may read the array,
    which must then never change: the new value goes into a fresh array instead (None).
    """
    targets: list = []
    for k in range(len(arrays)):
        array = arrays[k]
        if (type(array) is np.ndarray and array.base is None and array.flags.owndata
                and sys.getrefcount(array) <= 3):
            array.setflags(write=True)
            targets.append(array)
        else:
            targets.append(None)
        del array
    return targets


def _recyclable(arrays: list) -> dict | None:
    """The arrays of ``arrays`` nothing else refers to, by (shape, dtype), made writeable again.

    An old variable value is referenced by the caller's list and by ``getrefcount``'s argument
    only when no user, view, snapshot or other variable holds it: then no one can observe it.
    """
    spare: dict = {}
    for k in range(len(arrays)):
        array = arrays[k]
        if (type(array) is np.ndarray and array.base is None and array.flags.c_contiguous
                and array.nbytes >= SPARE_MIN_BYTES and sys.getrefcount(array) <= 3):
            array.setflags(write=True)
            spare.setdefault((array.shape, array.dtype.str), []).append(array)
        del array
    return spare or None


def _kept_buffers(plan: Plan) -> list | None:
    """A buffer for each of the plan's large fresh steps (``+spare``), or None if it has none.

    ``np.empty`` touches no memory: a buffer costs memory once a call writes into it, where the
    step would have allocated its own.
    """
    kept = [np.empty(node.shape, node.dtype) for kind, node in zip(plan.kinds, plan.steps)
            if kind.endswith("+spare")]
    return kept or None


def _lend(kept: list, spare: dict | None) -> dict:
    """``spare`` (or a new dict) with the kept buffers added, by (shape, dtype), for one call's ``_grab``."""
    if spare is None:
        spare = {}
    for array in kept:
        spare.setdefault((array.shape, array.dtype.str), []).append(array)
    return spare


def _still_ours(kept: list) -> list | None:
    """The kept buffers that did not leave the call (as an output or a new value) after it ran.

    A buffer only the kept list refers to (and ``getrefcount``'s argument) is nobody's: the next
    call may write into it. One that left is the caller's or a variable's now, never written again.
    """
    ours = []
    for k in range(len(kept)):
        array = kept[k]
        if sys.getrefcount(array) <= 3:  # kept, the local name, getrefcount's argument
            ours.append(array)
        del array
    return ours or None


def _picker(positions: list[int]):
    """``values -> tuple of values[p] for p in positions``."""
    if len(positions) == 1:
        (position,) = positions
        return lambda values: (values[position],)
    if not positions:
        return lambda values: ()
    return operator.itemgetter(*positions)


class _ShapeDispatch:
    """A plan whose inputs have unknown sizes, run by a plan made for each call shape in use.

    Steps whose sizes are unknown cannot be decided when the plan is built: element-wise steps
    allocate instead of writing into a dead buffer, and the steps computing sizes
    (``reduced_count``, ``broadcast_like``, a ``sum_to`` to the same shape) run at every call.
    Once a call shape (the feeds' shapes) has come back ``_AFTER`` times, the plan's graph is
    lowered again with those sizes known, and calls of that shape run the new plan: decided
    once per call shape instead of at every step. When the function was optimized, the graph
    with known sizes is optimized again, so the size steps fold away as they do for a function
    declared with those sizes. The optimizer's rewrites and the lowering rules are exact: the
    values are those of the general plan. At most ``_SHAPES`` shapes get a plan of their own (a
    loop over ever new shapes keeps the general plan); a shape whose plan cannot be built (its
    sizes do not fit together: the general plan then raises the error) keeps the general one.
    """

    _AFTER = 3
    _SHAPES = 4

    def __init__(self, plan: Plan, optimize: bool, backend: str = "numpy") -> None:
        self.plan = plan
        self.optimize = optimize
        self.backend = backend
        self.runs: dict[tuple, Callable] = {}
        self.calls: dict[tuple, int] = {}
        self.lock = threading.Lock()
        #: the kept buffers of plans made since the executable last took them (see Executable)
        self.new_buffers: list = []

    def run(self, feeds, *rest):
        key = tuple([feed.shape for feed in feeds])
        run = self.runs.get(key)
        if run is None:
            run = self._count(key)
        return run(feeds, *rest)

    def _count(self, key: tuple) -> Callable:
        with self.lock:
            run = self.runs.get(key)
            if run is not None:
                return run
            if key not in self.calls and len(self.calls) >= 4 * self._SHAPES:
                return self.plan.run  # (ever new shapes: stop counting them)
            seen = self.calls[key] = self.calls.get(key, 0) + 1
            if seen < self._AFTER:
                return self.plan.run
            if sum(r is not self.plan.run for r in self.runs.values()) >= self._SHAPES:
                run = self.plan.run
            else:
                run = self._specialized(key) or self.plan.run
            self.runs[key] = run
            return run

    def _specialized(self, shapes: tuple) -> Callable | None:
        """The ``run`` of the plan's graph lowered with the inputs of these shapes, or None."""
        plan = self.plan
        known = [placeholder(t.name or "input", shape, t.dtype) for t, shape in zip(plan.inputs, shapes)]
        roots = list(plan.outputs) + [value for _, value in plan.updates]
        try:
            values = clone(roots, dict(zip(plan.inputs, known)))
            if self.optimize:  # with the sizes known, the optimizer folds the steps that computed them
                values = optimize_tensors(values)
            if any(new.dtype != old.dtype for new, old in zip(values, roots)):
                return None
            n = len(plan.outputs)
            made = build_plan(values[:n], known, [(v, new) for (v, _), new in zip(plan.updates, values[n:])],
                              inplace_updates=plan.inplace, check_numerics=plan.check_numerics,
                              backend=self.backend)
        except Exception:  # noqa: BLE001 - sizes that do not fit: the general plan reports it when it runs
            return None
        where = {id(v): k for k, v in enumerate(plan.variables)}
        if any(id(v) not in where for v in made.variables):
            return None  # pragma: no cover - (lowering again reads no new variable)
        if made.inplace:
            self.new_buffers.extend(_kept_buffers(made) or ())
        order = [where[id(v)] for v in made.variables]
        if order == list(range(len(plan.variables))):
            return made.run
        # the new plan reads the variables in another order (or fewer of them): pick its own
        pick, run = _picker(order), made.run
        return lambda feeds, variables, *rest: run(feeds, pick(variables), *rest)


class Executable:
    """Runs a Plan: snapshot variables, compute, install updates atomically.

    Everything that does not depend on the call is prepared here once: the
    lock order, which update values need a run-time shape check or a cast, and
    the call itself, generated for this plan (:func:`_call_body`): ``execute(feeds)``
    takes validated feeds; ``execute_args(args)`` validates positional values itself
    (the fast path of ``Function.__call__``). Both return the output values (a
    sequence, in ``plan.outputs`` order).
    """

    execute: Callable[[tuple], Sequence]
    execute_args: Callable[[Sequence], Sequence]

    def __init__(self, plan: Plan, optimize: bool = False, backend: str = "numpy") -> None:
        """``optimize``: whether the plan's graph was optimized (plans made for call shapes are too);
        ``backend``: the one the plan was built for (plans made for call shapes use it too)."""
        self.plan = plan
        updated = plan.updated_variables
        touched = {id(v): v for v in plan.variables + updated}
        self._locked = sorted(touched.values(), key=lambda v: v.serial)  # one global order: no deadlock
        self._updated = updated
        # a single variable read without updates needs no lock: reading one attribute is atomic
        self._locks = tuple(v.lock for v in self._locked) if updated or len(self._locked) > 1 else ()
        self._variables = plan.variables
        self._run = plan.run
        self._dispatch = None
        if any(None in t.shape for t in plan.inputs) and plan.steps:
            self._dispatch = _ShapeDispatch(plan, optimize, backend)
            self._run = self._dispatch.run
        self._n = len(plan.outputs)
        self._installs = tuple(
            (variable, None in value.shape or value.shape != variable.shape,
             value.dtype != variable.dtype)
            for variable, value in plan.updates)
        self._check = _feed_checker(plan.inputs)
        # old values of the updated variables that nothing else references: the next call writes
        # new values into them instead of fresh memory (page faults are the cost of fresh memory)
        # (in a list the generated call reads and writes, so that it refers to no Executable)
        self._spare_box: list = [None]
        # the updated variables big enough for their old values to be worth recycling
        self._large = tuple(v for v in updated
                            if int(np.prod(v.shape, dtype=np.int64)) * v.dtype.itemsize >= SPARE_MIN_BYTES)
        self._inplace = bool(plan.inplace and updated)
        # in-place plans: buffers of the plan's large fresh steps ("+spare" in plan.kinds), kept from
        # call to call: a step writes into the one its previous call used instead of allocating it
        # again (freed large blocks go back to the system between calls and come back as page
        # faults). An in-place call holds every lock of its variables (one call at a time). The
        # default mode needs none: its replaced old values serve as such buffers, and a kept buffer,
        # held past its last use, would be memory malloc cannot give to a later step of the call
        # (measured: +28 MiB on the deep chain of bench/peak_memory.py).
        # (in a list, as ``_spare_box``: the generated call refers to no Executable)
        self._kept_box: list = [_kept_buffers(plan) if plan.inplace and updated else None]
        if self._inplace:
            self._large = ()
        # calls whose only updates advance random generators reserve their counters when they
        # start and then run without the locks, so that concurrent calls overlap (each reads its
        # own counter); see _execute_reserving
        self._reserved = _counter_updates(plan) if updated and not self._inplace else None
        self.execute, self.execute_args = _call_wrapper(self)  # generated for this plan


def _count(n: int, noun: str) -> str:
    """``1 input``, ``2 inputs``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _counter_updates(plan: Plan) -> tuple[Variable, ...] | None:
    """The updated variables if every update is a random state's ``state + 1`` (as ``random_updates``
    makes them), else None. The state must feed a draw of the plan (whose op is ``random``)."""
    from graphc.random import draws_exist

    if not draws_exist():
        return None
    drawn = drawn_states(list(plan.outputs) + [value for _, value in plan.updates], plan.inputs)
    states = []
    for variable, value in plan.updates:
        if (value.op != "add" or len(value.inputs) != 2 or id(variable) not in drawn
                or variable.dtype != np.int64 or variable.shape != () or value.dtype != np.int64):
            return None
        one = value.inputs[1] if value.inputs[0] is variable else value.inputs[0]
        if (variable not in value.inputs or not isinstance(one.primitive, Constant) or one.shape != ()
                or one.primitive.value != 1):
            return None
        states.append(variable)
    return tuple(states)


class Function:
    """A compiled graph: ``fn(*values)`` or ``fn(**{placeholder_name: value})``."""

    def __init__(self, inputs, outputs, updates=None, optimize: bool = True, *,
                 inplace_updates: bool = False, check_numerics: bool = False, backend: str = "numpy") -> None:
        if isinstance(inputs, Tensor):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"function: inputs must be a placeholder or a list of placeholders (the values the "
                            f"function is called with, in order), got {type(inputs).__name__}")
        self.inputs: list[Tensor] = list(inputs)
        for tensor in self.inputs:
            if not isinstance(tensor, Tensor):
                raise TypeError(f"function inputs must be Tensors, got {type(tensor).__name__}")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ValueError("function: an input is listed twice")
        self.outputs = outputs
        flat, self._spec = flatten(outputs)
        self._updates = normalize_updates(updates)
        self._updates += random_updates(flat, self.inputs, self._updates)
        self.optimize = optimize
        self.inplace_updates = bool(inplace_updates)
        self.check_numerics = bool(check_numerics)
        self.backend = backend
        self._executable = Executable(prepare_graph(flat, self.inputs, self._updates, optimize,
                                                    self.inplace_updates, self.check_numerics, backend),
                                      optimize, backend)
        self._positions = input_positions(self.inputs)

    @property
    def plan(self) -> Plan:
        return self._executable.plan

    def _gather(self, args: tuple, kwargs: dict) -> tuple:
        if len(args) > len(self.inputs):
            raise FeedError(f"the function takes {_count(len(self.inputs), 'input')} ({self._input_names()}), got "
                            f"{_count(len(args), 'positional value')}")
        values: list = list(args) + [_MISSING] * (len(self.inputs) - len(args))
        for name, value in kwargs.items():
            position = self._positions.get(name)
            if position is None:
                raise FeedError(f"unknown input {name!r}; the inputs are "
                                f"{[t.name for t in self.inputs]}")
            if position is _AMBIGUOUS:
                count = sum(t.name == name for t in self.inputs)
                raise FeedError(f"input name {name!r} is ambiguous: {count} inputs are named {name!r}; "
                                "pass their values positionally")
            if values[position] is not _MISSING:
                raise FeedError(f"input {name!r} is given twice")
            values[position] = value
        for tensor, value in zip(self.inputs, values):
            if value is _MISSING:
                raise FeedError(f"missing a value for placeholder {tensor.name!r}; the function takes "
                                f"{_count(len(self.inputs), 'input')} ({self._input_names()}), positionally or "
                                f"by name")
        return tuple(check_feed(t, v) for t, v in zip(self.inputs, values))

    def _input_names(self) -> str:
        return ", ".join(repr(t.name) for t in self.inputs) or "none"

    def __call__(self, *args, **kwargs):
        """The outputs for the given input values: ``fn(*values)`` in the order of ``inputs``, or
        ``fn(**{placeholder_name: value})``; see :func:`function`."""
        if kwargs or len(args) != len(self.inputs):
            _refuse_feed_dict(args, self._input_names)
            return unflatten(self._spec, self._executable.execute(self._gather(args, kwargs)))
        try:
            rebuild = self._rebuild
        except AttributeError:
            rebuild = self._rebuild = _rebuilder(self._spec)
        try:
            return rebuild(self._executable.execute_args(args))
        except FeedError:
            # (checked only once a feed is refused: a feed dict is never a valid value)
            _refuse_feed_dict(args, self._input_names)
            raise

    def __repr__(self) -> str:  # also what Jupyter shows when Graphviz is absent
        inputs = [t.name for t in getattr(self, "inputs", ())]
        updates = len(getattr(self, "_updates", ()) or ())
        return f"<Function inputs={inputs} updates={updates}>"

    # ---- inspection of the optimized graph --------------------------------------------
    def _graph_outputs(self) -> list[Tensor]:
        plan = self.plan
        return list(plan.outputs) + [value for _, value in plan.updates]

    def to_dot(self, legend: bool = True) -> str:
        """Graphviz DOT of the optimized graph: outputs named, updates drawn to their variables."""
        return VIEWS.to_dot(self, legend=legend)

    def to_networkx(self):
        """A ``networkx.DiGraph`` of the optimized graph."""
        return VIEWS.to_networkx(self._graph_outputs())

    def debugprint(self, file=None) -> str:
        """The optimized graph as a text tree (see ``gc.debugprint``)."""
        return VIEWS.debugprint(self._graph_outputs(), file=file)

    def _repr_svg_(self):
        return VIEWS.repr_svg(self)

    # ---- pickling: the optimized graph, rebuilt without optimizing (graphc/pickling.py) ----
    def __reduce__(self):
        return PICKLING(self)


_MISSING = object()
_AMBIGUOUS = -1


def _refuse_feed_dict(args: tuple, input_names) -> None:
    """The FeedError for ``fn({placeholder: value})``: a Function's values come positionally or by name."""
    if any(type(a) is dict for a in args):
        raise FeedError(f"a Function takes its input values positionally (fn(value, ...), in the order "
                        f"{input_names()}) or by name (fn(name=value)), not a feed dict; "
                        f"Session.run(fetches, feed_dict) is the one that takes {{placeholder: value}}")


def input_positions(inputs: list[Tensor]) -> dict[str, int]:
    """Keyword name -> input position; a name shared by several inputs maps to ``_AMBIGUOUS``."""
    positions: dict[str, int] = {}
    for position, tensor in enumerate(inputs):
        if tensor.name is not None:
            positions[tensor.name] = _AMBIGUOUS if tensor.name in positions else position
    return positions


def _rebuilder(spec):
    """A function putting flat results into the structure ``spec`` describes (fast for flat ones)."""
    if spec is None:
        return operator.itemgetter(0)
    kind, kind_type, children = spec
    if kind == "seq" and kind_type in (list, tuple) and all(child is None for child in children):
        return kind_type
    return functools.partial(unflatten, spec)


def function(inputs, outputs, updates=None, optimize: bool = True, *, inplace_updates: bool = False,
             check_numerics: bool = False, backend: str = "numpy") -> Function:
    """Compile ``outputs`` (a tensor or a nested structure) as a function of ``inputs``.

    ``inplace_updates=True`` (opt-in, for large models) writes each variable's new
    value into the variable's own storage as soon as nothing needs the old value,
    so a training step needs no second copy of the parameters. Outputs and new
    values are still computed from the values at the start of the call, returned
    arrays never alias a variable, concurrent calls are serialized, and arrays
    obtained from ``v.value`` never change (storage someone refers to is not
    written: that variable's new value goes into a fresh array). Given up:
    atomicity on failure. If a call fails, variables already written keep their
    new values; the ``ExecutionError`` names them (and ``changed_variables``
    holds them). See docs/running.md.

    ``check_numerics=True`` (for debugging) raises ``gc.ExecutionError`` at the
    first node whose value holds a NaN or an infinity that its inputs did not,
    naming the node, its op, its input shapes and the user's line; a NaN or an
    infinity arriving in a feed or a variable's value raises naming that
    placeholder or variable. No variable changes. Off, it costs nothing: the
    default plan is generated as before. Not combinable with ``inplace_updates``.

    ``backend="numba"`` (optional: ``pip install "graphc[numba]"``) runs each group of
    connected element-wise steps on large arrays as one compiled kernel, a single pass
    over memory, with bit-identical results: only operations that numba computes
    exactly as NumPy does are compiled (arithmetic, comparisons, ``where``, ``maximum``,
    ``sqrt``, ``abs``...); transcendental functions stay NumPy ufunc steps. Each kernel
    compiles at its first call. ``BackendUnavailable`` (an ``ImportError``) if numba
    does not import; ``ValueError`` for another name, or with ``check_numerics=True``.
    See docs/performance.md.

    Draws of ``gc.random`` generators computed by the function advance their
    generators' states at every call, as implicit updates (see docs/random.md).
    """
    return Function(inputs, outputs, updates=updates, optimize=optimize, inplace_updates=inplace_updates,
                    check_numerics=check_numerics, backend=backend)
