"""Light front doors for the parts of graphc with heavy dependencies.

``import graphc`` must stay fast: networkx is imported only by
:mod:`graphc.export.nx` and SymPy only by :mod:`graphc.sympy_bridge`, and each
is imported the first time one of these functions is called.
"""

from __future__ import annotations

from graphc.op import LAZY_OP_MODULES

# gc.load imports the SymPy bridge when a file holds one of its ops (sympy is not imported before)
LAZY_OP_MODULES["sympy_elementwise"] = "graphc.sympy_bridge"

__all__ = ["elementwise", "from_sympy", "to_networkx", "to_sympy"]


def to_networkx(outputs):
    """A ``networkx.DiGraph`` of the graph computing ``outputs`` (see :mod:`graphc.export.nx`)."""
    from graphc.export.nx import to_networkx as implementation

    return implementation(outputs)


def to_sympy(tensor, symbols=None):
    """A SymPy expression of an element-wise/scalar graph (see :mod:`graphc.sympy_bridge`)."""
    from graphc.sympy_bridge import to_sympy as implementation

    return implementation(tensor, symbols)


def from_sympy(expr, symbols):
    """A graph computing the SymPy expression ``expr``; ``symbols`` maps SymPy symbols to tensors."""
    from graphc.sympy_bridge import from_sympy as implementation

    return implementation(expr, symbols)


def elementwise(name: str, fn, nargs: int | None = None):
    """A new element-wise op from a Python function of SymPy symbols; SymPy derives its gradient."""
    from graphc.sympy_bridge import elementwise as implementation

    return implementation(name, fn, nargs)
