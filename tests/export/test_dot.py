import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.export import dot as dot_module
from tests.export.golden_model import build, check_golden

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse_with_graphviz(text: str) -> str:
    done = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_golden():
    outputs, _ = build()
    check_golden("model.dot", gc.to_dot(outputs))


def test_node_labels_show_op_name_shape_dtype():
    outputs, named = build()
    text = gc.to_dot(outputs)
    assert 'label="placeholder\\nx\\n(?, 3) float64"' in text
    assert 'label="variable\\nW\\n(3, 2) float64"' in text
    assert "matmul\\n(?, 2) float64" in text
    assert "(2,) float64" in text


def test_kinds_and_gradients_are_distinct():
    outputs, _ = build()
    text = gc.to_dot(outputs)
    node_lines = [line for line in text.splitlines() if re.match(r"\s+n\d+ \[", line)]
    assert any("shape=invhouse" in line for line in node_lines)   # placeholder
    assert any("shape=note" in line for line in node_lines)       # constant
    assert any("shape=cylinder" in line for line in node_lines)   # variable
    gradient_lines = [line for line in node_lines if 'fillcolor="#ffd6d1"' in line]
    forward_lines = [line for line in node_lines if 'fillcolor="#ffffff"' in line]
    assert len(gradient_lines) == 6 and len(forward_lines) >= 6
    assert "cluster_legend" in text and "gradient op" in text
    assert text.count("peripheries=2") == 3  # the outputs


def test_gradient_from_grad_is_coloured():
    x = gc.placeholder("x", ())
    y = gc.sin(x) * x
    g = gc.grad(y, x)
    text = gc.to_dot([y, g])
    assert 'fillcolor="#ffd6d1"' in text


def test_edge_positions_only_for_several_inputs():
    x = gc.placeholder("x", (3,))
    y = gc.exp(x) * x
    text = gc.to_dot(y)
    assert "n0 -> n1;" in text            # exp has one input: no label
    assert 'n1 -> n2 [label="0"];' in text
    assert 'n0 -> n2 [label="1"];' in text


def test_same_input_twice_gives_two_labelled_edges():
    x = gc.placeholder("x", (3,))
    text = gc.to_dot(x * x)
    assert 'n0 -> n1 [label="0"];' in text and 'n0 -> n1 [label="1"];' in text


def test_accepts_tensor_structure_and_function():
    x = gc.placeholder("x", (2,))
    y = gc.exp(x)
    assert gc.to_dot(y) == gc.to_dot([y]) == gc.to_dot({"y": y})
    fn = gc.function([x], [y])
    assert "exp" in fn.to_dot()
    assert gc.to_dot(fn) == fn.to_dot()


def test_strange_names_are_escaped():
    x = gc.placeholder('a "quoted"\\ name\nwith newline {x} <y>', (2,))
    text = gc.to_dot(gc.exp(x))
    assert '\\"quoted\\"\\\\ name\\nwith newline' in text
    if shutil.which("dot"):
        _parse_with_graphviz(text)


def test_deterministic_within_process():
    first = gc.to_dot(build()[0])
    second = gc.to_dot(build()[0])
    assert first == second


@needs_dot
def test_graphviz_parses_golden_and_gradient_graphs():
    outputs, named = build()
    svg = _parse_with_graphviz(gc.to_dot(outputs))
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    loss = named["loss"]
    grads = gc.grad(loss, [named["W"], named["b"]])
    _parse_with_graphviz(gc.to_dot([loss, *grads]))


@needs_dot
@pytest.mark.parametrize("extension", ["svg", "png", "pdf"])
def test_render_formats(tmp_path, extension):
    outputs, _ = build()
    path = tmp_path / f"graph.{extension}"
    assert gc.render(outputs, path) == str(path)
    data = path.read_bytes()
    magic = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF"}[extension]
    assert data.startswith(magic)


@needs_dot
def test_render_explicit_format_and_repr_svg(tmp_path):
    outputs, _ = build()
    path = tmp_path / "graph.out"
    gc.render(outputs, path, format="svg")
    assert b"<svg" in path.read_bytes()
    assert "<svg" in dot_module.repr_svg(outputs)
    x = gc.placeholder("x", (2,))
    assert "<svg" in gc.exp(x)._repr_svg_()
    assert "<svg" in gc.function([x], gc.exp(x))._repr_svg_()


def test_render_rejects_unknown_format(tmp_path):
    outputs, _ = build()
    with pytest.raises(ValueError, match="unsupported format"):
        gc.render(outputs, tmp_path / "graph.xyz")
    with pytest.raises(ValueError, match="extension"):
        gc.render(outputs, tmp_path / "graph")
    with pytest.raises(ValueError, match="unsupported format"):
        gc.render(outputs, tmp_path / "graph", format="svg; rm -rf /")


def test_render_without_graphviz_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(dot_module, "dot_executable", lambda: None)
    outputs, _ = build()
    with pytest.raises(gc.GraphcError, match="install Graphviz") as info:
        gc.render(outputs, tmp_path / "graph.svg")
    assert isinstance(info.value, dot_module.GraphvizNotFoundError)
    assert "apt-get install graphviz" in str(info.value)
    assert not (tmp_path / "graph.svg").exists()
    assert dot_module.repr_svg(outputs) is None  # Jupyter falls back to text


def test_repr_svg_skips_huge_graphs(monkeypatch):
    monkeypatch.setattr(dot_module, "REPR_SVG_LIMIT", 3)
    outputs, _ = build()
    assert dot_module.repr_svg(outputs) is None


def test_byte_identical_under_hash_seeds():
    program = ("import sys; from tests.export.golden_model import build; import graphc as gc; "
               "from tests.test_serialize import build_model; fn = build_model()[0]; "
               "o, _ = build(); sys.stdout.write(gc.to_dot(o) + gc.debugprint(o) + fn.to_dot() + fn.debugprint())")
    texts = []
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        texts.append(done.stdout)
    assert texts[0] == texts[1] == texts[2]
    outputs, _ = build()
    assert texts[0].decode().startswith(gc.to_dot(outputs) + gc.debugprint(outputs))


def test_large_graph_is_iterative():
    x = gc.placeholder("x", ())
    y = x
    for _ in range(3000):
        y = gc.sin(y)
    import sys as _sys
    limit = _sys.getrecursionlimit()
    _sys.setrecursionlimit(200)
    try:
        text = gc.to_dot(y, legend=False)
    finally:
        _sys.setrecursionlimit(limit)
    assert text.count("->") == 3000
    assert np.isfinite(len(text))
