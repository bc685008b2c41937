"""The SymPy bridge: graphs to SymPy expressions and back, and element-wise ops from formulas.

This is the only module of graphc that imports SymPy.

* :func:`to_sympy` turns an element-wise/scalar graph into a SymPy expression
  (placeholders become real SymPy symbols named after them).
* :func:`from_sympy` builds a graph computing a SymPy expression.
* :func:`elementwise` makes a new element-wise op from a Python function of
  SymPy symbols. SymPy derives its derivatives; the gradient of the op is
  another op of the same kind built from the derivative expression, so it can
  be differentiated to any order. Values are computed by NumPy code generated
  with ``sympy.lambdify(modules="numpy")``.

An element-wise op stores its formula as a small postfix program over a fixed
set of functions (``expr``), not as SymPy objects or source text. That makes it
hashable, comparable, deterministic and savable by ``gc.save``: the loader
rebuilds the formula from the fixed table below and never evaluates text.
"""

from __future__ import annotations

import inspect
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import sympy

from graphc.op import REGISTRY, Op
from graphc.ops import elementwise as ew
from graphc.ops.elementwise import Elementwise
from graphc.tensor import Tensor, toposort

__all__ = ["SympyElementwise", "elementwise", "from_sympy", "to_sympy"]

MAX_ARITY = 32
MAX_TOKENS = 200_000
MAX_EXACT_EXPONENT = 1000
# Bounds on the work a formula can ask SymPy for, checked token by token *before* each SymPy
# object is built (a file is untrusted: (2**999)**999 would compute a 300,000-digit number,
# Max of thousands of arguments compares them pairwise, deep nests overflow SymPy's recursion):
MAX_FORMULA_DEPTH = 64  # nesting of functions
MAX_FORMULA_DIGITS = 10_000  # an upper bound on the digits of any exact number SymPy could form
MAX_SUM_ARGS = 1024  # terms of one add/mul once SymPy flattens nested ones
MAX_MINMAX_ARGS = 64  # arguments of one max/min once flattened (SymPy compares them pairwise)
_INT_TEXT = re.compile(r"-?[0-9]{1,400}")


# ======================================================================================
# formulas as postfix token programs
# ======================================================================================
# Tokens: ("x", i) argument i; ("int", "12"); ("rat", "1", "3"); ("float", float.hex());
# ("const", "pi" | "E"); ("fn", name, n) applies a function to the last n values.

def _heaviside(*args):
    return sympy.Heaviside(*args)


#: function name -> (SymPy constructor, allowed argument counts (None: any >= 2), SymPy class)
_FUNCTIONS: dict[str, tuple[Callable, tuple[int, ...] | None, type]] = {
    "add": (sympy.Add, None, sympy.Add),
    "mul": (sympy.Mul, None, sympy.Mul),
    "pow": (sympy.Pow, (2,), sympy.Pow),
    "exp": (sympy.exp, (1,), sympy.exp),
    "log": (sympy.log, (1,), sympy.log),
    "sin": (sympy.sin, (1,), sympy.sin),
    "cos": (sympy.cos, (1,), sympy.cos),
    "tan": (sympy.tan, (1,), sympy.tan),
    "asin": (sympy.asin, (1,), sympy.asin),
    "acos": (sympy.acos, (1,), sympy.acos),
    "atan": (sympy.atan, (1,), sympy.atan),
    "sinh": (sympy.sinh, (1,), sympy.sinh),
    "cosh": (sympy.cosh, (1,), sympy.cosh),
    "tanh": (sympy.tanh, (1,), sympy.tanh),
    "asinh": (sympy.asinh, (1,), sympy.asinh),
    "acosh": (sympy.acosh, (1,), sympy.acosh),
    "atanh": (sympy.atanh, (1,), sympy.atanh),
    "abs": (sympy.Abs, (1,), sympy.Abs),
    "sign": (sympy.sign, (1,), sympy.sign),
    "erf": (sympy.erf, (1,), sympy.erf),
    "erfc": (sympy.erfc, (1,), sympy.erfc),
    "max": (sympy.Max, None, sympy.Max),
    "min": (sympy.Min, None, sympy.Min),
    "heaviside": (_heaviside, (1, 2), sympy.Heaviside),
}
_NAME_OF_CLASS = {cls: name for name, (_, _, cls) in _FUNCTIONS.items()}
_CONSTANTS = {"pi": sympy.pi, "E": sympy.E}


def _argument_symbols(arity: int) -> list[sympy.Symbol]:
    return [sympy.Symbol(f"x{i}", real=True) for i in range(arity)]


def formula_tokens(expr: sympy.Expr, arity: int) -> tuple:
    """The postfix program of ``expr`` over the symbols ``x0..x{arity-1}`` (iterative)."""
    symbols = {s: i for i, s in enumerate(_argument_symbols(arity))}
    tokens: list[tuple] = []
    stack: list[tuple[sympy.Basic, bool]] = [(sympy.sympify(expr), False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            tokens.append(("fn", _NAME_OF_CLASS[type(node)], len(node.args)))
            continue
        if node in symbols:
            tokens.append(("x", symbols[node]))
        elif node.is_Integer:
            tokens.append(("int", str(int(node))))
        elif node.is_Rational:
            tokens.append(("rat", str(int(node.p)), str(int(node.q))))
        elif node.is_Float:
            value = float(node)
            if not math.isfinite(value):
                raise ValueError(f"the number {node} cannot be part of an element-wise formula")
            tokens.append(("float", value.hex()))
        elif node == sympy.pi or node == sympy.E:
            tokens.append(("const", "pi" if node == sympy.pi else "E"))
        elif type(node) in _NAME_OF_CLASS:
            stack.append((node, True))
            for arg in reversed(node.args):
                stack.append((arg, False))
        elif node.is_Symbol:
            raise ValueError(f"the formula uses the symbol {node}, which is not one of its arguments")
        else:
            raise ValueError(f"{type(node).__name__} ({node}) is not supported in element-wise formulas; "
                             f"supported: numbers, pi, E and {', '.join(sorted(_FUNCTIONS))}")
        if len(tokens) > MAX_TOKENS:
            raise ValueError("the formula is too large")
    return tuple(tokens)


def _is_int_text(value) -> bool:
    return isinstance(value, str) and _INT_TEXT.fullmatch(value) is not None


def _argument_token(token, symbols):
    if len(token) == 2 and type(token[1]) is int and 0 <= token[1] < len(symbols):
        return symbols[token[1]], 0
    return None


def _int_token(token, symbols):
    if len(token) == 2 and _is_int_text(token[1]):
        return sympy.Integer(int(token[1])), len(token[1])
    return None


def _rational_token(token, symbols):
    if len(token) == 3 and _is_int_text(token[1]) and _is_int_text(token[2]) and int(token[2]) != 0:
        return sympy.Rational(int(token[1]), int(token[2])), len(token[1]) + len(token[2])
    return None


def _float_token(token, symbols):
    if not (len(token) == 2 and isinstance(token[1], str) and len(token[1]) <= 40):
        return None
    value = float.fromhex(token[1])
    if not math.isfinite(value):
        raise ValueError("formula numbers must be finite")
    return sympy.Float(value), 0  # fixed precision: floats never grow


def _constant_token(token, symbols):
    if len(token) == 2 and token[1] in _CONSTANTS:
        return _CONSTANTS[token[1]], 0
    return None


#: token kind -> its reader ``(token, argument symbols) -> (value, digits) or None`` (None: malformed).
#: ``digits`` bounds the digits of the exact numbers in the value; "fn" tokens are applied by _apply_token.
_VALUE_TOKENS: dict[str, Callable] = {"x": _argument_token, "int": _int_token, "rat": _rational_token,
                                      "float": _float_token, "const": _constant_token}


def _argument_limit(name: str) -> int:
    """The most arguments the n-ary function ``name`` may take (SymPy compares Max/Min's pairwise)."""
    return MAX_MINMAX_ARGS if name in ("max", "min") else MAX_SUM_ARGS


def _check_argument_count(name: str, n: int) -> None:
    """``name`` accepts ``n`` arguments (raises ValueError)."""
    counts = _FUNCTIONS[name][1]
    if counts is not None:
        if n not in counts:
            raise ValueError(f"{name} cannot take {n} arguments")
        return
    limit = _argument_limit(name)
    if not 1 <= n <= limit:
        raise ValueError(f"{name} cannot take {n} arguments (at most {limit})")


def _check_flattened(name: str, args: list) -> None:
    """An n-ary function of ``args`` once SymPy flattens nested ones (add(add(a, b), c) is one add of
    three terms) stays within its argument limit; powers of exact numbers stay small (raises ValueError)."""
    _, counts, cls = _FUNCTIONS[name]
    if counts is None:
        limit = _argument_limit(name)
        flat = sum(len(a.args) if type(a) is cls else 1 for a in args)
        if flat > limit:
            raise ValueError(f"{name} of {flat} arguments once flattened (at most {limit})")
    if name == "pow" and args[0].is_Number and args[1].is_Rational and \
            max(abs(int(args[1].p)), int(args[1].q)) > MAX_EXACT_EXPONENT:
        # SymPy would evaluate a number to this power exactly: refuse instead of hanging
        raise ValueError("a number raised to a huge exact power")


def _result_digits(name: str, args: list, arg_digits: list[int]) -> int:
    """An upper bound on the digits of the exact numbers in ``name(*args)``."""
    if name == "pow" and args[1].is_Rational:
        # (2*x)**k distributes over a product: the numbers in the base may be raised to k
        return arg_digits[0] * max(1, abs(int(args[1].p))) + arg_digits[1]
    return sum(arg_digits)  # sums and products of exact numbers have at most the digits of all of them


def _apply_token(token, stack: list) -> tuple:
    """The stack entry ``(value, digits, depth)`` of the "fn" token ``token`` applied to the top of ``stack``
    (its arguments, popped), every bound checked first (raises ValueError)."""
    name, n = token[1], token[2]
    _check_argument_count(name, n)
    if n > len(stack):
        raise ValueError("malformed formula: a function has too few arguments")
    operands = stack[len(stack) - n:]
    del stack[len(stack) - n:]
    args = [value for value, _, _ in operands]
    depth = 1 + max(d for _, _, d in operands)
    if depth > MAX_FORMULA_DEPTH:
        raise ValueError(f"the formula is nested more than {MAX_FORMULA_DEPTH} functions deep")
    _check_flattened(name, args)
    size = _result_digits(name, args, [digits for _, digits, _ in operands])
    if size > MAX_FORMULA_DIGITS:
        raise ValueError(f"the formula could make SymPy compute numbers of over {MAX_FORMULA_DIGITS} "
                         f"digits (exact powers of exact numbers, long products)")
    return _FUNCTIONS[name][0](*args), size, depth


def _is_function_token(token) -> bool:
    return len(token) == 3 and token[1] in _FUNCTIONS and type(token[2]) is int


def _build_formula(arity, tokens) -> sympy.Expr:
    """The SymPy expression of a postfix program, checking every token (raises ValueError).

    Each stack entry is ``(value, digits, depth)``: the SymPy value, an upper bound on the digits of
    the exact numbers in it, and its nesting depth in functions."""
    if type(arity) is not int or not 1 <= arity <= MAX_ARITY:
        raise ValueError(f"arity must be an int in [1, {MAX_ARITY}]")
    if not isinstance(tokens, tuple) or not tokens or len(tokens) > MAX_TOKENS:
        raise ValueError("the formula must be a non-empty tuple of tokens")
    symbols = _argument_symbols(arity)
    stack: list[tuple] = []
    for token in tokens:
        if not isinstance(token, tuple) or not token or not isinstance(token[0], str):
            raise ValueError(f"bad formula token {token!r:.80}")
        if token[0] == "fn" and _is_function_token(token):
            stack.append(_apply_token(token, stack))
            continue
        reader = _VALUE_TOKENS.get(token[0])
        read = reader(token, symbols) if reader is not None else None
        if read is None:
            raise ValueError(f"bad formula token {token!r:.80}")
        stack.append((*read, 0))
    if len(stack) != 1:
        raise ValueError("malformed formula: it does not reduce to one expression")
    return stack[0][0]


_cache: dict[tuple, tuple] = {}
_cache_lock = threading.Lock()


def _compiled(arity: int, tokens: tuple) -> tuple[sympy.Expr, Callable | None]:
    """(expression, NumPy function) for a program; the function is made on first use."""
    key = (arity, tokens)
    entry = _cache.get(key)
    if entry is None:
        entry = (_build_formula(arity, tokens), None)
        with _cache_lock:
            _cache.setdefault(key, entry)
    return _cache[key]


def _numpy_function(arity: int, tokens: tuple) -> Callable:
    expr, fn = _compiled(arity, tokens)
    if fn is None:
        fn = sympy.lambdify(_argument_symbols(arity), expr, modules="numpy")
        with _cache_lock:
            _cache[(arity, tokens)] = (expr, fn)
    return fn


def _derivative(expr: sympy.Expr, symbol: sympy.Symbol) -> sympy.Expr:
    """d expr / d symbol, with the derivative of a jump (DiracDelta) taken as 0 (a subgradient)."""
    result = sympy.diff(expr, symbol)
    if result.has(sympy.DiracDelta):
        result = result.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.Integer(0))
    return result


@dataclass(frozen=True)
class SympyElementwise(Elementwise):
    """An element-wise op defined by a formula (see :func:`elementwise`).

    ``name`` is the user's name (shown as ``tensor.op``); ``arity`` the number
    of inputs; ``expr`` the formula as a postfix token program over ``x0, x1, ...``.
    The registry knows the class as ``"sympy_elementwise"``.
    """

    name: str = "sympy_elementwise"
    arity: int = 1
    expr: tuple = ()

    def __post_init__(self) -> None:
        if type(self.name) is not str or not 0 < len(self.name) <= 200:
            raise ValueError("an element-wise op needs a name of 1 to 200 characters")
        if REGISTRY.get(self.name, SympyElementwise) is not SympyElementwise:
            # the optimizer recognizes ops by name: an op called "log" must be graphc's log
            raise ValueError(f"{self.name!r} is the name of a built-in op; choose another name")
        _compiled(self.arity, self.expr)  # validates the formula

    @property
    def expression(self) -> sympy.Expr:
        """The formula as a SymPy expression of ``x0, x1, ...`` (real symbols)."""
        return _compiled(self.arity, self.expr)[0]

    @property
    def symbols(self) -> list[sympy.Symbol]:
        return _argument_symbols(self.arity)

    def infer(self, *inputs):
        if len(inputs) != self.arity:
            from graphc.errors import ShapeError

            raise ShapeError(f"{self.name}: takes {self.arity} inputs, got {len(inputs)}")
        return super().infer(*inputs)

    def impl(self, *arrays):
        arrays = [np.asarray(a) for a in arrays]
        dtype = self.result_dtype(*(a.dtype for a in arrays))
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        result = np.asarray(_numpy_function(self.arity, self.expr)(*(a.astype(dtype, copy=False) for a in arrays)))
        if result.shape != shape:
            result = np.broadcast_to(result, shape)
        return np.array(result, dtype=dtype, copy=True) if result.dtype != dtype or not result.flags.writeable \
            or any(np.shares_memory(result, a) for a in arrays) else result

    def vjp(self, node: Tensor, g: Tensor):
        expr = self.expression
        grads = []
        for i, symbol in enumerate(self.symbols):
            derivative = _derivative(expr, symbol)
            if derivative == 0:
                grads.append(None)
                continue
            suffix = "'" if self.arity == 1 else f"_d{i}"
            op = SympyElementwise(self.name + suffix, self.arity, formula_tokens(derivative, self.arity))
            grads.append(ew.mul(g, op(*node.inputs)))
        return tuple(grads)

    def sympy_form(self, sp, node, *args):
        return self.expression.xreplace(dict(zip(self.symbols, args)))

    def params(self) -> dict:
        """For printing and export: the formula as text (``gc.save`` stores the fields themselves)."""
        args = ", ".join(str(s) for s in self.symbols)
        return {"formula": f"({args}) -> {self.expression}"}

    def key_bytes(self, node: Tensor) -> bytes:
        return f"sympy_elementwise:{self.name}:{self.arity}:{self.expr!r}".encode()

    def __repr__(self) -> str:
        return f"elementwise({self.name!r}, {self.expression})"


def elementwise(name: str, fn: Callable, nargs: int | None = None) -> SympyElementwise:
    """A new element-wise op from ``fn``, a Python function of SymPy symbols.

    ``fn`` takes one SymPy symbol per input (real symbols) and returns a SymPy
    expression, e.g. ``lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x)))``.
    The result is an op: call it on tensors (``mish(x)``). Its derivatives are
    derived by SymPy, to any order; its values are computed with NumPy code
    from ``sympy.lambdify``. ``nargs`` is needed only when the number of inputs
    cannot be read from ``fn``'s signature.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("elementwise: name must be a non-empty str")
    if not callable(fn):
        raise TypeError("elementwise: fn must be callable")
    if nargs is None:
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError) as exc:
            raise TypeError("elementwise: cannot read fn's arguments; pass nargs=") from exc
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
            raise TypeError("elementwise: fn takes *args; pass nargs=")
        nargs = sum(1 for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                                  p.POSITIONAL_OR_KEYWORD))
    if not 1 <= nargs <= MAX_ARITY:
        raise ValueError(f"elementwise: an op takes 1 to {MAX_ARITY} inputs, got {nargs}")
    symbols = _argument_symbols(nargs)
    expr = sympy.sympify(fn(*symbols))
    if not isinstance(expr, sympy.Expr):
        raise TypeError(f"elementwise: fn must return a SymPy expression, got {type(expr).__name__}")
    try:
        tokens = formula_tokens(expr, nargs)
    except ValueError as exc:
        raise ValueError(f"elementwise {name!r}: {exc}") from exc
    return SympyElementwise(name, nargs, tokens)


# ======================================================================================
# graph -> SymPy
# ======================================================================================

def _number(value) -> sympy.Expr:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, (bool, np.bool_)):
        return sympy.true if value else sympy.false
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 2 ** 53:
        return sympy.Integer(int(value))
    return sympy.Float(float(value))


def _sympy_rule(op, node, args):
    """The SymPy expression of one op application (the op's own ``sympy_form``), or raise ValueError."""
    form = op.sympy_form(sympy, node, *args)
    if form is None:
        raise ValueError(f"op {op.name!r} has no element-wise SymPy form")
    return form


def to_sympy(tensor: Tensor, symbols: Mapping[Tensor, sympy.Symbol] | None = None) -> sympy.Expr:
    """A SymPy expression for the element-wise/scalar graph computing ``tensor``.

    Placeholders (and variables) become real SymPy symbols named after them,
    unless ``symbols`` maps them to symbols of your choice. Constants must hold
    one value (a scalar, or an array whose entries are all equal). Raises
    ``ValueError`` for ops that are not element-wise (matmul, reductions over
    several elements, ...).
    """
    from graphc.leaves import Constant

    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_sympy takes a Tensor, got {type(tensor).__name__}")
    if symbols is not None and not isinstance(symbols, Mapping):
        raise TypeError(f"to_sympy: symbols must map tensors to SymPy symbols ({{x: sympy.Symbol('x')}}), got "
                        f"{type(symbols).__name__}")
    given = {}
    for t, s in (symbols or {}).items():
        if not isinstance(t, Tensor) or not isinstance(s, sympy.Symbol):
            raise TypeError(f"to_sympy: symbols must map tensors to SymPy symbols, got a {type(t).__name__} key "
                            f"with a {type(s).__name__} value")
        given[id(t)] = s
    values: dict[int, object] = {}
    names: dict[str, int] = {}
    for node in toposort([tensor]):
        key = id(node)
        if key in given:
            values[key] = given[key]
            continue
        if not node.inputs and not isinstance(node.primitive, Constant):
            if node.op not in ("placeholder", "variable"):
                values[key] = _sympy_rule(node.primitive, node, [])
                continue
            label = node.name or f"{node.op}_{len(names)}"
            if names.setdefault(label, key) != key:
                raise ValueError(f"two different tensors are named {label!r}; pass symbols= to tell them apart")
            values[key] = sympy.Symbol(label, real=True)
            continue
        if isinstance(node.primitive, Constant):
            array = np.asarray(node.primitive.value)
            if array.size == 0 or not np.all(array == array.flat[0]):
                raise ValueError(f"the constant {node.describe()} holds several different values: "
                                 f"not an element-wise/scalar graph")
            values[key] = _number(array.flat[0])
            continue
        if node.primitive.inner_graphs() or node.primitive.multi_output:
            raise ValueError(f"to_sympy: {node.describe()} is a loop (gc.scan, gc.map or gc.foldl), which has no "
                             f"closed SymPy form; convert the step's own graph instead")
        values[key] = _sympy_rule(node.primitive, node, [values[id(p)] for p in node.inputs])
    return values[id(tensor)]


# ======================================================================================
# SymPy -> graph
# ======================================================================================

def _to_number(expr) -> float:
    return float(expr)


def _combine(values, binary):
    result = values[0]
    for value in values[1:]:
        result = binary(result, value)
    return result


_inverse: dict = {}


def _op_of_function() -> dict:
    """SymPy function -> (op class, arity), derived from the ops' own ``sympy_form``: an op whose form is
    one SymPy function applied to its inputs (``tanh(x0)``, ``Mod(x0, x1)``) is that function's op.
    Built on first use and again whenever the op registry changed (the first op declaring a function wins)."""
    classes = tuple(REGISTRY.values())
    if _inverse.get("classes") != classes:
        table: dict = {}
        symbols = _argument_symbols(3)
        for cls in classes:
            if cls.sympy is None and cls.sympy_form is Op.sympy_form:
                continue  # declares no form (and is not constructed: a draw op's constructor has effects)
            for arity in (1, 2, 3):
                try:
                    form = cls().sympy_form(sympy, None, *symbols[:arity])
                except Exception:  # noqa: BLE001 - an op with parameters, or another arity
                    continue
                if isinstance(form, sympy.Basic) and not form.is_Atom and form.args == tuple(symbols[:arity]):
                    table.setdefault(form.func, (cls, arity))
        _inverse.update(classes=classes, table=table)
    return _inverse["table"]


def _graph_add(expr, args, built: dict):
    """A sum, with ``a - b`` rather than ``a + (-1 * b)`` where ``b`` is built."""
    result = args[0]
    for term, value in zip(expr.args[1:], args[1:]):
        coefficient, rest = term.as_coeff_Mul()
        if coefficient == -1 and rest in built:
            result = ew.sub(result, built[rest])
        else:
            result = ew.add(result, value)
    return result


def _graph_mul(expr, args, built: dict):
    """A product, with ``a / b`` rather than ``a * b**-1``."""
    numerator, denominator = [], []
    for factor, value in zip(expr.args, args):
        if isinstance(factor, sympy.Pow) and factor.exp == -1:
            denominator.append(built[factor.base])
        else:
            numerator.append(value)
    result = _combine(numerator, ew.mul) if numerator else 1.0
    for base in denominator:
        result = ew.div(result, base)
    return result


def _graph_pow(expr, args, built: dict):
    """A power: the exponents 2, 1/2, -1 and -1/2 as square, sqrt, 1/x and 1/sqrt; a positive integer
    exponent as a float (``pow(x, 3.0)``); any other exponent as the graph built for it."""
    base, exponent = args
    e = expr.exp
    if e == 2:
        return ew.square(base)
    if e == sympy.Rational(1, 2):
        return ew.sqrt(base)
    if e == -1:
        return ew.div(1.0, base)
    if e == sympy.Rational(-1, 2):
        return ew.div(1.0, ew.sqrt(base))
    if e.is_Integer and e > 0:
        return ew.pow(base, float(e))
    return ew.pow(base, exponent)


def _graph_erfc(expr, args, built: dict):
    return ew.sub(1.0, ew.erf(args[0]))


def _graph_heaviside(expr, args, built: dict):
    """1 above 0, 0 below, and SymPy's value at 0 (1/2 unless given)."""
    x = args[0]
    at_zero = 0.5 if len(args) == 1 else args[1]
    return ew.where(ew.greater(x, 0.0), 1.0, ew.where(ew.less(x, 0.0), 0.0, at_zero))


def _graph_pair(expr, args, built: dict):
    """A Piecewise branch: (value, condition), read by _graph_piecewise."""
    return ("pair", args[0], args[1])


def _graph_piecewise(expr, args, built: dict):
    """Nested ``where``s, the last branch (whose condition must be True) innermost."""
    result = None
    for _, value, condition in reversed(args):
        if condition is True:
            result = value
        elif result is None:
            raise ValueError("a Piecewise without a final True branch has no graph form")
        else:
            result = ew.where(condition, value, result)
    return result


#: SymPy classes (and their subclasses) built structurally, before the ops' own forms are looked up:
#: Add, Mul and Pow are n-ary or hold their inverse (a - b, a / b, sqrt), which one op per function cannot say
_STRUCTURAL_RULES: dict[type, Callable] = {sympy.Add: _graph_add, sympy.Mul: _graph_mul, sympy.Pow: _graph_pow}
#: SymPy functions that no op declares as its form, written with ops (looked up after the ops' forms)
_FUNCTION_RULES: dict[type, Callable] = {
    sympy.erfc: _graph_erfc, sympy.Heaviside: _graph_heaviside,
    sympy.functions.elementary.piecewise.ExprCondPair: _graph_pair, sympy.Piecewise: _graph_piecewise,
}


def _graph_of_op_form(expr, args):
    """The op whose declared form is ``expr``'s function, applied to ``args`` (None: no op declares it)."""
    found = _op_of_function().get(expr.func)
    if found is None:
        return None
    cls, arity = found
    if len(args) == arity:
        return cls()(*args)
    if arity == 2 and len(args) > 2:  # Max, Min, And, Or... of several arguments
        return _combine(args, lambda a, b: cls()(a, b))
    return None


def _graph_rule(expr, args, built: dict):
    """The tensor (or Python number) for one SymPy node whose arguments are in ``built``."""
    kind = type(expr)
    structural = next((_STRUCTURAL_RULES[c] for c in kind.__mro__ if c in _STRUCTURAL_RULES), None)
    if structural is not None:
        return structural(expr, args, built)
    result = _graph_of_op_form(expr, args)
    if result is not None:
        return result
    rule = _FUNCTION_RULES.get(kind)
    if rule is None:
        raise ValueError(f"from_sympy: {kind.__name__} ({expr}) is not supported")
    return rule(expr, args, built)


def from_sympy(expr, symbols: Mapping) -> Tensor:
    """A graph computing the SymPy expression ``expr``.

    ``symbols`` maps the SymPy symbols of ``expr`` to tensors. Numbers become
    weak Python scalars, so ``float32`` tensors stay ``float32``. Supported: + - * / and powers, erfc,
    Heaviside, Piecewise, and every SymPy function an op declares as its form (``Op.sympy_form``: exp, log,
    the trigonometric and hyperbolic functions and their inverses, atan2, Abs, sign, erf, floor, ceiling,
    Mod, Max, Min, relations, And, Or, Xor, Not, ...), which becomes that op.
    """
    if isinstance(expr, Tensor):
        raise TypeError("from_sympy: expr must be a SymPy expression (or a number), got a Tensor; gc.to_sympy "
                        "goes the other way")
    if not isinstance(symbols, Mapping):
        raise TypeError(f"from_sympy: symbols must map the SymPy symbols of expr to tensors "
                        f"({{sympy.Symbol('x'): x}}), got {type(symbols).__name__}")
    try:
        expr = sympy.sympify(expr)
    except (sympy.SympifyError, TypeError, ValueError) as exc:
        raise TypeError(f"from_sympy: expr must be a SymPy expression or a number, got {type(expr).__name__}") \
            from exc
    mapping = {}
    for symbol, tensor in symbols.items():
        if not isinstance(tensor, Tensor):
            from graphc.op import as_tensor

            tensor = as_tensor(tensor)
        try:
            key = sympy.sympify(symbol)
        except (sympy.SympifyError, TypeError, ValueError) as exc:
            raise TypeError(f"from_sympy: the keys of symbols must be SymPy symbols, got {type(symbol).__name__}") \
                from exc
        mapping[key] = tensor
    built: dict = {}
    stack = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if node in built:
            continue
        if node in mapping:
            built[node] = mapping[node]
        elif node is sympy.true:
            built[node] = True
        elif getattr(node, "is_Symbol", False):
            namesakes = [s for s in mapping if getattr(s, "name", None) == node.name]
            hint = (f"; symbols has another symbol named {node.name!r}, with other assumptions (SymPy tells "
                    f"them apart; to_sympy makes real symbols: sympy.Symbol({node.name!r}, real=True))"
                    if namesakes else "")
            raise ValueError(f"from_sympy: the symbol {node} is not in symbols{hint}")
        elif getattr(node, "is_Number", False) or node in (sympy.pi, sympy.E):
            built[node] = _to_number(node)
        elif expanded or not node.args:
            built[node] = _graph_rule(node, [built[a] for a in node.args], built)
        else:
            stack.append((node, True))
            for arg in reversed(node.args):
                if arg not in built:
                    stack.append((arg, False))
    result = built[expr]
    if not isinstance(result, Tensor):
        from graphc.leaves import constant

        result = constant(float(result))
    return result
