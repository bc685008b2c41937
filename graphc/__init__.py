"""graphc: a static-graph symbolic differentiation compiler for Python and NumPy.

Declare a graph (placeholders, variables, constants, ops), append its
gradients with ``gc.grad``, and run it with ``gc.Session`` or ``gc.function``.
``gc.inf`` and ``gc.nan`` are infinity and NaN as Python floats (weak scalars:
``gc.where(mask, x32, -gc.inf)`` stays float32). ``help(gc.<name>)`` states each
public name's contract; ``docs/`` is the full reference.
"""

import sys as _sys
import types as _types

from graphc.custom import custom_op
from graphc.errors import DTypeError, ExecutionError, FeedError, GradientError, GraphcError, LoadError, ShapeError
from graphc.lazy import elementwise, from_sympy, to_networkx, to_sympy
from graphc.leaves import constant, placeholder, variable
from graphc.ops import (
                           abs,
                           add,
                           all,
                           any,
                           arccos,
                           arccosh,
                           arcsin,
                           arcsinh,
                           arctan,
                           arctan2,
                           arctanh,
                           argmax,
                           argmin,
                           argsort,
                           broadcast_to,
                           cast,
                           ceil,
                           clip,
                           concatenate,
                           cos,
                           cosh,
                           cumprod,
                           cumsum,
                           diagonal,
                           div,
                           dot,
                           einsum,
                           elu,
                           equal,
                           exp,
                           exp2,
                           expand_dims,
                           expm1,
                           flip,
                           floor,
                           floor_divide,
                           gelu,
                           greater,
                           greater_equal,
                           hard_tanh,
                           isfinite,
                           isinf,
                           isnan,
                           leaky_relu,
                           less,
                           less_equal,
                           log,
                           log1p,
                           log2,
                           log10,
                           log_softmax,
                           logaddexp,
                           logical_and,
                           logical_not,
                           logical_or,
                           logical_xor,
                           logsumexp,
                           matmul,
                           max,
                           maximum,
                           mean,
                           min,
                           minimum,
                           mod,
                           mul,
                           neg,
                           norm,
                           not_equal,
                           one_hot,
                           ones_like,
                           outer,
                           pow,
                           prelu,
                           prod,
                           reciprocal,
                           relu,
                           repeat,
                           reshape,
                           roll,
                           round,
                           rsqrt,
                           sigmoid,
                           sigmoid_cross_entropy,
                           sign,
                           silu,
                           sin,
                           sinh,
                           softmax,
                           softmax_cross_entropy,
                           softplus,
                           sort,
                           split,
                           sqrt,
                           square,
                           squeeze,
                           stack,
                           std,
                           step,
                           stop_gradient,
                           sub,
                           sum,
                           swish,
                           take,
                           tan,
                           tanh,
                           tile,
                           top_k,
                           trace,
                           transpose,
                           tril,
                           triu,
                           trunc,
                           var,
                           where,
                           zeros_like,
)
from graphc.ops.conv import avg_pool2d, conv2d, conv2d_transpose, max_pool2d, pad
from graphc.ops.nn import batch_norm, layer_norm
from graphc.tensor import Tensor, Variable
from graphc.version import __version__ as __version__

#: the public names imported on first use (PEP 562): name -> the module that defines it. Building a
#: graph needs only the core and the ops; differentiating, optimizing, compiling, saving, exporting
#: and the gc.optim/gc.data/gc.init/gc.random namespaces load when first touched, which keeps
#: ``import graphc`` light (bench/import_time.py). A module as the value's own name is a submodule.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("grad", "hessian", "jacobian", "jvp", "vjp"), "graphc.autodiff"),
    **dict.fromkeys(("render", "to_dot"), "graphc.export.dot"),
    **dict.fromkeys(("Function", "function"), "graphc.function"),
    "check_grad": "graphc.gradcheck",
    "optimize": "graphc.passes",
    "debugprint": "graphc.printing",
    "dropout": "graphc.random",
    **dict.fromkeys(("foldl", "map", "scan"), "graphc.scan"),
    **dict.fromkeys(("SaveError", "load", "save"), "graphc.serialize"),
    "Session": "graphc.session",
}
#: the submodules reachable as attributes before anyone imports them (``gc.optim``, ``gc.autodiff``):
#: those ``import graphc`` used to load eagerly (not the CLI, nor the dask and SymPy bridges, whose
#: optional dependencies may be missing)
_SUBMODULES = frozenset({
    "autodiff", "compile", "custom", "data", "errors", "export", "gradcheck", "graph", "hooks", "init", "lazy",
    "leaves", "numerics", "op", "ops", "optim", "passes", "pickling", "printing", "random", "serialize",
    "session", "structure", "tensor", "types", "version",
})


def __getattr__(name: str):
    """Import a lazily loaded public name or submodule on first access (PEP 562); caches it."""
    import importlib

    module_name = _LAZY.get(name)
    if module_name is not None:
        value = getattr(importlib.import_module(module_name), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"graphc.{name}")
    else:
        raise AttributeError(f"module 'graphc' has no attribute {name!r}")
    globals()[name] = value
    return value


#: infinity and NaN as Python floats, so they are weak scalars: ``gc.where(mask, x32, -gc.inf)`` stays float32
inf = float("inf")
nan = float("nan")

__all__ = [
    "DTypeError", "ExecutionError", "FeedError", "Function", "GradientError", "GraphcError", "LoadError",
    "SaveError", "Session", "ShapeError", "Tensor", "Variable",
    "abs", "add", "broadcast_to", "cast", "check_grad", "clip", "concatenate", "constant", "cos", "custom_op",
    "div", "dot", "einsum", "elu", "equal", "exp", "expand_dims", "expm1", "function", "gelu", "grad",
    "greater", "greater_equal", "hard_tanh", "hessian", "inf", "jacobian", "jvp", "leaky_relu", "less", "less_equal",
    "log", "log1p", "log_softmax", "logsumexp", "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "nan",
    "neg", "not_equal", "one_hot", "ones_like", "optimize", "outer", "placeholder", "pow", "prelu", "prod",
    "relu", "reshape", "sigmoid", "sigmoid_cross_entropy", "sign", "silu", "sin", "softmax", "softmax_cross_entropy",
    "softplus", "sqrt", "square", "squeeze", "stack", "step", "stop_gradient", "sub", "sum", "swish", "take",
    "tanh", "transpose", "variable", "vjp", "where", "zeros_like",
    "data", "init", "optim",
    "avg_pool2d", "batch_norm", "conv2d", "conv2d_transpose", "layer_norm", "max_pool2d", "pad",
    "foldl", "map", "scan",
    "debugprint", "elementwise", "from_sympy", "load", "render", "save", "to_dot", "to_networkx", "to_sympy",
    "dropout", "random",
]
__all__ += [  # section 15 of the API contract ("More of NumPy"), non-element-wise
    "all", "any", "argmax", "argmin", "argsort", "cumprod", "cumsum", "diagonal", "flip", "norm", "repeat", "roll",
    "sort", "split", "std", "tile", "top_k", "trace", "tril", "triu", "var",
]
__all__ += [  # API contract section 15, element-wise (and logical_and)
    "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "ceil", "cosh", "exp2", "floor",
    "floor_divide", "isfinite", "isinf", "isnan", "log10", "log2", "logaddexp", "logical_and", "logical_not",
    "logical_or", "logical_xor", "mod", "reciprocal", "round", "rsqrt", "sinh", "tan", "trunc",
]


class _GradcheckModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        """``gc.gradcheck(cost, wrt, feed_dict, ...)`` is ``gc.check_grad``."""
        return self.check_grad(*args, **kwargs)


class _CompileModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        raise TypeError("graphc.compile is the module that lowers graphs to plans; to compile a function "
                        "call gc.function(inputs, outputs, updates=None)")


#: submodules whose names are also verbs: ``gc.gradcheck(...)`` checks gradients (an alias of
#: ``gc.check_grad``) and ``gc.compile(...)`` says to use ``gc.function``, instead of failing as
#: uncallable modules
_CALLABLE_SUBMODULES: dict[str, type] = {"gradcheck": _GradcheckModule, "compile": _CompileModule}


class _Package(_types.ModuleType):
    """The type of the ``graphc`` module: the import system sets each submodule on its package
    with ``setattr`` once it is loaded (whenever that is, now that most load lazily), which is
    where the two submodules above get their call and where a submodule named like the public
    function it defines leaves that function in place."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, _types.ModuleType) and _LAZY.get(name) == value.__name__:
            # a submodule named as the public name it defines (graphc.function, graphc.scan): the
            # package's attribute stays the public function
            value = getattr(value, name)
        kind = _CALLABLE_SUBMODULES.get(name)
        if kind is not None and type(value) is _types.ModuleType:
            value.__class__ = kind
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
for _name, _kind in _CALLABLE_SUBMODULES.items():  # any already imported (none, as the imports above stand)
    if type(_sys.modules.get(f"graphc.{_name}")) is _types.ModuleType:
        _sys.modules[f"graphc.{_name}"].__class__ = _kind


def _register_display() -> None:
    """In IPython/Jupyter, lists of tensors display as one graph (see register_ipython_display);
    outside IPython nothing is imported for it."""
    if "IPython" not in _sys.modules:
        return
    from graphc.export.dot import register_ipython_display

    try:
        register_ipython_display()
    except Exception:  # noqa: BLE001 - a display nicety must never break `import graphc`
        pass


_register_display()


def __dir__() -> list[str]:
    """The public names (``__all__``) and the version: submodules stay out of tab completion."""
    return sorted(set(__all__) | {"__version__"})
