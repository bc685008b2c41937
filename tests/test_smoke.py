import numpy as np

import graphc as gc


def test_quickstart_example_trains():
    import runpy

    result = runpy.run_path("examples/quickstart.py")["main"]()
    assert result["last_loss"] < 0.5 * result["first_loss"]


def test_grad_of_simple_graph():
    x = gc.placeholder("x", (3,))
    y = gc.sum(gc.exp(x) * 2.0)
    (g,) = gc.grad(y, [x])
    value = np.array([0.0, 1.0, -1.0])
    out = gc.Session().run(g, {x: value})
    np.testing.assert_allclose(out, 2 * np.exp(value))
