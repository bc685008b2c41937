"""What a newcomer trips on (issue 15, point 8): messages that say what to do, docstrings with
the contract, a tidy namespace, the user's umask for saved files, rich display."""

import inspect
import os
import pydoc
import types

import numpy as np
import pytest

import graphc as gc


def test_numpy_ufuncs_on_a_tensor_say_which_graphc_op_to_use():
    x = gc.placeholder("x", (3,))
    with pytest.raises(TypeError, match=r"np\.exp .* use gc\.exp\(\.\.\.\)"):
        np.exp(x)
    with pytest.raises(TypeError, match=r"np\.add\.reduce .* use gc\.sum"):
        np.add.reduce(x)
    with pytest.raises(TypeError, match="graphc's ops"):
        np.hypot(x, x)  # (np.arctan2 has gc.arctan2 now)
    # NumPy operators still build graph ops, in either order, and == stays identity
    a = np.arange(3.0)
    for built, op in ((a + x, "add"), (a - x, "sub"), (a * x, "mul"), (a / x, "div"), (a ** x, "pow"),
                      (a < x, "less"), (np.float64(2.0) * x, "mul")):
        assert isinstance(built, gc.Tensor) and built.op == op
    assert (a == x) is False and (a != x) is True and {x: 1}[x] == 1
    np.testing.assert_allclose(gc.Session().run(a - x, {x: np.ones(3)}), a - 1)


def test_a_feed_dict_given_to_a_function_explains_positional_and_named_inputs():
    x = gc.placeholder("x", (2,))
    fn = gc.function([x], x * 2.0)
    with pytest.raises(gc.FeedError, match=r"positionally .* or by name .* Session\.run\(fetches, feed_dict\)"):
        fn({x: np.ones(2)})
    with pytest.raises(gc.FeedError, match=r"takes 1 input \('x'\), got 2 positional values"):
        fn(np.ones(2), np.ones(2))
    y = gc.placeholder("y", (2,))
    with pytest.raises(gc.FeedError, match=r"takes 2 inputs \('x', 'y'\)"):
        gc.function([x, y], x + y)(np.ones(2))


def test_every_public_name_has_a_docstring_with_its_contract():
    missing = []
    for name in gc.__all__:
        obj = getattr(gc, name)
        if not callable(obj):
            continue  # gc.inf and gc.nan are floats (documented in the package docstring)
        doc = obj.__doc__ or ""
        if len(doc.strip()) < 30:
            missing.append(name)
    assert not missing, f"no docstring: {missing}"
    assert "inf" in gc.__doc__ and "nan" in gc.__doc__


def test_help_of_optimize_shows_no_function_reprs():
    text = pydoc.render_doc(gc.optimize, renderer=pydoc.plaintext)
    assert "<function" not in text and "= None" in text
    assert "<function" not in str(inspect.signature(gc.optimize))


def test_submodules_do_not_shadow_or_clutter_the_namespace():
    x = gc.placeholder("x", (3,))
    assert gc.gradcheck(gc.sum(x * x), x, {x: np.ones(3)}) < 1e-6  # an alias of gc.check_grad
    with pytest.raises(TypeError, match=r"gc\.function\(inputs, outputs"):
        gc.compile([x], x)
    # only the public namespaces of the contract (gc.random, gc.optim, ...) are modules in dir(gc)
    assert not [n for n in dir(gc) if isinstance(getattr(gc, n), types.ModuleType) and n not in gc.__all__]
    assert "compile" not in dir(gc) and "gradcheck" not in dir(gc) and "serialize" not in dir(gc)
    import graphc.compile

    assert callable(graphc.compile.build_plan)  # the modules themselves still work


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_files_get_the_users_umask(tmp_path, umask):
    x = gc.placeholder("x", (2,))
    old = os.umask(umask)
    try:
        gc.save(gc.function([x], x * 2.0), tmp_path / "f.gcf")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.gcf").st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["f.gcf"]


def test_session_has_a_rich_display():
    session = gc.Session()
    x = gc.placeholder("x", (3,))
    w = gc.variable(np.ones(3), name="w")
    session.run(gc.sum(x * w), {x: np.ones(3)}, updates={w: w * 2.0})
    assert repr(session) == "<Session optimize=True compiled_plans=1 open>"
    html = session._repr_html_()
    assert "<table>" in html and "<td>x</td><td>w</td>" in html
    session.close()
    assert "closed" in repr(session)
