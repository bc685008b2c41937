import io
import re
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.printing import debugprint
from tests.export.golden_model import build, check_golden


def test_golden():
    outputs, _ = build()
    check_golden("model.debugprint.txt", gc.debugprint(outputs))


def test_shared_subtree_printed_once():
    x = gc.placeholder("x", (3,))
    shared = gc.exp(gc.sin(x))
    y = shared * shared + shared
    text = gc.debugprint(y)
    full = [line for line in text.splitlines() if "exp [id" in line and "(see above)" not in line]
    refs = [line for line in text.splitlines() if "exp [id" in line and "(see above)" in line]
    assert len(full) == 1 and len(refs) == 2
    assert text.count("sin") == 1
    ident = re.search(r"exp \[id (\w+)\]", full[0]).group(1)
    assert all(f"[id {ident}]" in line for line in refs)


def test_names_params_constants_and_gradients():
    x = gc.placeholder("x", (None, 2))
    w = gc.variable(np.ones((2, 2)), name="W")
    loss = gc.sum(gc.matmul(x, w), axis=1, keepdims=True).mean()
    g = gc.grad(loss, w)
    text = gc.debugprint([loss, g])
    assert "placeholder 'x'" in text and "variable 'W'" in text
    assert "sum{axes=(1,), keepdims=True}" in text
    assert "(grad)" in text
    assert "(?, 2) float64" in text


def test_file_argument_and_function():
    x = gc.placeholder("x", (2,))
    fn = gc.function([x], gc.exp(x) + 1.0)
    buffer = io.StringIO()
    text = fn.debugprint(file=buffer)
    assert buffer.getvalue() == text and "exp" in text
    assert gc.debugprint(fn) == text


def test_prints_to_stdout(capsys):
    x = gc.placeholder("x", (2,))
    text = gc.debugprint(gc.exp(x), file=sys.stdout)
    assert capsys.readouterr().out == text


def test_deep_chain_is_cut_into_blocks_and_stays_linear():
    x = gc.placeholder("x", ())
    y = x
    for _ in range(5000):
        y = gc.sin(y)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        text = debugprint(y, max_depth=32)
    finally:
        sys.setrecursionlimit(limit)
    lines = text.splitlines()
    assert sum("sin [id" in line for line in lines) == 5000 + 5000 // 32
    assert max(len(line) for line in lines) < 32 * 4 + 80
    assert len(text) < 5000 * 200
    assert "(continued below)" in text
    assert lines[-1].strip().endswith("float64")


def test_bad_depth():
    with pytest.raises(ValueError):
        debugprint(gc.placeholder("x"), max_depth=0)
