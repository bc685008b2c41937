"""``import graphc`` stays light: the upper layers load on first use, op classes are cheap dataclasses.

The import's speed is measured by bench/import_time.py; these tests check the behaviour that
makes it light and that the lazy names behave as the eager ones did.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

import graphc as gc
from graphc.op import REGISTRY, Op, op_dataclass


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_loads_only_the_core_and_the_ops():
    loaded = _fresh("import sys, graphc; print(' '.join(sorted(m for m in sys.modules if m.startswith('graphc'))))")
    for heavy in ("graphc.compile", "graphc.function", "graphc.passes", "graphc.serialize", "graphc.autodiff",
                  "graphc.export", "graphc.optim", "graphc.scan", "graphc.random", "graphc.pickling"):
        assert heavy not in loaded.split(), heavy
    assert "graphc.ops.elementwise" in loaded.split()


@pytest.mark.parametrize("first", ["import graphc.function", "import graphc.scan", "import graphc.compile",
                                   "from graphc.printing import debugprint", "import graphc.serialize",
                                   "import graphc.export"])
def test_importing_a_submodule_first_keeps_the_public_names(first):
    out = _fresh(f"{first}\nimport types, graphc as gc\n"
                 "print(type(gc.function).__name__, type(gc.scan).__name__, callable(gc.compile), "
                 "isinstance(gc.random, types.ModuleType), gc.Function.__name__)")
    assert out == "function function True True Function"


def test_every_public_name_resolves_lazily_in_a_fresh_process():
    out = _fresh("import graphc as gc\nmissing = [n for n in gc.__all__ if not hasattr(gc, n)]\n"
                 "print(missing, sorted(dir(gc)) == sorted(set(gc.__all__) | {'__version__'}))")
    assert out == "[] True"


def test_a_lazy_name_is_the_defining_modules_object():
    import graphc.autodiff
    import graphc.serialize

    assert gc.grad is graphc.autodiff.grad and gc.load is graphc.serialize.load
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        gc.no_such_name  # noqa: B018 - the attribute access is the test


def test_hooks_import_their_provider_on_first_use():
    out = _fresh("import graphc as gc, numpy as np, pickle\n"
                 "x = gc.placeholder('x', (2,))\n"
                 "f = gc.function([x], gc.sin(x))\n"  # gc.function loads no exporter and no pickling
                 "import sys; before = 'graphc.pickling' in sys.modules\n"
                 "g = pickle.loads(pickle.dumps(f))\n"
                 "print(before, 'graphc.pickling' in sys.modules, g(np.ones(2)).tolist() == f(np.ones(2)).tolist())")
    assert out == "False True True"


# ---- op_dataclass ---------------------------------------------------------------------------

@op_dataclass
class _Scaled(Op):
    """A test op with fields, a ClassVar, a field excluded from comparison and a __post_init__
    (no ``name``: it stays out of the registry)."""

    kind: ClassVar[str] = "scaled"
    factor: float
    axis: int = 0
    note: tuple = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if self.factor == 0:
            raise ValueError("factor must not be 0")


@op_dataclass
class _Child(_Scaled):
    extra: int = 1


def test_op_dataclass_behaves_as_a_frozen_dataclass():
    op = _Scaled(2.0, axis=1, note=("a",))
    assert dataclasses.is_dataclass(op) and [f.name for f in dataclasses.fields(op)] == ["factor", "axis", "note"]
    assert repr(op) == "_Scaled(factor=2.0, axis=1)"
    assert op == _Scaled(2.0, 1) and hash(op) == hash(_Scaled(2.0, 1, ("b",)))  # note: compare=False
    assert op != _Scaled(2.0, 2) and op != _Child(2.0, 1)
    assert dataclasses.replace(op, axis=3) == _Scaled(2.0, 3) and "kind" not in vars(op)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.axis = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del op.axis
    with pytest.raises(ValueError, match="factor must not be 0"):
        _Scaled(0)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'factor'"):
        _Scaled()
    with pytest.raises(TypeError, match="multiple values for argument 'factor'"):
        _Scaled(1.0, factor=2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        _Scaled(1.0, bogus=2)
    with pytest.raises(TypeError, match="takes from 2 to 4 positional arguments but 5 were given"):
        _Scaled(1.0, 2, (), 4)
    child = _Child(3.0, extra=5)
    assert (child.factor, child.axis, child.extra) == (3.0, 0, 5) and child.__match_args__[-1] == "extra"


def test_fields_with_factories_or_derived_values_take_the_generic_init():
    @op_dataclass
    class Derived(Op):
        size: int
        items: tuple = dataclasses.field(default_factory=tuple)
        total: int = dataclasses.field(default=0, init=False)

        def __post_init__(self):
            object.__setattr__(self, "total", self.size + len(self.items))

    op = Derived(2, items=(1, 2))
    assert (op.size, op.items, op.total) == (2, (1, 2), 4) and Derived(1).items == ()
    assert [f.name for f in dataclasses.fields(op)] == ["size", "items", "total"]
    with pytest.raises(TypeError, match="missing required argument: 'size'"):
        Derived()
    with pytest.raises(TypeError, match="multiple values"):
        Derived(1, size=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'total'"):
        Derived(1, total=3)
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        Derived(1, (), 3)


def test_classes_with_the_same_fields_share_init_code_but_not_defaults():
    @op_dataclass
    class One(Op):
        axis: int = 1

    @op_dataclass
    class Two(Op):
        axis: int = 2

    assert One().axis == 1 and Two().axis == 2 and One(5).axis == 5
    assert One.__init__.__code__ is Two.__init__.__code__ and One.__init__.__qualname__.endswith("One.__init__")
    assert One.__eq__.__code__ is Two.__eq__.__code__ and One(1) != Two(1) and hash(One(3)) == hash(Two(3))


def test_a_field_named_like_a_method_argument_takes_the_generic_methods():
    @op_dataclass
    class Odd(Op):
        other: int = 0

    assert Odd(1) == Odd(1) and Odd(1) != Odd(2) and hash(Odd(1)) == hash((1,))
    assert repr(Odd(2)).endswith("Odd(other=2)")


def test_a_real_dataclass_may_subclass_an_op_dataclass():
    @dataclasses.dataclass(frozen=True)
    class Real(_Scaled):
        more: int = 2

    op = Real(1.5, more=4)
    assert (op.factor, op.more) == (1.5, 4) and op == Real(1.5, more=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.more = 1


def test_op_dataclass_refuses_what_a_dataclass_refuses():
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @op_dataclass
        class Bad(Op):
            a: int = 0
            b: int

    with pytest.raises(TypeError, match="cannot overwrite attribute __setattr__"):
        @op_dataclass
        class Mutable(Op):
            def __setattr__(self, name, value):
                object.__setattr__(self, name, value)


def test_every_built_in_op_class_is_a_frozen_dataclass():
    import graphc.random  # noqa: F401 - registers its ops
    import graphc.scan  # noqa: F401

    for name, cls in REGISTRY.items():
        if cls.__module__.startswith("graphc.") and cls.__module__ != "graphc.op" or name == "output":
            assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
            own = [a for a, t in cls.__dict__.get("__annotations__", {}).items() if "ClassVar" not in str(t)]
            assert set(own) <= {f.name for f in dataclasses.fields(cls)}, name  # no annotation left out


def test_op_values_are_unchanged_by_the_cheap_dataclasses():
    x = gc.placeholder("x", (4,))
    y = gc.sum(gc.leaky_relu(x, 0.1) * gc.softmax(x, axis=0)) + gc.mean(gc.cumsum(x, axis=0))
    value = np.array([-1.0, 0.5, 2.0, -3.0])
    f = gc.function([x], [y, gc.grad(y, x)])
    expected = float(np.sum(np.where(value > 0, value, 0.1 * value) * np.exp(value) / np.exp(value).sum())
                     + np.mean(np.cumsum(value)))
    assert f(value)[0] == pytest.approx(expected, rel=1e-12)
