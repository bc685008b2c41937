import networkx as nx
import numpy as np

import graphc as gc
from graphc.tensor import toposort
from tests.export.golden_model import build


def test_attributes_and_acyclic():
    outputs, named = build()
    graph = gc.to_networkx(outputs)
    assert isinstance(graph, nx.DiGraph)
    assert nx.is_directed_acyclic_graph(graph)
    order = toposort(outputs)
    assert graph.number_of_nodes() == len(order)
    for k, node in enumerate(order):
        attrs = graph.nodes[k]
        assert attrs["op"] == node.op
        assert attrs["name"] == node.name
        assert attrs["shape"] == node.shape
        assert attrs["dtype"] == str(node.dtype)
        assert attrs["is_gradient"] == node.is_gradient
    kinds = {attrs["kind"] for _, attrs in graph.nodes(data=True)}
    assert kinds == {"placeholder", "constant", "variable", "op"}
    assert sum(attrs["is_gradient"] for _, attrs in graph.nodes(data=True)) == 8  # 6 ops + 2 constants
    outs = [k for k, attrs in graph.nodes(data=True) if attrs["outputs"]]
    assert len(outs) == 3


def test_edges_go_from_input_to_consumer_with_position():
    x = gc.placeholder("x", (3,))
    w = gc.variable(np.ones(3), name="w")
    y = gc.exp(x) - w
    graph = gc.to_networkx(y)
    ops = {attrs["op"]: k for k, attrs in graph.nodes(data=True)}
    assert graph.edges[ops["exp"], ops["sub"]]["position"] == 0
    assert graph.edges[ops["variable"], ops["sub"]]["position"] == 1
    assert graph.edges[ops["placeholder"], ops["exp"]]["position"] == 0
    assert not graph.has_edge(ops["sub"], ops["exp"])


def test_same_input_twice():
    x = gc.placeholder("x", (3,))
    graph = gc.to_networkx(x * x)
    assert graph.edges[0, 1]["positions"] == (0, 1)
    assert graph.edges[0, 1]["position"] == 0


def test_gradient_graph_and_function():
    x = gc.placeholder("x", (4,))
    w = gc.variable(np.ones(4), name="w")
    loss = gc.sum(gc.tanh(x * w))
    g = gc.grad(loss, w)
    graph = gc.to_networkx([loss, g])
    assert nx.is_directed_acyclic_graph(graph)
    assert any(attrs["is_gradient"] for _, attrs in graph.nodes(data=True))
    fn = gc.function([x], loss, updates={w: w - 0.1 * g})
    fgraph = fn.to_networkx()
    assert nx.is_directed_acyclic_graph(fgraph)
    assert fgraph.number_of_nodes() >= 4


def test_networkx_is_not_imported_by_graphc():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, graphc; "
                           "print('networkx' in sys.modules, 'sympy' in sys.modules)"],
                          capture_output=True, timeout=60)
    assert done.stdout.decode().split() == ["False", "False"]
