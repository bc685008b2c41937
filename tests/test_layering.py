"""graphc's layers import downward only, at module level and inside functions (docs/architecture.md).

Every import statement of every module (module level, function level, under ``TYPE_CHECKING``,
and ``importlib.import_module`` of a literal name) is read with ``ast``, never by importing.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
from pathlib import Path

import pytest

import graphc
from graphc.hooks import Hook

PACKAGE_DIR = Path(graphc.__file__).parent

#: the layers, lowest first: a module may import modules of its own layer or of a lower one.
#: A new module needs an entry here (the layer whose services it uses and provides).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("graphc.errors", "graphc.hooks", "graphc.version", "graphc.types", "graphc.tensor", "graphc.op",
              "graphc.leaves", "graphc.structure", "graphc.graph")),
    ("ops", ("graphc.custom", "graphc.ops", "graphc.ops.*", "graphc.random")),
    ("autodiff", ("graphc.autodiff", "graphc.scan")),
    ("passes", ("graphc.passes", "graphc.passes.*")),
    ("compile", ("graphc.compile", "graphc.compile.*", "graphc.numerics")),
    ("function", ("graphc.function", "graphc.session", "graphc.gradcheck", "graphc.optim", "graphc.init",
                  "graphc.data")),
    ("serialization", ("graphc.pickling", "graphc.serialize")),
    ("front", ("graphc.export", "graphc.export.*", "graphc.printing", "graphc.sympy_bridge", "graphc.lazy",
               "graphc.cli", "graphc.dask")),
    ("package", ("graphc", "graphc.__main__")),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return rank
    return None


def _target(base: str, name: str | None) -> str:
    """The graphc module an import refers to: ``from graphc.x import y`` is graphc.x.y if that is a module."""
    if name is not None and f"{base}.{name}" in MODULES:
        return f"{base}.{name}"
    return base


def imports(module: str) -> list[tuple[int, str]]:
    """(line, imported graphc module) for every import in ``module``, wherever it is written."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "graphc"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == "graphc":
                found += [(node.lineno, _target(base, alias.name)) for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and str(node.args[0].value).startswith("graphc")):
            found.append((node.lineno, node.args[0].value))
    return [(line, target) for line, target in found if target != module]


def test_every_module_has_a_layer():
    missing = [module for module in MODULES if layer_of(module) is None]
    assert not missing, f"modules without a layer (add them to LAYERS in {__file__}): {missing}"


def test_no_import_reaches_upward():
    upward = []
    for module in MODULES:
        rank = layer_of(module)
        for line, target in imports(module):
            target_rank = layer_of(target)
            if rank is not None and target_rank is not None and target_rank > rank:
                upward.append(f"{MODULES[module].relative_to(PACKAGE_DIR.parent)}:{line}: {module} "
                              f"({LAYERS[rank][0]}) imports {target} ({LAYERS[target_rank][0]})")
    assert not upward, "upward imports (an upper layer must provide the service, see graphc/hooks.py):\n" + \
        "\n".join(upward)


def test_modules_import_each_other_without_cycles():
    graph = {module: sorted({target for _, target in imports(module) if target in MODULES}) for module in MODULES}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for root in graph:
        if root in state:
            continue
        path, stack = [root], [iter(graph[root])]
        state[root] = 1
        while stack:
            for target in stack[-1]:
                if state.get(target) == 1:
                    cycle = path[path.index(target):] + [target]
                    pytest.fail("import cycle: " + " -> ".join(cycle))
                if target not in state:
                    state[target] = 1
                    path.append(target)
                    stack.append(iter(graph[target]))
                    break
            else:
                state[path.pop()] = 2
                stack.pop()


def test_the_walker_sees_function_level_imports():
    # the checks above are only as good as this: a function-level import is an edge too
    edges = dict((target, line) for line, target in imports("graphc.lazy"))
    assert "graphc.sympy_bridge" in edges and "graphc.export.nx" in edges
    assert layer_of("graphc.ops.nn") == layer_of("graphc.ops") < layer_of("graphc.autodiff")


def test_every_hook_is_provided_by_its_layer():
    declared: dict[int, tuple[str, str, Hook]] = {}  # a hook is declared by the lowest module holding it
    for module in sorted(MODULES, key=lambda m: (layer_of(m) if layer_of(m) is not None else len(LAYERS), m)):
        if module.endswith("__main__"):
            continue
        for name, value in vars(importlib.import_module(module)).items():
            if isinstance(value, Hook):
                declared.setdefault(id(value), (module, name, value))
    assert len(declared) >= 5
    for module, name, hook in declared.values():
        assert hook.provided, f"{module}.{name} is not provided"
        provider = layer_of(hook.provider)
        assert provider is not None and provider > layer_of(module), (module, name, hook.provider)
    from graphc.autodiff import FORWARD_REWRITE
    from graphc.passes.stabilize import stabilize_for_grad

    assert FORWARD_REWRITE.implementation is stabilize_for_grad


def test_a_hook_resolves_to_its_provided_namespace():
    import tokenize

    from graphc.hooks import Hook
    from graphc.tensor import OPERATORS

    assert OPERATORS.resolve().add is OPERATORS.add  # what Tensor's operators read
    hook = Hook("the tokenize module, for a test", "tokenize")  # importing it does not fill the hook
    with pytest.raises(RuntimeError, match="not imported yet"):
        hook.resolve()
    hook.provide(tokenize)
    assert hook.resolve() is tokenize and hook.generate_tokens is tokenize.generate_tokens
