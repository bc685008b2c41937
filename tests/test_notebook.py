"""Notebook display: tensors and compiled functions show their graph as SVG in Jupyter.

Jupyter calls ``_repr_svg_``; when it returns None (Graphviz absent, or a graph too big to lay
out), Jupyter shows the ``text/plain`` representation, which is ``repr(obj)``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import graphc as gc
import graphc.export.dot as dot_module

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def small_graph():
    x = gc.placeholder("x", shape=(None, 3))
    w = gc.variable(np.ones((3, 2)), name="W")
    loss = gc.mean(gc.square(x @ w))
    grad_w = gc.grad(loss, w)
    return x, w, loss, grad_w


def no_dot(monkeypatch):
    monkeypatch.setattr(dot_module, "dot_executable", lambda: None)
    monkeypatch.setattr(dot_module.shutil, "which", lambda name, *args, **kwargs: None)


@needs_dot
def test_tensor_repr_svg_is_svg():
    _, _, loss, grad_w = small_graph()
    svg = loss._repr_svg_()
    assert isinstance(svg, str) and "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert "mean" in svg and "matmul" in svg
    assert "<svg" in grad_w._repr_svg_()


@needs_dot
def test_function_repr_svg_shows_the_optimized_graph():
    x, w, loss, grad_w = small_graph()
    fn = gc.function([x], loss, updates={w: w - 0.1 * grad_w})
    svg = fn._repr_svg_()
    assert isinstance(svg, str) and "<svg" in svg
    assert "W" in svg  # the variable being updated is drawn


def test_without_graphviz_repr_svg_is_none(monkeypatch):
    x, w, loss, grad_w = small_graph()
    fn = gc.function([x], loss)
    no_dot(monkeypatch)
    assert loss._repr_svg_() is None
    assert grad_w._repr_svg_() is None
    assert fn._repr_svg_() is None


def test_text_repr_is_what_jupyter_falls_back_to():
    _, _, loss, _ = small_graph()
    text = repr(loss)
    assert text.startswith("<Tensor mean") and "float64" in text


def _ipython_formatter():
    formatters = pytest.importorskip("IPython.core.formatters", reason="IPython is not installed")
    return formatters.DisplayFormatter()


@needs_dot
def test_ipython_displays_svg():
    _, _, loss, _ = small_graph()
    data, _ = _ipython_formatter().format(loss)
    assert "<svg" in data["image/svg+xml"]
    assert data["text/plain"] == repr(loss)


def test_ipython_falls_back_to_text_without_graphviz(monkeypatch):
    formatter = _ipython_formatter()
    x, _, loss, _ = small_graph()
    fn = gc.function([x], loss)
    no_dot(monkeypatch)
    for obj in (loss, fn):
        data, _ = formatter.format(obj)
        assert "image/svg+xml" not in data
        assert data["text/plain"] == repr(obj)


def test_big_graphs_are_not_drawn_inline(monkeypatch):
    x = gc.placeholder("x", shape=(4,))
    y = x
    for _ in range(30):
        y = gc.sin(y)
    monkeypatch.setattr(dot_module, "REPR_SVG_LIMIT", 10)
    assert y._repr_svg_() is None


@needs_dot
def test_loaded_and_unpickled_functions_display_too(tmp_path):
    import pickle

    x, w, loss, grad_w = small_graph()
    fn = gc.function([x], loss, updates={w: w - 0.1 * grad_w})
    gc.save(fn, str(tmp_path / "fn.gcf"))
    for copy in (gc.load(str(tmp_path / "fn.gcf")), pickle.loads(pickle.dumps(fn))):
        assert "<svg" in copy._repr_svg_()
        assert repr(copy) == repr(fn)


@needs_dot
def test_lists_of_tensors_display_as_one_graph_in_ipython():
    import types

    from IPython.core.formatters import DisplayFormatter

    from graphc.export.dot import register_ipython_display

    shell = types.SimpleNamespace(display_formatter=DisplayFormatter())  # what Jupyter's shell holds
    assert register_ipython_display(shell)
    x, _, loss, grad_w = small_graph()
    data, _ = shell.display_formatter.format([loss, grad_w])
    assert "<svg" in data["image/svg+xml"] and "mean" in data["image/svg+xml"]
    data, _ = shell.display_formatter.format((loss,))
    assert "<svg" in data["image/svg+xml"]
    data, _ = shell.display_formatter.format([1, 2])
    assert "image/svg+xml" not in data and data["text/plain"] == "[1, 2]"
    assert "image/svg+xml" not in shell.display_formatter.format([])[0]
