"""Small helpers the examples share: where they write files, and drawing graphs when Graphviz is present."""

from __future__ import annotations

import os
import shutil

import graphc as gc

#: where the examples write pictures and saved functions unless told otherwise
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def out_dir(path: str | None) -> str:
    """The output directory (created if needed)."""
    path = path or DEFAULT_OUT
    os.makedirs(path, exist_ok=True)
    return path


def have_dot() -> bool:
    """True when Graphviz's ``dot`` program is on PATH."""
    return shutil.which("dot") is not None


def draw(outputs, path: str) -> str | None:
    """Render ``outputs`` (tensors or a compiled Function) to ``path``; None, with a message, without Graphviz."""
    if not have_dot():
        print(f"  (no picture: Graphviz's `dot` is not installed, so {os.path.basename(path)} was not drawn; "
              "install it with `apt-get install graphviz`, `brew install graphviz` or `conda install graphviz`)")
        return None
    gc.render(outputs, path)
    print(f"  graph picture: {path}")
    return path
