"""Every public op function, by family. One op is one class in its family's module.

Importing this package provides Tensor's operators and methods (``x + y``, ``x.sum()``, ...)
through the hook ``graphc.tensor.OPERATORS``: tensors sit a layer below the ops.
"""

import sys

from graphc.ops.arrange import diagonal, flip, repeat, roll, split, tile, trace, tril, triu
from graphc.ops.conv import avg_pool2d, conv2d, conv2d_transpose, max_pool2d, pad
from graphc.ops.cumulative import cumprod, cumsum
from graphc.ops.elementwise import (  # with API contract section 15, element-wise
    abs,
    add,
    arccos,
    arccosh,
    arcsin,
    arcsinh,
    arctan,
    arctan2,
    arctanh,
    cast,
    ceil,
    clip,
    cos,
    cosh,
    div,
    elu,
    equal,
    erf,
    exp,
    exp2,
    expm1,
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
    logaddexp,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    maximum,
    minimum,
    mod,
    mul,
    neg,
    not_equal,
    ones_like,
    pow,
    prelu,
    reciprocal,
    relu,
    round,
    rsqrt,
    sigmoid,
    sign,
    silu,
    sin,
    sinh,
    softplus,
    sqrt,
    square,
    step,
    stop_gradient,
    sub,
    swish,
    tan,
    tanh,
    trunc,
    where,
    zeros_like,
)
from graphc.ops.linalg import dot, einsum, matmul, outer
from graphc.ops.nn import (
    batch_norm,
    layer_norm,
    log_softmax,
    sigmoid_cross_entropy,
    softmax,
    softmax_cross_entropy,
)
from graphc.ops.ordering import argsort, sort, top_k
from graphc.ops.reduce import all, any, argmax, argmin, logsumexp, max, mean, min, norm, prod, std, sum, var
from graphc.ops.shape import (
    broadcast_to,
    concatenate,
    expand_dims,
    getitem,
    identity,
    one_hot,
    reshape,
    squeeze,
    stack,
    take,
    transpose,
)
from graphc.tensor import OPERATORS

__all__ = [
    "abs", "add", "broadcast_to", "cast", "clip", "concatenate", "cos", "div", "dot", "einsum", "elu", "equal",
    "erf", "exp", "expand_dims", "expm1", "gelu", "getitem", "greater", "greater_equal", "hard_tanh", "identity",
    "leaky_relu", "less", "less_equal", "log", "log1p", "log_softmax", "logical_and", "logsumexp", "matmul",
    "max", "maximum", "mean", "min", "minimum", "mul", "neg", "not_equal", "one_hot", "ones_like", "outer",
    "pow", "prelu", "prod", "relu", "reshape", "sigmoid", "sigmoid_cross_entropy", "sign", "silu", "sin",
    "softmax", "softmax_cross_entropy", "softplus", "sqrt", "square", "squeeze", "stack", "step",
    "stop_gradient", "sub", "sum", "swish", "take", "tanh", "transpose", "where", "zeros_like",
    # convolutional networks
    "avg_pool2d", "batch_norm", "conv2d", "conv2d_transpose", "layer_norm", "max_pool2d", "pad",
]
# section 15 of the API contract ("More of NumPy"): reductions, scans, ordering, shape
__all__ += [
    "all", "any", "argmax", "argmin", "argsort", "cumprod", "cumsum", "diagonal", "flip", "norm", "repeat", "roll",
    "sort", "split", "std", "tile", "top_k", "trace", "tril", "triu", "var",
]
__all__ += [  # API contract section 15, element-wise
    "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "ceil", "cosh", "exp2", "floor",
    "floor_divide", "isfinite", "isinf", "isnan", "log10", "log2", "logaddexp", "logical_not", "logical_or",
    "logical_xor", "mod", "reciprocal", "round", "rsqrt", "sinh", "tan", "trunc",
]

from graphc.ops.docstrings import apply_docstrings as _apply_docstrings  # noqa: E402 - after the imports it documents

_apply_docstrings(globals())

OPERATORS.provide(sys.modules[__name__])
