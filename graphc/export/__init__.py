"""Export of graphs to other tools: Graphviz DOT (``dot``) and networkx (``nx``)."""
