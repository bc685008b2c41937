"""Session: run fetches with a feed dict; each signature is compiled once and cached."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from graphc.errors import FeedError
from graphc.function import (
    Executable,
    _picker,
    _rebuilder,
    check_feed,
    normalize_updates,
    prepare_graph,
    random_updates,
)
from graphc.leaves import Placeholder
from graphc.structure import flatten, unflatten
from graphc.tensor import Tensor, toposort


def resolve_feeds(feed_dict, fetched: list[Tensor]) -> dict[Tensor, object]:
    """``feed_dict`` keyed by placeholders: names are looked up among the placeholders of ``fetched``."""
    if feed_dict is None:
        return {}
    if not isinstance(feed_dict, Mapping):
        raise TypeError(f"feed_dict must be a dict {{placeholder or its name: value}}, got "
                        f"{type(feed_dict).__name__}")
    if not feed_dict:
        return {}
    resolved: dict[Tensor, object] = {}
    by_name = None
    for key, value in feed_dict.items():
        if isinstance(key, str):
            if by_name is None:
                by_name = {}
                for node in toposort(fetched):
                    if isinstance(node.primitive, Placeholder):
                        by_name.setdefault(node.name, []).append(node)
            matches = by_name.get(key, [])
            if len(matches) != 1:
                reason = "no placeholder" if not matches else f"{len(matches)} placeholders"
                raise FeedError(f"unknown feed key {key!r}: {reason} of that name in the fetched graph")
            key = matches[0]
        elif not isinstance(key, Tensor):
            raise FeedError(f"unknown feed key {key!r}: keys must be placeholders (Tensors) or their names")
        if key in resolved:
            raise FeedError(f"placeholder {key.name!r} is fed twice")
        resolved[key] = value
    return resolved


class Session:
    """Runs graphs: ``sess.run(fetches, feed_dict, updates)``. A context manager."""

    def __init__(self, optimize: bool = True, *, check_numerics: bool = False) -> None:
        """``check_numerics=True`` checks every run as ``gc.function(..., check_numerics=True)`` does."""
        self.optimize = optimize
        self.check_numerics = bool(check_numerics)
        self._cache: dict[tuple, Executable] = {}
        # the repeat-call fast path: (fetches, feed keys in the dict's order, updates, in place) as
        # given, compared by identity -> (executable, feed values in plan order, rebuild); see run
        self._fast: dict[tuple, tuple] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Forget the compiled plans; a closed session cannot run."""
        self._cache.clear()
        self._fast.clear()
        self._closed = True

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Session optimize={self.optimize} compiled_plans={len(self._cache)} {state}>"

    def _repr_html_(self) -> str:
        """Jupyter: the session's state and, for each compiled plan, what it fetches, feeds and updates."""
        import html

        rows = []
        for executable in list(self._cache.values()):
            plan = executable.plan
            outputs = ", ".join(f"{t.op}{' ' + repr(t.name) if t.name else ''}" for t in plan.outputs)
            feeds = ", ".join(str(t.name) for t in plan.inputs) or "-"
            updates = ", ".join(str(v.name) for v, _ in plan.updates) or "-"
            rows.append(f"<tr><td>{html.escape(outputs)}</td><td>{html.escape(feeds)}</td>"
                        f"<td>{html.escape(updates)}</td><td>{len(plan.steps)}</td></tr>")
        table = ("<table><tr><th>fetches</th><th>feeds</th><th>updates</th><th>steps</th></tr>"
                 + "".join(rows) + "</table>") if rows else ""
        return f"<p><b>graphc Session</b> {html.escape(repr(self)[1:-1])}</p>{table}"

    @property
    def cache_size(self) -> int:
        """How many fetch/feed/update signatures have been compiled."""
        return len(self._cache)

    def run(self, fetches, feed_dict=None, updates=None, *, inplace_updates: bool = False):
        """Values of ``fetches`` (a tensor or nested list/tuple/dict), then apply ``updates``.

        ``inplace_updates=True`` writes the new values into the variables' storage,
        as :func:`graphc.function` does with the same keyword.
        """
        # The fast path: a repeated call with the very same fetches, feed keys and updates (compared
        # by identity: tensors compare by identity, and graphs never change) reuses what the first
        # call resolved: its executable, where each feed value goes, how the results are rebuilt.
        # The feed values themselves are still checked, by the executable's generated feed check.
        try:
            key = (type(fetches), fetches if type(fetches) is not list else tuple(fetches),
                   tuple(feed_dict) if type(feed_dict) is dict else feed_dict,
                   _updates_key(updates), inplace_updates)
            entry = self._fast.get(key)
        except TypeError:  # unhashable: a nested list, a list of updates, an array as a value
            key = entry = None
        if entry is not None and not self._closed:
            executable, order, rebuild = entry
            values = tuple(feed_dict.values()) if feed_dict else ()
            return rebuild(executable.execute_args(order(values)))
        if self._closed:
            raise RuntimeError("this Session is closed")
        flat, spec = flatten(fetches)
        pairs = normalize_updates(updates)
        feeds = resolve_feeds(feed_dict, flat + [new for _, new in pairs])
        fed = sorted(feeds, key=lambda t: t.serial)
        signature = (tuple(flat), tuple(fed), tuple(pairs), bool(inplace_updates and pairs))
        executable = self._cache.get(signature)
        if executable is None:
            with self._lock:
                executable = self._cache.get(signature)
                if executable is None:
                    pairs = pairs + random_updates(flat, fed, pairs)
                    executable = Executable(prepare_graph(flat, fed, pairs, self.optimize,
                                                            bool(inplace_updates), self.check_numerics),
                                            self.optimize)
                    self._cache[signature] = executable
        values = tuple(check_feed(t, feeds[t]) for t in fed)
        result = unflatten(spec, executable.execute(values))
        if key is not None:
            self._remember(key, executable, feed_dict, feeds, fed, spec, updates)
        return result

    def _remember(self, key, executable: Executable, feed_dict, feeds: dict, fed: list, spec, updates) -> None:
        """Add a fast-path entry for ``key`` once a call with it has succeeded (see ``run``)."""
        if type(feed_dict) is not dict and feed_dict is not None:
            return
        if updates is not None and not all(isinstance(new, Tensor) for _, new in _pairs_of(updates)):
            return  # (a constant value would be a new tensor at each call: nothing to reuse)
        rebuild = _rebuilder(spec)
        # the plan's inputs in feed-dict order: key position of each placeholder the plan takes
        resolved = list(feeds)  # (resolve_feeds keeps the dict's order)
        where = {id(t): k for k, t in enumerate(resolved)}
        positions = [where[id(t)] for t in fed]
        order = (lambda values: values) if positions == list(range(len(positions))) else _picker(positions)
        with self._lock:
            if len(self._fast) >= _FAST_ENTRIES:
                self._fast.clear()
            self._fast[key] = (executable, order, rebuild)


def _updates_key(updates):
    """``updates`` as a hashable key: a dict's items, a list's pairs (anything else: itself)."""
    if type(updates) is dict:
        return tuple(updates.items())
    if type(updates) is list:
        return (list, *updates)
    return updates


def _pairs_of(updates) -> list:
    """The (variable, new value) pairs of a dict or a list/tuple of pairs (as given, unchecked)."""
    return list(updates.items()) if isinstance(updates, Mapping) else list(updates)


#: fast-path entries a session keeps (the same fetches listed in another order each call would
#: otherwise grow it without bound; compiled plans stay in the main cache)
_FAST_ENTRIES = 256


def _tensor_eval(self: Tensor, feed_dict=None):
    """The tensor's value: ``gc.Session().run(tensor, feed_dict)``.

    ``feed_dict`` maps the placeholders the tensor needs (tensors or their names)
    to values; variables enter with their current values. Each call compiles the
    graph in a fresh session (nothing is cached), so for repeated evaluation
    compile once with ``gc.function``.
    """
    with Session() as session:
        return session.run(self, feed_dict)


# ``Tensor.eval`` is installed here, where Session is defined: tensor.py is part of the core
# and must not import the session layer above it (not even inside a function).
_tensor_eval.__name__ = "eval"
_tensor_eval.__qualname__ = "Tensor.eval"
Tensor.eval = _tensor_eval
