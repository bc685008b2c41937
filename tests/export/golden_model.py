"""A small fixed model for the golden-file tests of the exporters.

Its gradient nodes are built by hand under ``building_gradient`` (not by
``gc.grad``), so the golden files depend on the exporters, not on how autodiff
happens to shape a gradient graph.
"""

from __future__ import annotations

import os

import numpy as np

import graphc as gc
from graphc.tensor import building_gradient

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "golden")


def build():
    """(outputs, tensors by name) of a one-layer model with a hand-written gradient."""
    x = gc.placeholder("x", shape=(None, 3))
    w = gc.variable(np.arange(6.0).reshape(3, 2), name="W")
    b = gc.variable(np.zeros(2, dtype=np.float32), name="b", dtype="float64")
    h = gc.tanh(gc.matmul(x, w) + b)
    loss = gc.mean(gc.square(h), )
    scaled = loss * 0.5
    with building_gradient():
        dh = h * 2.0
        dz = dh * (1.0 - h * h)
        dw = gc.matmul(gc.transpose(x), dz)
    odd = gc.constant(np.array([1, 2]), name='say "hi"\\')
    outputs = [scaled, dw, gc.sum(dz, axis=0) + gc.cast(odd, "float64")]
    return outputs, {"x": x, "W": w, "b": b, "h": h, "loss": loss}


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN_DIR, name)


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with the golden file; GRAPHC_UPDATE_GOLDEN=1 rewrites it."""
    path = golden_path(name)
    if os.environ.get("GRAPHC_UPDATE_GOLDEN") == "1" or not os.path.exists(path):
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
    with open(path, encoding="utf-8") as handle:
        expected = handle.read()
    assert text == expected, f"{name} differs from its golden file (GRAPHC_UPDATE_GOLDEN=1 to update)"
