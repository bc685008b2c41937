import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.sympy_bridge import SympyElementwise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X, Y = sympy.symbols("x y", real=True)


def _random_graph(rng: random.Random, leaves, depth: int):
    """A random smooth scalar expression over ``leaves`` (defined for every real input)."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(leaves) if rng.random() < 0.8 else rng.choice([0.5, 2.0, -1.5, 3.0])
    unary = [gc.sin, gc.cos, gc.tanh, gc.sigmoid, gc.softplus, gc.square, gc.neg,
             lambda a: gc.exp(gc.tanh(a)), lambda a: gc.log(gc.square(a) + 1.0),
             lambda a: gc.sqrt(gc.square(a) + 0.5), lambda a: gc.silu(a), lambda a: gc.log1p(gc.square(a)),
             lambda a: gc.expm1(gc.sin(a)), lambda a: gc.pow(gc.square(a) + 1.0, 1.5)]
    binary = [gc.add, gc.sub, gc.mul, lambda a, b: gc.div(a, gc.square(b) + 1.0),
              lambda a, b: gc.pow(gc.sigmoid(a) + 0.5, b)]
    if rng.random() < 0.45:
        result = rng.choice(unary)(_random_graph(rng, leaves, depth - 1))
    else:
        result = rng.choice(binary)(_random_graph(rng, leaves, depth - 1), _random_graph(rng, leaves, depth - 1))
    return gc.add(result, 0.0) if not isinstance(result, gc.Tensor) else result


def _value(expr, point):
    return float(expr.subs({X: point[0], Y: point[1]}).evalf(30))


@pytest.mark.parametrize("seed", range(12))
def test_oracle_first_and_second_derivatives(seed):
    rng = random.Random(seed)
    x, y = gc.placeholder("x"), gc.placeholder("y")
    f = _random_graph(rng, [x, y], depth=4)
    f = f + x * 0.25  # make sure x is connected
    gx, gy = gc.grad(f, [x, y])
    gxx = gc.grad(gx, x)
    f_sym = gc.to_sympy(f)
    assert f_sym.free_symbols <= {X, Y}
    oracle = {"gx": sympy.diff(f_sym, X), "gy": sympy.diff(f_sym, Y), "gxx": sympy.diff(f_sym, X, 2)}
    ours = {"gx": gc.to_sympy(gx), "gy": gc.to_sympy(gy), "gxx": gc.to_sympy(gxx)}
    session = gc.Session()
    points = np.random.default_rng(seed).uniform(-1.5, 1.5, size=(3, 2))
    for point in points:
        run = session.run([f, gx, gy, gxx], {x: point[0], y: point[1]})
        # the graph's own value agrees with its SymPy form (to_sympy is not checked against itself)
        assert np.isclose(run[0], _value(f_sym, point), rtol=1e-9, atol=1e-9)
        for key, value in zip(("gx", "gy", "gxx"), run[1:]):
            expected = _value(oracle[key], point)
            assert np.isclose(_value(ours[key], point), expected, rtol=1e-8, atol=1e-8), key
            assert np.isclose(value, expected, rtol=1e-7, atol=1e-8), key


def test_oracle_simplifies_to_zero_for_a_small_expression():
    x = gc.placeholder("x")
    f = gc.sin(x) * gc.exp(x) / (1.0 + x * x)
    difference = gc.to_sympy(gc.grad(f, x)) - sympy.diff(gc.to_sympy(f), X)
    assert sympy.simplify(difference) == 0


def test_to_sympy_names_and_errors():
    x = gc.placeholder("alpha", (3,))
    w = gc.variable(np.ones(3), name="w")
    expr = gc.to_sympy(gc.relu(x) * w + gc.constant(np.full(3, 2.0)))
    assert {s.name for s in expr.free_symbols} == {"alpha", "w"}
    with pytest.raises(ValueError, match="not element-wise|no element-wise"):
        gc.to_sympy(gc.sum(x))
    with pytest.raises(ValueError, match="several different values"):
        gc.to_sympy(x + gc.constant([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        gc.to_sympy(gc.matmul(gc.placeholder("m", (2, 2)), gc.placeholder("n", (2, 2))))
    other = gc.placeholder("alpha", (3,))
    with pytest.raises(ValueError, match="named"):
        gc.to_sympy(x + other)
    s = sympy.Symbol("s")
    assert gc.to_sympy(x + other, symbols={other: s}) == sympy.Symbol("alpha", real=True) + s


def test_to_sympy_piecewise_ops():
    x = gc.placeholder("x")
    for op, fn in [(gc.relu, lambda v: max(v, 0.0)),
                   (lambda a: gc.leaky_relu(a, 0.1), lambda v: v if v > 0 else 0.1 * v),
                   (gc.abs, abs), (lambda a: gc.where(a > 1.0, a, -a), lambda v: v if v > 1 else -v),
                   (lambda a: gc.clip(a, -0.5, 0.5), lambda v: min(max(v, -0.5), 0.5)),
                   (lambda a: gc.gelu(a, approximate=True), None), (gc.gelu, None), (gc.elu, None)]:
        graph = op(x)
        expr = gc.to_sympy(graph)
        for v in (-1.3, 0.3, 2.2):
            got = float(expr.subs(X, v))
            run = float(gc.Session().run(graph, {x: v}))
            assert np.isclose(got, run, rtol=1e-12), (graph.op, v)
            if fn is not None:
                assert np.isclose(got, fn(v))


@pytest.mark.parametrize("seed", range(6))
def test_from_sympy_random_expressions(seed):
    rng = random.Random(100 + seed)
    atoms = [X, Y, sympy.Rational(1, 3), sympy.Integer(2), sympy.pi]
    funcs = [sympy.sin, sympy.cos, sympy.tanh, sympy.exp, lambda a: sympy.log(a ** 2 + 1),
             lambda a: sympy.sqrt(a ** 2 + 1), sympy.Abs, lambda a: sympy.Max(a, 0), sympy.erf,
             lambda a: 1 / (1 + a ** 2), sympy.sinh, sympy.cosh, lambda a: sympy.Piecewise((a, a > 0), (a / 2, True))]

    def make(depth):
        if depth == 0 or rng.random() < 0.25:
            return rng.choice(atoms)
        if rng.random() < 0.5:
            return rng.choice(funcs)(make(depth - 1))
        a, b = make(depth - 1), make(depth - 1)
        return rng.choice([a + b, a - b, a * b, a * b ** 3, a - 2 * b])

    expr = make(4) + X
    x, y = gc.placeholder("x"), gc.placeholder("y")
    graph = gc.from_sympy(expr, {X: x, Y: y})
    session = gc.Session()
    for point in np.random.default_rng(seed).uniform(-1.5, 1.5, size=(3, 2)):
        got = session.run(graph, {x: point[0], y: point[1]})
        assert np.isclose(got, _value(expr, point), rtol=1e-9, atol=1e-12)
        assert np.isclose(_value(gc.to_sympy(graph), point), _value(expr, point), rtol=1e-9, atol=1e-12)


def test_from_sympy_keeps_float32_and_numbers():
    x = gc.placeholder("x", (2,), dtype="float32")
    graph = gc.from_sympy(2 * X ** 2 + sympy.Rational(1, 2), {X: x})
    assert graph.dtype == np.float32
    np.testing.assert_allclose(gc.Session().run(graph, {x: np.array([1.0, 2.0], np.float32)}), [2.5, 8.5])
    constant = gc.from_sympy(sympy.Integer(3), {})
    assert gc.Session().run(constant) == 3.0
    with pytest.raises(ValueError, match="not in symbols"):
        gc.from_sympy(X + Y, {X: x})
    with pytest.raises(ValueError, match="not supported"):
        gc.from_sympy(sympy.gamma(X), {X: x})


MISH = gc.elementwise("mish", lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x))))


def test_elementwise_values_and_derivatives_to_third_order():
    x = gc.placeholder("x", (None,))
    points = np.linspace(-3, 3, 7)
    y = MISH(x)
    assert y.op == "mish" and isinstance(y.primitive, SympyElementwise)
    g1 = gc.grad(gc.sum(y), x)
    g2 = gc.grad(gc.sum(g1), x)
    g3 = gc.grad(gc.sum(g2), x)
    values = gc.Session().run([y, g1, g2, g3], {x: points})
    t = sympy.Symbol("t", real=True)
    mish = t * sympy.tanh(sympy.log(1 + sympy.exp(t)))
    for order, got in enumerate(values):
        expected = [float(sympy.diff(mish, t, order).subs(t, p).evalf(30)) for p in points]
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert gc.check_grad(gc.sum(g1), x, {x: points}) < 1e-5
    assert gc.to_sympy(y) == mish.subs(t, X)


def test_elementwise_two_inputs_broadcasting_and_dtypes():
    bump = gc.elementwise("bump", lambda a, b: a * sympy.exp(-b ** 2))
    a = gc.placeholder("a", (3, 1), dtype="float32")
    b = gc.placeholder("b", (4,), dtype="float32")
    out = bump(a, b)
    assert out.shape == (3, 4) and out.dtype == np.float32
    av = np.arange(3, dtype=np.float32).reshape(3, 1)
    bv = np.linspace(-1, 1, 4).astype(np.float32)
    np.testing.assert_allclose(gc.Session().run(out, {a: av, b: bv}), av * np.exp(-bv ** 2), rtol=1e-6)
    ga, gb = gc.grad(gc.sum(out), [a, b])
    va, vb = gc.Session().run([ga, gb], {a: av, b: bv})
    np.testing.assert_allclose(va, np.exp(-bv ** 2).sum() * np.ones((3, 1)), rtol=1e-5)
    np.testing.assert_allclose(vb, (av * -2 * bv * np.exp(-bv ** 2)).sum(axis=0), rtol=1e-5)
    with pytest.raises(gc.ShapeError):
        bump(a)


def test_elementwise_special_cases():
    three = gc.elementwise("three", lambda x: sympy.Integer(3))
    x = gc.placeholder("x", (2,))
    np.testing.assert_array_equal(gc.Session().run(three(x), {x: np.ones(2)}), [3.0, 3.0])
    assert gc.Session().run(gc.grad(gc.sum(three(x)), x), {x: np.ones(2)}).tolist() == [0.0, 0.0]
    absolute = gc.elementwise("absolute", lambda v: sympy.Abs(v))
    grad = gc.grad(gc.sum(absolute(x)), x)
    np.testing.assert_array_equal(gc.Session().run(grad, {x: np.array([-2.0, 3.0])}), [-1.0, 1.0])
    step = gc.elementwise("hs", lambda v: sympy.Heaviside(v))
    assert gc.Session().run(gc.grad(gc.sum(step(x)), x), {x: np.array([-2.0, 3.0])}).tolist() == [0.0, 0.0]
    integer_input = gc.placeholder("n", (2,), dtype="int64")
    assert MISH(integer_input).dtype == np.float64
    with pytest.raises(ValueError, match="not supported"):
        gc.elementwise("g", lambda v: sympy.gamma(v))
    with pytest.raises(ValueError, match="symbol"):
        gc.elementwise("h", lambda v: v + sympy.Symbol("other"))
    with pytest.raises(ValueError, match="built-in op"):
        gc.elementwise("log", lambda v: sympy.log(v + 1))
    with pytest.raises(TypeError):
        gc.elementwise("star", lambda *v: v[0])
    assert gc.elementwise("star", lambda *v: v[0] * v[1], nargs=2).arity == 2


def test_elementwise_pickle_save_and_load(tmp_path):
    x = gc.placeholder("x", (None,))
    loss = gc.sum(MISH(x))
    fn = gc.function([x], [MISH(x), gc.grad(loss, x)])
    points = np.linspace(-2, 2, 5)
    expected = fn(points)
    for a, b in zip(pickle.loads(pickle.dumps(fn))(points), expected):
        np.testing.assert_array_equal(a, b)
    gc.save(fn, tmp_path / "mish.gcf")
    for a, b in zip(gc.load(tmp_path / "mish.gcf")(points), expected):
        np.testing.assert_array_equal(a, b)


def test_elementwise_saved_file_is_deterministic_and_loads_in_a_fresh_process(tmp_path):
    program = """
import sys, sympy, numpy as np, graphc as gc
mish = gc.elementwise("mish", lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x))))
x = gc.placeholder("x", (None,))
fn = gc.function([x], [mish(x), gc.grad(gc.sum(mish(x)), x)])
gc.save(fn, sys.argv[1])
"""
    blobs = []
    for seed in ("1", "99"):
        path = tmp_path / f"m{seed}.gcf"
        done = subprocess.run([sys.executable, "-c", program, str(path)], cwd=ROOT, capture_output=True,
                              timeout=120, env=dict(os.environ, PYTHONHASHSEED=seed))
        assert done.returncode == 0, done.stderr.decode()
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1]
    loader = ("import sys, numpy as np, graphc as gc; fn = gc.load(sys.argv[1]); "
              "print(float(fn(np.array([0.5]))[1][0]))")
    done = subprocess.run([sys.executable, "-c", loader, str(tmp_path / "m1.gcf")], cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    t = sympy.Symbol("t")
    expected = float(sympy.diff(t * sympy.tanh(sympy.log(1 + sympy.exp(t))), t).subs(t, 0.5))
    assert abs(float(done.stdout) - expected) < 1e-12


@pytest.mark.parametrize("program", [
    (("x", 0), ("fn", "__import__", 1)),
    (("x", 3),),
    (("x", 0), ("x", 0)),
    (("fn", "exp", 1),),
    (("int", "1e5"),),
    (("int", "9" * 5000),),
    (("float", "inf"),),
    (("rat", "1", "0"),),
    (("x", 0), ("fn", "pow", 3)),
    (("const", "os"),),
    ("x0",),
    (),
    (("int", "10"), ("int", "9" * 300), ("fn", "pow", 2)),
    (("float", "0x1.8p+1"), ("rat", "1", "9" * 300), ("fn", "pow", 2)),
])
def test_saved_formula_programs_are_validated(tmp_path, program):
    import json

    from tests.test_serialize import assemble, split

    x = gc.placeholder("x", (2,))
    fn = gc.function([x], MISH(x), optimize=False)
    from graphc.serialize import encode

    _, _, raw, data = split(encode(fn))
    manifest = json.loads(raw)
    node = next(n for n in manifest["nodes"] if n.get("op") == "sympy_elementwise")

    def encode_value(value):
        if isinstance(value, tuple):
            return ["tuple", [encode_value(v) for v in value]]
        if isinstance(value, int):
            return ["int", value]
        return ["str", value]

    node["params"]["expr"] = encode_value(program)
    with pytest.raises(gc.LoadError):
        path = tmp_path / "bad.gcf"
        path.write_bytes(assemble(manifest, data))
        gc.load(path)


def test_cast_between_float_dtypes_is_the_identity():
    # a SymPy Symbol is also a sympy Boolean: the cast must look at the input's dtype
    x = gc.placeholder("x", (3,))
    assert gc.to_sympy(gc.cast(x, "float32")) == sympy.Symbol("x", real=True)
    assert gc.to_sympy(gc.cast(x > 0, "float64")) == sympy.Piecewise((1, sympy.Symbol("x", real=True) > 0), (0, True))


def test_from_sympy_explains_a_namesake_symbol_with_other_assumptions():
    x = gc.placeholder("x", (3,))
    expr = gc.to_sympy(gc.exp(x))  # a real symbol x
    with pytest.raises(ValueError, match=r"another symbol named 'x'.*sympy.Symbol\('x', real=True\)"):
        gc.from_sympy(expr, {sympy.Symbol("x"): x})
    assert gc.from_sympy(expr, {sympy.Symbol("x", real=True): x}).op == "exp"


# ---- API contract section 15: every element-wise op has a SymPy form and comes back from it -----------

SECTION15 = [  # (function, arity, a point in its domain, compare with SymPy's derivative (SymPy cannot evaluate Mod's))
    (gc.tan, 1, (0.4,), True), (gc.arcsin, 1, (0.3,), True), (gc.arccos, 1, (-0.2,), True),
    (gc.arctan, 1, (1.7,), True), (gc.arctan2, 2, (0.5, -1.5), True), (gc.sinh, 1, (0.8,), True),
    (gc.cosh, 1, (-0.6,), True), (gc.arcsinh, 1, (2.5,), True), (gc.arccosh, 1, (1.8,), True),
    (gc.arctanh, 1, (0.6,), True), (gc.exp2, 1, (1.3,), True), (gc.log2, 1, (3.0,), True),
    (gc.log10, 1, (7.0,), True), (gc.reciprocal, 1, (-0.7,), True), (gc.rsqrt, 1, (2.2,), True),
    (gc.floor, 1, (-1.3,), False), (gc.ceil, 1, (1.3,), False), (gc.trunc, 1, (-1.7,), False),
    (gc.round, 1, (2.5,), False), (gc.mod, 2, (-3.5, 1.25), False), (gc.floor_divide, 2, (-3.5, 1.25), False),
    (gc.logaddexp, 2, (0.3, -1.2), True), (gc.isnan, 1, (0.5,), False), (gc.isinf, 1, (0.5,), False),
    (gc.isfinite, 1, (0.5,), False), (gc.logical_not, 1, (0.0,), False),
]


@pytest.mark.parametrize("fn,arity,point,smooth", SECTION15, ids=[c[0].__name__ for c in SECTION15])
def test_section15_ops_round_trip_through_sympy(fn, arity, point, smooth):
    x, y = gc.placeholder("x"), gc.placeholder("y")
    graph = fn(*[x, y][:arity])
    expr = gc.to_sympy(graph)
    assert expr.free_symbols <= {X, Y}
    back = gc.from_sympy(expr, {X: x, Y: y})
    feeds = dict(zip([x, y], point))
    value = gc.Session().run(graph, feeds)
    if type(back.primitive) is type(graph.primitive):  # a SymPy function of its own: the very same op
        np.testing.assert_array_equal(gc.Session().run(back, feeds), value)
    else:  # log(x) / log(2), pow(2, x), 1 / x ...: the same function, other roundings
        assert np.isclose(gc.Session().run(back, feeds), value, rtol=1e-14)
    if smooth:  # SymPy's value and derivative agree with graphc's
        at = {X: point[0], Y: point[-1]}
        assert np.isclose(float(expr.subs(at).evalf(30)), value, rtol=1e-12)
        g = gc.grad(graph, x)
        assert np.isclose(gc.Session().run(g, feeds), float(sympy.diff(expr, X).subs(at).evalf(30)), rtol=1e-10)


@pytest.mark.parametrize("fn", [gc.logical_and, gc.logical_or, gc.logical_xor], ids=lambda f: f.__name__)
def test_logic_round_trips_through_sympy(fn):
    x, y = gc.placeholder("x"), gc.placeholder("y")
    graph = fn(x > 0.0, y > 0.0)
    back = gc.from_sympy(gc.to_sympy(graph), {X: x, Y: y})
    assert back.op == graph.op
    session = gc.Session()
    for point in [(1.0, -1.0), (1.0, 2.0), (-1.0, -2.0)]:
        feeds = dict(zip([x, y], point))
        assert session.run(back, feeds) == session.run(graph, feeds)


def test_inverse_map_is_derived_from_the_ops():
    from graphc.op import REGISTRY
    from graphc.sympy_bridge import _op_of_function

    table = _op_of_function()
    assert table[sympy.tanh][0] is REGISTRY["tanh"] and table[sympy.Mod][0] is REGISTRY["mod"]
    assert table[sympy.atan2] == (REGISTRY["arctan2"], 2)
    assert gc.from_sympy(sympy.tan(X), {X: gc.placeholder("x")}).op == "tan"  # not sin / cos any more
