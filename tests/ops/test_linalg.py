"""Linear algebra: matmul (1-D, 2-D, batched), dot (N-D), outer, einsum; table-driven."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.types import format_shape

from .util import (
    Case,
    Spec,
    assert_static_matches,
    check_jvp,
    check_second_order,
    check_third_order,
    check_with_check_grad,
    max_grad_error,
    numeric_gradient,
    run,
    table_tests,
    with_specials,
)

FLOATS = [np.float64, np.float32]

MATMUL_SHAPES = [
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 4)), ((3,), (2, 3, 4)),
    ((2, 3, 4), (4,)), ((2, 1, 2, 3), (3, 3, 4)), ((1, 2, 3), (2, 3, 1)), ((4, 3), (2, 1, 3, 2)),
]

DOT_SHAPES = [
    ((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((2, 2, 3), (3,)),
    ((), (2, 3)), ((2, 3), ()), ((2, 3, 4), (3, 4, 2)),
]

OUTER_SHAPES = [((3,), (4,)), ((2, 2), (3,)), ((), (2,))]

EINSUM = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("ij->ji", [(2, 3)]),
    ("ij", [(2, 3)]),
    ("ji", [(2, 3)]),
    ("ii->", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("ii->i", [(3, 3)]),
    ("iij->j", [(2, 2, 3)]),
    ("iji->ij", [(2, 3, 2)]),
    ("ij->", [(2, 3)]),
    ("ij->j", [(2, 3)]),
    ("i,i->", [(3,), (3,)]),
    ("i,i", [(3,), (3,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
    ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 4)]),
    ("...ij,...jk", [(2, 2, 3), (3, 4)]),
    ("i...,i...->...", [(3, 2), (3, 1)]),
    ("...i,...i", [(2, 3), (3,)]),
    ("ij,ij->ij", [(2, 3), (2, 3)]),
    ("ijk,ik->j", [(2, 3, 4), (2, 4)]),
    ("i,i,i->", [(3,), (3,), (3,)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 4)]),
    ("ii,i->i", [(3, 3), (3,)]),
    ("Ab,bc", [(2, 3), (3, 4)]),
    ("bA", [(2, 3)]),
    ("ij,jk->ik (size-1 j)", [(2, 1), (3, 4)]),
    (" ij , jk -> ki ", [(2, 3), (3, 4)]),
]


def _einsum_case(subscripts, shapes):
    spec = subscripts.split(" (")[0]
    return Case(f"einsum('{subscripts}')-{'x'.join(format_shape(s) for s in shapes)}",
                lambda *ops: gc.einsum(spec, *ops), lambda *ops: np.einsum(spec, *ops), [Spec(s) for s in shapes])


CASES = (
    [Case(f"matmul{format_shape(a)}@{format_shape(b)}", gc.matmul, np.matmul, [Spec(a), Spec(b)])
     for a, b in MATMUL_SHAPES]
    + [Case(f"a@b{format_shape(a)}@{format_shape(b)}", lambda x, y: x @ y, lambda x, y: x @ y, [Spec(a), Spec(b)])
       for a, b in MATMUL_SHAPES[:4]]
    + [Case(f"dot{format_shape(a)}.{format_shape(b)}", gc.dot, np.dot, [Spec(a), Spec(b)]) for a, b in DOT_SHAPES]
    + [Case(f"outer{format_shape(a)}x{format_shape(b)}", gc.outer, np.outer, [Spec(a), Spec(b)])
       for a, b in OUTER_SHAPES]
    + [_einsum_case(s, shapes) for s, shapes in EINSUM]
    + [Case("matmul-in-a-chain", lambda a, b: gc.tanh(a @ b) @ gc.transpose(b),
            lambda a, b: np.tanh(a @ b) @ b.T, [Spec((2, 3)), Spec((3, 4))])]
)


# with unknown sizes: batch broadcasting decided at run time (the driver sums back to the fed shapes), and
# diagonals of repeated letters whose size is unknown at build time
globals().update(table_tests(
    CASES, gradient_unknown=lambda c: not c.id.startswith(("a@b", "einsum('ij')", "einsum('ji')", "einsum('bA")),
    float32_second=lambda c: c.id.startswith(("matmul(2, 2, 3)", "dot(2, 3).(5", "einsum('iij"))))


# ---- integer operands ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtypes", [("int64", "int64"), ("int32", "float32"), ("bool", "bool"),
                                    ("int32", "int64")], ids=lambda d: "-".join(d))
@pytest.mark.parametrize("name,fn,ref", [("matmul", gc.matmul, np.matmul), ("dot", gc.dot, np.dot),
                                         ("outer", gc.outer, np.outer),
                                         ("einsum", lambda a, b: gc.einsum("ij,jk", a, b),
                                          lambda a, b: np.einsum("ij,jk", a, b))], ids=lambda v: v
                         if isinstance(v, str) else "")
def test_integer_operands(name, fn, ref, dtypes):
    av = (np.arange(6).reshape(2, 3) % 3).astype(dtypes[0])
    bv = (np.arange(12).reshape(3, 4) % 2).astype(dtypes[1])
    a, b = gc.placeholder("a", (2, 3), dtypes[0]), gc.placeholder("b", (3, None), dtypes[1])
    out = fn(a, b)
    got = run(out, {a: av, b: bv})
    expected = ref(av, bv)
    assert_static_matches(out, got)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


# ---- special cases ------------------------------------------------------------------------------

def test_einsum_result_is_not_an_alias():
    """np.einsum returns views for pure permutations and diagonals: outputs must not alias feeds."""
    x = gc.placeholder("x", (3, 3))
    values = np.arange(9.0).reshape(3, 3)
    fn = gc.function([x], [gc.einsum("ij->ji", x), gc.einsum("ii->i", x)], optimize=False)
    for out in fn(values):
        assert not np.shares_memory(out, values)
        out[...] = 0.0  # writable, and writing does not touch the feed
    np.testing.assert_array_equal(values, np.arange(9.0).reshape(3, 3))


def test_einsum_repeated_letter_gradient_is_on_the_diagonal():
    x = gc.placeholder("x", (3, 3))
    g = run(gc.grad(gc.einsum("ii->", x), x), {x: np.ones((3, 3))})
    np.testing.assert_array_equal(g, np.eye(3))
    w = np.array([1.0, 2.0, 3.0])
    g = run(gc.grad(gc.sum(gc.einsum("ii->i", x) * w), x), {x: np.ones((3, 3))})
    np.testing.assert_array_equal(g, np.diag(w))


def test_matmul_vector_vector_is_scalar():
    a, b = gc.placeholder("a", (3,)), gc.placeholder("b", (3,))
    y = a @ b
    assert y.shape == () and y.op == "matmul"
    ga, gb = run(gc.grad(y, [a, b]), {a: np.array([1.0, 2.0, 3.0]), b: np.array([4.0, 5.0, 6.0])})
    np.testing.assert_array_equal(ga, [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(gb, [1.0, 2.0, 3.0])


def test_jacobian_of_matmul_matches_numpy():
    a = gc.placeholder("a", (2, 3))
    bv = np.arange(12.0).reshape(3, 4) / 10
    y = a @ gc.constant(bv)
    jac = run(gc.jacobian(y, a), {a: np.ones((2, 3))})
    expected = np.einsum("ik,jl->ilkj", np.eye(2), bv)  # d y[i,l] / d a[k,j] = delta_ik b[j,l]
    np.testing.assert_allclose(jac, expected)


# ---- construction errors ------------------------------------------------------------------------

@pytest.mark.parametrize("fn,sa,sb", [
    (gc.matmul, (2, 3), (4, 5)), (gc.matmul, (3,), (4,)), (gc.matmul, (2, 2, 3), (3, 3, 4)),
    (gc.matmul, (None, 3), (4, 2)), (gc.dot, (2, 3), (4,)), (gc.dot, (2, 3), (5, 4, 2)),
], ids=lambda v: v.__name__ if callable(v) else format_shape(v))
def test_contraction_shape_errors(fn, sa, sb):
    a, b = gc.placeholder("a", sa), gc.placeholder("b", sb)
    with pytest.raises(gc.ShapeError) as info:
        fn(a, b)
    message = str(info.value)
    assert fn.__name__ in message
    assert format_shape(sa) in message and format_shape(sb) in message


def test_matmul_scalar_operand_error():
    with pytest.raises(gc.ShapeError, match="matmul"):
        gc.matmul(gc.placeholder("a", ()), gc.placeholder("b", (3,)))


@pytest.mark.parametrize("subscripts,shapes", [
    ("ij,jk->ik", [(2, 3), (4, 5)]),
    ("ij", [(2, 3, 4)]),
    ("ij,jk", [(2, 3)]),
    ("ij->iij", [(2, 3)]),
    ("ij->k", [(2, 3)]),
    ("i1->i", [(2, 3)]),
    ("ii->i", [(2, 3)]),
    ("ii->i", [(3, 1)]),  # a diagonal's letter does not broadcast, unlike the same letter in two operands
    ("ii,i->i", [(1, 3), (3,)]),
])
def test_einsum_errors(subscripts, shapes):
    operands = [gc.placeholder(f"x{k}", s) for k, s in enumerate(shapes)]
    with pytest.raises(gc.ShapeError, match="einsum") as info:
        gc.einsum(subscripts, *operands)
    if subscripts == "ij,jk->ik":  # a contraction of sizes that differ names both shapes
        assert format_shape(shapes[0]) in str(info.value) and format_shape(shapes[1]) in str(info.value)
    # NumPy refuses them too
    with pytest.raises(ValueError):
        np.einsum(subscripts, *[np.ones(s) for s in shapes])


def test_op_names():
    a, b = gc.placeholder("a", (2, 2)), gc.placeholder("b", (2, 2))
    assert gc.matmul(a, b).op == "matmul" and (a @ b).op == "matmul" and gc.dot(a, b).op == "dot"
    assert gc.outer(a, b).op == "outer" and gc.einsum("ij,jk", a, b).op == "einsum"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES[::3], ids=repr)
def test_check_grad(case, dtype):
    """gc.check_grad agrees (a third of the table; float32 with its looser default tolerances)."""
    assert check_with_check_grad(case, dtype) < max_grad_error(dtype)  # the largest relative error


@pytest.mark.parametrize("case", CASES[::4], ids=repr)
def test_third_order(case):
    """Gradients of gradients of gradients (every fourth case of the table)."""
    check_third_order(case)


@pytest.mark.parametrize("case", CASES[::2], ids=repr)
def test_second_order_unknown_sizes(case):
    """Second order where every size is unknown at build time (run-time shape references)."""
    check_second_order(case, np.float64, unknown=True)


@st.composite
def _matmul_shapes(draw):
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    batch = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]

    def operand(core):
        keep = draw(st.integers(0, len(batch)))
        lead = [s if draw(st.booleans()) else 1 for s in batch[len(batch) - keep:]]
        shape = tuple(lead) + core if len(core) == 2 or not lead else core
        static = tuple(None if draw(st.booleans()) else s for s in shape)
        return shape, static

    a_core = (m, k) if draw(st.booleans()) else (k,)
    b_core = (k, n) if draw(st.booleans()) else (k,)
    return operand(a_core), operand(b_core)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=_matmul_shapes())
def test_random_matmul(shapes):
    """matmul over random 1-D/2-D/batched shapes with random unknown sizes: value, type, gradient."""
    (shape_a, static_a), (shape_b, static_b) = shapes
    rng = np.random.default_rng(1)
    a_val, b_val = rng.uniform(-1, 1, shape_a), rng.uniform(-1, 1, shape_b)
    a, b = gc.placeholder("a", static_a), gc.placeholder("b", static_b)
    out = a @ b
    expected = a_val @ b_val
    w = rng.uniform(0.5, 1.5, np.shape(expected))
    ga, gb = gc.grad(gc.sum(out * w), [a, b])
    value, ga_val, gb_val = run([out, ga, gb], {a: a_val, b: b_val})
    assert_static_matches(out, value)
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-14)

    def total(x, y):
        return float(np.sum((x @ y) * w))

    np.testing.assert_allclose(ga_val, numeric_gradient(total, [a_val, b_val], 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb_val, numeric_gradient(total, [a_val, b_val], 1), rtol=1e-6, atol=1e-8)


@st.composite
def _einsum_spec(draw):
    sizes = {c: draw(st.integers(1, 3)) for c in "abcd"}
    n_operands = draw(st.integers(1, 3))
    subs = ["".join(draw(st.lists(st.sampled_from("abcd"), min_size=0, max_size=3))) for _ in range(n_operands)]
    use_ellipsis = draw(st.booleans())
    batch = tuple(draw(st.integers(1, 2)) for _ in range(draw(st.integers(0, 2)))) if use_ellipsis else ()
    shapes = []
    for k, sub in enumerate(subs):
        shape = tuple(sizes[c] for c in sub)
        if use_ellipsis and draw(st.booleans()):
            lead = batch[len(batch) - draw(st.integers(0, len(batch))):]
            subs[k] = "..." + sub
            shape = lead + shape
        shapes.append(shape)
    letters = sorted(set("".join(subs)) - set("."))
    if draw(st.booleans()):
        output = "".join(draw(st.permutations(letters))[:draw(st.integers(0, len(letters)))])
        if use_ellipsis and any("..." in s for s in subs) and draw(st.booleans()):
            output = "..." + output
        subscripts = ",".join(subs) + "->" + output
    else:
        subscripts = ",".join(subs)
    unknown = [tuple(None if draw(st.booleans()) else s for s in shape) for shape in shapes]
    return subscripts, shapes, unknown


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_einsum_spec())
def test_random_einsum(spec):
    """einsum over random subscripts (repeated letters, implicit outputs, '...'): value, type, gradient."""
    subscripts, shapes, unknown = spec
    rng = np.random.default_rng(3)
    arrays = [rng.uniform(-1, 1, s) for s in shapes]
    try:
        expected = np.einsum(subscripts, *arrays)
    except ValueError:  # e.g. '...' in the output only
        assume(False)
    w = rng.uniform(0.5, 1.5, np.shape(expected))
    for declared in (shapes, unknown):
        inputs = [gc.placeholder(f"x{k}", s) for k, s in enumerate(declared)]
        out = gc.einsum(subscripts, *inputs)
        grads = gc.grad(gc.sum(out * w), inputs)
        got, *grad_values = run([out, *grads], dict(zip(inputs, arrays)))
        assert_static_matches(out, got)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        for k, g in enumerate(grad_values):
            numeric = numeric_gradient(lambda *xs: float(np.sum(np.einsum(subscripts, *xs) * w)), arrays, k)
            np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("unknown", [False, True], ids=["known", "unknown"])
@pytest.mark.parametrize("case", CASES[::2], ids=repr)
def test_jvp(case, unknown):
    """Forward mode through the op (half of the table, sizes known and unknown)."""
    check_jvp(case, unknown)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shapes", [((7, 1), (1, 5)), ((3, 4, 1), (3, 1, 6)), ((4, 1), (2, 1, 3)), ((1, 1), (1, 9))])
def test_compiled_matmul_of_contraction_one_is_numpy_bit_for_bit(shapes, dtype):
    # the compiler lowers a contraction of size 1 (an outer product: a batch of one's weight gradient)
    # to another kernel than np.matmul; its bits must be np.matmul's: signed zeros, inf, NaN included
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shapes[0]).astype(dtype)
    b = rng.standard_normal(shapes[1]).astype(dtype)
    a.flat[0], b.flat[0] = -0.0, np.inf
    if a.size > 2:
        a.flat[1], a.flat[2] = np.nan, 0.0
    x, y = gc.placeholder("a", shapes[0], dtype), gc.placeholder("b", shapes[1], dtype)
    with np.errstate(invalid="ignore"):
        expected = np.matmul(a, b)
        for optimize in (True, False):
            got = gc.function([x, y], x @ y, optimize=optimize)(a, b)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            bits = {"float64": np.int64, "float32": np.int32}[dtype]
            np.testing.assert_array_equal(got.view(bits), expected.view(bits))



def test_compiled_contraction_one_against_an_unknown_size_still_checks_it():
    # a's contracted size is 1 and b's unknown: b with more rows is np.matmul's error, never a broadcast sum
    x, y = gc.placeholder("a", (7, 1)), gc.placeholder("b", (None, 5))
    fn = gc.function([x, y], x @ y)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((7, 1)), rng.standard_normal((1, 5))
    np.testing.assert_array_equal(fn(a, b), np.matmul(a, b))
    with pytest.raises(Exception, match="matmul"):
        fn(a, rng.standard_normal((7, 5)))


def _input_gradient(batch: int, dtype, rows: int = 256, contracted: int = 256):
    """``relu(dz) @ W.T`` for a ``W`` of ``rows`` rows: a layer's input gradient."""
    dz = gc.placeholder("dz", (batch, contracted), dtype=dtype)
    w = gc.placeholder("w", (rows, contracted), dtype=dtype)
    return [dz, w], gc.relu(dz) @ gc.transpose(w)


def _computes_swapped(fn) -> bool:
    from graphc.ops.linalg import _swapped_matmul

    return any(value is _swapped_matmul for value in fn.plan.run.__defaults__ or ())


def _bits_without_nan_signs(a: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), np.float32(np.nan), a).view(np.uint32)


@pytest.mark.parametrize(("batch", "rows", "contracted"), [(32, 256, 256), (6, 256, 256), (2, 1024, 1000),
                                                            (64, 256, 784), (4, 1024, 1024)])
def test_a_float32_input_gradient_is_computed_swapped_with_matmuls_bits(batch, rows, contracted):
    """``dz @ W.T`` of float32 with few rows of ``dz`` runs as ``(W @ dz.T).T`` (OpenBLAS's faster case),
    C-contiguous like np.matmul's result, every entry that is not NaN bit for bit np.matmul's (a NaN made
    from two NaN operands may carry the other's sign or payload). The shapes span OpenBLAS's cases: 2
    rows and 1000 columns within the size where its SkylakeX builds may take the small-matrix kernel
    (one block over the whole contracted axis), 64 rows beyond it."""
    inputs, y = _input_gradient(batch, np.float32, rows, contracted)
    fn = gc.function(inputs, y)
    assert _computes_swapped(fn)
    for seed in range(30):
        dzs = with_specials((batch, contracted), np.float32, 2 * seed)
        ws = with_specials((rows, contracted), np.float32, 2 * seed + 1)
        if seed % 4 == 0:
            dzs[:] = np.where(dzs > 0, -0.0, 0.0)  # only zeros of both signs: every sum is a zero
        with np.errstate(all="ignore"):
            got, want = fn(dzs, ws), np.matmul(np.maximum(dzs, 0), ws.T)
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(_bits_without_nan_signs(got), _bits_without_nan_signs(want))


def test_the_swapped_product_computes_other_layouts_as_matmul():
    """An operand in another layout (here relu of a Fortran-ordered feed, which keeps its order) is
    computed as ``a @ b``: other BLAS cases could sum in other blocks. Into ``out`` as well."""
    from graphc.ops.linalg import _swapped_matmul

    rng = np.random.default_rng(21)
    a, w = rng.normal(size=(784, 32)).astype(np.float32), rng.normal(size=(256, 784)).astype(np.float32)
    np.testing.assert_array_equal(_swapped_matmul(a.T, w.T).view(np.uint32), np.matmul(a.T, w.T).view(np.uint32))
    c = np.ascontiguousarray(a.T)
    out = np.empty((32, 256), np.float32)
    assert _swapped_matmul(c, w.T, out=out) is out
    np.testing.assert_array_equal(out.view(np.uint32), np.matmul(c, w.T).view(np.uint32))
    inputs, y = _input_gradient(32, np.float32)
    fn = gc.function(inputs, y)
    for seed in range(10):
        dzs = np.asfortranarray(with_specials((32, 256), np.float32, 100 + seed))
        ws = with_specials((256, 256), np.float32, 200 + seed)
        with np.errstate(all="ignore"):
            want = np.matmul(np.maximum(dzs, 0), ws.T)
            np.testing.assert_array_equal(fn(dzs, ws).view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize(("batch", "dtype", "rows", "contracted"),
                         [(32, np.float64, 256, 256), (128, np.float32, 256, 256), (1, np.float32, 256, 256),
                          (32, np.float32, 256, 10), (4, np.float32, 256, 256), (None, np.float32, 256, 256)])
def test_the_swapped_product_only_where_it_measured_faster(batch, dtype, rows, contracted):
    """float32 only, from 2 to 64 rows of ``dz``, ``W`` at least 256 x 256, beyond OpenBLAS's small-matrix
    size, all sizes known (see ``_swapped_matmul``)."""
    inputs, y = _input_gradient(batch, dtype, rows, contracted)
    assert not _computes_swapped(gc.function(inputs, y))
