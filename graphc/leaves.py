"""Leaves of the graph: placeholders (fed), constants (fixed) and variables (state).

They are defined in :mod:`graphc.op`, next to ``apply``, which wraps Python values as constants.
"""

from graphc.op import Constant, Leaf, Placeholder, VariableLeaf, constant, placeholder, variable

__all__ = ["Constant", "Leaf", "Placeholder", "VariableLeaf", "constant", "placeholder", "variable"]
