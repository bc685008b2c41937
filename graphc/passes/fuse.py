"""Element-wise fusion: a chain (or tree) of element-wise nodes becomes one ``fused`` node.

On NumPy the cost of an element-wise chain over large arrays is memory: each
node allocates a fresh result (fresh pages, page faults) and streams it
through memory once more. A fused node evaluates its steps back to back and
writes each ufunc step *into the buffer of an intermediate that dies at that
step* (``np.add(t, b, out=t)``): the chain's intermediates are private to the
fused node, so in-place is always safe; the node's inputs are never written.
Measured numbers are in ``docs/optimizer.md`` (bench/fusion_speed.py).

A group grows from a root element-wise node upwards through element-wise
producers whose every consumer is already in the group (and which are not
outputs of the graph), so no intermediate is needed outside and the group is
convex. Only groups of two or more nodes are fused. The fused node keeps the
root's name and user source line; an error inside it names the failing
step's op and that step's user line too. ``Fused.expand`` rebuilds the
original nodes (used by its gradient rule and useful to exporters).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.op import Op
from graphc.ops import elementwise as ew
from graphc.passes.core import RewriteContext
from graphc.tensor import Tensor, consumers
from graphc.tensor import toposort as topological

#: buffers smaller than this are not reused (allocation is cheap; the shape check is not free)
MIN_INPLACE_ELEMENTS = 4096


class _Stub:
    """Stands in for a tensor when re-inferring a fused node's steps (shape and dtype only)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple, dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def fusable(node: Tensor) -> bool:
    """A built-in element-wise op that computes a fresh array (no views, no custom ops)."""
    op = node.primitive
    return (isinstance(op, ew.Elementwise) and type(op).__module__ == ew.__name__ and not op.view
            and bool(node.inputs))


@dataclass(frozen=True)
class Fused(Op):
    """Several element-wise steps evaluated together. ``steps[k] = (op, args)``.

    An argument ``a < n_inputs`` is input ``a``; otherwise it is the result of
    step ``a - n_inputs``. The last step's result is the node's value.
    ``dtypes[k]`` is the static dtype of step ``k`` (what in-place writes need).
    """

    name = "fused"
    elementwise = True
    steps: tuple = ()
    n_inputs: int = 0
    dtypes: tuple = ()
    #: the user source line of each step, for error messages (not part of the key)
    sites: tuple = field(default=(), compare=False, repr=False)
    #: a compiled ``kernel(*arrays, out=None)`` computing the same values in one pass, set by a code
    #: generator's backend (graphc/compile/numba_kernels.py); not part of the key, never saved
    kernel: object = field(default=None, compare=False, repr=False)

    def lowering(self):
        return self.kernel

    def with_kernel(self, kernel) -> Fused:
        """This op, computed by ``kernel`` (same steps, same key)."""
        return dataclasses.replace(self, kernel=kernel)

    def infer(self, *inputs):
        types = [(t.shape, t.dtype) for t in inputs]
        for op, args in self.steps:
            types.append(op.infer(*(_Stub(*types[a]) for a in args)))
        return types[-1]

    def key_bytes(self, node) -> bytes:
        parts = [f"fused{self.n_inputs}"]
        for (op, args), dtype in zip(self.steps, self.dtypes):
            parts.append(op.key_bytes(node).decode() + repr(tuple(args)) + np.dtype(dtype).str)
        return "|".join(parts).encode()

    def params(self) -> dict:
        """For printing and export: the program as text (``gc.save`` stores the fields themselves)."""
        return {"program": self.describe_steps()}

    def describe_steps(self) -> str:
        """``"mul(x0, x1) -> add(s0, x2) -> tanh(s1)"``: the program, for printing and export."""
        def ref(a: int) -> str:
            return f"x{a}" if a < self.n_inputs else f"s{a - self.n_inputs}"

        return " -> ".join(f"{op.name}({', '.join(ref(a) for a in args)})" for op, args in self.steps)

    def sympy_form(self, sp, node, *args):
        values = list(args)
        for op, step_args in self.steps:
            values.append(op.sympy_form(sp, None, *(values[a] for a in step_args)))
        return values[-1]

    def impl(self, *arrays):
        dying, ufuncs = _schedule(self)
        n = self.n_inputs
        values: list = list(arrays) + [None] * len(self.steps)
        owned = [False] * len(values)
        for k, (op, args) in enumerate(self.steps):
            operands = [values[a] for a in args]
            ufunc = ufuncs[k]
            out = None
            if ufunc is not None:
                out = _reusable(values, owned, dying[k], operands, self.dtypes[k])
            try:
                result = op.impl(*operands) if out is None else ufunc(*operands, out=out)
            except Exception as exc:
                raise _step_error(self, k, exc) from exc
            values[n + k] = result
            owned[n + k] = ufunc is not None and isinstance(result, np.ndarray)
            for a in dying[k]:
                values[a] = None
        return values[-1]

    def expand(self, inputs: Sequence[Tensor]) -> Tensor:
        """The original element-wise graph over ``inputs`` (ordinary nodes)."""
        from graphc.op import apply

        values = list(inputs)
        for op, args in self.steps:
            values.append(apply(op, *(values[a] for a in args)))
        return values[-1]

    def vjp(self, node, g):
        from graphc.autodiff import backprop

        inputs = list(node.inputs)
        expanded = self.expand(inputs)
        floats = [t for t in inputs if t.dtype.kind == "f"]
        cotangents = dict(zip(map(id, floats), backprop([expanded], [g], floats)))
        return [cotangents.get(id(t)) for t in inputs]


@functools.lru_cache(maxsize=4096)
def _schedule(op: Fused) -> tuple[tuple[tuple[int, ...], ...], tuple]:
    """For each step: the values (inputs included) last used there, and its ``out=`` kernel (or None)."""
    last: dict[int, int] = {}
    for k, (_, args) in enumerate(op.steps):
        for a in args:
            last[a] = k
    dying: list[list[int]] = [[] for _ in op.steps]
    for value, k in sorted(last.items()):
        dying[k].append(value)
    ufuncs = tuple(step.lowering() for step, _ in op.steps)
    return tuple(tuple(d) for d in dying), ufuncs


def _reusable(values: list, owned: list, dying: Sequence[int], operands: list, dtype) -> np.ndarray | None:
    """A private intermediate that dies at this step and can hold its result, else None."""
    for a in dying:
        if not owned[a]:
            continue
        buffer = values[a]
        if buffer.size < MIN_INPLACE_ELEMENTS or buffer.dtype != dtype:
            continue
        if any(np.asarray(o).dtype != dtype for o in operands):
            continue
        if np.broadcast_shapes(*(np.shape(o) for o in operands)) != buffer.shape:
            continue
        return buffer
    return None


def _step_error(op: Fused, k: int, exc: Exception) -> Exception:
    site = op.sites[k] if k < len(op.sites) else None
    where = f" created at {site[0]}:{site[1]}" if site else ""
    message = f"in fused step {k} ({op.steps[k][0].name}{where}): {type(exc).__name__}: {exc}"
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - exception types with unusual constructors
        return RuntimeError(message)


# ---- the pass ------------------------------------------------------------------------------------

def _groups(order: list[Tensor], outputs: Sequence[Tensor], predicate: Callable[[Tensor], bool] = fusable
            ) -> dict[int, int]:
    """``id(node) -> id(group root)`` for every node ``predicate`` accepts (reverse topological sweep)."""
    users = consumers(order)
    output_ids = {id(t) for t in outputs}
    group: dict[int, int] = {}
    for node in reversed(order):
        if not predicate(node):
            continue
        mine = users.get(id(node), [])
        roots = {group.get(id(u)) for u in mine}
        if id(node) not in output_ids and len(mine) > 0 and len(roots) == 1 and None not in roots:
            group[id(node)] = roots.pop()
        else:
            group[id(node)] = id(node)
    return group


def fuse(outputs: list[Tensor], context: RewriteContext | None = None,
         predicate: Callable[[Tensor], bool] | None = None) -> list[Tensor]:
    """Replace each group of two or more connected element-wise nodes by one ``fused`` node.

    ``predicate``, if given, limits which :func:`fusable` nodes may join a group (a backend's
    kernels compile only some ops)."""
    order = topological(outputs)
    group = _groups(order, outputs, fusable if predicate is None else lambda n: fusable(n) and predicate(n))
    members: dict[int, list[Tensor]] = {}
    for node in order:  # topological order within each group
        root = group.get(id(node))
        if root is not None:
            members.setdefault(root, []).append(node)
    memo: dict[int, Tensor] = {}
    count = 0
    for node in order:
        inputs = tuple(memo.get(id(p), p) for p in node.inputs)
        root = group.get(id(node))
        if root is not None and root == id(node) and len(members[root]) > 1:
            memo[id(node)] = _fused_node(node, members[root], memo)
            count += 1
        elif root is not None and root != id(node):
            continue  # an intermediate of a group: computed inside its fused node
        elif all(a is b for a, b in zip(inputs, node.inputs)):
            memo[id(node)] = node
        else:
            memo[id(node)] = Tensor(node.primitive, inputs, node.shape, node.dtype, name=node.name,
                                    site=node.site, is_gradient=node.is_gradient)
    if count and context is not None:
        context.count("fuse.group", count)
    return [memo[id(t)] for t in outputs]


def _fused_node(root: Tensor, members: list[Tensor], memo: dict[int, Tensor]) -> Tensor:
    position: dict[int, int] = {}
    inputs: list[Tensor] = []
    member_ids = {id(m) for m in members}
    for member in members:
        for parent in member.inputs:
            if id(parent) not in member_ids and id(parent) not in position:
                position[id(parent)] = len(inputs)
                inputs.append(memo.get(id(parent), parent))
    n = len(inputs)
    steps = []
    for k, member in enumerate(members):
        steps.append((member.primitive, tuple(position[id(p)] for p in member.inputs)))
        position[id(member)] = n + k
    op = Fused(tuple(steps), n, tuple(m.dtype for m in members), tuple(m.site for m in members))
    node = Tensor(op, inputs, root.shape, root.dtype, name=root.name, site=root.site,
                  is_gradient=root.is_gradient)
    shape, dtype = op.infer(*inputs)
    if shape != root.shape or dtype != root.dtype:
        raise AssertionError(f"fusion changed the type of {root.describe()}")
    return node
