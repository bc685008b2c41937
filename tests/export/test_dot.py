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
    assert text.count("peripheries=2") == 3 + 1  # the outputs, and the legend's output


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
    # the structure only changes what the output says it is
    assert gc.to_dot(y, legend=False).replace("output", "output 0") == gc.to_dot([y], legend=False)
    assert gc.to_dot({"y": y}).replace("output 'y'", "output 0") == gc.to_dot([y])
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


# ---- issue 15, point 9: pictures that teach -------------------------------------------------------

def _training_step():
    x = gc.placeholder("x", (None, 3))
    w = gc.variable(np.ones((3, 2)), name="W")
    b = gc.variable(np.zeros(2), name="b")
    loss = gc.mean(gc.square(x @ w + b))
    gw, gb = gc.grad(loss, [w, b])
    return gc.function([x], {"loss": loss, "gW": gw}, updates={w: w - 0.1 * gw, b: b - 0.1 * gb})


def _node_line(text, pattern):
    return [line for line in text.splitlines() if re.match(r"\s+n\d+ \[", line) and re.search(pattern, line)]


def test_updates_say_which_variable_they_write():
    text = gc.to_dot(_training_step())
    variables = {name: re.search(r"(n\d+) \[", line).group(1)
                 for name in ("W", "b") for line in _node_line(text, rf"variable\\n{name}\\n")}
    for name, node in variables.items():
        (value,) = _node_line(text, rf"\\nupdate {name}\"")
        source = re.search(r"(n\d+) \[", value).group(1)
        assert f'{source} -> {node} [label="update {name}", style=dashed' in text
    assert "legend_update" in text  # the legend explains the dashed edge


def test_outputs_say_what_they_are():
    text = gc.to_dot(_training_step())
    assert len(_node_line(text, r"output 'loss'.*peripheries=2")) == 1
    assert len(_node_line(text, r"output 'gW'.*peripheries=2")) == 1
    x = gc.placeholder("x", (2,))
    assert "output 1[0]" in gc.to_dot([x * 2.0, [gc.exp(x)]])


def test_the_legend_explains_outlines_edge_numbers_and_red_borders():
    text = gc.to_dot(_training_step())
    legend = text[text.index("subgraph cluster_legend"):]
    assert "double outline" in legend and "input's position" in legend and "red border" in legend
    assert "cluster_legend" not in gc.to_dot(_training_step(), legend=False)
    assert "cluster_legend" not in _training_step().to_dot(legend=False)


def test_op_parameters_are_readable():
    x = gc.placeholder("x", (None, 3))
    labels = {
        "getitem[0]\\n": x[0], "getitem[:, 1:3]": x[:, 1:3], "getitem[..., None]": x[..., None],
        "einsum ,z->z (scalar times vector)": gc.einsum(",z->z", gc.constant(2.0), x[0]),
        "einsum bi,ij->bj (matrix product)": gc.einsum("bi,ij->bj", x, gc.constant(np.ones((3, 2)))),
        "sum axes=(1,), keepdims=True": gc.sum(x, axis=1, keepdims=True),
        "mean axes=(0, 1)\\n": gc.mean(x),  # keepdims=False, the default, is left out
    }
    for label, tensor in labels.items():
        text = gc.to_dot(tensor, legend=False)
        assert label in text, (label, text)
    assert "index=" not in gc.to_dot(x[0]) and "subscripts=" not in gc.to_dot(gc.einsum("ij->ji", x))


def test_wide_graphs_are_laid_out_left_to_right():
    x = gc.placeholder("x", ())
    wide = gc.stack([gc.sin(x * float(k)) for k in range(40)])
    assert "rankdir=LR" in gc.to_dot(wide)
    assert "rankdir=TB" in gc.to_dot(gc.sin(x))
    assert "rankdir=TB" in gc.to_dot(wide, rankdir="TB")
    with pytest.raises(ValueError, match="rankdir"):
        gc.to_dot(wide, rankdir="sideways")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render_can_leave_the_legend_out(tmp_path):
    step = _training_step()
    gc.render(step, tmp_path / "with.svg")
    gc.render(step, tmp_path / "without.svg", legend=False)
    assert b"legend" in (tmp_path / "with.svg").read_bytes()
    assert b"legend" not in (tmp_path / "without.svg").read_bytes()
