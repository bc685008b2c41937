"""The optional numba backend: fused element-wise kernels with results bit-identical to NumPy's.

Tests that compile kernels skip when numba is not installed (it is an optional extra, not in ``dev``);
the keyword's errors are tested either way.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

import graphc as gc

from .ops.util import with_specials

N = 40_000  # above MIN_KERNEL_ELEMENTS: the kernels run


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint8) if a.dtype == bool else a.view(f"u{a.dtype.itemsize}")


def assert_identical(got, want, any_nan_sign: bool = False) -> None:
    """Bit for bit; with ``any_nan_sign`` a NaN where the other has a NaN of the other sign also agrees
    (IEEE 754 leaves the sign of a NaN that arithmetic makes from two NaN operands unspecified)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    differ = _bits(got) != _bits(want)
    if any_nan_sign and got.dtype.kind == "f":
        differ &= ~(np.isnan(got) & np.isnan(want) & (_bits(np.abs(got)) == _bits(np.abs(want))))
    assert not differ.any(), f"{np.sum(differ)} elements differ"


def kernel_steps(fn) -> list:
    """The plan steps that run a compiled kernel."""
    return [s for s in fn.plan.steps if s.op == "fused" and getattr(s.primitive, "kernel", None) is not None]


# ---- the keyword (no numba needed) -----------------------------------------------------------------

def test_unknown_backend_is_a_value_error():
    x = gc.placeholder("x", (3,))
    with pytest.raises(ValueError, match="backend"):
        gc.function([x], x * 2.0 + 1.0, backend="cuda")


def test_missing_numba_is_a_clear_import_error(monkeypatch):
    from graphc.compile.numba_kernels import BackendUnavailable

    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    x = gc.placeholder("x", (3,))
    with pytest.raises(BackendUnavailable, match=r"pip install \"graphc\[numba\]\""):
        gc.function([x], x * 2.0 + 1.0, backend="numba")
    assert issubclass(BackendUnavailable, ImportError)


def test_check_numerics_with_numba_is_refused():
    x = gc.placeholder("x", (3,))
    with pytest.raises(ValueError, match="check_numerics"):
        gc.function([x], x * 2.0 + 1.0, backend="numba", check_numerics=True)


def test_numpy_backend_is_the_default_plan():
    x = gc.placeholder("x", (N,))
    y = (x * 2.0 + 1.0) * x
    assert gc.function([x], y, backend="numpy").plan.source == gc.function([x], y).plan.source


# ---- kernels --------------------------------------------------------------------------------------

@pytest.fixture(autouse=False)
def numba():
    """numba, or the test is skipped (an optional extra)."""
    return pytest.importorskip("numba")


def _chains(x, w):
    return {
        "arithmetic": ((x * w + 1.0) * 0.5 - w) * 2.0 + x,
        "division": (x / w - 3.0) / (w * w + 0.25),
        "where-sqrt-abs": gc.where(x > w, gc.sqrt(gc.abs(x)), w * w) - gc.maximum(x, 0.0),
        "min-max-neg": gc.minimum(-x, w) * gc.maximum(x, w) + gc.square(x - w),
        "floor-ceil": gc.floor(x * 3.0) + gc.ceil(w * 0.5) - x,
        "with tanh (split)": 0.5 * x * (1.0 + gc.tanh(0.79788456 * (x + 0.044715 * x * x * x))),
        "with exp/log (split)": gc.log(gc.exp(gc.sin(x)) + 1.0) * w - x,
        "comparison result": (x * w) > (w - 1.0),
    }


def _special(n: int, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, size=n)
    specials = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, -1e-310, 1e308, 2.5, -2.5]
    values[: len(specials) * 10] = np.repeat(specials, 10)
    rng.shuffle(values)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_bit_identical_to_numpy(numba, dtype):
    x = gc.placeholder("x", (N,), dtype=dtype)
    w = gc.placeholder("w", (N,), dtype=dtype)
    xs, ws = _special(N, dtype, 1), _special(N, dtype, 2)
    for name, y in _chains(x, w).items():
        reference = gc.function([x, w], y)
        compiled = gc.function([x, w], y, backend="numba")
        assert kernel_steps(compiled), name
        with np.errstate(all="ignore"):
            # (NaN * NaN: which operand's sign the result keeps is up to LLVM's operand order)
            assert_identical(compiled(xs, ws), reference(xs, ws), any_nan_sign=True)


def test_transcendental_steps_stay_numpy_steps(numba):
    x = gc.placeholder("x", (N,))
    fn = gc.function([x], 0.5 * x * (1.0 + gc.tanh(0.79788456 * (x + 0.044715 * x * x * x))), backend="numba")
    kernels = kernel_steps(fn)
    assert len(kernels) == 2
    assert all(step.name != "tanh" for k in kernels for step, _ in k.primitive.steps)
    assert [s.op for s in fn.plan.steps].count("tanh") == 1


def test_mixed_precision_steps_are_not_compiled(numba):
    x = gc.placeholder("x", (N,), dtype=np.float32)
    w = gc.placeholder("w", (N,), dtype=np.float64)
    fn = gc.function([x, w], (x * x + x) * w, backend="numba")
    for k in kernel_steps(fn):
        assert all(np.dtype(d) == np.float32 for d in k.primitive.dtypes)
    xs, ws = _special(N, np.float32, 3), _special(N, np.float64, 4)
    with np.errstate(all="ignore"):
        assert_identical(fn(xs, ws), gc.function([x, w], (x * x + x) * w)(xs, ws))


@pytest.mark.parametrize("shapes", [((64, 1000), (1000,)), ((64, 1000), (64, 1)), ((64, 1000), ()),
                                    ((1, 1000), (64, 1)), ((8, 50, 100), (50, 1))])
def test_broadcasting(numba, shapes):
    x = gc.placeholder("x", shapes[0])
    b = gc.placeholder("b", shapes[1])
    y = gc.maximum(x * 2.0 + b, 0.0) * b - x
    rng = np.random.default_rng(5)
    xs, bs = rng.normal(size=shapes[0]), rng.normal(size=shapes[1])
    fn = gc.function([x, b], y, backend="numba")
    assert kernel_steps(fn)
    assert_identical(fn(xs, bs), gc.function([x, b], y)(xs, bs))


def test_unknown_sizes_and_small_calls(numba):
    x = gc.placeholder("x", (None, 30))
    y = (x * 3.0 - 1.0) * x + 2.0
    fn, reference = gc.function([x], y, backend="numba"), gc.function([x], y)
    assert kernel_steps(fn)
    rng = np.random.default_rng(6)
    for rows in (1, 7, 2000):  # (four steps: the kernel runs at every size)
        xs = rng.normal(size=(rows, 30))
        assert_identical(fn(xs), reference(xs))


def test_non_contiguous_and_transposed_feeds(numba):
    x = gc.placeholder("x", (300, 200))
    w = gc.placeholder("w", (300, 200))
    y = (x - w) * (x + w) + 1.0
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(200, 300)).T  # F-ordered
    ws = rng.normal(size=(300, 400))[:, ::2]  # strided
    assert_identical(gc.function([x, w], y, backend="numba")(xs, ws), gc.function([x, w], y)(xs, ws))


@pytest.mark.parametrize("inplace", [False, True])
def test_updates_and_gradients(numba, inplace):
    rng = np.random.default_rng(8)
    start = rng.normal(size=(200, 200))
    results = []
    for backend in ("numpy", "numba"):
        w = gc.variable(start.copy(), name="w")
        x = gc.placeholder("x", (200, 200))
        loss = gc.sum(gc.square(x * w - 1.0) * 0.5)
        (g,) = gc.grad(loss, [w])
        # w.T reads the storage the in-place update writes: the kernel must not read overwritten elements
        new = w - 0.01 * (g + 1e-4 * w) + 1e-3 * w.T
        fn = gc.function([x], loss, updates={w: new}, inplace_updates=inplace, backend=backend)
        xs = rng.normal(size=(200, 200)) if not results else results[0][2]
        losses = [fn(xs) for _ in range(3)]
        results.append((losses, w.value.copy(), xs))
        if backend == "numba":
            assert kernel_steps(fn)
    for a, b in zip(results[0][0], results[1][0]):
        assert_identical(b, a)
    assert_identical(results[1][1], results[0][1])


def test_pickle_keeps_the_backend(numba):
    x = gc.placeholder("x", (N,))
    fn = gc.function([x], (x * 2.0 + 1.0) * x, backend="numba")
    loaded = pickle.loads(pickle.dumps(fn))
    assert loaded.backend == "numba" and kernel_steps(loaded)
    xs = np.random.default_rng(9).normal(size=N)
    assert_identical(loaded(xs), fn(xs))


def test_kernels_cached_by_structure(numba):
    from graphc.compile.numba_kernels import KERNELS

    xs = np.random.default_rng(10).normal(size=N)
    x = gc.placeholder("x", (N,))
    y = (x * 7.0 + 1.0) * x - 2.0
    gc.function([x], y, backend="numba")(xs)
    count = len(KERNELS)
    gc.function([x], y, backend="numba")(xs)  # another function, the same fused structure: no new kernel
    assert len(KERNELS) == count
    gc.function([x], gc.maximum(y, 0.5) * x, backend="numba")(xs)
    assert len(KERNELS) == count + 1


def test_the_optimized_graph_is_unchanged(numba):
    x = gc.placeholder("x", (N,))
    y = (x * 2.0 + 1.0) * x
    fn, reference = gc.function([x], y, backend="numba"), gc.function([x], y)
    assert [t.op for t in fn.plan.graph_order()] == [t.op for t in reference.plan.graph_order()]


def test_saved_files_hold_the_graph_not_the_kernels(numba, tmp_path):
    x = gc.placeholder("x", (N,))
    fn = gc.function([x], (x * 2.0 + 1.0) * x, backend="numba")
    gc.save(fn, tmp_path / "f.graphc")
    loaded = gc.load(tmp_path / "f.graphc")
    assert loaded.backend == "numpy" and not kernel_steps(loaded)  # the backend is this process's choice
    xs = np.random.default_rng(11).normal(size=N)
    assert_identical(loaded(xs), fn(xs))


# ---- outer products, row and column layouts, small nodes --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_outer_product_joins_the_update_kernel(numba, dtype):
    """A batch of one's weight gradient ``x.T @ dz`` and the SGD update form one kernel, bit for bit the
    NumPy backend's (np.matmul sums from +0.0: a product of -0.0 gives +0.0), specials included."""
    m, n = 300, 200
    x = gc.placeholder("x", (1, m), dtype=dtype)
    dz = gc.placeholder("dz", (1, n), dtype=dtype)
    w = gc.placeholder("w", (m, n), dtype=dtype)
    new = w - 0.01 * (gc.transpose(x) @ dz + 1e-4 * w)
    compiled, reference = gc.function([x, dz, w], new, backend="numba"), gc.function([x, dz, w], new)
    assert "matmul" not in [s.op for s in compiled.plan.steps]
    (kernel,) = kernel_steps(compiled)
    assert [step.name for step, _ in kernel.primitive.steps].count("mul") >= 2
    xs, dzs = _special(m, dtype, 12).reshape(1, m), _special(n, dtype, 13).reshape(1, n)
    xs[0, :4], dzs[0, :4] = [-0.0, 0.0, -1.0, np.inf], [1.0, -0.0, 0.0, 0.0]
    ws = _special(m * n, dtype, 14).reshape(m, n)
    with np.errstate(all="ignore"):
        assert_identical(compiled(xs, dzs, ws), reference(xs, dzs, ws))


def test_rows_and_columns_are_indexed_by_their_axes(numba):
    from graphc.compile.numba_kernels import KERNELS

    x = gc.placeholder("x", (64, 1000))
    row, column = gc.placeholder("r", (1000,)), gc.placeholder("c", (64, 1))
    y = (x * row - column) * 0.5 + row
    before = set(KERNELS._compiled)
    rng = np.random.default_rng(15)
    xs, rs, cs = rng.normal(size=(64, 1000)), rng.normal(size=1000), rng.normal(size=(64, 1))
    assert_identical(gc.function([x, row, column], y, backend="numba")(xs, rs, cs),
                     gc.function([x, row, column], y)(xs, rs, cs))
    (indexes,) = {indexes for _, indexes, _ in set(KERNELS._compiled) - before}
    assert sorted(indexes) == [(), ("i0", "0"), ("i0", "i1"), ("i1",)]  # the scalars, column, x, row


def test_statically_small_short_chains_stay_numpy_steps(numba):
    x = gc.placeholder("x", (100,))
    fn = gc.function([x], x * 2.0 + 1.0, backend="numba")
    assert not any(s.op == "fused" for s in fn.plan.steps)
    xs = np.random.default_rng(16).normal(size=100)
    assert_identical(fn(xs), gc.function([x], x * 2.0 + 1.0)(xs))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_statically_small_long_chains_run_their_kernel(numba, dtype):
    """Three steps or more: one kernel call costs less than their NumPy calls, at any size."""
    x, w = gc.placeholder("x", (10, 25), dtype=dtype), gc.placeholder("w", (25,), dtype=dtype)
    y = w - 0.01 * (x * 0.5 + 1e-4 * w)
    fn = gc.function([x, w], y, backend="numba")
    (kernel,) = kernel_steps(fn)
    xs, ws = _special(250, dtype, 30).reshape(10, 25), with_specials((25,), dtype, 31)
    with np.errstate(all="ignore"):
        assert_identical(fn(xs, ws), gc.function([x, w], y)(xs, ws), any_nan_sign=True)
    assert any(compiled is not None for _, compiled, _, _ in kernel.primitive.kernel._calls.values())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [1, 32])
def test_relu_layer_and_its_mask_are_kernels(numba, dtype, batch):
    """``relu(x @ W + b)`` is one kernel and ReLU's gradient ``g * (relu > 0)`` another (the mask read from
    the ReLU), bit for bit the NumPy backend's with NaN, infinities and signed zeros in the pre-activation."""
    x, w = gc.placeholder("x", (batch, 300), dtype=dtype), gc.placeholder("w", (300, 256), dtype=dtype)
    b = gc.placeholder("b", (256,), dtype=dtype)
    h = gc.relu(x @ w + b)
    loss = gc.sum(h * h)
    outputs = [h, *gc.grad(loss, [x, w, b])]
    fn, reference = gc.function([x, w, b], outputs, backend="numba"), gc.function([x, w, b], outputs)
    names = [[step.name for step, _ in k.primitive.steps] for k in kernel_steps(fn)]
    assert any("greater" in n and "cast" in n for n in names)
    if batch > 1:  # (at batch 1 the two steps of 256 elements stay NumPy steps)
        assert ["add", "relu"] in names and "relu" not in [s.op for s in fn.plan.steps]
    rng = np.random.default_rng(32)
    xs, ws = rng.normal(size=(batch, 300)).astype(dtype), rng.normal(size=(300, 256)).astype(dtype)
    bs = with_specials((256,), dtype, 33)
    bs[:6] = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0]
    xs[:, :] = 0.0  # the pre-activation is b itself: every special reaches the ReLU and the mask
    with np.errstate(all="ignore"):
        for got, want in zip(fn(xs, ws, bs), reference(xs, ws, bs)):
            assert_identical(got, want)


def test_relu_of_minus_zero_and_nan_as_numpy(numba):
    x = gc.placeholder("x", (N,))
    y = gc.relu(-x) * 2.0  # (-x: a -0.0 reaches the ReLU, which x * 1.0 + 0.0 would make +0.0)
    fn = gc.function([x], y, backend="numba")
    assert kernel_steps(fn)
    xs = _special(N, np.float64, 34)
    xs[:4] = [0.0, np.nan, -np.nan, np.inf]
    with np.errstate(all="ignore"):
        assert_identical(fn(xs), gc.function([x], y)(xs))


def test_only_a_mask_cast_compiles(numba):
    x = gc.placeholder("x", (N,), dtype=np.float64)
    fn = gc.function([x], gc.cast(x * 2.0, np.float32) * 3.0, backend="numba")
    assert all(step.name != "cast" for k in kernel_steps(fn) for step, _ in k.primitive.steps)
    xs = _special(N, np.float64, 35)
    with np.errstate(all="ignore"):
        assert_identical(fn(xs), gc.function([x], gc.cast(x * 2.0, np.float32) * 3.0)(xs))


def test_an_input_overlapping_the_output_is_read_before_it_is_written(numba):
    from graphc.compile.numba_kernels import FusedKernel, kernel_graph

    x = gc.placeholder("x", (200, 100))
    row = gc.placeholder("r", (100,))
    (node,) = kernel_graph([(x + row) * 2.0])
    kernel = node.primitive.kernel
    assert isinstance(kernel, FusedKernel)
    rng = np.random.default_rng(17)
    xs = rng.normal(size=(200, 100))
    want = (xs + xs[3]) * 2.0
    operands = [xs if t is x else xs[3] if t is row else t.primitive.value for t in node.inputs]
    kernel(*operands, out=xs)  # the row is a row of the output: it must be copied before the first write
    assert_identical(xs, want)


def _reads_out(kernel) -> bool:
    """A call of ``kernel`` ran a compiled kernel reading an input from ``out`` (not passing it)."""
    return any(compiled is not None and len(passed) < kernel.op.n_inputs
               for _, compiled, passed, _ in kernel._calls.values())


@pytest.mark.parametrize("as_passed", [
    pytest.param(lambda a: a, id="the output itself"),
    # another array object over the same memory: found by its address
    pytest.param(lambda a: a[:], id="a view of the output"),
])
def test_an_input_written_over_is_read_from_the_output(numba, as_passed):
    from graphc.compile.numba_kernels import kernel_graph

    x, w = gc.placeholder("x", (300, 100)), gc.placeholder("w", (300, 100))
    (node,) = kernel_graph([w - 0.01 * (x + 1e-4 * w)])
    kernel = node.primitive.kernel
    rng = np.random.default_rng(18)
    xs, ws = rng.normal(size=(300, 100)), rng.normal(size=(300, 100))
    want = gc.function([x, w], w - 0.01 * (x + 1e-4 * w))(xs, ws)
    operands = [as_passed(xs) if t is x else ws if t is w else t.primitive.value for t in node.inputs]
    kernel(*operands, out=xs)  # x's storage receives the result: the kernel reads it from out
    assert_identical(xs, want)
    assert _reads_out(kernel)


def _bound_kernels(fn) -> list:
    """The kernel calls ``fn``'s plan binds: ``FusedKernel`` objects or their specialized calls."""
    from graphc.compile.numba_kernels import FusedKernel

    return [v for v in fn.plan.run.__defaults__ or ()
            if isinstance(v, FusedKernel) or getattr(v, "__name__", "") == "call"]


def test_static_calls_are_specialized_and_unknown_sizes_are_not(numba):
    from graphc.compile.numba_kernels import FusedKernel

    def graph(rows):
        x, row = gc.placeholder("x", (rows, 100)), gc.placeholder("r", (100,))
        return [x, row], (x + row) * 2.0 - x * x

    rng = np.random.default_rng(19)
    xs, rs = rng.normal(size=(200, 100)), rng.normal(size=100)
    for rows, specialized in ((200, True), (None, False)):
        inputs, y = graph(rows)
        fn = gc.function(inputs, y, backend="numba")
        (bound,) = _bound_kernels(fn)
        assert isinstance(bound, FusedKernel) is not specialized
        assert_identical(fn(xs, rs), gc.function(inputs, y)(xs, rs))


@pytest.mark.parametrize("case", ["row of out", "view of out", "fortran input", "numpy scalar", "out missing"])
def test_a_specialized_call_hands_what_it_cannot_do_to_the_general_one(numba, case):
    """The call made for static shapes (``FusedKernel.specialized``) checks what only the arrays tell and
    gives such calls to ``FusedKernel.__call__``: the same values as the general call."""
    from graphc.compile.numba_kernels import kernel_graph

    x, row, c = gc.placeholder("x", (200, 100)), gc.placeholder("r", (100,)), gc.placeholder("c", ())
    (node,) = kernel_graph([(x + row) * c - x])
    kernel = node.primitive.kernel
    rng = np.random.default_rng(20)
    xs = rng.normal(size=(200, 100))
    want = (xs + xs[3]) * 2.0 - xs
    shapes = [t.shape for t in node.inputs]
    given_out = case != "fortran input"
    call = kernel.specialized(shapes, [False] * len(shapes), given_out)
    assert call is not kernel

    def operands(x_value, row_value, c_value):
        return [x_value if t is x else row_value if t is row else c_value if t is c else t.primitive.value
                for t in node.inputs]

    if case == "row of out":  # the row is a row of the output: copied before the first write
        assert call(*operands(xs, xs[3], np.asarray(2.0)), out=xs) is xs
    elif case == "view of out":  # x is the output's memory, by another array object
        got = call(*operands(xs[:], xs[3].copy(), np.asarray(2.0)), out=xs)
        assert got is xs
    elif case == "fortran input":  # a fresh result of NumPy's layout
        got = call(*operands(np.asfortranarray(xs), xs[3].copy(), np.asarray(2.0)))
        assert got.flags.f_contiguous
        xs = got
    elif case == "numpy scalar":  # a 0-d input given as a NumPy scalar
        out = np.empty_like(xs)
        assert call(*operands(xs, xs[3].copy(), np.float64(2.0)), out=out) is out
        xs = out
    else:  # made for a given out, called without
        xs = call(*operands(xs, xs[3].copy(), np.asarray(2.0)))
    assert_identical(xs, want)


def test_a_contraction_of_unknown_size_stays_a_matmul(numba):
    x = gc.placeholder("x", (300, 1))
    dz = gc.placeholder("dz", (None, 200))  # one row at run time, or the matmul's error
    w = gc.placeholder("w", (300, 200))
    fn = gc.function([x, dz, w], w - 0.01 * (x @ dz), backend="numba")
    assert "matmul" in [s.op for s in fn.plan.steps]
    rng = np.random.default_rng(19)
    with pytest.raises(Exception, match="matmul"):
        fn(rng.normal(size=(300, 1)), rng.normal(size=(300, 200)), rng.normal(size=(300, 200)))


def test_an_output_view_after_a_small_call_of_unknown_size(numba):
    """A call of unknown size decided small where ``out`` is an input (its key holds None, not ``out``'s
    size), then a large call where an input is another view of ``out``: the values, not a crash."""
    from graphc.compile.numba_kernels import kernel_graph

    x, row = gc.placeholder("x", (None, 100)), gc.placeholder("r", (100,))
    (node,) = kernel_graph([x * row + 1.0])  # two steps: a small call runs them with NumPy
    kernel = node.primitive.kernel
    rng = np.random.default_rng(22)
    rs = rng.normal(size=100)
    for rows, view in ((10, False), (1000, True)):
        xs = rng.normal(size=(rows, 100))
        want = xs * rs + 1.0
        operands = [(xs[:] if view else xs) if t is x else rs if t is row else t.primitive.value
                    for t in node.inputs]
        assert_identical(kernel(*operands, out=xs), want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [8, 200])
def test_a_fortran_feed_gives_numpys_layout_to_reductions_and_matmuls(numba, dtype, rows):
    """NumPy's ufuncs give a Fortran-ordered feed's result Fortran order, and a reduction or a matmul of
    it sums in that order: a kernel's fresh result must have the same layout (here its NumPy steps)."""
    x, w = gc.placeholder("x", (rows, 64), dtype=dtype), gc.placeholder("w", (64, 10), dtype=dtype)
    chain = (x * 2.0 + 1.0) * x  # (three steps: a kernel at any size)
    outputs = [gc.sum(chain, axis=0), gc.sum(chain, axis=1), chain @ w]
    fn, reference = gc.function([x, w], outputs, backend="numba"), gc.function([x, w], outputs)
    assert kernel_steps(fn)
    rng = np.random.default_rng(23)
    xs, ws = np.asfortranarray(rng.normal(size=(rows, 64)).astype(dtype)), rng.normal(size=(64, 10)).astype(dtype)
    for got, want in zip(fn(xs, ws), reference(xs, ws)):
        assert_identical(got, want)
