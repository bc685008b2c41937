"""Stage 5, code generation: the plan's ``run`` as straight-line Python source, one line per step.

Each step is one call: a NumPy function with ``out=`` where buffer assignment chose a
buffer (a large array without one may take a spare buffer the caller passes, ``_grab``),
``x.T``, ``sum_to`` and ``mean`` as one reduction, else the op's ``impl``. Values live in
recycled local names: a result takes the name of an input that dies at its step.
Scalar graphs (every value 0-d) run on NumPy scalars with Python operators, an order of
magnitude cheaper per op than ufunc calls on 0-d arrays; the results are the same IEEE
operations. Outputs and update values that could alias a feed, a variable, a constant or
another output are copied; everything else is returned as is. No per-step bookkeeping:
when an op raises, the failing line of the generated code tells which step it was, and the
``ExecutionError`` names the op, its input shapes and the user's source line.
"""

from __future__ import annotations

import functools
import math
from array import array

import numpy as np

from graphc.errors import ExecutionError
from graphc.numerics import instrument
from graphc.op import Output
from graphc.ops import elementwise as ew
from graphc.ops import linalg, reduce
from graphc.ops import shape as shape_ops
from graphc.tensor import Tensor

from . import runtime, table
from .plan import Plan, Program
from .runtime import SPARE_MIN_BYTES
from .steps import kernel, static


def generate(program: Program) -> Program:
    """Stage 5: writes, compiles and wraps the ``run`` function into ``program.plan``."""
    steps, deps, names = program.steps, program.deps, program.names
    options, roots, updates = program.options, program.roots, program.updates
    inplace = options.inplace
    namespace: dict[str, object] = {"_as_array": runtime.as_array, "_copy": runtime.copy, "_nd": np.array,
                                    "_grab": runtime.grab, "_fresh": runtime.fresh}
    scalar = not inplace and options.scalar_mode and bool(steps) and all(n.shape == () for n in program.order)
    # all float64 and bool: Python floats and bools instead of NumPy scalars (op.python_exact)
    python = (scalar and not options.check_numerics and _all_float64_or_bool(program.order)
              and _all_float64_or_bool(steps))  # (steps: the lowering rules may have made new ones)
    if scalar:
        for index, node in enumerate(steps):  # (array plans name their values in _emit_lines)
            names[id(node)] = f"v{index}"
        lines, kinds, line_step = _scalar_body(steps, deps, names, namespace, python)
        if lines is None and python:  # a step has no exact form on Python floats: NumPy scalars throughout
            python = False
            lines, kinds, line_step = _scalar_body(steps, deps, names, namespace, python)
        scalar = lines is not None
    if scalar:
        namespace.update((key, value.item() if python else value[()]) for key, value in program.defaults.items())
        value_names = [f"v{index}" for index in range(len(steps))] + [names[id(t)] for t in program.leaves]
    else:
        namespace.update(program.defaults)
        kinds = program.kinds
        lines, line_step, value_names = _emit_lines(program, kinds, namespace)
    if options.check_numerics:
        names.update(zip(map(id, steps), value_names))  # (the checks name the values by id)
        instrument(lines, line_step, steps, deps, names, namespace, program.inputs, program.variables)
    n_outputs = program.n_outputs
    escaped = _escapes(roots[:n_outputs] if inplace else roots, program.number, value_names, len(steps), scalar)
    if inplace:
        escaped.extend(f"t{k}" for k in range(len(updates)))  # the storage written, or fresh arrays
    source, run = _make_run(program, namespace, lines, line_step, escaped, scalar, python, value_names)
    del lines, line_step
    fired = program.fired
    rules = tuple(fired.get(id(n), "") for n in steps) if fired else ("",) * len(steps)
    program.plan = Plan(program.inputs, tuple(program.variables), program.outputs, updates, tuple(steps), source,
                        run, tuple(kinds), scalar, inplace, bool(options.check_numerics), rules)
    return program


def _make_run(program: Program, namespace: dict, lines: list[str], line_step: dict[int, int],
              escaped: list[str], scalar: bool, python: bool, value_names: list[str]) -> tuple[str, object]:
    """(the plan's source, its ``run``): a long plan's lines as a step table, others compiled."""
    steps, parents, options = program.steps, program.parents, program.options
    if not scalar and not options.inplace and not options.check_numerics and len(steps) > table.TABLE_STEPS:
        # a long plan: its lines run as a step table (see table.py), with no compile()
        run, tiers = table.tabulate(lines, line_step, escaped, len(program.inputs), len(program.variables),
                                    namespace)
        namespace["_failure"] = tiers.failure(steps, parents, value_names)
        return ("# a step table (graphc/compile/table.py): one entry per line\n" + "\n".join(lines)
                + f"\n# returns ({''.join(e + ', ' for e in escaped)})\n"), run
    source, offset = _source(len(program.inputs), len(program.variables), len(program.updates), namespace, lines,
                             escaped, scalar, options.inplace, options.check_numerics, python)
    step_of_line = _line_table({offset + line: step for line, step in line_step.items()})
    exec(compile(source, "<graphc plan>", "exec"), namespace)  # noqa: S102 - our own generated code
    namespace["_failure"] = _failure_handler(steps, parents, value_names, program.defaults, step_of_line,
                                             program.fused, program.writes, program.updates, options.inplace)
    return source, namespace["run"]


# ---- scalar graphs ---------------------------------------------------------------------------

def _all_float64_or_bool(order: list[Tensor]) -> bool:
    return all(node.dtype == np.float64 or node.dtype == np.bool_ for node in order)


def _scalar_body(steps, deps, names, namespace, python: bool = False):
    """The scalar plan's lines (``python``: its values are Python floats and bools), or Nones."""
    lines: list[str] = []
    kinds: list[str] = []
    line_step: dict[int, int] = {}
    for index, node in enumerate(steps):
        inputs = deps[node]
        expression = _scalar_expression(node, [names[id(p)] for p in inputs], inputs, namespace,
                                        str(index), python)
        if expression is None:
            return None, None, None
        line_step[len(lines)] = index
        lines.append(f"v{index} = {expression}")
        kinds.append("scalar")
    return lines, kinds, line_step


def _constant(value: np.generic, python: bool):
    """``value`` as the scalar plan holds it: a Python float or bool in a ``python`` plan."""
    return value.item() if python else value


def _scalar_dtype(expression: str, dtypes: list[np.dtype]) -> np.dtype | None:
    """The dtype ``expression`` gives on NumPy scalars (ones) of these dtypes, or None if it fails there."""
    names = [f"a{k}" for k in range(len(dtypes))]
    try:
        with np.errstate(all="ignore"):
            value = eval(expression.format(*names), {"__builtins__": {}},  # noqa: S307 - the op's own declaration
                         {n: d.type(1) for n, d in zip(names, dtypes)})
    except Exception:  # noqa: BLE001 - then the ufunc lowering is used
        return None
    return getattr(value, "dtype", None)


def _operator_expression(node: Tensor, args: list[str], inputs: list[Tensor], python: bool) -> str | None:
    """The op's ``scalar_expr`` for ``node`` where it is the very same IEEE operation, else None."""
    op = node.primitive
    expression = getattr(op, "scalar_expr", None)
    if expression is None or (python and expression != "{0}" and not getattr(op, "python_exact", False)):
        return None  # (on Python floats, e.g. ``/`` raises on a zero: a ufunc then)
    skip = op.nondiff_inputs
    operands = {p.dtype for k, p in enumerate(inputs) if k not in skip}
    # The same IEEE operation when the operands have the node's dtype or, for a comparison, share one.
    # Operators on NumPy scalars call the very ufuncs, so they also do for mixed dtypes, as long as they
    # give the node's dtype (np.square of a bool is int8, bool * bool stays bool); a conditional picks
    # one operand, so it needs them all of the node's dtype.
    if operands == {node.dtype} or (node.dtype == np.bool_ and len(operands) == 1) or (
            " if " not in expression and _scalar_dtype(expression, [p.dtype for p in inputs]) == node.dtype):
        return expression.format(*args)
    return None


def _scalar_expression(node: Tensor, args: list[str], inputs: list[Tensor], namespace: dict,
                       tag: str, python: bool = False) -> str | None:
    """A Python expression computing ``node`` on NumPy scalars (``python``: on Python floats and bools,
    where every value is float64 or bool; NumPy functions of them give NumPy scalars of the same
    values), or None."""
    op = node.primitive
    cls = type(op)
    expression = _operator_expression(node, args, inputs, python)
    if expression is not None:
        return expression
    if cls is ew.ZerosLike or cls is ew.OnesLike:
        namespace[f"_k{tag}"] = _constant(node.dtype.type(0 if cls is ew.ZerosLike else 1), python)
        return f"_k{tag}"
    if cls is ew.Cast:
        if inputs[0].dtype == np.dtype(bool):
            namespace[f"_one{tag}"] = _constant(node.dtype.type(1), python)
            namespace[f"_zero{tag}"] = _constant(node.dtype.type(0), python)
            return f"(_one{tag} if {args[0]} else _zero{tag})"
        if node.dtype.kind == "f" and inputs[0].dtype.kind in "biuf":
            namespace[f"_t{tag}"] = node.dtype.type
            return f"_t{tag}({args[0]})"
        return None
    function = kernel(node)
    if python and function is not None and not isinstance(function, np.ufunc):
        return None  # (a Python kernel may need NumPy scalars; a ufunc takes floats as float64)
    if function is not None:
        namespace[f"_u{tag}"] = function
        return f"_u{tag}({', '.join(args)})"
    if cls is ew.Relu:
        namespace[f"_u{tag}"], namespace[f"_z{tag}"] = np.maximum, np.zeros((), node.dtype)[()]
        return f"_u{tag}({args[0]}, _z{tag})"
    return None


# ---- array graphs ------------------------------------------------------------------------------

def _emit_lines(program: Program, kinds: list[str], namespace: dict) -> tuple[list[str], dict[int, int], list[str]]:
    """One line per step (plus ``del`` lines), values living in recycled local names; returns the lines,
    the step of each line, and each value's name (by value number: the name it has while it lives).

    A step's result takes the name ("register") of an input that dies there, so rebinding
    drops the old value with no ``del`` line (fewer lines to compile, the same lifetimes).
    """
    steps, parents, names = program.steps, program.parents, program.names
    target, taken_at, frees = program.target, program.taken_at, program.frees
    fused, writes = program.fused, program.writes
    n = len(steps)
    # by value number: the steps' names as they are made, the leaves' from lowering
    value_names: list[str] = [""] * n + [names[id(t)] for t in program.values[n:]]
    lines: list[str] = []
    line_step: dict[int, int] = {}
    # registers (``r{k}``, in-place targets ``t{k}``) by number: each value's (-1: a leaf), and whether one
    # holds a live value (not a dict by name: a long plan's ~100,000 registers would miss the caches)
    held = [-1] * len(value_names)
    register_names: list[str] = []
    busy = bytearray()
    targets: dict[int, int] = {}  # update index -> the number of its name ``t{k}``
    free_registers: list[int] = []
    in_place = bool(fused or writes)
    for index, node in enumerate(steps):
        dying = frees[index]
        mine = target[index]
        if in_place and (id(node) in fused or id(node) in writes):
            update = fused.get(id(node), writes.get(id(node)))
            register = targets.get(update, -1)
            if register < 0:
                register = targets[update] = _new_register(f"t{update}", register_names, busy)
        elif mine is not None and mine in dying and held[mine] >= 0:
            register = held[mine]
        else:
            register = next((held[k] for k in dying if held[k] >= 0), -1) if dying else -1
            if register < 0:
                register = (free_registers.pop() if free_registers
                            else _new_register(f"r{len(register_names) - len(targets)}", register_names, busy))
        name = register_names[register]
        out = value_names[mine] if mine is not None else ""
        if in_place and id(node) in fused:
            out = name
        args = [value_names[k] for k in parents[index]]
        call = _step_call(index, node, args, kinds, out, name, namespace, program)
        if kinds[index] in ("call", "special", "T", "reshape", "direct") and taken_at[index] >= 0:
            # a later step writes into this value's buffer: it must be one the plan allocated
            call = f"_fresh({call}{''.join(', ' + a for a in args)})"
        line_step[len(lines)] = index
        lines.append(f"{name} = {call}")
        dead = _drop(dying, register, held, value_names, busy, free_registers)
        # invariant: a name is rebound only when the value it held has died here
        if busy[register]:
            raise AssertionError(f"plan compiler: step {index} would overwrite a live value")
        value_names[index], held[index], busy[register] = name, register, 1
        if dead:
            lines.append("del " + ", ".join(sorted(dead)))
    return lines, line_step, value_names


def _new_register(name: str, register_names: list[str], busy: bytearray) -> int:
    register_names.append(name)
    busy.append(0)
    return len(register_names) - 1


def _drop(dying, register: int, held: list[int], value_names: list[str], busy: bytearray,
          free_registers: list[int]) -> list[str]:
    """Forget the values (numbers) dying at a step whose result goes into ``register``: the names to
    ``del`` (all but the register's, which the result rebinds); their registers become free."""
    dead = []
    for gone in dying:
        old = held[gone]
        if old >= 0:
            busy[old] = 0
        if old != register:
            dead.append(value_names[gone])
            if old >= 0:
                free_registers.append(old)
    return dead


def _step_call(index, node, args, kinds, out, name, namespace, program) -> str:
    """The expression computing step ``index`` from its inputs' names ``args`` (its callables go into
    ``namespace``)."""
    cls = type(node.primitive)
    kind = kinds[index]
    if (not out and (kind == "ufunc" or kind == "matmul") and static(node)
            and math.prod(node.shape) * node.dtype.itemsize >= SPARE_MIN_BYTES):
        out = f"_grab(_spare, {(node.shape, node.dtype.str)!r})"
        kinds[index] = kind + "+spare"
    if kind == "call":
        return _cheap_call(index, node, _inputs(index, program), args, kinds, namespace, program)
    if kind == "write":
        namespace[f"f{index}"] = functools.partial(runtime.write, node.shape, node.dtype, node.primitive.variable)
        return f"f{index}({name}, {args[0]})"
    if kind == "copy":
        return f"_copy({args[0]})"
    shared = program.shared
    if kind == "special":
        function = _bind(namespace, shared, program.special[id(node)], f"f{index}")
        return f"{function}({', '.join(args)})"
    if cls is ew.Relu:
        function = _bind(namespace, shared, np.maximum, f"f{index}")
        zero = _bind(namespace, shared, None, f"z{index}", ("zero", node.dtype.str))
        return f"{function}({args[0]}, {zero}{', out=' + out if out else ''})"  # (see _POSITIONAL_OUT)
    # Matmul.impl is exactly np.matmul (or, for some operands, a faster function of the same bits)
    value = node.primitive.kernel_for(*_inputs(index, program)) if cls is linalg.Matmul else kernel(node)
    specialized = getattr(value, "specialized", None)
    if specialized is not None:  # a compiled kernel's call at these inputs, decided once (its own protocol)
        value = specialized([p.shape for p in _inputs(index, program)], [a == out for a in args], bool(out))
    function = _bind(namespace, shared, value, f"f{index}")
    if out:
        args = [*args, out if _positional_out(value) else f"out={out}"]  # (not the caller's list)
    return f"{function}({', '.join(args)})"


def _inputs(index: int, program: Program) -> list[Tensor]:
    """Step ``index``'s inputs, as the plan computes it."""
    values = program.values
    return [values[k] for k in program.parents[index]]


def _cheap_call(index, node, inputs, args, kinds, namespace, program) -> str:
    """A step without ``out=``: ``x.T``, ``sum_to`` and ``mean`` as one reduction, else the op's impl."""
    cls = type(node.primitive)
    source = inputs[0].shape if inputs else ()
    if cls is shape_ops.Transpose and tuple(node.primitive.axes) == tuple(reversed(range(len(node.shape)))):
        kinds[index] = "T"
        return f"{args[0]}.T"
    if (cls is shape_ops.SumTo and static(node) and len(args) == 1 and _sum_axes_known(source, node.shape)
            and node.dtype.kind == "f"):
        lead = len(source) - len(node.shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, size in enumerate(node.shape)
                                          if size == 1 and source[lead + i] != 1)
        if not axes:
            kinds[index] = "reshape"
            return f"{args[0]}.reshape({node.shape!r})"
        function = _bind(namespace, program.shared, None, f"f{index}", ("add.reduce",))
        kinds[index] = "reduce"
        keep = len(axes) != lead  # size-1 axes kept: reduce with keepdims, then drop the lead
        call = f"{function}({args[0]}, axis={axes!r}, keepdims={keep})"
        return call + f".reshape({node.shape!r})" if keep else call
    if (cls is reduce.Mean and node.dtype.kind == "f" and len(args) == 1
            and inputs[0].dtype == node.dtype and None not in source):
        # np.mean's own arithmetic (a sum, then a true division by the count) without its
        # Python-level wrapper
        items = int(np.prod([source[a] for a in node.primitive.axes], dtype=np.int64))
        function = _bind(namespace, program.shared, None, f"f{index}", ("add.reduce",))
        kinds[index] = "reduce"
        return (f"{function}({args[0]}, axis={tuple(node.primitive.axes)!r}, "
                f"keepdims={bool(node.primitive.keepdims)}) / {items}")
    direct = _direct_call(index, node, inputs, args, namespace)
    if direct is not None:
        kinds[index] = "direct"
        return direct
    namespace[f"f{index}"] = _step_function(node, program)
    return f"f{index}({', '.join(args)})"


def _step_function(node: Tensor, program: Program):
    """The function a "call" step calls, made once per step: an op running inner graphs compiles them,
    one with large temporaries keeps them from call to call (its value too, where the plan does not
    return it: ``Op.keeps_value``); steps that are not Ops (the compiler's own) have only an impl."""
    op = node.primitive
    compiled = getattr(op, "compiled_impl", None)
    if compiled is None:
        return op.impl
    returned = not getattr(op, "keeps_value", False) or any(root is node for root in program.roots)
    return compiled(program.compile_graph, returned=returned)


def _positional_out(function) -> bool:
    """Whether ``function(*args, out)`` is ``function(*args, out=out)``: true of ufuncs (np.matmul is one),
    and Python compiles a call without keywords faster; but NumPy deprecates a positional ``out`` for
    np.maximum and np.minimum, and a kernel that is not a ufunc may take other arguments there."""
    return isinstance(function, np.ufunc) and function is not np.maximum and function is not np.minimum


def _bind(namespace: dict, shared: dict, value, name: str, key: tuple | None = None) -> str:
    """The name ``run`` knows ``value`` by: the name it already has if it is bound (the same object, or
    the same ``key``), else ``name``. One name per NumPy function rather than one per step: every name
    is a parameter of ``run``, and Python compiles a function of fewer parameters about twice as fast.
    ``key`` stands for a value made on demand: ("zero", dtype) a 0-d zero, ("add.reduce",) ``np.add.reduce``.
    """
    key = id(value) if key is None else key
    known = shared.get(key)
    if known is not None:
        return known
    if value is None:
        value = np.zeros((), key[1]) if key[0] == "zero" else np.add.reduce
    namespace[name] = value
    shared[key] = name
    return name
def _sum_axes_known(source: tuple, target: tuple) -> bool:
    """Whether ``sum_to`` from ``source`` to ``target`` reduces axes known before running: an unknown
    source size is fine on a leading axis (always summed) or where the target's size is not 1
    (never summed: the sizes must agree)."""
    lead = len(source) - len(target)
    return lead >= 0 and all(size is not None or (axis < lead or target[axis - lead] != 1)
                             for axis, size in enumerate(source))


def _size_product(arg: str, shape: tuple, axes) -> str:
    """A Python expression for the product of ``shape[a]`` over ``axes``: known sizes as numbers,
    unknown ones read from ``arg.shape`` (exact: Python ints)."""
    known = int(np.prod([shape[a] for a in axes if shape[a] is not None], dtype=np.int64))
    unknown = [f"{arg}.shape[{a}]" for a in axes if shape[a] is None]
    return " * ".join(([str(known)] if known != 1 or not unknown else []) + unknown)


def _direct_call(index, node, inputs, args, namespace) -> str | None:
    """The op's impl written out as the NumPy expression it evaluates, where the sizes it needs are
    read from the arrays (so unknown sizes cost no Python call of ``impl``); None for other steps.

    Each restates its op's ``impl`` exactly: ``mean`` is ``np.add.reduce`` then a true division by
    the count (``np.mean``'s arithmetic, as the static lowering above); ``reduced_count`` the count
    as a 0-d array of the node's dtype; ``expand_dims`` an index with ``None`` at the new axes (the
    same view ``np.expand_dims`` makes); ``broadcast_like`` ``np.broadcast_to`` to the reference's
    shape; ``sum_to`` to a reference of the same shape is the input itself, as in ``sum_to_shape``; ``output``
    its entry of the tuple.
    """
    if not inputs:
        return None
    return _direct_count(index, node, inputs, args, namespace) or _direct_view(index, node, inputs, args,
                                                                               namespace)


def _direct_count(index, node, inputs, args, namespace) -> str | None:
    """``mean`` and ``reduced_count`` with their counts read from the array's shape (see ``_direct_call``)."""
    op, cls, source = node.primitive, type(node.primitive), inputs[0].shape
    if (cls is reduce.Mean and node.dtype.kind == "f" and len(args) == 1 and inputs[0].dtype == node.dtype
            and all(-len(source) <= a < len(source) for a in op.axes)):
        namespace[f"f{index}"] = np.add.reduce
        return (f"f{index}({args[0]}, axis={tuple(op.axes)!r}, keepdims={bool(op.keepdims)}) / "
                f"({_size_product(args[0], source, op.axes)})")
    if cls is reduce.ReducedCount and len(args) == 1 and all(0 <= a < len(source) for a in op.axes):
        namespace[f"d{index}"] = node.dtype
        return f"_nd({_size_product(args[0], source, op.axes)}, d{index})"
    return None


def _direct_view(index, node, inputs, args, namespace) -> str | None:
    """``expand_dims``, ``broadcast_like``, a same-shape ``sum_to`` and ``output`` as views (see ``_direct_call``)."""
    op, cls, source = node.primitive, type(node.primitive), inputs[0].shape
    if (cls is shape_ops.ExpandDims and len(args) == 1 and op.axes and node.ndim == len(source) + len(op.axes)
            and all(0 <= a < node.ndim for a in op.axes)):
        index_text = ", ".join("None" if axis in op.axes else ":" for axis in range(node.ndim))
        return f"{args[0]}[{index_text},]"
    if cls is Output and len(args) == 1:  # one entry of its producer's tuple
        return f"{args[0]}[{op.index}]"
    if cls is shape_ops.BroadcastLike and len(args) in (1, 2):
        namespace[f"f{index}"] = np.broadcast_to
        target = f"{args[1]}.shape" if len(args) == 2 else repr(tuple(op.shape))
        return f"f{index}({args[0]}, {target})"
    if cls is shape_ops.SumTo and len(args) == 2 and source == node.shape and inputs[0].dtype == node.dtype:
        namespace[f"f{index}"] = op.impl
        return f"({args[0]} if {args[0]}.shape == {args[1]}.shape else f{index}({args[0]}, {args[1]}))"
    return None


# ---- the function around the steps -------------------------------------------------------------

def _escapes(escaping: list[Tensor], number: dict[Tensor, int], value_names: list[str], n_steps: int,
             scalar: bool) -> list[str]:
    """The returned expressions: outputs and update values escape to the caller, so whatever could
    alias a feed, a variable, a constant, a view or another output is copied."""
    escaped: list[str] = []
    seen: set[int] = set()
    for tensor in escaping:
        value = number[tensor]  # (roots are resolved: a fused root is its last expanded step)
        name = value_names[value]
        if scalar:
            escaped.append(f"_nd({name})")  # a fresh 0-d array from an immutable scalar
        elif value >= n_steps or tensor.primitive.view or value in seen:  # (numbers past the steps: leaves)
            escaped.append(f"_copy({name})")
        elif static(tensor):
            escaped.append(name)  # a fresh ndarray this call allocated
        else:
            escaped.append(f"_as_array({name})")  # fresh, but maybe a NumPy scalar
        seen.add(value)
    return escaped


def _source(n_inputs: int, n_variables: int, n_updates: int, namespace: dict, lines: list[str],
            escaped: list[str], scalar: bool, inplace: bool, check_numerics: bool,
            python: bool = False) -> tuple[str, int]:
    """The ``run`` function's source, and the line number of its first body line minus one."""
    params = "feeds, variables, targets, _spare=None" if inplace else "feeds, variables, _spare=None"
    header = [f"def run({params}" + "".join(f", {n}={n}" for n in sorted(namespace)) + "):"]
    if n_inputs:
        header.append("    " + "".join(f"x{k}, " for k in range(n_inputs)) + "= feeds")
    if n_variables:
        header.append("    " + "".join(f"w{k}, " for k in range(n_variables)) + "= variables")
    if inplace:
        header.append("    " + "".join(f"t{k}, " for k in range(n_updates)) + "= targets")
    if scalar:
        scalar_of = ".item()" if python else "[()]"  # a Python float or bool, else a NumPy scalar
        header.extend(f"    x{k} = x{k}{scalar_of}" for k in range(n_inputs))
        header.extend(f"    w{k} = w{k}{scalar_of}" for k in range(n_variables))
    if check_numerics:
        header.insert(1, "    _check_leaves(feeds, variables)")
    header.append("    try:")
    body = [f"        {line}" for line in lines] or ["        pass"]
    footer = (["    except _NumericsError:", "        raise"] if check_numerics else []) + [
              "    except Exception as exc:",
              "        raise _failure(exc) from exc",
              f"    return ({''.join(e + ', ' for e in escaped)})"]
    return "\n".join(header + body + footer) + "\n", len(header) + 1  # line numbers start at 1


def _line_table(step_of_line: dict[int, int]) -> array:
    """{line: step} as an array indexed by line (-1: no step), 8 bytes a line where the dict took ~100:
    the error handler keeps it for the plan's lifetime."""
    table = array("q", [-1]) * (max(step_of_line, default=0) + 1)
    for line, step in step_of_line.items():
        table[line] = step
    return table


def _failure_handler(steps, parents, value_names, defaults, step_of_line, fused, writes, updates, inplace):
    """The plan's ``_failure``: the ExecutionError for an exception raised at a line of ``run``."""
    # in-place plans: the line writing each update (a write step, or a step computing into the storage)
    write_lines = sorted((line, fused.get(id(steps[step]), writes.get(id(steps[step]))))
                         for line, step in enumerate(step_of_line) if step >= 0
                         if id(steps[step]) in fused or id(steps[step]) in writes) if inplace else []
    update_names = [var.name or f"<variable {k}>" for k, (var, _) in enumerate(updates)]

    def failure(exc: Exception) -> ExecutionError:
        tb = exc.__traceback__
        line = tb.tb_lineno if tb is not None else None
        step = step_of_line[line] if line is not None and 0 <= line < len(step_of_line) else -1
        if step < 0:  # pragma: no cover - only the op lines can raise
            return ExecutionError(f"graph execution failed: {type(exc).__name__}: {exc}")
        node = steps[step]
        frame_locals = tb.tb_frame.f_locals
        arrays = [frame_locals.get(value_names[k], defaults.get(value_names[k])) for k in parents[step]]
        if id(node) in writes:
            error = ExecutionError(f"update of variable {update_names[writes[id(node)]]!r} failed: {exc}")
        else:
            error = runtime.describe_failure(node, arrays, exc)
        if inplace:
            _report_written(error, tb.tb_lineno, write_lines, fused.get(id(node)), frame_locals, update_names)
        return error

    return failure


def _report_written(error: ExecutionError, line: int, write_lines: list, partial: int | None,
                    frame_locals: dict, update_names: list[str]) -> None:
    """Say in ``error`` which variables an in-place plan had already written when it failed."""
    written: dict[int, np.ndarray] = {}
    for write_line, k in write_lines:
        if write_line < line:
            written[k] = frame_locals.get(f"t{k}")
    changed = [update_names[k] for k in sorted(written)]
    # ``partial``: the failing step computes straight into a variable's storage. It is a float ufunc or
    # matmul, and NumPy checks shapes and casting before writing anything (float loops do not raise
    # with errors ignored), so it wrote nothing: that variable is unchanged.
    note = ("in-place updates: variables already updated by this call: " + ", ".join(map(repr, changed))
            if changed else "in-place updates: no variable had been updated yet")
    unchanged = [name for k, name in enumerate(update_names) if k not in written]
    if unchanged:
        note += "; unchanged: " + ", ".join(map(repr, unchanged))
    error.args = (f"{error.args[0]} [{note}]",) if error.args else (note,)
    error._graphc_written = {k: a for k, a in written.items() if a is not None}
