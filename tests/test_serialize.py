import hashlib
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.op import apply
from graphc.ops.elementwise import erf
from graphc.ops.nn import ShapeCheck, SoftmaxMinusOneHot, SparseTarget
from graphc.ops.shape import SqueezeCheck
from graphc.passes.fuse import fuse
from graphc.serialize import MAGIC, SaveError, encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = struct.Struct("<8sIIQQ")


def build_model(seed: int = 0, optimize: bool = True):
    """A small classifier touching many ops and parameter types; returns (train, variables, feeds)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, 4))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    w = gc.variable(rng.normal(size=(4, 3)), name="W")
    b = gc.variable(np.zeros(3, dtype=np.float32), name="b")
    h = gc.leaky_relu(gc.matmul(x, w) + gc.cast(b, "float64"), alpha=0.2)
    h = gc.concatenate([h[:, :2], gc.gelu(h[:, 2:], approximate=True)], axis=1)
    logits = gc.einsum("bi,ij->bj", h, gc.constant(np.eye(3)))
    loss = gc.mean(gc.softmax_cross_entropy(logits, labels))
    extra = gc.sum(gc.one_hot(labels, 3, dtype="float32"), axis=(0,), keepdims=True)
    picked = gc.take(h, gc.constant(np.array([0, 2])), axis=1)[..., None, 0]
    gw, gb = gc.grad(loss, [w, b])
    train = gc.function([x, labels], {"loss": loss, "extra": (extra, [picked]), "gw": gw},
                        updates={w: w - 0.3 * gw, b: b - 0.3 * gb}, optimize=optimize)
    data = rng.normal(size=(6, 4))
    targets = np.array([0, 1, 2, 1, 0, 2])
    return train, (w, b), (data, targets)


def split(blob: bytes):
    magic, version, flags, m, d = HEADER.unpack(blob[:HEADER.size])
    manifest = blob[HEADER.size:HEADER.size + m]
    data = blob[HEADER.size + m:HEADER.size + m + d]
    return version, flags, manifest, data


def assemble(manifest, data: bytes, version: int = 1, flags: int = 0, magic: bytes = MAGIC) -> bytes:
    """A file with a valid checksum around a (possibly tampered) manifest."""
    if not isinstance(manifest, (bytes, str)):
        manifest = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    if isinstance(manifest, str):
        manifest = manifest.encode()
    body = HEADER.pack(magic, version, flags, len(manifest), len(data)) + manifest + data
    return body + hashlib.sha256(body).digest()


@pytest.fixture(scope="module")
def saved():
    """An unoptimized function, so that tests can find and edit individual op nodes."""
    train, _, feeds = build_model(optimize=False)
    train(*feeds)
    blob = encode(train)
    version, flags, manifest, data = split(blob)
    return blob, json.loads(manifest), data


def load_bytes(tmp_path, blob: bytes, name: str = "f.gcf"):
    path = tmp_path / name
    path.write_bytes(blob)
    return gc.load(path)


def expect_load_error(tmp_path, blob: bytes, match: str | None = None):
    try:
        load_bytes(tmp_path, blob)
    except gc.LoadError as exc:
        if match is not None:
            assert match in str(exc), str(exc)
        return exc
    except BaseException as exc:  # noqa: BLE001
        raise AssertionError(f"expected LoadError, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError("expected LoadError, the file loaded")


# ---- round trips ----------------------------------------------------------------------

@pytest.mark.parametrize("optimize", [True, False])
def test_round_trip_after_training(tmp_path, optimize):
    train, (w, b), feeds = build_model(optimize=optimize)
    for _ in range(4):
        train(*feeds)
    gc.save(train, tmp_path / "model.gcf")
    loaded = gc.load(tmp_path / "model.gcf")
    new_vars = {v.name: v for v in loaded.plan.variables}
    np.testing.assert_array_equal(new_vars["W"].value, w.value)
    assert new_vars["b"].dtype == np.float32
    for _ in range(3):
        expected, got = train(*feeds), loaded(*feeds)
        assert set(got) == {"loss", "extra", "gw"}
        assert isinstance(got["extra"], tuple) and isinstance(got["extra"][1], list)
        np.testing.assert_array_equal(got["loss"], expected["loss"])
        np.testing.assert_array_equal(got["extra"][0], expected["extra"][0])
        np.testing.assert_array_equal(got["extra"][1][0], expected["extra"][1][0])
        np.testing.assert_array_equal(got["gw"], expected["gw"])
    np.testing.assert_array_equal(new_vars["W"].value, w.value)
    assert loaded(x=feeds[0], labels=feeds[1])["loss"].shape == ()


def test_same_attributes_as_a_fresh_function(tmp_path):
    train, _, _ = build_model()
    gc.save(train, tmp_path / "m.gcf")
    assert sorted(vars(gc.load(tmp_path / "m.gcf"))) == sorted(vars(train))


def test_scalar_output_function_without_inputs(tmp_path):
    v = gc.variable(np.arange(3.0), name="v")
    fn = gc.function([], gc.sum(v * 2.0), updates=[(v, v + 1.0)])
    gc.save(fn, tmp_path / "s.gcf")
    loaded = gc.load(tmp_path / "s.gcf")
    assert loaded() == fn() == 6.0  # sum(2 v) at v = [0, 1, 2]
    assert loaded() == fn() == 12.0  # each applied its own update v + 1 once
    np.testing.assert_array_equal(loaded(), fn())


def test_float_parameters_exact_and_special(tmp_path):
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], [gc.leaky_relu(x, alpha=0.1), gc.elu(x, alpha=1 / 3), x * float("inf")])
    gc.save(fn, tmp_path / "f.gcf")
    loaded = gc.load(tmp_path / "f.gcf")
    value = np.array([-1.0, 0.5, 2.0])
    for a, b in zip(loaded(value), fn(value)):
        np.testing.assert_array_equal(a, b)


def test_load_in_fresh_process_without_optimizing(tmp_path):
    train, _, feeds = build_model()
    gc.save(train, tmp_path / "m.gcf")
    np.savez(tmp_path / "feeds.npz", x=feeds[0], labels=feeds[1])
    expected = train(*feeds)["loss"]
    script = f"""
import numpy as np, graphc as gc
from tests.test_pickle import forbid_optimizing
forbid_optimizing()
fn = gc.load({str(tmp_path / "m.gcf")!r})
feeds = np.load({str(tmp_path / "feeds.npz")!r})
print(repr(float(fn(feeds["x"], feeds["labels"])["loss"])))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert float(done.stdout.decode()) == float(expected)


def test_byte_identical_saves(tmp_path):
    train = build_model()[0]
    assert encode(train) == encode(train)
    program = ("import sys; from tests.test_serialize import build_model; from graphc.serialize import encode; "
               "sys.stdout.buffer.write(encode(build_model()[0]))")
    outputs = set()
    for seed in ("0", "7", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        outputs.add(hashlib.sha256(done.stdout).hexdigest())
    assert len(outputs) == 1


def test_save_refuses_custom_ops(tmp_path):
    op = gc.custom_op("twice", lambda a: 2 * a, None)
    x = gc.placeholder("x", (3,))
    fn = gc.function([x], op(x) + 1.0)
    with pytest.raises(SaveError, match="custom op 'twice'") as info:
        gc.save(fn, tmp_path / "c.gcf")
    assert isinstance(info.value, gc.GraphcError)
    assert "pickle" in str(info.value)
    assert not (tmp_path / "c.gcf").exists()
    assert os.listdir(tmp_path) == []


def test_save_refuses_non_functions(tmp_path):
    with pytest.raises(TypeError):
        gc.save(gc.placeholder("x"), tmp_path / "x.gcf")


def test_missing_file_is_oserror(tmp_path):
    with pytest.raises(OSError):
        gc.load(tmp_path / "nope.gcf")


# ---- fuzzing the loader: each case raises LoadError and nothing else ---------------------

def test_truncations(tmp_path, saved):
    blob = saved[0]
    cuts = sorted(set(list(range(0, 80)) + list(range(80, len(blob), max(1, len(blob) // 150))) + [len(blob) - 1]))
    for cut in cuts:
        expect_load_error(tmp_path, blob[:cut])


def test_trailing_bytes(tmp_path, saved):
    expect_load_error(tmp_path, saved[0] + b"\x00", "trailing")


def test_byte_flips(tmp_path, saved):
    blob = saved[0]
    rng = random.Random(5)
    for _ in range(150):
        position = rng.randrange(len(blob))
        flipped = bytearray(blob)
        flipped[position] ^= 1 << rng.randrange(8)
        expect_load_error(tmp_path, bytes(flipped))


def test_wrong_versions(tmp_path, saved):
    _, manifest, data = saved
    expect_load_error(tmp_path, assemble(manifest, data, version=2), "version 2")
    expect_load_error(tmp_path, assemble(manifest, data, version=0), "version")
    expect_load_error(tmp_path, assemble(dict(manifest, version=2), data), "version")
    expect_load_error(tmp_path, assemble(dict(manifest, version=True), data), "version")
    expect_load_error(tmp_path, assemble(dict(manifest, format="other"), data), "format")
    expect_load_error(tmp_path, assemble(manifest, data, flags=1), "flags")
    expect_load_error(tmp_path, assemble(manifest, data, magic=b"\x89GRAPHX\n"), "magic")


def test_valid_reassembly_loads(tmp_path, saved):
    _, manifest, data = saved
    load_bytes(tmp_path, assemble(manifest, data))


def test_duplicate_keys(tmp_path, saved):
    _, manifest, data = saved
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    expect_load_error(tmp_path, assemble(text.replace('"optimize":', '"optimize":false,"optimize":', 1), data),
                      "duplicate")
    expect_load_error(tmp_path, assemble(text.replace('"kind":"placeholder"',
                                                      '"kind":"placeholder","kind":"op"', 1), data), "duplicate")


def _mutated(manifest, change):
    copy = json.loads(json.dumps(manifest))
    change(copy)
    return copy


def _first(manifest, kind, op=None):
    for k, node in enumerate(manifest["nodes"]):
        if node["kind"] == kind and (op is None or node.get("op") == op):
            return k
    raise AssertionError(f"no {kind} {op}")


def test_missing_and_extra_keys(tmp_path, saved):
    _, manifest, data = saved
    for key in list(manifest):
        expect_load_error(tmp_path, assemble(_mutated(manifest, lambda m, key=key: m.pop(key)), data), "missing")
    expect_load_error(tmp_path, assemble(dict(manifest, comment="hi"), data), "unexpected")
    k = _first(manifest, "op")
    for key in list(manifest["nodes"][k]):
        if key != "kind":
            expect_load_error(tmp_path, assemble(_mutated(manifest, lambda m, key=key: m["nodes"][k].pop(key)),
                                                 data))
    expect_load_error(tmp_path, assemble(_mutated(manifest, lambda m: m["arrays"][0].pop("nbytes")), data))
    op_with_params = next(i for i, n in enumerate(manifest["nodes"]) if n["kind"] == "op" and n["params"])
    expect_load_error(tmp_path, assemble(_mutated(
        manifest, lambda m: m["nodes"][op_with_params]["params"].popitem()), data), "missing")
    expect_load_error(tmp_path, assemble(_mutated(
        manifest, lambda m: m["nodes"][op_with_params]["params"].update(evil=["int", 1])), data), "unexpected")


def test_huge_declared_sizes(tmp_path, saved):
    blob, manifest, data = saved
    version, flags, raw, data = split(blob)
    for m, d in ((1 << 62, len(data)), (len(raw), 1 << 62), (2 ** 64 - 1, 0)):
        body = HEADER.pack(MAGIC, 1, 0, m, d) + raw + data
        expect_load_error(tmp_path, body + hashlib.sha256(body).digest())
    for shape in ([10 ** 12], [1 << 40, 1 << 40], [2 ** 62, 2 ** 62, 2 ** 62], [2 ** 70]):
        bad = _mutated(manifest, lambda m, shape=shape: m["arrays"][0].update(shape=shape))
        expect_load_error(tmp_path, assemble(bad, data))
    bad = _mutated(manifest, lambda m: m["arrays"][0].update(nbytes=1 << 60))
    expect_load_error(tmp_path, assemble(bad, data))
    bad = _mutated(manifest, lambda m: m["arrays"][1].update(offset=0))
    expect_load_error(tmp_path, assemble(bad, data))
    bad = _mutated(manifest, lambda m: m["arrays"][0].update(offset=-8))
    expect_load_error(tmp_path, assemble(bad, data))
    k = _first(manifest, "placeholder")
    bad = _mutated(manifest, lambda m: m["nodes"][k].update(shape=[None] * 100))
    expect_load_error(tmp_path, assemble(bad, data), "limit")


def test_cycles_and_forward_references(tmp_path, saved):
    _, manifest, data = saved
    k = _first(manifest, "op")
    for target in (k, k + 1, len(manifest["nodes"]) - 1, -1, 10 ** 9, "0", 0.5, None, True):
        bad = _mutated(manifest, lambda m, target=target: m["nodes"][k]["inputs"].__setitem__(0, target))
        expect_load_error(tmp_path, assemble(json.dumps(bad, sort_keys=True).replace("0.5", "0.5"), data))
    # a two-node cycle: swap the order so a consumer comes first
    bad = _mutated(manifest, lambda m: m["nodes"].reverse())
    expect_load_error(tmp_path, assemble(bad, data))
    for where in ("outputs", "inputs"):
        bad = _mutated(manifest, lambda m, where=where: m[where].append(len(m["nodes"])))
        expect_load_error(tmp_path, assemble(bad, data))


def test_unknown_and_foreign_ops(tmp_path, saved):
    _, manifest, data = saved
    k = _first(manifest, "op", "matmul")
    for name in ("os.system", "no_such_op", "__import__", "", 42, "placeholder", "constant"):
        bad = _mutated(manifest, lambda m, name=name: m["nodes"][k].update(op=name))
        expect_load_error(tmp_path, assemble(bad, data))
    # an op class defined outside graphc is in the registry but never loadable
    from dataclasses import dataclass

    from graphc.op import REGISTRY, Op

    @dataclass(frozen=True)
    class Evil(Op):
        name = "evil_test_op"

        def infer(self, *inputs):
            raise AssertionError("user code ran while loading")

    try:
        bad = _mutated(manifest, lambda m: m["nodes"][k].update(op="evil_test_op", params={}))
        expect_load_error(tmp_path, assemble(bad, data), "unknown op")
    finally:
        REGISTRY.pop("evil_test_op", None)


def test_wrong_parameter_types_and_inconsistent_types(tmp_path, saved):
    _, manifest, data = saved
    cases = []
    k = _first(manifest, "op", "leaky_relu")
    for value in (["str", "0.2"], ["int"], ["float", "zz"], ["float", 0.2], ["tuple", 3], ["bool", 1],
                  ["op", {"op": "no_such", "params": {}}], ["weird", 1], "0.2", ["float", "0x1p+99999"]):
        cases.append(_mutated(manifest, lambda m, v=value: m["nodes"][k]["params"].update(alpha=v)))
    s = _first(manifest, "op", "sum")
    cases.append(_mutated(manifest, lambda m: m["nodes"][s]["params"].update(axes=["tuple", [["int", 7]]])))
    cases.append(_mutated(manifest, lambda m: m["nodes"][s]["params"].update(keepdims=["int", 1])))
    g = _first(manifest, "op", "getitem")
    cases.append(_mutated(manifest, lambda m: m["nodes"][g]["params"].update(
        index=["tuple", [["tuple", [["str", "slice"], ["str", "a"], ["none"], ["none"]]]]])))
    cases.append(_mutated(manifest, lambda m: m["nodes"][g]["params"].update(index=["tuple", [["int", 1]]])))
    deep = ["none"]
    for _ in range(40):
        deep = ["tuple", [deep]]
    cases.append(_mutated(manifest, lambda m: m["nodes"][g]["params"].update(index=deep)))
    c = _first(manifest, "op", "cast")
    cases.append(_mutated(manifest, lambda m: m["nodes"][c]["params"].update(dtype=["dtype", "object"])))
    cases.append(_mutated(manifest, lambda m: m["nodes"][c]["params"].update(dtype=["dtype", "float16"])))
    # declared types that re-inference contradicts
    cases.append(_mutated(manifest, lambda m: m["nodes"][k].update(dtype="float32")))
    cases.append(_mutated(manifest, lambda m: m["nodes"][k].update(shape=[None, 5])))
    cases.append(_mutated(manifest, lambda m: m["nodes"][k].update(shape=[7, 3])))
    p = _first(manifest, "placeholder")
    cases.append(_mutated(manifest, lambda m: m["nodes"][p].update(dtype="complex128")))
    cases.append(_mutated(manifest, lambda m: m["nodes"][p].update(name="")))
    cases.append(_mutated(manifest, lambda m: m["nodes"][p].update(shape=[None, True])))
    cases.append(_mutated(manifest, lambda m: m["nodes"][p].update(shape=[None, -4])))
    for case in cases:
        expect_load_error(tmp_path, assemble(case, data))


def test_bad_graph_wiring(tmp_path, saved):
    _, manifest, data = saved
    v = _first(manifest, "variable")
    o = _first(manifest, "op")
    cases = [
        _mutated(manifest, lambda m: m["inputs"].pop()),                      # a needed placeholder is not fed
        _mutated(manifest, lambda m: m["inputs"].append(m["inputs"][0])),     # fed twice
        _mutated(manifest, lambda m: m["inputs"].append(v)),                  # a variable as input
        _mutated(manifest, lambda m: m["updates"][0].__setitem__(0, o)),      # update of a non-variable
        _mutated(manifest, lambda m: m["updates"].append(m["updates"][0])),   # updated twice
        _mutated(manifest, lambda m: m["updates"][0].__setitem__(1, _first(manifest, "placeholder"))),
        _mutated(manifest, lambda m: m["outputs"].pop()),                     # structure count mismatch
        _mutated(manifest, lambda m: m.update(structure={"set": []})),
        _mutated(manifest, lambda m: m.update(structure={"dict": [[["str", "a"], None], [["str", "a"], None]]})),
        _mutated(manifest, lambda m: m.update(structure=[None])),
        _mutated(manifest, lambda m: m["nodes"][v].update(array=1)),          # array used twice
        _mutated(manifest, lambda m: m["nodes"][v].update(array=999)),
        _mutated(manifest, lambda m: m["arrays"][0].update(dtype="float32")),
        _mutated(manifest, lambda m: m["arrays"].pop()),
    ]
    for case in cases:
        expect_load_error(tmp_path, assemble(case, data))


def test_malformed_manifests(tmp_path, saved):
    _, manifest, data = saved
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    for raw in (b"", b"{", b"[]", b"null", b"\xff\xfe{}", b"{" + b'"a":' * 10 + b"1}", "[" * 100000 + "]" * 100000,
                text.replace('"optimize":false', '"optimize":NaN'), text.replace('"optimize":false', '"optimize":1.5'),
                text.replace('"version":1', '"version":1.0'), text.replace('"version":1', '"version":' + "9" * 5000),
                text + " x"):
        expect_load_error(tmp_path, assemble(raw, data))


def test_bool_array_with_bad_bytes(tmp_path):
    x = gc.placeholder("x", (2,))
    fn = gc.function([x], gc.where(gc.constant(np.array([True, False])), x, 2.0), optimize=False)
    blob = encode(fn)
    _, _, manifest, data = split(blob)
    assert b"\x01\x00" in data
    bad = data.replace(b"\x01\x00", b"\x02\x00", 1)
    expect_load_error(tmp_path, assemble(manifest, bad), "bool")


def test_other_files_renamed(tmp_path, saved):
    train, _, _ = build_model()
    exc = expect_load_error(tmp_path, pickle.dumps(train), "pickle")
    assert "never unpickles" in str(exc) or "pickle" in str(exc)
    expect_load_error(tmp_path, pickle.dumps({"a": 1}, protocol=0))
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(3))
    expect_load_error(tmp_path, npz.read_bytes())
    expect_load_error(tmp_path, b"")
    expect_load_error(tmp_path, os.urandom(4096))
    expect_load_error(tmp_path, MAGIC + os.urandom(200))


def test_random_structural_mutations(tmp_path, saved):
    """Random edits of the manifest (with a valid checksum): a load succeeds or raises LoadError."""
    _, manifest, data = saved
    rng = random.Random(11)
    junk = [None, True, False, 0, -1, 1, 2 ** 40, "", "x", "float64", [], {}, [None], ["int", 1], {"list": []}]

    def containers(value, path=()):
        stack = [(value, path)]
        while stack:
            item, where = stack.pop()
            if isinstance(item, (dict, list)) and item:
                yield item, where
                children = item.items() if isinstance(item, dict) else enumerate(item)
                for key, child in children:
                    stack.append((child, where + (key,)))

    spots = list(containers(manifest))
    outcomes = {"loaded": 0, "error": 0}
    for _ in range(250):
        case = json.loads(json.dumps(manifest))
        _, path = rng.choice(spots)
        target = case
        for key in path:
            target = target[key]
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        action = rng.random()
        if action < 0.2 and isinstance(target, dict):
            del target[key]
        elif action < 0.3 and isinstance(target, list):
            target.insert(key, rng.choice(junk))
        else:
            target[key] = rng.choice(junk)
        try:
            load_bytes(tmp_path, assemble(case, data))
            outcomes["loaded"] += 1
        except gc.LoadError:
            outcomes["error"] += 1
    assert outcomes["error"] > 150


def test_save_beside_training_sees_a_consistent_state(tmp_path):
    import threading

    a = gc.variable(np.zeros(50000), name="a")
    b = gc.variable(np.zeros(50000), name="b")
    step = gc.function([], [], updates={a: a + 1.0, b: b + 1.0})
    stop = threading.Event()

    def train():
        while not stop.is_set():
            step()

    worker = threading.Thread(target=train)
    worker.start()
    try:
        for k in range(15):
            gc.save(step, tmp_path / f"s{k}.gcf")
    finally:
        stop.set()
        worker.join()
    for k in range(15):
        values = {v.name: v.value for v in gc.load(tmp_path / f"s{k}.gcf").plan.updated_variables}
        np.testing.assert_array_equal(values["a"], values["b"])


def test_fused_ops_round_trip_without_absolute_paths(tmp_path):
    from graphc.passes import FUSING_PIPELINE, optimize_tensors

    x = gc.placeholder("x", (None, 4))
    y = gc.tanh(x * 2.0 + 1.0) * gc.sigmoid(x) - x
    (z,) = optimize_tensors([y], FUSING_PIPELINE)
    assert z.op == "fused"
    fn = gc.function([x], z, optimize=False)
    blob = encode(fn)
    assert b'"fused"' in blob and b'"sites"' in blob
    assert os.path.dirname(os.path.abspath(__file__)).encode() not in blob
    path = tmp_path / "fused.gcf"
    path.write_bytes(blob)
    loaded = gc.load(path)
    value = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_array_equal(loaded(value), fn(value))
    assert loaded.plan.outputs[0].op == "fused"


def _every_op_function(optimize: bool):
    rng = np.random.default_rng(3)
    x = gc.placeholder("x", (None, 4))
    m = gc.placeholder("m", (4, 4), dtype="float32")
    idx = gc.placeholder("idx", (None,), dtype="int64")
    w = gc.variable(rng.normal(size=(4, 3)), name="w")
    alpha = gc.variable(np.full(4, 0.2), name="alpha")
    h = gc.matmul(x, w)
    parts = [
        gc.sum(x, axis=(0, 1)), gc.mean(x, axis=0, keepdims=True), gc.max(x, axis=1), gc.min(x), gc.prod(x, axis=-1),
        gc.logsumexp(x, axis=1), gc.transpose(gc.reshape(x, (-1, 2, 2)), (0, 2, 1)), gc.expand_dims(x, 1),
        gc.squeeze(gc.expand_dims(x, 0), 0), gc.broadcast_to(gc.sum(x, axis=0), (2, 4)),
        gc.concatenate([x, x * 2.0], axis=1), gc.stack([x, x], axis=2), gc.take(x, gc.constant([3, 0]), axis=1),
        gc.take(x, gc.constant([1, 2])), gc.one_hot(idx, 4, dtype="float32"), gc.einsum("bi,ij->bj", x, m),
        gc.dot(gc.sum(x, axis=0), gc.sum(x, axis=0)), gc.outer(gc.sum(x, axis=0), gc.sum(x, axis=1)),
        gc.softmax(h, axis=0), gc.log_softmax(h), gc.softmax_cross_entropy(h, idx),
        gc.softmax_cross_entropy(h, gc.softmax(h * 0.5)), gc.sigmoid_cross_entropy(x, gc.sigmoid(x)),
        gc.clip(x, -0.5, 0.5), gc.where(x > 0.0, x, -x), gc.maximum(x, 0.1), gc.minimum(x, m[0]), gc.elu(x, 0.7),
        gc.gelu(x), gc.gelu(x, approximate=True), gc.leaky_relu(x, 0.3), gc.prelu(x, alpha), gc.hard_tanh(x),
        gc.step(x), gc.sign(x), gc.abs(x), gc.pow(gc.abs(x) + 1.0, 1.5), x[::-2, 1:3], x[None, ..., 0],
        x[-1], x[idx], x[x[:, 0] > 0.0],
        gc.cast(x > 0.0, "int32"), gc.cast(x, "bool"), gc.stop_gradient(x), gc.zeros_like(x), gc.ones_like(m),
        gc.equal(x, 0.0), gc.not_equal(x, 0.0), gc.less_equal(x, 1.0), gc.greater_equal(x, 1.0),
        gc.silu(x), gc.softplus(x), gc.log1p(gc.abs(x)), gc.expm1(x), gc.sqrt(gc.abs(x)), gc.cos(x), gc.sin(x),
        # API contract section 15, element-wise
        gc.tan(x), gc.arcsin(x * 0.1), gc.arccos(x * 0.1), gc.arctan(x), gc.arctan2(x, m[0]), gc.sinh(x), gc.cosh(x),
        gc.arcsinh(x), gc.arccosh(gc.abs(x) + 1.5), gc.arctanh(x * 0.1), gc.exp2(x), gc.log2(gc.abs(x) + 1.0),
        gc.log10(gc.abs(x) + 1.0), gc.reciprocal(x), gc.rsqrt(gc.abs(x) + 1.0), gc.floor(x), gc.ceil(x),
        gc.trunc(x), gc.round(x * 3.0), gc.mod(x, 0.7), gc.floor_divide(x, 0.7), gc.logaddexp(x, m[1]),
        gc.isnan(x), gc.isinf(x), gc.isfinite(x), gc.logical_and(x > 0.0, m[0] > 0.0),
        gc.logical_or(x > 0.0, m[0] > 0.0), gc.logical_xor(x > 0.0, m[0] > 0.0), gc.logical_not(x > 0.0),
        apply(SoftmaxMinusOneHot(), h, idx),  # made by the compiler, saved like any op
        gc.exp(x), gc.log(gc.abs(x) + 1.0), gc.relu(x), gc.less(x, 0.5), x.with_name("renamed"), erf(x),
        apply(SparseTarget(1), idx, h), fuse([gc.tanh(x * 2.0) + x])[0],
        gc.grad(gc.sum(gc.einsum("ii->i", m)), m),  # diagonal_mask
        gc.grad(gc.sum(gc.grad(gc.sum(gc.prod(x, axis=1)), x) * x), x),  # prod_others_grad
        apply(ShapeCheck(), x, x * 2.0), apply(SqueezeCheck((1,)), x),
    ]
    gen = gc.random.Generator(8)  # draws: the copies, saved before the first call, draw what it draws
    parts += [gen.uniform(like=x, low=-1.0, high=1.0), gen.normal((3,), dtype="float32"),
              gen.bernoulli(0.3, like=x), gen.integers(0, 5, (2,)), gc.dropout(x, 0.5, gen),
              gc.random.StepKeys(from_count=False)(x)]
    loss = gc.sum(gc.square(h)) + gc.sum(gc.prod(x, axis=1)) + gc.sum(x[idx]) + gc.sum(gc.take(x, idx, axis=1))
    loss = loss + gc.sum(gc.concatenate([x, x], axis=0)) + gc.sum(gc.max(x, axis=0)) + gc.sum(gc.prelu(x, alpha))
    loss = loss + gc.sum(gc.tanh(x) * gc.arctan(x) + gc.mod(x, 0.7) + gc.logaddexp(x, 0.5) + gc.rsqrt(x * x + 1.0))
    # reduced_count, reshape_like, softmax_over: gradients over the unknown batch size
    loss = loss + gc.sum(gc.mean(x, axis=0)) + gc.sum(gc.reshape(x, (-1, 2, 2)) ** 2) + gc.sum(gc.logsumexp(x, axis=1))
    grads = gc.grad(loss, [w, alpha, x])
    fn = gc.function([x, m, idx], {"parts": parts, "grads": grads}, updates={w: w - 0.01 * grads[0]},
                     optimize=optimize)
    feeds = (rng.normal(size=(5, 4)), rng.normal(size=(4, 4)).astype(np.float32), np.array([0, 2, 1, 2, 1]))
    return fn, feeds


@pytest.mark.parametrize("optimize", [True, False])
def test_every_op_round_trips_through_save_and_pickle(tmp_path, optimize):
    fn, feeds = _every_op_function(optimize)
    gc.save(fn, tmp_path / "all.gcf")
    copies = [gc.load(tmp_path / "all.gcf"), pickle.loads(pickle.dumps(fn))]
    expected = fn(*feeds)
    for copy in copies:
        got = copy(*feeds)
        for a, b in zip(got["parts"] + list(got["grads"]), expected["parts"] + list(expected["grads"])):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=fn.to_dot().encode(), capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()


# ---- every loader limit is checked by save (issue 15, point 1) ------------------------------------

def _save_then_load(tmp_path, fn, name="limit.gcf"):
    path = tmp_path / name
    gc.save(fn, path)
    return gc.load(path)


def _refused_before_writing(tmp_path, fn, match):
    path = tmp_path / "refused.gcf"
    with pytest.raises(SaveError, match=match) as info:
        gc.save(fn, path)
    assert isinstance(info.value, gc.GraphcError) and isinstance(info.value, ValueError)
    assert not path.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".graphc-")]


def test_slice_bounds_at_the_int64_limits_save_and_load(tmp_path):
    x = gc.placeholder("x", (None,))
    fn = gc.function([x], [x[:sys.maxsize], x[-2**63:], x[-2**63:sys.maxsize:2]], optimize=False)
    loaded = _save_then_load(tmp_path, fn)
    data = np.arange(5.0)
    for got, want in zip(loaded(data), fn(data)):
        np.testing.assert_array_equal(got, want)


def test_names_at_the_limit_save_and_longer_ones_are_refused(tmp_path):
    from graphc.serialize import MAX_NAME_LENGTH

    x = gc.placeholder("p" * MAX_NAME_LENGTH, (2,))
    loaded = _save_then_load(tmp_path, gc.function([x], x * 2.0))
    assert loaded.plan.inputs[0].name == "p" * MAX_NAME_LENGTH
    y = gc.placeholder("q" * (MAX_NAME_LENGTH + 1), (2,))
    _refused_before_writing(tmp_path, gc.function([y], y * 2.0), "4097 characters is over gc.load's limit of 4096")


def test_stack_and_concatenate_of_more_than_65536_tensors(tmp_path):
    s = gc.placeholder("s", ())
    v = gc.placeholder("v", (1,))
    n = (1 << 16) + 3
    fn = gc.function([s, v], [gc.stack([s] * n), gc.concatenate([v] * n)], optimize=False)
    stacked, joined = _save_then_load(tmp_path, fn)(2.0, np.ones(1))
    assert stacked.shape == (n,) and joined.shape == (n,) and stacked[-1] == 2.0


def test_output_keys_at_the_limit_save_and_longer_ones_are_refused(tmp_path):
    from graphc.serialize import MAX_STR_PARAM

    x = gc.placeholder("x", (2,))
    key = "k" * MAX_STR_PARAM
    loaded = _save_then_load(tmp_path, gc.function([x], {key: x * 2.0, 2**63 - 1: x}))
    assert set(loaded(np.ones(2))) == {key, 2**63 - 1}
    _refused_before_writing(tmp_path, gc.function([x], {key + "k": x * 2.0}), "65537 characters")
    _refused_before_writing(tmp_path, gc.function([x], {2**63: x * 2.0}), "int64")


def test_outputs_nested_at_the_limit_save_and_deeper_ones_are_refused(tmp_path):
    from graphc.serialize import MAX_STRUCTURE_DEPTH

    x = gc.placeholder("x", (2,))

    def nested(levels):
        out = x * 2.0
        for k in range(levels):
            out = [out] if k % 2 else {"a": out}
        return out

    loaded = _save_then_load(tmp_path, gc.function([x], nested(MAX_STRUCTURE_DEPTH)))
    value = loaded(np.ones(2))
    for k in reversed(range(MAX_STRUCTURE_DEPTH)):
        value = value[0] if k % 2 else value["a"]
    np.testing.assert_array_equal(value, [2.0, 2.0])
    _refused_before_writing(tmp_path, gc.function([x], nested(MAX_STRUCTURE_DEPTH + 1)), "nested 65 levels")


def test_integer_parameters_outside_int64_are_refused_by_save(tmp_path):
    x = gc.placeholder("x", (None,))
    _refused_before_writing(tmp_path, gc.function([x], x[:2**63], optimize=False), "int64 range")


# ---- tampered fused programs (issue 15, point 2) --------------------------------------------------

def _fused_file():
    """A saved fused node (x (3,) float64 -> fused -> mul -> exp), its manifest and data."""
    from graphc.passes import FUSING_PIPELINE, optimize_tensors

    x = gc.placeholder("x", (3,))
    (z,) = optimize_tensors([gc.tanh(x * 2.0 + 1.0)], FUSING_PIPELINE)
    assert z.op == "fused"
    fn = gc.function([x], gc.exp(z * 2.0), optimize=False)
    _, _, manifest, data = split(encode(fn))
    manifest = json.loads(manifest)
    (index,) = [k for k, n in enumerate(manifest["nodes"]) if n.get("op") == "fused"]
    return manifest, data, index


def _step(op, *args, params=None):
    return ["tuple", [["op", {"op": op, "params": params or {}}], ["tuple", [["int", a] for a in args]]]]


_F64 = ["dtype", "float64"]
_TAMPERED_PROGRAMS = {
    "empty program": dict(steps=[], dtypes=[]),
    "stop_gradient step, mismatched dtype": dict(steps=[_step("stop_gradient", 0)], dtypes=[["dtype", "float32"]]),
    "stop_gradient step": dict(steps=[_step("stop_gradient", 0)], dtypes=[_F64]),
    "a view op": dict(steps=[_step("broadcast_to", 0, params={"shape": ["tuple", [["int", 3]]]})], dtypes=[_F64]),
    "mismatched dtype": dict(steps=[_step("exp", 0)], dtypes=[["dtype", "float32"]]),
    "fewer dtypes": dict(steps=[_step("exp", 0), _step("exp", 1)], dtypes=[_F64]),
    "a later value": dict(steps=[_step("exp", 1)], dtypes=[_F64]),
    "a negative index": dict(steps=[_step("exp", -1)], dtypes=[_F64]),
    "no arguments": dict(steps=[_step("exp")], dtypes=[_F64]),
    "too many arguments": dict(steps=[_step("exp", 0, 0)], dtypes=[_F64]),
    "wrong input count": dict(steps=[_step("exp", 0)], dtypes=[_F64], n_inputs=2),
    "a nested fused op": dict(steps=[["tuple", [["op", {"op": "fused", "params": {
        "steps": ["tuple", []], "n_inputs": ["int", 1], "dtypes": ["tuple", []], "sites": ["tuple", []]}}],
        ["tuple", [["int", 0]]]]]], dtypes=[_F64]),
}


@pytest.mark.parametrize("case", sorted(_TAMPERED_PROGRAMS))
def test_tampered_fused_programs_do_not_load(tmp_path, case):
    manifest, data, index = _fused_file()
    program = _TAMPERED_PROGRAMS[case]
    node = manifest["nodes"][index]
    node["inputs"] = [[k for k, n in enumerate(manifest["nodes"]) if n["kind"] == "placeholder"][0]]
    node["params"] = {"steps": ["tuple", program["steps"]], "n_inputs": ["int", program.get("n_inputs", 1)],
                      "dtypes": ["tuple", program["dtypes"]], "sites": ["tuple", []]}
    node["shape"], node["dtype"] = [3], "float64"
    expect_load_error(tmp_path, assemble(manifest, data))


def test_a_valid_fused_program_still_loads(tmp_path):
    manifest, data, _ = _fused_file()
    loaded = load_bytes(tmp_path, assemble(manifest, data))
    feed = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(loaded(feed), np.exp(np.tanh(feed * 2.0 + 1.0) * 2.0))
    np.testing.assert_array_equal(feed, [0.5, -1.0, 2.0])


# ---- SymPy formulas cannot ask for unbounded work (issue 15, point 3) ----------------------------

def _formula_file(program):
    """A saved gc.elementwise op whose formula is replaced by ``program`` (a list of token tuples)."""
    import sympy

    op = gc.elementwise("formula_dos", lambda v: v * sympy.tanh(v))
    x = gc.placeholder("x", (3,))
    _, _, manifest, data = split(encode(gc.function([x], op(x))))
    manifest = json.loads(manifest)
    (node,) = [n for n in manifest["nodes"] if n.get("op") == "sympy_elementwise"]

    def typed(item):
        return ["str", item] if isinstance(item, str) else ["int", item]

    node["params"]["expr"] = ["tuple", [["tuple", [typed(item) for item in token]] for token in program]]
    return assemble(manifest, data)


def _tower(levels):  # x0 * (((2 ** 999) ** 999) ** 999 ...)
    program = [("x", 0), ("int", "2")]
    for _ in range(levels):
        program += [("int", "999"), ("fn", "pow", 2)]
    return program + [("fn", "mul", 2)]


_BIG = "9" * 400
_EXPENSIVE_FORMULAS = {
    "exponent tower": _tower(3),
    "exponent tower through a product": [("x", 0), ("int", "2"), ("fn", "mul", 2), ("int", "999"),
                                         ("fn", "pow", 2), ("int", "999"), ("fn", "pow", 2)],
    "max of thousands of integers": [("x", 0)] + [("int", str(k)) for k in range(3000)] + [("fn", "max", 3001)],
    "max flattened from small ones": [("x", 0)] + [tok for k in range(100) for tok in (
        ("int", str(2 * k)), ("int", str(2 * k + 1)), ("fn", "max", 2))] + [("fn", "max", 101)],
    "product of thousands of 400-digit integers": [("x", 0)] + [("int", _BIG)] * 2000 + [("fn", "mul", 2001)],
    "nested past the depth limit": [("x", 0)] + [("fn", "sin", 1)] * 500,
}


@pytest.mark.parametrize("case", sorted(_EXPENSIVE_FORMULAS))
def test_formulas_asking_for_unbounded_work_do_not_load(tmp_path, case):
    exc = expect_load_error(tmp_path, _formula_file(_EXPENSIVE_FORMULAS[case]))
    assert "sympy_elementwise" in str(exc)


def test_formulas_within_the_bounds_still_load(tmp_path):
    from graphc.sympy_bridge import MAX_FORMULA_DEPTH, MAX_MINMAX_ARGS

    program = [("x", 0)] + [("fn", "tanh", 1)] * (MAX_FORMULA_DEPTH - 1) + [
        ("int", "3")] + [("int", str(k)) for k in range(MAX_MINMAX_ARGS - 2)] + [("fn", "max", MAX_MINMAX_ARGS)]
    loaded = load_bytes(tmp_path, _formula_file(program))
    value = loaded(np.array([0.5, -1.0, 200.0]))
    np.testing.assert_allclose(value, [MAX_MINMAX_ARGS - 3] * 3)
    loaded = load_bytes(tmp_path, _formula_file(_tower(1)), "tower.gcf")  # x0 * 2**999 is fine
    np.testing.assert_allclose(loaded(np.array([0.0, 1.0, -1.0]) * 2.0 ** -990), [0.0, 2.0 ** 9, -2.0 ** 9])


def test_elementwise_refuses_formulas_the_loader_would_refuse():
    import sympy

    def deep(v):
        for _ in range(100):
            v = sympy.sin(v)
        return v

    with pytest.raises(ValueError, match="nested more than 64"):
        gc.elementwise("too_deep", deep)


# ---- shapes the loader re-infers instead of trusting (issue 15, point 4) -------------------------

def _shape_op_file():
    """Unoptimized: reshape_like and broadcast_like with a reference input, getitem_grad and take_grad."""
    from graphc.ops.shape import broadcast_like, reshape_like

    x = gc.placeholder("x", (None, 2))
    v = gc.placeholder("v", (10,))
    flat = gc.reshape(x, (-1,))
    twice = x * 2.0
    loss = gc.sum(v[2:5] ** 2) + gc.sum(gc.take(v, gc.constant(np.array([1, 1, 4])), axis=0))
    outputs = [reshape_like(flat, twice), broadcast_like(gc.constant(np.ones(1)), twice), gc.grad(loss, v)]
    fn = gc.function([x, v], outputs, optimize=False)
    _, _, manifest, data = split(encode(fn))
    return json.loads(manifest), data, fn


def _op_nodes(manifest, op):
    return [n for n in manifest["nodes"] if n.get("op") == op]


_TAMPERED_SHAPES = {
    "reshape_like to a shape its reference does not have": ("reshape_like", [None, 3]),
    "broadcast_like to a shape its reference does not have": ("broadcast_like", [None, 5]),
    "getitem_grad into 10**12 zeros": ("getitem_grad", [10**12]),
    "getitem_grad of another rank": ("getitem_grad", [10, 1]),
    "take_grad into 10**12 zeros": ("take_grad", [10**12, 3]),
}


@pytest.mark.parametrize("case", sorted(_TAMPERED_SHAPES))
def test_declared_shapes_are_inferred_again(tmp_path, case):
    manifest, data, _ = _shape_op_file()
    op, shape = _TAMPERED_SHAPES[case]
    for node in _op_nodes(manifest, op):
        node["params"]["shape"] = ["tuple", [["none"] if s is None else ["int", s] for s in shape]]
        node["shape"] = shape
    if op == "getitem_grad":  # a whole-array index: the scatter's target is the gradient's shape
        for node in _op_nodes(manifest, op):
            node["params"]["index"] = ["tuple", [["tuple", [["str", "slice"], ["none"], ["none"], ["none"]]]]]
    exc = expect_load_error(tmp_path, assemble(manifest, data))
    assert op in str(exc) and "declares shape" in str(exc)


def test_a_reference_input_may_not_be_dropped_or_doubled(tmp_path):
    manifest, data, _ = _shape_op_file()
    (node,) = _op_nodes(manifest, "reshape_like")
    node["inputs"] = node["inputs"][:1]
    expect_load_error(tmp_path, assemble(manifest, data), "no reference input")
    manifest, data, _ = _shape_op_file()
    (node,) = _op_nodes(manifest, "reshape_like")
    node["inputs"] = node["inputs"] + node["inputs"][1:]
    expect_load_error(tmp_path, assemble(manifest, data), "at most one shape reference")


def test_untampered_shape_ops_load_and_agree(tmp_path):
    manifest, data, fn = _shape_op_file()
    assert all(_op_nodes(manifest, op) for op in ("reshape_like", "broadcast_like", "getitem_grad", "take_grad"))
    loaded = load_bytes(tmp_path, assemble(manifest, data))
    feeds = (np.arange(6.0).reshape(3, 2), np.arange(10.0))
    for got, want in zip(loaded(*feeds), fn(*feeds)):
        np.testing.assert_array_equal(got, want)


def _mutate_typed(value, rng):
    """A random edit of one leaf, or of one list, inside a typed parameter value (in place)."""
    paths = []

    def walk(item, parent, key):
        if isinstance(item, dict):
            for k, child in item.items():
                walk(child, item, k)
        elif isinstance(item, list):
            paths.append((parent, key, item))
            for k, child in enumerate(item):
                walk(child, item, k)

    walk(value, None, None)
    parent, key, item = paths[rng.randrange(len(paths))]
    choice = rng.randrange(4)
    if choice == 0 and item:
        del item[rng.randrange(len(item))]
    elif choice == 1 and item:
        item.insert(rng.randrange(len(item) + 1), json.loads(json.dumps(item[rng.randrange(len(item))])))
    elif item and item[0] == "int":
        item[1] = rng.choice([-(2**63), -2, -1, 0, 1, 2, 3, 5, 10**12, 2**62])
    elif item and item[0] == "str":
        item[1] = rng.choice(["x", "int", "fn", "pow", "max", "mul", "stop_gradient", "exp", "slice", "999"])
    elif item and item[0] == "dtype":
        item[1] = rng.choice(["float32", "int64", "bool"])
    elif parent is not None:
        parent[key] = ["none"]


def test_fuzz_tampered_fused_formula_and_shape_parameters(tmp_path):
    """Points 2-4 of issue 15 under random checksum-valid edits: nothing but LoadError escapes the
    loader, and what loads never writes into the caller's arrays."""
    rng = random.Random(15)
    fused_manifest, fused_data, _ = _fused_file()
    shape_manifest, shape_data, _ = _shape_op_file()
    formula_blob = _formula_file(_tower(1))
    _, _, formula_manifest, formula_data = split(formula_blob)
    sources = [(fused_manifest, fused_data, {"fused"}, [np.array([0.5, -1.0, 2.0])]),
               (shape_manifest, shape_data, {"reshape_like", "broadcast_like", "getitem_grad", "take_grad"},
                [np.arange(6.0).reshape(3, 2), np.arange(10.0)]),
               (json.loads(formula_manifest), formula_data, {"sympy_elementwise"}, [np.array([0.0, 1.0, -1.0])])]
    loaded = 0
    for trial in range(90):
        manifest, data, ops, feeds = sources[trial % len(sources)]
        manifest = json.loads(json.dumps(manifest))
        targets = [n for n in manifest["nodes"] if n.get("op") in ops]
        for _ in range(rng.randrange(1, 4)):
            node = rng.choice(targets)
            _mutate_typed(node["params"], rng)
        try:
            fn = load_bytes(tmp_path, assemble(manifest, data))
        except gc.LoadError:
            continue
        loaded += 1
        copies = [feed.copy() for feed in feeds]
        try:
            fn(*copies)
        except (gc.GraphcError, ValueError, TypeError):
            pass
        for feed, copy in zip(feeds, copies):
            np.testing.assert_array_equal(copy, feed)
    assert loaded < 90


# ---- section 15's non-element-wise ops ------------------------------------------------------------

def _section15_function(optimize: bool):
    """Every op of section 15 (reductions, scans, ordering, shape) and their gradients, sizes unknown."""
    x = gc.placeholder("x", (None, 4))
    sq = gc.placeholder("sq", (3, None, 3))
    values, indices = gc.top_k(x, 2)
    parts = [
        gc.var(x, axis=0, ddof=1), gc.std(x, axis=(0, 1), keepdims=True), gc.norm(x, 1, axis=1),
        gc.norm(x, np.inf), gc.norm(x, 2, axis=0, keepdims=True), gc.any(x > 0.0, axis=1), gc.all(x < 2.0),
        gc.argmax(x, axis=1), gc.argmin(x), gc.cumsum(x, 1), gc.cumprod(x), gc.sort(x, 0), gc.argsort(x),
        values, indices, gc.tile(x, (2, 1, 3)), gc.repeat(x, 3, -1), gc.flip(x, 1), gc.roll(x, (1, -2), (0, 1)),
        gc.roll(x, 3), *gc.split(x, 2, axis=1), *gc.split(x, [1, 3], 1), gc.tril(sq, -1), gc.triu(sq, 1),
        gc.diagonal(sq, 1, 0, 2), gc.trace(sq, 0, 2, 0),
    ]
    loss = gc.sum(gc.square(parts[0])) + gc.sum(parts[1] * parts[2][0])
    loss = sum((gc.sum(p * p) for p in parts if p.dtype == np.float64), loss)
    grads = gc.grad(loss, [x, sq])
    second = gc.grad(gc.sum(grads[0] * grads[0]) + gc.sum(grads[1]), [x, sq])
    fn = gc.function([x, sq], {"parts": parts, "grads": list(grads) + list(second)}, optimize=optimize)
    rng = np.random.default_rng(15)
    return fn, (rng.normal(size=(6, 4)), rng.normal(size=(3, 5, 3)))


@pytest.mark.parametrize("optimize", [True, False])
def test_section15_ops_round_trip_through_save_and_pickle(tmp_path, optimize):
    fn, feeds = _section15_function(optimize)
    gc.save(fn, tmp_path / "s15.gcf")
    expected = fn(*feeds)
    reference = _section15_function(not optimize)[0](*feeds)  # optimizing changes no value
    for copy in (gc.load(tmp_path / "s15.gcf"), pickle.loads(pickle.dumps(fn))):
        got = copy(*feeds)
        for a, b, c in zip(got["parts"] + got["grads"], expected["parts"] + expected["grads"],
                           reference["parts"] + reference["grads"]):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
            assert np.all(np.isfinite(a))


def test_section15_tampered_parameters(tmp_path):
    """Parameters of the new ops are typed and validated on load: wrong types, out-of-range axes,
    inconsistent pieces and orders are a LoadError, never an exception from NumPy or a wrong graph."""
    fn, _ = _section15_function(optimize=False)
    _, _, raw, data = split(encode(fn))
    manifest = json.loads(raw)
    bad_values = {
        "var": [("ddof", ["float", "0x1p+0"]), ("axes", ["tuple", [["int", 5]]]), ("axes", ["int", 0])],
        "norm": [("ord", ["float", "0x1.8p+1"]), ("ord", ["str", "fro"]), ("keepdims", ["int", 0])],
        "argmax": [("axis", ["int", 2]), ("axis", ["bool", True]), ("keepdims", ["none"])],
        "cumprod": [("axis", ["int", -1]), ("axis", ["int", 1])],
        "sort": [("axis", ["int", 7])],
        "top_k": [("k", ["int", -1]), ("k", ["int", 99999]), ("k", ["float", "0x1p+1"])],
        "take_along_axis": [("axis", ["int", 3])],
        "tile": [("reps", ["tuple", [["int", 2]]]), ("reps", ["tuple", [["int", -1], ["int", 1]]]),
                 ("reps", ["tuple", [["str", "a"], ["int", 1], ["int", 1]]])],
        "repeat": [("repeats", ["int", -3]), ("axis", ["int", 4])],
        "flip": [("axes", ["tuple", [["int", 1], ["int", 1]]]), ("axes", ["tuple", [["int", 9]]])],
        "roll": [("shifts", ["tuple", []]), ("axes", ["tuple", [["int", 3], ["int", 0]]]),
                 ("shifts", ["tuple", [["float", "0x1p+0"], ["int", 1]]])],
        "split": [("index", ["int", 7]), ("sections", ["int", 3]), ("indices", ["tuple", [["str", "1"]]]),
                  ("sections", ["int", -2])],
        "tril": [("k", ["float", "0x1p+0"])],
        "diagonal": [("axis1", ["int", 2]), ("axis2", ["int", 5]), ("offset", ["none"])],
        "trace": [("axis1", ["int", 0])],
    }
    cases = []
    for op, changes in bad_values.items():
        k = _first(manifest, "op", op)
        for key, value in changes:
            cases.append(_mutated(manifest, lambda m, k=k, key=key, value=value: m["nodes"][k]["params"].update(
                {key: value})))
    for op in ("linear_scan", "shift", "take_along_axis_grad", "split_grad", "repeat_grad"):
        k = _first(manifest, "op", op)
        cases.append(_mutated(manifest, lambda m, k=k: m["nodes"][k]["params"].update(axis=["int", 11])))
    # a scatter whose target shape does not fit its cotangent (declared consistently, so infer decides)
    for op in ("tile_grad", "repeat_grad", "split_grad", "diagonal_grad", "take_along_axis_grad"):
        k = _first(manifest, "op", op)
        shape = manifest["nodes"][k]["shape"]
        wrong = [7 if size is None else size + 1 for size in shape]

        def change(m, k=k, wrong=wrong, kept=2 if op == "take_along_axis_grad" else 1):
            m["nodes"][k]["params"]["shape"] = ["tuple", [["int", size] for size in wrong]]
            m["nodes"][k]["shape"] = wrong
            m["nodes"][k]["inputs"] = m["nodes"][k]["inputs"][:kept]  # no run-time shape reference

        cases.append(_mutated(manifest, change))
    for case in cases:
        expect_load_error(tmp_path, assemble(case, data))
# ---- model files: a dict of functions sharing variables (format version 2) ---------------------

def build_train_predict(seed: int = 0):
    """A training step (Adam, with its state variables) and a prediction function sharing W and b."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (None, 4))
    labels = gc.placeholder("labels", (None,), dtype="int64")
    w = gc.variable(gc.init.glorot_uniform((4, 3), seed=seed), name="W")
    b = gc.variable(gc.init.zeros(3), name="b")
    logits = gc.matmul(x, w) + b
    loss = gc.mean(gc.softmax_cross_entropy(logits, labels)).with_name("loss")
    train = gc.function([x, labels], loss, updates=gc.optim.adam(loss, [w, b], lr=0.05))
    predict = gc.function([x], {"logits": logits})
    feeds = (rng.normal(size=(6, 4)), np.array([0, 1, 2, 1, 0, 2]))
    return {"train": train, "predict": predict}, (w, b), feeds


def test_model_file_round_trip_restores_the_sharing(tmp_path):
    model, (w, b), feeds = build_train_predict()
    model["train"](*feeds)
    gc.save(model, tmp_path / "model.gcf")
    loaded = gc.load(tmp_path / "model.gcf")
    assert list(loaded) == ["train", "predict"]
    train, predict = loaded["train"], loaded["predict"]
    np.testing.assert_array_equal(predict(feeds[0])["logits"], model["predict"](feeds[0])["logits"])
    # the two loaded functions hold the very same variables
    shared = {v.name: v for v in predict.plan.variables}
    assert {v.name: v for v in train.plan.updated_variables}["W"] is shared["W"]
    before = predict(feeds[0])["logits"]
    for _ in range(3):
        assert train(*feeds) == model["train"](*feeds)  # the Adam state came along: same trajectory
    after = predict(feeds[0])["logits"]
    assert not np.allclose(after, before)               # training after loading changes the prediction
    np.testing.assert_array_equal(after, model["predict"](feeds[0])["logits"])
    np.testing.assert_array_equal(shared["W"].value, w.value)
    assert shared["W"] is not w                          # loading makes new variables


def test_model_file_stores_each_shared_variable_once(tmp_path):
    model, _, _ = build_train_predict()
    _, _, raw, _ = split(encode(model))
    manifest = json.loads(raw)
    assert manifest["format"] == "graphc-model" and manifest["version"] == 2
    names = [node["name"] for node in manifest["nodes"] if node["kind"] == "variable"]
    assert sorted(names) == sorted(["W", "b", "adam/step", "W/adam_m", "W/adam_v", "b/adam_m", "b/adam_v"])
    assert [f["name"] for f in manifest["functions"]] == ["train", "predict"]
    # the header says version 2; a single function is still written as version 1, readable by older graphc
    assert split(encode(model))[0] == 2
    assert split(encode(model["predict"]))[0] == 1


def test_model_file_is_deterministic_and_keeps_the_order(tmp_path):
    model, _, _ = build_train_predict()
    assert encode(model) == encode(dict(model))
    reordered = encode({"predict": model["predict"], "train": model["train"]})
    gc.save({"predict": model["predict"], "train": model["train"]}, tmp_path / "r.gcf")
    assert list(gc.load(tmp_path / "r.gcf")) == ["predict", "train"]
    assert reordered != encode(model)


def test_a_dict_of_one_function_comes_back_as_a_dict(tmp_path):
    model, _, feeds = build_train_predict()
    gc.save({"predict": model["predict"]}, tmp_path / "p.gcf")
    loaded = gc.load(tmp_path / "p.gcf")
    assert isinstance(loaded, dict) and list(loaded) == ["predict"]
    np.testing.assert_array_equal(loaded["predict"](feeds[0])["logits"], model["predict"](feeds[0])["logits"])


def test_saving_bad_dicts_is_refused(tmp_path):
    model, _, _ = build_train_predict()
    with pytest.raises(ValueError, match="empty"):
        gc.save({}, tmp_path / "e.gcf")
    with pytest.raises(TypeError, match="names must be non-empty strings"):
        gc.save({1: model["train"]}, tmp_path / "e.gcf")
    with pytest.raises(TypeError, match="names must be non-empty strings"):
        gc.save({"": model["train"]}, tmp_path / "e.gcf")
    with pytest.raises(TypeError, match="'predict' is a list, not a compiled Function"):
        gc.save({"train": model["train"], "predict": [model["predict"]]}, tmp_path / "e.gcf")
    with pytest.raises(TypeError, match="or a dict of them"):
        gc.save([model["train"]], tmp_path / "e.gcf")
    assert not os.path.exists(tmp_path / "e.gcf")


@pytest.fixture(scope="module")
def saved_model():
    model, _, _ = build_train_predict()
    blob = encode(model)
    _, _, manifest, data = split(blob)
    return blob, json.loads(manifest), data


def test_model_files_are_validated(tmp_path, saved_model):
    blob, manifest, data = saved_model
    load_bytes(tmp_path, assemble(manifest, data, version=2))  # reassembled as it was: loads
    expect_load_error(tmp_path, assemble(manifest, data, version=1), "expected 'graphc-function' in a version 1 file")
    expect_load_error(tmp_path, assemble(dict(manifest, version=1), data, version=2),
                      "1 does not match the header's format version 2")
    expect_load_error(tmp_path, assemble(manifest, data, version=3), "unsupported format version 3")
    expect_load_error(tmp_path, assemble(dict(manifest, functions=[]), data, version=2), "holds no function")
    expect_load_error(tmp_path, assemble(dict(manifest, functions={}), data, version=2), "expected a list")
    twice = [manifest["functions"][0], dict(manifest["functions"][1], name="train")]
    expect_load_error(tmp_path, assemble(dict(manifest, functions=twice), data, version=2), "used twice")
    unnamed = [dict(manifest["functions"][0], name="")] + manifest["functions"][1:]
    expect_load_error(tmp_path, assemble(dict(manifest, functions=unnamed), data, version=2), "non-empty name")
    extra = [dict(manifest["functions"][0], colour="red")] + manifest["functions"][1:]
    expect_load_error(tmp_path, assemble(dict(manifest, functions=extra), data, version=2), "unexpected keys")
    missing = dict(manifest["functions"][1])
    del missing["updates"]
    expect_load_error(tmp_path, assemble(dict(manifest, functions=[manifest["functions"][0], missing]), data,
                                         version=2), "functions[1]: missing keys ['updates']")
    bad_ref = [manifest["functions"][0], dict(manifest["functions"][1], outputs=[10 ** 6])]
    expect_load_error(tmp_path, assemble(dict(manifest, functions=bad_ref), data, version=2),
                      "functions[1].outputs[0]")
    single_keys = dict(manifest, inputs=[], outputs=[], structure=None, updates=[], optimize=True)
    expect_load_error(tmp_path, assemble(single_keys, data, version=2), "unexpected keys")
    expect_load_error(tmp_path, assemble(dict(manifest, format="graphc-function"), data, version=2), "missing keys")
    expect_load_error(tmp_path, assemble(dict(manifest, format="other"), data, version=2), "missing keys")


def test_model_file_byte_flips_and_truncations(tmp_path, saved_model):
    blob = saved_model[0]
    rng = random.Random(7)
    for _ in range(40):
        position = rng.randrange(len(blob))
        flipped = bytearray(blob)
        flipped[position] ^= 1 << rng.randrange(8)
        expect_load_error(tmp_path, bytes(flipped))
    for cut in (1, 33, len(blob) // 2, len(blob) - 1):
        expect_load_error(tmp_path, blob[:cut])
