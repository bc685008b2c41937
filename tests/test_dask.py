"""graphc.dask: to_dask against Session.run, and DataParallel against single-machine training."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from graphc.dask import LOWERINGS, DataParallel, to_dask  # noqa: E402

RNG_SEED = 20261203


def random_chunks(rng, shape):
    """A random chunking of ``shape``: every axis cut at random places."""
    chunks = []
    for size in shape:
        cuts = sorted(set(rng.integers(1, size, size=rng.integers(0, 3)).tolist())) if size > 1 else []
        edges = [0] + cuts + [size]
        chunks.append(tuple(b - a for a, b in zip(edges, edges[1:])))
    return tuple(chunks)


def graph_families():
    """(name, build(x, y, labels) -> outputs): every op family of graphc."""
    W = gc.variable(np.linspace(-1, 1, 12).reshape(4, 3), name="W")
    V = gc.variable(np.linspace(-1, 1, 16).reshape(4, 4), name="V")
    return [
        ("elementwise", lambda x, y, lab: [gc.tanh(x) * gc.exp(-y) + gc.sqrt(gc.abs(x)) - gc.maximum(x, y),
                                           gc.where(x > y, gc.sigmoid(x), gc.softplus(y)),
                                           gc.clip(x, -0.5, 0.5) ** 2, gc.gelu(x), (x > 0.2)]),
        ("reductions", lambda x, y, lab: [gc.sum(x), gc.mean(x, axis=0), gc.max(x, axis=1, keepdims=True),
                                          gc.min(y * x, axis=(0, 1)), gc.prod(x / 4 + 1, axis=0),
                                          gc.logsumexp(x, axis=1), gc.logsumexp(x, axis=0, keepdims=True)]),
        ("linalg", lambda x, y, lab: [x @ W, gc.dot(x, W), gc.outer(x[0], y[1]), gc.einsum("ij,ij->i", x, y),
                                      gc.einsum("ij,jk->ik", x, W), gc.matmul(x[0], W)]),
        ("shape", lambda x, y, lab: [gc.reshape(x, (-1,)), gc.transpose(x), gc.expand_dims(x, 1),
                                     gc.squeeze(gc.expand_dims(y, 0), 0), gc.broadcast_to(x[0], (3, 4)),
                                     gc.concatenate([x, y], axis=1), gc.stack([x, y], axis=2),
                                     gc.take(x, np.array([3, 0, 0]), axis=1), x[::2, 1:3], x[:, None, 0],
                                     gc.take(x, np.array([1, 5])), x.astype("float32")]),
        ("networks", lambda x, y, lab: [gc.softmax(x), gc.log_softmax(x, axis=0),
                                        gc.softmax_cross_entropy(x, lab), gc.softmax_cross_entropy(x, gc.softmax(y)),
                                        gc.sigmoid_cross_entropy(x, gc.sigmoid(y)), gc.one_hot(lab, 5)]),
        ("section 15", lambda x, y, lab: [gc.var(x, axis=0), gc.std(x, axis=1, keepdims=True), gc.norm(x, 1, axis=1),
                                          gc.norm(y), gc.any(x > 1.0, axis=0), gc.all(x < 1.5), gc.argmax(x, axis=1),
                                          gc.argmin(y), gc.cumsum(x, 0), gc.cumprod(y / 3, 1), gc.sort(x, 0),
                                          gc.argsort(y), *gc.top_k(x, 2), gc.tile(x, (2, 1)), gc.repeat(y, 2, 1),
                                          gc.flip(x, 0), gc.roll(x, (1, -1), (0, 1)), *gc.split(x, 2, axis=1),
                                          gc.tril(x), gc.triu(y, 1), gc.diagonal(x), gc.trace(y)]),
        ("section 15 gradients", lambda x, y, lab: gc.grad(
            gc.sum(gc.var(x, axis=0)) + gc.sum(gc.cumprod(y, 1)) + gc.sum(gc.top_k(x * y, 2)[0])
            + gc.sum(gc.sort(x, 0) * y) + gc.sum(gc.tile(x, (1, 2))) + gc.sum(gc.repeat(y, 2, 0) ** 2)
            + gc.sum(gc.split(x, 2, axis=1)[1] ** 3) + gc.trace(gc.tril(x * y)) + gc.sum(gc.diagonal(y) ** 2)
            + gc.sum(gc.norm(x, 2, axis=1)), [x, y])),
        ("convolutions", lambda x, y, lab: _conv_outputs(x, y)),
        ("gradients", lambda x, y, lab: gc.grad(gc.mean(gc.softmax_cross_entropy(gc.tanh(x) @ V, lab))
                                                + gc.sum(gc.prod(y, axis=1)) + gc.sum(gc.take(x, lab, axis=1))
                                                + gc.sum(gc.max(x * y, axis=0)) + gc.sum(x[:, lab][0]), [x, y, V])),
    ]


def _conv_outputs(x, y):
    images = gc.reshape(gc.concatenate([x, y, x * y, x - y], axis=1), (-1, 2, 2, 4))
    w = gc.variable(np.linspace(-1, 1, 3 * 2 * 2 * 2).reshape(3, 2, 2, 2), name="w")
    wt = gc.variable(np.linspace(-1, 1, 3 * 2 * 2 * 2).reshape(3, 2, 2, 2), name="wt")
    features = gc.conv2d(gc.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1))), w, padding=1)
    pooled = gc.max_pool2d(gc.relu(features), 2) + gc.avg_pool2d(features, 2, stride=1)[..., :2, :3]
    up = gc.conv2d_transpose(features, wt, stride=2)
    loss = gc.sum(pooled ** 2) + gc.sum(gc.layer_norm(up)) + gc.mean(up * up)
    return [features, pooled, up, gc.batch_norm(features, gc.mean(features, axis=(0, 2, 3)),
                                                gc.var(features, axis=(0, 2, 3))), *gc.grad(loss, [x, y, w, wt])]


def test_random_draws_lower_to_the_values_the_session_would_draw():
    gen = gc.random.Generator(3)
    x = gc.placeholder("x", (None, 3))
    outputs = [gen.normal((4, 2)), gc.dropout(x, 0.5, gen), gen.uniform(like=x)]
    values = np.ones((5, 3))
    lazy = to_dask(outputs, {x: da.from_array(values, chunks=2)})  # reads the state, does not advance it
    expected = gc.Session().run(outputs, {x: values})
    for want, got in zip(expected, da.compute(*lazy)):
        np.testing.assert_array_equal(got, want)


def test_loop_step_keys_and_stepped_draws_lower_to_the_session_values():
    from graphc.op import apply
    from graphc.random import RandomNormal, StepKeys

    x = gc.placeholder("x", (None, 3))
    count = gc.placeholder("count", (), dtype="int64")
    keys = [StepKeys(from_count=False)(x), StepKeys(from_count=True)(count),
            StepKeys(from_count=False, nested=True)(x, gc.constant(np.int64(3)))]
    op = RandomNormal(seed=4, salt=1, shape=None, like=True, dtype=np.dtype("float64"), stepped=True)
    stepped = apply(op, gc.constant(np.int64(2)), 0.0, 1.0, x, gc.constant(np.int64(5)))  # like x, at step key 5
    values, n = np.ones((4, 3)), np.int64(6)
    lazy = to_dask([*keys, stepped], {x: da.from_array(values, chunks=2), count: n})
    expected = gc.Session().run([*keys, stepped], {x: values, count: n})
    for want, got in zip(expected, da.compute(*lazy)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("batch_parallel", [True, False])
@pytest.mark.parametrize("family", [name for name, _ in graph_families()])
def test_to_dask_equals_session_for_random_chunkings(family, batch_parallel):
    rng = np.random.default_rng(RNG_SEED)
    build = dict(graph_families())[family]
    x = gc.placeholder("x", (None, 4))
    y = gc.placeholder("y", (None, 4))
    lab = gc.placeholder("lab", (None,), dtype="int64")
    outputs = build(x, y, lab)
    for _ in range(4):
        rows = int(rng.integers(3, 12))
        values = {x: rng.normal(size=(rows, 4)), y: rng.normal(size=(rows, 4)), lab: rng.integers(0, 4, rows)}
        expected = gc.Session().run(outputs, values)
        feeds = {t: da.from_array(v, chunks=random_chunks(rng, v.shape)) for t, v in values.items()}
        lazy = to_dask(outputs, feeds, batch_parallel=batch_parallel)
        assert all(isinstance(value, da.Array) for value in lazy)
        for want, got in zip(expected, da.compute(*lazy, scheduler="sync")):
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def mlp_graph():
    """A classifier with an embedding table: inputs x, class labels, word indices."""
    rng = np.random.default_rng(1)
    x = gc.placeholder("x", (None, 5))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    words = gc.placeholder("words", (None,), dtype="int64")
    W = gc.variable(rng.normal(size=(5, 3)), name="W")
    b = gc.variable(np.zeros(3), name="b")
    E = gc.variable(rng.normal(size=(7, 2)), name="E")
    hidden = gc.tanh(x @ W + b) + gc.sum(gc.take(E, words, axis=0), axis=1, keepdims=True)
    loss = gc.mean(gc.softmax_cross_entropy(hidden, labels)) + 0.01 * gc.sum(W * W)
    return (x, labels, words), [loss, gc.sum(hidden), *gc.grad(loss, [W, b, E]), gc.softmax(hidden)]


def test_batch_parallel_graphs_run_one_function_per_chunk():
    from graphc.dask import _batch_feeds, _batch_statuses
    from graphc.passes import optimize_tensors
    from graphc.tensor import toposort

    (x, labels, words), outputs = mlp_graph()
    rng = np.random.default_rng(2)
    values = {x: rng.normal(size=(29, 5)), labels: rng.integers(0, 3, 29), words: rng.integers(0, 7, 29)}
    feeds = {x: da.from_array(values[x], chunks=(6, 2)), labels: da.from_array(values[labels], chunks=9),
             words: da.from_array(values[words], chunks=29)}
    order = toposort(optimize_tensors(outputs))
    statuses, counts = _batch_statuses(order, _batch_feeds(feeds))
    assert statuses is not None and counts  # mean's gradient divides by the whole batch's size
    fast = to_dask(outputs, feeds)
    slow = to_dask(outputs, feeds, batch_parallel=False)
    # one task per chunk and op (op by op) against a few tasks per chunk (fast path)
    assert len(dict(fast[2].__dask_graph__())) < len(dict(slow[2].__dask_graph__())) / 2
    expected = gc.Session().run(outputs, values)
    for want, got in zip(expected, da.compute(*fast, scheduler="sync")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_graphs_that_need_all_examples_per_row_are_not_batch_parallel():
    from graphc.dask import _batch_feeds, _batch_statuses
    from graphc.tensor import toposort

    x = gc.placeholder("x", (None, 3))
    centered = x - gc.mean(x, axis=0)  # every row needs the mean of all rows
    feeds = {x: da.ones((10, 3), chunks=4)}
    assert _batch_statuses(toposort([gc.sum(centered * centered)]), _batch_feeds(feeds)) is None
    want = gc.Session().run(gc.sum(centered * centered), {x: np.arange(30.0).reshape(10, 3)})
    got = to_dask(gc.sum(centered * centered), {x: da.from_array(np.arange(30.0).reshape(10, 3), chunks=4)})
    np.testing.assert_allclose(got.compute(), want, rtol=1e-12)


def test_to_dask_structure_numpy_feeds_names_and_variables():
    x = gc.placeholder("x", (None, 2))
    v = gc.variable(np.array([1.0, 2.0]), name="v")
    out = to_dask({"a": [x * v], "b": gc.sum(x)}, {"x": np.ones((3, 2))})
    assert set(out) == {"a", "b"}
    np.testing.assert_array_equal(out["a"][0].compute(), np.ones((3, 2)) * [1.0, 2.0])
    v.set_value(np.zeros(2))  # the lowered graph took the value it had when lowered
    np.testing.assert_array_equal(out["a"][0].compute(), np.ones((3, 2)) * [1.0, 2.0])


def test_to_dask_feed_errors_name_the_placeholder():
    x = gc.placeholder("x", (None, 2))
    with pytest.raises(gc.FeedError, match="'x'"):
        to_dask(x * 2, {})
    with pytest.raises(gc.FeedError, match="'x'.*shape"):
        to_dask(x * 2, {x: da.ones((3, 5))})
    with pytest.raises(gc.FeedError, match="'x'.*dtype"):
        to_dask(x * 2, {x: da.ones((3, 2), dtype=complex)})


def test_import_graphc_does_not_import_dask():
    done = subprocess.run([sys.executable, "-c", "import sys, graphc; print('dask' in sys.modules)"],
                          capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=os.path.dirname(
                              os.path.dirname(gc.__file__))))
    assert done.stdout.decode().split() == ["False"]


def test_every_registered_op_has_a_dask_lowering():
    import graphc.custom  # noqa: F401 - registers custom ops' class
    from graphc.leaves import Leaf
    from graphc.op import REGISTRY

    missing = [name for name, cls in sorted(REGISTRY.items())
               if not issubclass(cls, Leaf) and not any(base in LOWERINGS for base in cls.__mro__)]
    assert not missing, f"ops without a Dask lowering (add one in graphc/dask.py with @lowers): {missing}"


def test_an_op_without_lowering_is_named():
    from graphc.dask import LOWERINGS as table

    x = gc.placeholder("x", (3,))
    node = gc.exp(x)
    saved = {cls: rule for cls, rule in table.items()}
    table.clear()
    try:
        with pytest.raises(gc.GraphcError, match="'exp'"):
            to_dask(node, {x: np.ones(3)})
    finally:
        table.update(saved)


def test_custom_ops_run_in_one_block():
    double = gc.custom_op("double_rows", lambda a: np.cumsum(a, axis=0), None)
    x = gc.placeholder("x", (None, 2))
    got = to_dask(double(x), {x: da.from_array(np.arange(8.0).reshape(4, 2), chunks=1)}).compute()
    np.testing.assert_array_equal(got, np.cumsum(np.arange(8.0).reshape(4, 2), axis=0))


# ---- DataParallel -----------------------------------------------------------------------------

def plain_sgd(grads, params, lr):
    return {p: p - lr * g for p, g in zip(params, grads)}


def make_model(seed=0):
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, 3))
    t = gc.placeholder("t", (None,), dtype="int64")
    W = gc.variable(rng.normal(size=(3, 4)) * 0.5, name="W")
    b = gc.variable(np.zeros(4), name="b")
    loss = gc.mean(gc.softmax_cross_entropy(gc.tanh(x @ W) + b, t)) + 1e-3 * gc.sum(W * W)
    return x, t, W, b, loss


def local_trajectory(X, T, steps, batches=None):
    x, t, W, b, loss = make_model()
    step = gc.function([x, t], loss, updates=plain_sgd(gc.grad(loss, [W, b]), [W, b], 0.3))
    losses = [float(step(X, T)) for _ in range(steps)] if batches is None else \
        [float(step(X[rows], T[rows])) for rows in batches]
    return losses, W.value.copy(), b.value.copy()


def data(rows=37):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(rows, 3))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


@pytest.fixture(scope="module")
def thread_client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("chunks", [37, 10, (1, 20, 16)])
def test_data_parallel_follows_single_machine_trajectory(thread_client, chunks):
    X, T = data()
    want_losses, want_W, want_b = local_trajectory(X, T, 5)
    x, t, W, b, loss = make_model()
    trainer = DataParallel([x, t], loss, [W, b], optimizer=plain_sgd, client=thread_client, lr=0.3)
    losses = [trainer.step(da.from_array(X, chunks=(chunks, 3)), da.from_array(T, chunks=(chunks,)))
              for _ in range(5)]
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    np.testing.assert_allclose(W.value, want_W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.value, want_b, rtol=1e-10, atol=1e-12)


def test_data_parallel_fit_shuffles_with_a_seed(thread_client):
    X, T = data(30)
    rng = np.random.default_rng(7)
    batches = [np.sort(order[i:i + 8]) for order in (rng.permutation(30) for _ in range(2)) for i in range(0, 30, 8)]
    want_losses, want_W, _ = local_trajectory(X, T, None, batches)
    x, t, W, b, loss = make_model()
    trainer = DataParallel([x, t], loss, [W, b], optimizer=plain_sgd, client=thread_client, lr=0.3)
    losses = trainer.fit(da.from_array(X, chunks=(5, 3)), da.from_array(T, chunks=5), epochs=2, batch_size=8,
                         seed=7)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    np.testing.assert_allclose(W.value, want_W, rtol=1e-10, atol=1e-12)


def test_data_parallel_sum_loss_and_errors(thread_client):
    X, T = data(12)
    x = gc.placeholder("x", (None, 3))
    w = gc.variable(np.ones(3), name="w")
    loss = gc.sum(gc.square(x @ w))
    reference = gc.function([x], gc.grad(loss, w))(X)
    trainer = DataParallel([x], loss, [w], optimizer=plain_sgd, client=thread_client, lr=0.01)
    trainer.step(da.from_array(X, chunks=(5, 3)))
    np.testing.assert_allclose(w.value, np.ones(3) - 0.01 * reference, rtol=1e-12)
    with pytest.raises(gc.ShapeError, match="sum or a mean over the batch"):
        DataParallel([x], gc.max(x @ w), [w], optimizer=plain_sgd, client=thread_client)
    with pytest.raises(TypeError, match="Variables"):
        DataParallel([x], loss, [x], optimizer=plain_sgd, client=thread_client)
    with pytest.raises(TypeError, match="one per input"):
        trainer.step()


KILL_SCRIPT = r"""
import os, sys
import numpy as np
import dask.array as da
import distributed
import graphc as gc
from graphc.dask import DataParallel

flag = sys.argv[1]

def kill_once(block):
    # the first time any worker computes this block it dies mid-step; Dask must recompute it elsewhere
    if not os.path.exists(flag):
        open(flag, "w").close()
        os._exit(1)
    return block

def plain_sgd(grads, params, lr):
    return {p: p - lr * g for p, g in zip(params, grads)}

if __name__ == "__main__":
    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 3))
    T = (X[:, 0] > 0).astype(np.int64)
    def model():
        x = gc.placeholder("x", (None, 3)); t = gc.placeholder("t", (None,), dtype="int64")
        W = gc.variable(np.linspace(-1, 1, 12).reshape(3, 4), name="W")
        return x, t, W, gc.mean(gc.softmax_cross_entropy(gc.tanh(x @ W), t))
    x, t, W, loss = model()
    step = gc.function([x, t], loss, updates=plain_sgd(gc.grad(loss, [W]), [W], 0.5))
    local = [float(step(X, T)) for _ in range(5)]
    x, t, W2, loss = model()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        trainer = DataParallel([x, t], loss, [W2], optimizer=plain_sgd, client=client, lr=0.5)
        losses = []
        for k in range(5):
            Xd = da.from_array(X, chunks=(10, 3))
            if k == 1:
                Xd = Xd.map_blocks(kill_once, dtype=X.dtype, meta=np.empty((0, 0)))
            losses.append(trainer.step(Xd, da.from_array(T, chunks=10)))
    assert os.path.exists(flag), "the worker was never killed"
    np.testing.assert_allclose(losses, local, rtol=1e-10)
    np.testing.assert_allclose(W2.value, W.value, rtol=1e-10)
    print("same trajectory")
"""


def test_data_parallel_on_worker_processes_survives_a_killed_worker(tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(gc.__file__)),
                                                       os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "killed")], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same trajectory" in done.stdout


def test_data_parallel_rescatters_unchanged_parameters_safely(thread_client):
    # The same parameter values sent again every step (lr = 0): with content-hashed scatter keys a
    # step could reuse a key whose data the previous step just released ("lost dependencies").
    X, T = data(20)
    x, t, W, b, loss = make_model()
    trainer = DataParallel([x, t], loss, [W, b], optimizer=plain_sgd, client=thread_client, lr=0.0)
    losses = [trainer.step(da.from_array(X, chunks=(7, 3)), da.from_array(T, chunks=7)) for _ in range(10)]
    assert len(set(losses)) == 1
    np.testing.assert_allclose(losses[0], local_trajectory(X, T, 1)[0][0], rtol=1e-12)


def test_a_fed_intermediate_tensor_is_an_input():
    x = gc.placeholder("x", (None, 2))
    hidden = gc.exp(x) * 3.0
    out = gc.sum(hidden * hidden)
    fed = np.arange(6.0).reshape(3, 2)
    want = gc.Session().run(out, {hidden: fed})
    np.testing.assert_allclose(to_dask(out, {hidden: da.from_array(fed, chunks=1)}).compute(), want, rtol=1e-12)


def test_softmax_minus_one_hot_lowers_row_by_row():
    """The op the compiler makes from softmax(z) - one_hot(labels), when a graph holds it, lowers too."""
    from graphc.op import apply
    from graphc.ops.nn import SoftmaxMinusOneHot

    z, labels = gc.placeholder("z", (6, 4)), gc.placeholder("labels", (6,), "int64")
    y = apply(SoftmaxMinusOneHot(), z, labels)
    zv, lv = np.random.default_rng(0).normal(size=(6, 4)), np.array([0, 3, 1, 2, 2, 0])
    out = to_dask(y, {z: da.from_array(zv, chunks=(2, 2)), labels: da.from_array(lv, chunks=2)},
                  batch_parallel=False)
    np.testing.assert_array_equal(out.compute(), gc.Session(optimize=False).run(y, {z: zv, labels: lv}))
