import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.cli import EXIT_BAD_FILE, EXIT_RENDER, EXIT_RUN, EXIT_USAGE, main
from graphc.export import dot as dot_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def saved_file(tmp_path):
    x = gc.placeholder("x", (None, 3))
    w = gc.variable(np.ones((3, 2)), name="W")
    loss = gc.mean(gc.square(gc.tanh(gc.matmul(x, w))))
    g = gc.grad(loss, w)
    fn = gc.function([x], {"loss": loss}, updates={w: w - 0.1 * g})
    path = tmp_path / "model.gcf"
    gc.save(fn, path)
    return path


def test_info(saved_file, capsys):
    assert main(["info", str(saved_file)]) == 0
    out = capsys.readouterr().out
    assert "inputs (1):\n  0: x (?, 3) float64" in out
    assert "outputs (1):" in out
    assert "variables (1):\n  W (3, 2) float64" in out
    assert "updates (1):\n  W <- " in out
    assert "nodes by op:" in out and "placeholder" in out and "variable" in out


def test_dot_and_print(saved_file, capsys):
    assert main(["dot", str(saved_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "graphc" {') and out.rstrip().endswith("}")
    assert out == gc.to_dot(gc.load(saved_file))
    assert main(["dot", "--no-legend", str(saved_file)]) == 0
    assert "cluster_legend" not in capsys.readouterr().out
    assert main(["print", str(saved_file)]) == 0
    assert "placeholder 'x'" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render(saved_file, tmp_path, capsys):
    out = tmp_path / "graph.svg"
    assert main(["render", str(saved_file), "-o", str(out)]) == 0
    assert b"<svg" in out.read_bytes()
    assert main(["render", str(saved_file), "-o", str(tmp_path / "g.bin"), "-f", "png"]) == 0
    assert (tmp_path / "g.bin").read_bytes().startswith(b"\x89PNG")


def test_render_errors(saved_file, tmp_path, capsys, monkeypatch):
    assert main(["render", str(saved_file), "-o", str(tmp_path / "graph.xyz")]) == EXIT_USAGE
    assert "unsupported format" in capsys.readouterr().err
    monkeypatch.setattr(dot_module, "dot_executable", lambda: None)
    assert main(["render", str(saved_file), "-o", str(tmp_path / "graph.svg")]) == EXIT_RENDER
    assert "install Graphviz" in capsys.readouterr().err


def test_bad_files(tmp_path, saved_file, capsys):
    missing = tmp_path / "missing.gcf"
    assert main(["info", str(missing)]) == EXIT_BAD_FILE
    assert "cannot read" in capsys.readouterr().err
    garbage = tmp_path / "garbage.gcf"
    garbage.write_bytes(b"hello world")
    for command in ("info", "dot", "print"):
        assert main([command, str(garbage)]) == EXIT_BAD_FILE
        assert "not a valid graphc file" in capsys.readouterr().err
    truncated = tmp_path / "truncated.gcf"
    truncated.write_bytes(saved_file.read_bytes()[:-10])
    assert main(["info", str(truncated)]) == EXIT_BAD_FILE
    assert "truncated" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == EXIT_BAD_FILE


def test_usage_errors(capsys):
    assert main([]) == EXIT_USAGE
    assert main(["frobnicate"]) == EXIT_USAGE
    assert main(["render", "x.gcf"]) == EXIT_BAD_FILE  # -o is optional: the file is what is missing
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_python_dash_m_and_script(saved_file):
    done = subprocess.run([sys.executable, "-m", "graphc", "info", str(saved_file)], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert b"nodes by op:" in done.stdout
    done = subprocess.run([sys.executable, "-m", "graphc", "info", str(saved_file) + ".nope"], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == EXIT_BAD_FILE and b"graphc: error" in done.stderr
    script = shutil.which("graphc")
    if script is not None:
        done = subprocess.run([script, "dot", str(saved_file)], capture_output=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith(b"digraph")


# ---- issue 15, point 8: the CLI a newcomer expects ------------------------------------------------

def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"graphc {gc.__version__}"


def test_info_json(saved_file, capsys):
    import json

    assert main(["info", "--json", str(saved_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"] == [{"name": "x", "shape": [None, 3], "dtype": "float64"}]
    assert info["variables"] == [{"name": "W", "shape": [3, 2], "dtype": "float64"}]
    assert info["updates"][0]["variable"] == "W" and len(info["outputs"]) == 1
    assert info["nodes"]["total"] == sum(info["nodes_by_op"].values())


def test_render_error_names_the_command_line_option(saved_file, tmp_path, capsys):
    assert main(["render", str(saved_file), "-o", str(tmp_path / "graph")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "-f FORMAT" in err and "format=" not in err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_render_output_is_optional_and_the_legend_can_go(saved_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["render", str(saved_file)]) == 0
    assert b"<svg" in (tmp_path / "model.svg").read_bytes()
    assert main(["render", str(saved_file), "-f", "pdf"]) == 0
    assert (tmp_path / "model.pdf").read_bytes().startswith(b"%PDF")
    assert main(["render", str(saved_file), "--no-legend", "-o", "bare.svg"]) == 0
    assert b"legend" not in (tmp_path / "bare.svg").read_bytes()
    assert b"legend" in (tmp_path / "model.svg").read_bytes()


def test_run_with_npy_files_and_literals(saved_file, tmp_path, capsys):
    import json

    data = np.arange(6.0).reshape(2, 3) / 10
    np.save(tmp_path / "x.npy", data)
    expected = gc.load(saved_file)(data)["loss"]
    assert main(["run", str(saved_file), "-i", f"x={tmp_path / 'x.npy'}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("output 0: () float64\n") and np.isclose(float(out.split("\n")[1]), expected)
    assert main(["run", str(saved_file), "--input", "x=[[0.0, 0.1, 0.2], [0.3, 0.4, 0.5]]", "--json",
                 "--save", str(tmp_path / "out")]) == 0
    assert np.isclose(json.loads(capsys.readouterr().out)[0], expected)
    assert np.isclose(np.load(tmp_path / "out" / "output_0.npy"), expected)
    assert gc.load(saved_file).plan.inputs[0].name == "x"  # the file was not written


def test_run_errors(saved_file, tmp_path, capsys):
    assert main(["run", str(saved_file)]) == EXIT_USAGE
    assert "missing 'x'" in capsys.readouterr().err
    assert main(["run", str(saved_file), "-i", "x=[[1, 2, 3]]", "-i", "y=1"]) == EXIT_USAGE
    assert "unknown 'y'" in capsys.readouterr().err
    assert main(["run", str(saved_file), "-i", "x=__import__('os')"]) == EXIT_USAGE  # literals only
    assert "neither a .npy file nor a literal" in capsys.readouterr().err
    assert main(["run", str(saved_file), "-i", "x=[[1, 2]]"]) == EXIT_USAGE
    assert "does not match the declared (?, 3)" in capsys.readouterr().err
    assert main(["run", str(saved_file), "-i", "x"]) == EXIT_USAGE
    v = gc.placeholder("v", (None,))
    picked = tmp_path / "picked.gcf"
    gc.save(gc.function([v], gc.take(v, gc.constant(np.array([5])))), picked)
    assert main(["run", str(picked), "-i", "v=[1.0, 2.0]"]) == EXIT_RUN
    assert "running" in capsys.readouterr().err


@pytest.fixture
def model_file(tmp_path):
    x = gc.placeholder("x", (None, 3))
    w = gc.variable(np.ones((3, 2)), name="W")
    loss = gc.mean(gc.square(gc.tanh(x @ w))).with_name("loss")
    train = gc.function([x], loss, updates=gc.optim.sgd(loss, [w], 0.1, momentum=0.9))
    predict = gc.function([x], gc.softmax(x @ w))
    path = tmp_path / "model.gcf"
    gc.save({"train": train, "predict": predict}, path)
    return path


def test_info_lists_every_function_of_a_model_file(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "functions (2): train, predict" in out
    assert "function 'train':\n  inputs (1):\n    0: x (?, 3) float64" in out
    assert "function 'predict':\n  inputs (1):" in out
    assert "    W <- sub (3, 2) float64\n    W/momentum <- add (3, 2) float64" in out
    assert "shared variables (1):\n  W (3, 2) float64: train, predict" in out
    assert "named gradients (1):\n    d(loss)/d(W) matmul (3, 2) float64" in out


def test_dot_and_print_of_a_model_file(model_file, capsys):
    assert main(["print", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("function 'train':\n") and "\nfunction 'predict':\nsoftmax" in out
    assert "'d(loss)/d(W)'" in out
    assert main(["print", "--function", "predict", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("softmax") and "d(loss)" not in out
    assert main(["dot", str(model_file)]) == 0
    both = capsys.readouterr().out
    assert both.count("label=\"variable\\nW\\n") == 1      # the shared variable is drawn once
    assert "d(loss)/d(W)" in both
    assert main(["dot", "--function", "predict", str(model_file)]) == 0
    assert "d(loss)/d(W)" not in capsys.readouterr().out
    assert main(["dot", "--function", "nope", str(model_file)]) == EXIT_USAGE
    assert "no function 'nope' in this file; it holds train, predict" in capsys.readouterr().err


def test_function_option_on_a_single_function_file(saved_file, capsys):
    assert main(["print", "--function", "train", str(saved_file)]) == EXIT_USAGE
    assert "holds a single function" in capsys.readouterr().err


def test_run_and_info_json_on_a_model_file(tmp_path, capsys):
    import json

    x = gc.placeholder("x", (None, 2))
    w = gc.variable(np.ones(2), name="w")
    prediction = x @ w
    loss = gc.mean(gc.square(prediction))
    model = {"train": gc.function([x], loss, updates={w: w - 0.1 * gc.grad(loss, w)}),
             "predict": gc.function([x], prediction)}
    path = tmp_path / "model.gcf"
    gc.save(model, path)
    assert main(["run", str(path), "-i", "x=[[1.0, 2.0]]"]) == EXIT_USAGE
    assert "--function NAME" in capsys.readouterr().err
    assert main(["run", str(path), "--function", "predict", "-i", "x=[[1.0, 2.0]]", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [[3.0]]
    assert main(["info", "--json", str(path)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"train", "predict"}
