"""Docstrings of the public op functions that are one line of code each.

Kept in one table (rather than beside each one-line function) so that ``help(gc.exp)`` states
the contract: what the op computes, its dtype rule, its gradient convention and its errors.
``graphc/ops/__init__.py`` applies them; a function that has its own docstring keeps it.
"""

from __future__ import annotations

_ELEMENTWISE = ("Element-wise with NumPy broadcasting; Python scalars are weak (``x32 {sym} 2.0`` stays "
                "float32). Raises ``gc.ShapeError`` when the known shapes cannot broadcast.")
_UNARY_FLOAT = ("Element-wise; integer and bool inputs give float64 (float inputs keep their dtype). "
                "Raises ``gc.DTypeError`` for other dtypes.")
_COMPARISON = ("Element-wise comparison with NumPy broadcasting and NumPy 2 rules for Python ints out "
               "of the tensor's range; returns a bool tensor, which has no gradient. ``==`` on tensors "
               "is identity (they key feed dicts): use ``gc.{name}`` for values.")
_REDUCTION = ("``axis`` is None (every axis), an int or a tuple of ints (negative ones count from the "
              "end); ``keepdims`` keeps the reduced axes with size 1. Raises ``gc.ShapeError`` for an "
              "axis out of range.")

DOCS = {
    "exp": f"``e ** x``. {_UNARY_FLOAT} Gradient ``g * exp(x)``.",
    "log": f"Natural logarithm (``-inf`` at 0, NaN below, as NumPy). {_UNARY_FLOAT} Gradient ``g / x``.",
    "log1p": f"``log(1 + x)``, accurate for tiny ``x``. {_UNARY_FLOAT} Gradient ``g / (1 + x)``.",
    "expm1": f"``exp(x) - 1``, accurate for tiny ``x``. {_UNARY_FLOAT} Gradient ``g * exp(x)``.",
    "sqrt": f"Square root (NaN below 0, as NumPy). {_UNARY_FLOAT} Gradient ``g / (2 sqrt(x))``.",
    "sin": f"Sine (radians). {_UNARY_FLOAT} Gradient ``g * cos(x)``.",
    "cos": f"Cosine (radians). {_UNARY_FLOAT} Gradient ``-g * sin(x)``.",
    "tanh": f"Hyperbolic tangent. {_UNARY_FLOAT} Gradient ``g * (1 - tanh(x)**2)``.",
    "sigmoid": f"``1 / (1 + exp(-x))``, without overflow for any finite x. {_UNARY_FLOAT} "
               f"Gradient ``g * s * (1 - s)``.",
    "softplus": f"``log(1 + exp(x))``, without overflow for any finite x. {_UNARY_FLOAT} "
                f"Gradient ``g * sigmoid(x)``.",
    "silu": f"``x * sigmoid(x)`` (also ``gc.swish``). {_UNARY_FLOAT}",
    "swish": f"``x * sigmoid(x)``, the same op as ``gc.silu``. {_UNARY_FLOAT}",
    "gelu": f"``x * Phi(x)`` with the normal CDF Phi; ``approximate=True`` uses the tanh formula. "
            f"{_UNARY_FLOAT}",
    "elu": f"``x`` for ``x > 0``, ``alpha * expm1(x)`` otherwise; ``alpha`` is a number (TypeError "
           f"otherwise). {_UNARY_FLOAT}",
    "leaky_relu": f"``x`` for ``x > 0``, ``alpha * x`` otherwise; ``alpha`` is a number (``gc.prelu`` "
                  f"takes a tensor slope). {_UNARY_FLOAT}",
    "relu": "``max(x, 0)``, element-wise; keeps the input's dtype. Gradient ``g`` where ``x > 0`` and 0 "
            "elsewhere (``relu'(0) = 0``).",
    "hard_tanh": "``clip(x, -1, 1)``, element-wise; keeps the input's dtype. Gradient ``g`` strictly inside "
                 "(-1, 1), 0 outside and at the kinks.",
    "step": "The threshold unit: 1 where ``x > 0``, else 0, in the input's dtype. Its gradient is 0.",
    "abs": "``|x|``, element-wise; keeps the input's dtype. Gradient ``g * sign(x)`` (``abs'(0) = 0``).",
    "sign": "-1, 0 or 1 by the sign of ``x`` (NaN stays NaN); keeps the input's dtype. Its gradient is 0.",
    "neg": "``-x``, element-wise; keeps the input's dtype. Gradient ``-g``.",
    "square": "``x * x``, element-wise; keeps the input's dtype. Gradient ``2 x g``.",
    "pow": "``x ** y``. " + _ELEMENTWISE.format(sym="**") + " Gradients ``g y x**(y-1)`` and ``g log(x) x**y``.",
    "add": "``a + b`` (also the ``+`` operator). " + _ELEMENTWISE.format(sym="+") + " Gradient ``g`` to both, "
           "summed back over broadcast axes.",
    "sub": "``a - b`` (also ``-``). " + _ELEMENTWISE.format(sym="-") + " Gradients ``g`` and ``-g``.",
    "mul": "``a * b`` (also ``*``). " + _ELEMENTWISE.format(sym="*") + " Gradients ``g b`` and ``g a``.",
    "cast": "``x.astype(dtype)`` for a bool, integer or float ``dtype`` (else ``gc.DTypeError``). The gradient "
            "of a float-to-float cast is ``g`` cast back; casts to integers or bool have none.",
    "maximum": "The larger of ``a`` and ``b``. " + _ELEMENTWISE.format(sym="max") + " Ties split the "
               "gradient evenly between the two inputs; NaN propagates as in NumPy.",
    "minimum": "The smaller of ``a`` and ``b``. " + _ELEMENTWISE.format(sym="min") + " Ties split the "
               "gradient evenly between the two inputs; NaN propagates as in NumPy.",
    "equal": "``a == b`` element-wise. " + _COMPARISON.format(name="equal"),
    "not_equal": "``a != b`` element-wise. " + _COMPARISON.format(name="not_equal"),
    "greater": "``a > b`` element-wise (also the ``>`` operator). " + _COMPARISON.format(name="greater"),
    "greater_equal": "``a >= b`` element-wise (also ``>=``). " + _COMPARISON.format(name="greater_equal"),
    "less": "``a < b`` element-wise (also ``<``). " + _COMPARISON.format(name="less"),
    "less_equal": "``a <= b`` element-wise (also ``<=``). " + _COMPARISON.format(name="less_equal"),
    "zeros_like": "Zeros of ``x``'s shape and dtype (the shape is taken at run time when unknown). Its "
                  "gradient is 0.",
    "ones_like": "Ones of ``x``'s shape and dtype (the shape is taken at run time when unknown). Its "
                 "gradient is 0.",
    "sum": "Sum over ``axis``, keeping the dtype as ``np.sum`` does (bool and small ints widen). "
           + _REDUCTION,
    "mean": "Arithmetic mean over ``axis`` (float result; NaN for no entries, as NumPy). " + _REDUCTION,
    "max": "Largest entry over ``axis`` (an ``ExecutionError`` at run time for no entries). Tied maxima split "
           "the gradient evenly. " + _REDUCTION,
    "min": "Smallest entry over ``axis`` (an ``ExecutionError`` at run time for no entries). Tied minima split "
           "the gradient evenly. " + _REDUCTION,
    "prod": "Product over ``axis``. Its gradient is the product of the other entries (exact at zeros, "
            "and so is the second derivative). " + _REDUCTION,
    "logsumexp": "``log(sum(exp(x)))`` over ``axis`` without overflow (float result). Gradient "
                 "``g * softmax(x)`` over the axes. " + _REDUCTION,
    "softmax": "``exp(x) / sum(exp(x))`` along ``axis`` (an int), without overflow; float result. Raises "
               "``gc.ShapeError`` for an axis out of range.",
    "log_softmax": "``x - logsumexp(x)`` along ``axis`` (an int), without overflow or ``log(0)``; float "
                   "result. Raises ``gc.ShapeError`` for an axis out of range.",
    "matmul": "Matrix product with NumPy's rules (also ``a @ b``): 1-D operands are promoted and "
              "squeezed, batch dimensions broadcast. Raises ``gc.ShapeError`` naming both shapes when the "
              "inner dimensions differ.",
    "dot": "``np.dot``: the inner product of 1-D operands, the matrix product of 2-D ones. Raises "
           "``gc.ShapeError`` when the contracted dimensions differ.",
    "outer": "The outer product of two 1-D tensors (``np.outer``; other ranks are flattened, as NumPy).",
    "broadcast_to": "``x`` broadcast to ``shape`` (a tuple of known ints), as ``np.broadcast_to``. Its "
                    "gradient sums back to ``x``'s shape. Raises ``gc.ShapeError`` when ``x`` cannot "
                    "broadcast to ``shape``.",
}


def apply_docstrings(namespace: dict) -> None:
    """Give each function of ``namespace`` named in ``DOCS`` its docstring, unless it has its own."""
    for name, text in DOCS.items():
        function = namespace.get(name)
        if function is not None and len((function.__doc__ or "").strip()) < 40:  # none, or a bare formula
            function.__doc__ = text
