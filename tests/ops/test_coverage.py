"""Every op in ``graphc.op.REGISTRY`` is covered by the test tables.

An op (a registered class of graphc's own) must appear in the graph of

* a value case: a ``Case`` in a table of ``tests/ops/test_*.py`` (module-level lists of cases, which the
  modules run through ``check_value``); an op met only inside gradients counts when it is in the gradient
  graph of a differentiable case (that gradient's value is checked against finite differences);
* a first-order gradient case: a case with ``grad=True`` (or it is in the gradient graph of a case
  checked to second order, which differentiates it);
* a second-order gradient case: a case with ``grad=True`` and ``second=True``;
* the save/load case: ``_every_op_function`` in ``tests/test_serialize.py`` (saved, loaded and pickled,
  with and without optimization, values compared bit for bit).

Ops without a gradient are exempt from the gradient rows: ``zero_gradient`` ops and ops that do not
override ``Op.vjp`` (they raise ``GradientError``).
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import graphc as gc
import tests.ops as table_package
from graphc.op import REGISTRY, Op
from graphc.tensor import toposort

from .util import Case, diff_positions, placeholders


def _op_names(tensors) -> set[str]:
    """The registry names of the ops in the graph computing ``tensors`` (leaves left out)."""
    return {type(node.primitive).name for node in toposort(list(tensors)) if node.inputs}


def _table_cases() -> list[Case]:
    cases: dict[int, Case] = {}
    for info in pkgutil.iter_modules(table_package.__path__):
        if info.name.startswith("test_") and info.name != "test_coverage":
            module = importlib.import_module(f"{table_package.__name__}.{info.name}")
            for value in vars(module).values():
                if isinstance(value, (list, tuple)):
                    cases.update((id(c), c) for c in value if isinstance(c, Case))
    return list(cases.values())


@pytest.fixture(scope="module")
def coverage() -> dict[str, set[str]]:
    found = {"value": set(), "first": set(), "second": set(), "save": set()}
    for case in _table_cases():
        inputs = placeholders(case, np.float64)
        out = case.build(*inputs)
        forward = _op_names([out])
        found["value"] |= forward
        positions = diff_positions(case)
        if case.grad and positions:
            found["first"] |= forward
            grads = gc.grad(gc.sum(gc.cast(out, "float64") * 1.5), [inputs[k] for k in positions])
            backward = _op_names(grads)
            found["value"] |= backward
            if case.second:
                found["second"] |= forward
                found["first"] |= backward
    for module, builder in SAVE_CASES:
        for optimize in (False, True):
            fn, _ = getattr(importlib.import_module(module), builder)(optimize)
            found["save"] |= {type(node.primitive).name for node in fn.plan.graph_order() if node.inputs}
    return found


#: the functions whose graphs the save/load tests store, load, pickle and compare (optimized and not)
SAVE_CASES = (("tests.test_serialize", "_every_op_function"), ("tests.test_serialize", "_section15_function"),
              ("tests.ops.test_conv", "_cnn_function"), ("tests.test_scan", "_save_case"))

#: what the tables still lack for ops that came before this test, by op: remove an entry when its case is
#: added (test_known_gaps_are_still_gaps fails until then). New ops get no entry: they come with their cases.
KNOWN_GAPS: dict[str, tuple[str, ...]] = {}


def _ours() -> dict[str, type[Op]]:
    return {name: cls for name, cls in sorted(REGISTRY.items())
            if cls.__module__.split(".")[0] == "graphc" and cls.__dict__.get("name") == name}


def _differentiable(cls: type[Op]) -> bool:
    return not cls.zero_gradient and cls.vjp is not Op.vjp


def _family(cls: type[Op]) -> str:
    """The test module an op's cases belong in (by the module that defines it)."""
    module = cls.__module__.rsplit(".", 1)[-1]
    return f"tests/ops/test_{module}.py" if cls.__module__.startswith("graphc.ops.") else "tests/ops/test_internal.py"


def test_registry_is_walked():
    ours = _ours()
    assert len(ours) > 80 and {"tanh", "arctan2", "mod", "fused", "softmax_minus_one_hot"} <= set(ours)


def _missing(name: str, cls: type[Op], coverage: dict[str, set[str]]) -> list[str]:
    """What the tables lack for op ``name``, each said as what to add."""
    family = _family(cls)
    missing = []
    if name not in coverage["value"]:
        missing.append(f"a value case: add Case({name!r}, build, numpy_reference, [Spec(shape, ...)]) to a table "
                       f"(a module-level list of Case) in {family}")
    if _differentiable(cls):
        if name not in coverage["first"]:
            missing.append(f"a first-order gradient case: a Case with grad=True whose graph uses {name!r} "
                           f"(float inputs with diff=True) in {family}")
        if name not in coverage["second"]:
            missing.append(f"a second-order gradient case: a Case with grad=True and second=True whose graph "
                           f"uses {name!r} in {family}")
    if name not in coverage["save"]:
        missing.append(f"a save/load case: a tensor made by {name!r} in the parts list of _every_op_function "
                       f"in tests/test_serialize.py (or another of SAVE_CASES in tests/ops/test_coverage.py)")
    return missing


def _kind(message: str) -> str:
    return {"a value case": "value", "a first-order gradient case": "first",
            "a second-order gradient case": "second", "a save/load case": "save"}[message.split(":")[0]]


@pytest.mark.parametrize("name", [n for n in _ours() if n not in ("placeholder", "constant", "variable")])
def test_every_op_has_value_gradient_and_save_cases(name, coverage):
    cls = _ours()[name]
    missing = [m for m in _missing(name, cls, coverage) if _kind(m) not in KNOWN_GAPS.get(name, ())]
    assert not missing, (f"op {name!r} ({cls.__module__}.{cls.__name__}) is not covered by the test tables; add "
                         + "; and ".join(missing)
                         + ". (A piecewise-constant op declares zero_gradient = True and needs no gradient case.)")


def test_an_op_without_cases_is_reported(coverage):
    from dataclasses import dataclass

    from graphc.ops.elementwise import Elementwise

    @dataclass(frozen=True)
    class Uncovered(Elementwise):
        name, ufunc = "uncovered_example", np.cbrt

        def vjp(self, node, g):  # pragma: no cover - never differentiated
            return (g,)

    try:
        missing = _missing("uncovered_example", Uncovered, coverage)
        assert [m.split(":")[0] for m in missing] == ["a value case", "a first-order gradient case",
                                                     "a second-order gradient case", "a save/load case"]
        assert all("uncovered_example" in m for m in missing)
        Uncovered.zero_gradient = True  # piecewise constant: no gradient rows asked for
        assert len(_missing("uncovered_example", Uncovered, coverage)) == 2
    finally:
        del REGISTRY["uncovered_example"]


def test_known_gaps_are_still_gaps(coverage):
    """An entry of KNOWN_GAPS whose case now exists must go (so the list says what is really missing)."""
    ours = _ours()
    for name, kinds in KNOWN_GAPS.items():
        assert name in ours, f"KNOWN_GAPS names {name!r}, which is not a registered op"
        still = {_kind(m) for m in _missing(name, ours[name], coverage)}
        added = sorted(set(kinds) - still)
        assert not added, f"op {name!r} now has its {added} case(s): remove them from KNOWN_GAPS"
