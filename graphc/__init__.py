"""graphc: a static-graph symbolic differentiation compiler for Python and NumPy.

Declare a graph (placeholders, variables, constants, ops), append its
gradients with ``gc.grad``, and run it with ``gc.Session`` or ``gc.function``.
``gc.inf`` and ``gc.nan`` are infinity and NaN as Python floats (weak scalars:
``gc.where(mask, x32, -gc.inf)`` stays float32). ``help(gc.<name>)`` states each
public name's contract; ``docs/`` is the full reference.
"""

from graphc import (
                           data,
                           init,
                           optim,
                           random,  # the module ``gc.random`` (importing it registers its ops for gc.load)
)
from graphc.autodiff import grad, hessian, jacobian, jvp, vjp
from graphc.custom import custom_op
from graphc.errors import DTypeError, ExecutionError, FeedError, GradientError, GraphcError, LoadError, ShapeError
from graphc.export.dot import render, to_dot
from graphc.function import Function, function
from graphc.gradcheck import check_grad
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
from graphc.passes import optimize
from graphc.printing import debugprint
from graphc.random import dropout
from graphc.scan import foldl, map, scan
from graphc.serialize import SaveError, load, save
from graphc.session import Session
from graphc.tensor import Tensor, Variable
from graphc.version import __version__ as __version__

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


def _tidy_namespace() -> None:
    """``gc.gradcheck(...)`` checks gradients (an alias of ``gc.check_grad``) and ``gc.compile(...)``
    says to use ``gc.function``: both names are also submodules, which would otherwise sit on the
    namespace as uncallable modules."""
    import sys
    import types

    class _GradcheckModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            """``gc.gradcheck(cost, wrt, feed_dict, ...)`` is ``gc.check_grad``."""
            return check_grad(*args, **kwargs)

    class _CompileModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            raise TypeError("graphc.compile is the module that lowers graphs to plans; to compile a function "
                            "call gc.function(inputs, outputs, updates=None)")

    sys.modules["graphc.gradcheck"].__class__ = _GradcheckModule
    import graphc.compile  # noqa: F401 - loaded by graphc.function already

    sys.modules["graphc.compile"].__class__ = _CompileModule


_tidy_namespace()


def _register_display() -> None:
    """In IPython/Jupyter, lists of tensors display as one graph (see register_ipython_display)."""
    from graphc.export.dot import register_ipython_display

    try:
        register_ipython_display()
    except Exception:  # noqa: BLE001 - a display nicety must never break `import graphc`
        pass


_register_display()


def __dir__() -> list[str]:
    """The public names (``__all__``) and the version: submodules stay out of tab completion."""
    return sorted(set(__all__) | {"__version__"})
