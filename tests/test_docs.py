"""The documentation runs: every ```python block of README.md and docs/*.md is executed.

Each Markdown file's blocks run in order in one namespace (so a page can build on its earlier
blocks), in a temporary directory. Nothing is skipped silently:

* a fence that looks like Python but is not spelled exactly ```python (``py``, ``python3``,
  ``Python``, ``python title=...``) fails the test, so no block escapes by a typo;
* a block whose first line is ``# requires: dot`` needs Graphviz; without it the whole page is
  reported as skipped, with the reason;
* text that is not meant to run uses ```text, ```bash or ```pycon.

The README's two commands and the CI script are checked too, and every relative link and
image in the docs must point at a file that exists.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(DOCS) if f.endswith(".md")) \
    if os.path.isdir(DOCS) else ["README.md"]

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
PYTHONISH = re.compile(r"^(py|python|python3|py3|ipython|ipython3)(\s|$|\{|,)", re.IGNORECASE)

README_RUN = 'python -m pip install -e ".[examples]" && python examples/train_mlp_digits.py'
README_TEST = 'python -m pip install -e ".[dev,examples]" && python -m pytest'


def read(page: str) -> str:
    with open(os.path.join(ROOT, page), encoding="utf-8") as handle:
        return handle.read()


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """(info string, first line number, code) of every fenced block, in order."""
    blocks, lines, k = [], text.split("\n"), 0
    while k < len(lines):
        opening = FENCE.match(lines[k])
        if not opening:
            k += 1
            continue
        fence, info, start = opening["fence"], opening["info"].strip(), k + 1
        indent = len(opening["indent"])  # a fence inside a list item: its lines lose that indent
        body = []
        k += 1
        while k < len(lines) and not (lines[k].strip().startswith(fence[0] * len(fence))
                                      and set(lines[k].strip()) == {fence[0]}):
            line = lines[k]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            k += 1
        if k == len(lines):
            raise AssertionError(f"an unclosed ``` block starting at line {start}")
        blocks.append((info, start + 1, "\n".join(body) + "\n"))
        k += 1
    return blocks


def test_fence_parser():
    text = "a\n```python\nx = 1\n```\n\n````text\n```python\n````\n```bash\nls\n```\n"
    assert code_blocks(text) == [("python", 3, "x = 1\n"), ("text", 7, "```python\n"), ("bash", 10, "ls\n")]
    indented = "- item:\n\n  ```python\n  if True:\n      y = 2\n  ```\n"
    assert code_blocks(indented) == [("python", 4, "if True:\n    y = 2\n")]


@pytest.mark.parametrize("page", PAGES)
def test_python_fences_are_spelled_python(page):
    for info, line, _ in code_blocks(read(page)):
        if PYTHONISH.match(info) and info != "python":
            pytest.fail(f"{page}:{line}: fence ```{info}: write ```python so the block runs, "
                        f"or ```text/```pycon if it must not")


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = [(line, code) for info, line, code in code_blocks(read(page)) if info == "python"]
    if not blocks:
        pytest.skip(f"{page} has no python blocks")  # reported, and only for pages without code
    if any(code.startswith("# requires: dot") for _, code in blocks) and shutil.which("dot") is None:
        pytest.skip(f"{page} draws graphs and Graphviz's dot is not installed")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{os.path.basename(page)[:-3]}"}
    for line, code in blocks:
        compiled = compile(code, f"{page}:{line}", "exec")
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output):
                exec(compiled, namespace)  # noqa: S102 - running our own documentation is the point
        except Exception as exc:
            raise AssertionError(f"the block at {page}:{line} failed: {type(exc).__name__}: {exc}\n"
                                 f"--- block ---\n{code}--- its output ---\n{output.getvalue()}") from exc


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    base = os.path.dirname(os.path.join(ROOT, page))
    for target in re.findall(r"\]\(([^)\s]+)\)", read(page)) + re.findall(r'src="([^"]+)"', read(page)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        assert os.path.exists(os.path.join(base, path)), f"{page}: broken link {target!r}"


def test_readme_commands():
    readme = read("README.md")
    assert README_RUN in readme
    assert README_TEST in readme
    assert readme.index(README_RUN) < readme.index(README_TEST), "the main job comes first"


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        script = handle.read()
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert README_TEST in commands, "the CI script must run exactly the README's test command"
    assert "graphviz" in script


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_make_figures_draws_every_picture(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", os.path.join(DOCS, "make_figures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(out=str(tmp_path)) == 0
    for name in module.figures():
        assert (tmp_path / name).read_text().lstrip().startswith("<?xml")
        assert os.path.exists(os.path.join(DOCS, "img", name)), f"docs/img/{name} is not committed"


def test_ops_page_names_every_registered_op():
    """docs/ops.md mentions every op graphc can build (checked in a fresh interpreter, so ops that
    other tests register for themselves do not count)."""
    import subprocess
    import sys

    code = ("import graphc, graphc.sympy_bridge, graphc.passes.fuse\n"
            "from graphc.op import REGISTRY\n"
            "print(' '.join(sorted(REGISTRY)))")
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.split()
    assert len(names) > 50
    page = read(os.path.join("docs", "ops.md"))
    missing = [name for name in names if not re.search(rf"`{name}[`(]", page)]
    assert not missing, f"docs/ops.md does not describe: {', '.join(missing)}"
