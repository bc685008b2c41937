"""Export of graphs to other tools: Graphviz DOT (``dot``) and networkx (``nx``).

Importing this package provides the graph views of the lower layers through their hooks:
``Tensor._repr_svg_`` (``graphc.tensor.SVG``) and ``Function.to_dot``, ``to_networkx``,
``debugprint`` and ``_repr_svg_`` (``graphc.function.VIEWS``). networkx is still imported only
when ``to_networkx`` is first called.
"""

from types import SimpleNamespace

from graphc.export.dot import repr_svg, to_dot
from graphc.function import VIEWS
from graphc.lazy import to_networkx
from graphc.tensor import SVG


def _debugprint(outputs, file=None):
    """``graphc.printing.debugprint``, imported on first use: printing imports this package's
    ``_common``, so importing it here would be a cycle when printing is imported first."""
    from graphc.printing import debugprint

    return debugprint(outputs, file=file)


SVG.provide(repr_svg)
VIEWS.provide(SimpleNamespace(to_dot=to_dot, to_networkx=to_networkx, debugprint=_debugprint,
                                       repr_svg=repr_svg))
