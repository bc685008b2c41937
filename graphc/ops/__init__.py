"""Every public op function, by family. One op is one class in its family's module.

Importing this package provides Tensor's operators and methods (``x + y``, ``x.sum()``, ...)
through the hook ``graphc.tensor.OPERATORS``: tensors sit a layer below the ops.
"""

import sys

from graphc.ops.elementwise import (
    abs,
    add,
    cast,
    clip,
    cos,
    div,
    elu,
    equal,
    erf,
    exp,
    expm1,
    gelu,
    greater,
    greater_equal,
    hard_tanh,
    leaky_relu,
    less,
    less_equal,
    log,
    log1p,
    logical_and,
    maximum,
    minimum,
    mul,
    neg,
    not_equal,
    ones_like,
    pow,
    prelu,
    relu,
    sigmoid,
    sign,
    silu,
    sin,
    softplus,
    sqrt,
    square,
    step,
    stop_gradient,
    sub,
    swish,
    tanh,
    where,
    zeros_like,
)
from graphc.ops.linalg import dot, einsum, matmul, outer
from graphc.ops.nn import log_softmax, sigmoid_cross_entropy, softmax, softmax_cross_entropy
from graphc.ops.reduce import logsumexp, max, mean, min, prod, sum
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
]

OPERATORS.provide(sys.modules[__name__])
