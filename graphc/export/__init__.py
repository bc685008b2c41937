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
from graphc.printing import debugprint
from graphc.tensor import SVG

SVG.provide(repr_svg)
VIEWS.provide(SimpleNamespace(to_dot=to_dot, to_networkx=to_networkx, debugprint=debugprint,
                                       repr_svg=repr_svg))
