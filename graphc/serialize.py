"""``gc.save`` / ``gc.load``: a safe file format for compiled functions.

Loading runs nothing from the file: no pickle, no ``eval``, no import of a
name read from the file. A file is a fixed header, a JSON manifest, raw
little-endian array bytes and a SHA-256 checksum over everything before it
(the layout is documented in ``docs/format.md``). The loader checks, in order:
the magic bytes and format version; every declared length against the file's
real size; the checksum; the manifest's schema (exact key sets, no duplicate
keys, typed values); every array's declared size before touching its bytes;
that ops come from the built-in registry with parameters of the right types;
that every input refers to an earlier node (so the graph has no cycles); and,
for every node, that re-inferring its shape and dtype gives what the file
declares. Any failure raises :class:`graphc.LoadError` and nothing else.

Files are deterministic: the same program saves the same bytes under any
``PYTHONHASHSEED`` (sorted JSON keys, nodes in topological order, no
timestamps).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import os
import secrets
import struct
import threading
from collections.abc import Callable, Mapping

import numpy as np

from graphc.custom import CustomOp
from graphc.errors import GraphcError, LoadError
from graphc.function import Function, normalize_updates
from graphc.graph import InnerGraph
from graphc.leaves import Constant, Leaf, Placeholder, VariableLeaf
from graphc.op import LAZY_OP_MODULES, MULTI_TYPE, REGISTRY, Op
from graphc.ops import shape as shape_ops
from graphc.passes.fuse import Fused, _Stub, fusable
from graphc.pickling import rebuild_function, snapshot
from graphc.tensor import Tensor, Variable
from graphc.types import format_shape, known_size
from graphc.version import __version__

__all__ = ["FORMAT_VERSION", "MAGIC", "SaveError", "load", "save"]

MAGIC = b"\x89GRAPHC\n"
#: the newest version this graphc writes; it reads every version in READ_VERSIONS
FORMAT_VERSION = 2
FORMAT_NAME = "graphc-function"
#: version 1 holds one function (what ``gc.save(fn, path)`` writes, unchanged since version 1);
#: version 2 holds a dict of functions sharing their variables (``gc.save({"train": ..., ...}, path)``)
FUNCTION_VERSION = 1
MODEL_VERSION = 2
MODEL_FORMAT_NAME = "graphc-model"
READ_VERSIONS = (FUNCTION_VERSION, MODEL_VERSION)
MAX_FUNCTIONS = 1 << 16
# magic, version (u32), flags (u32, 0), manifest length (u64), data length (u64)
_HEADER = struct.Struct("<8sIIQQ")
_DIGEST_SIZE = 32  # SHA-256

# Every limit the loader enforces is checked by the saver too (SaveError before anything is
# written), so that what gc.save accepts, gc.load accepts.
MAX_MANIFEST_BYTES = 1 << 30
MAX_NODES = 10_000_000
MAX_RANK = 64
MAX_DIM = 1 << 62
#: inputs of one node (stack/concatenate of many tensors): bounded only by the node limit
MAX_INPUTS_PER_NODE = MAX_NODES
MAX_NAME_LENGTH = 4096
MAX_PARAM_DEPTH = 16
MAX_STRUCTURE_DEPTH = 64
#: int parameters: the int64 range (slice bounds such as sys.maxsize or -2**63 included)
MIN_INT_PARAM = -(1 << 63)
MAX_INT_PARAM = (1 << 63) - 1
MAX_STR_PARAM = 1 << 16  # characters of a str parameter or an output dict key
MAX_TUPLE_PARAM = 1 << 20  # items of a tuple parameter
MAX_SITE_LINE = 1 << 31

#: dtypes a file may hold (names as in ``np.dtype(...).name``)
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64")

#: the dtype written for a multi-output node itself (a loop; its values are read through ``output`` nodes)
MULTI_DTYPE = "outputs"

#: the state of the save or load in progress (the array table inner graphs share with the outer graph)
_local = threading.local()


_NODE_KEYS = {
    "placeholder": {"kind", "name", "shape", "dtype"},
    "constant": {"kind", "name", "array", "grad"},
    "variable": {"kind", "name", "array"},
    "op": {"kind", "op", "params", "inputs", "shape", "dtype", "name", "grad", "site"},
}
_MANIFEST_KEYS = {"format", "version", "graphc_version", "arrays", "nodes", "inputs", "outputs", "structure",
                  "updates", "optimize"}
_FUNCTION_KEYS = {"name", "inputs", "outputs", "structure", "updates", "optimize"}
_MODEL_KEYS = {"format", "version", "graphc_version", "arrays", "nodes", "functions"}
#: execution options of a function, written only when set
_OPTION_KEYS = ("inplace_updates", "check_numerics")


_ARRAY_KEYS = {"dtype", "shape", "offset", "nbytes"}


def _present_options(entry: dict) -> set:
    return {key for key in _OPTION_KEYS if key in entry}


class SaveError(GraphcError, TypeError, ValueError):
    """A function that the safe format cannot represent, raised by ``gc.save`` before anything is written.

    For example one holding a custom op (pickle it instead), or one over a limit
    the loader enforces (a name longer than 4096 characters, an output dict key
    longer than 65,536 characters, outputs nested more than 64 levels deep, an
    integer parameter outside the int64 range): what ``gc.save`` writes,
    ``gc.load`` reads. A ``TypeError`` and a ``ValueError`` as well.
    """


# ======================================================================================
# saving
# ======================================================================================

#: the saveable dtypes by dtype (``np.dtype.name`` is Python code in NumPy, ~7 us a call); other
#: dtypes (a byte-swapped one) fall back to ``.name``
_DTYPE_NAMES: dict[np.dtype, str] = {np.dtype(name): name for name in DTYPES}


def _dtype_text(dtype: np.dtype) -> str:
    """``dtype.name``, fast for the saveable dtypes."""
    name = _DTYPE_NAMES.get(dtype)
    return dtype.name if name is None else name


@functools.cache
def _init_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields of op class ``cls`` its constructor takes (the saved parameters), in order; a
    class's fields never change, so this is computed once per class and not once per node."""
    return tuple(f for f in dataclasses.fields(cls) if f.init)


class _Where:
    """Where in a graph an error is, as text made only if an error message needs it: describing
    a node costs more than encoding it, and almost every save and load raises nothing."""

    __slots__ = ("make",)

    def __init__(self, make) -> None:
        self.make = make

    def __str__(self) -> str:
        return self.make()

    def __format__(self, spec: str) -> str:  # f"{where}: ..." in the messages
        return format(self.make(), spec)


def _is_builtin_op_class(cls: type) -> bool:
    return (REGISTRY.get(getattr(cls, "name", None)) is cls and cls.__module__.split(".")[0] == "graphc"
            and dataclasses.is_dataclass(cls) and not issubclass(cls, Leaf))


def _refuse_op(primitive, node: Tensor | None) -> SaveError:
    where = f" ({node.describe()})" if node is not None else ""
    if isinstance(primitive, CustomOp):
        return SaveError(f"gc.save cannot store the custom op {primitive.name!r}{where}: custom Python ops run "
                         f"user code, which the safe format never loads. Pickle the function instead "
                         f"(pickle.dumps(fn)) if you trust the place it will be loaded")
    return SaveError(f"gc.save cannot store op {getattr(primitive, 'name', type(primitive).__name__)!r}{where}: "
                     f"only graphc's built-in ops can be saved safely; pickle the function instead")


def _encode_value(value, where: str, depth: int = 0):
    if depth > MAX_PARAM_DEPTH:
        raise SaveError(f"{where}: parameter nested too deeply")
    if value is None:
        return ["none"]
    if isinstance(value, (bool, np.bool_)):
        return ["bool", bool(value)]
    if isinstance(value, (int, np.integer)):
        if not MIN_INT_PARAM <= int(value) <= MAX_INT_PARAM:
            raise SaveError(f"{where}: the integer {int(value)} is outside the int64 range that gc.load accepts "
                            f"[-2**63, 2**63 - 1]; use a smaller value (a slice bound of sys.maxsize is fine)")
        return ["int", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", float(value).hex()]
    if isinstance(value, str):
        if len(value) > MAX_STR_PARAM:
            raise SaveError(f"{where}: a string parameter of {len(value)} characters is over gc.load's limit of "
                            f"{MAX_STR_PARAM}")
        return ["str", value]
    if isinstance(value, np.dtype):
        if value.name not in DTYPES:
            raise SaveError(f"{where}: dtype {value} cannot be saved")
        return ["dtype", value.name]
    if isinstance(value, tuple):
        if len(value) > MAX_TUPLE_PARAM:
            raise SaveError(f"{where}: a tuple parameter of {len(value)} items is over gc.load's limit of "
                            f"{MAX_TUPLE_PARAM}")
        return ["tuple", [_encode_value(item, where, depth + 1) for item in value]]
    if isinstance(value, Op):
        if not _is_builtin_op_class(type(value)):
            raise _refuse_op(value, None)
        return ["op", _encode_op(value, where, depth + 1)]
    if isinstance(value, InnerGraph):
        return ["graph", _encode_graph(value, where, depth + 1)]
    raise SaveError(f"{where}: a parameter of type {type(value).__name__} cannot be saved safely")


def _base_names(sites):
    """Source-line metadata ``((file, line) | None, ...)`` with only the files' base names."""
    if not isinstance(sites, tuple):
        return sites
    return tuple((os.path.basename(site[0]), site[1])
                 if isinstance(site, tuple) and len(site) == 2 and isinstance(site[0], str) else site
                 for site in sites)


def _encode_op(primitive, where, depth: int = 0) -> dict:
    params = {}
    for field in _init_fields(type(primitive)):  # not the derived fields: __post_init__ rebuilds them on load
        value = getattr(primitive, field.name)
        if field.name == "sites":  # user source lines (of a fused op's steps): no absolute paths in files
            value = _base_names(value)
        params[field.name] = _encode_value(
            value, _Where(lambda name=field.name: f"{where}, parameter {name!r}"), depth)
    return {"op": type(primitive).name, "params": params}  # the registry name (an instance may rename itself)


def _encode_shape(shape, where: str = "shape") -> list:
    if len(shape) > MAX_RANK:
        raise SaveError(f"{where}: rank {len(shape)} is over gc.load's limit of {MAX_RANK}")
    for size in shape:
        if size is not None and not 0 <= int(size) <= MAX_DIM:
            raise SaveError(f"{where}: size {size} is outside the range gc.load accepts [0, 2**62]")
    return [None if s is None else int(s) for s in shape]


def _shorten(text, limit: int = 60):
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_name(name, where: str):
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise SaveError(f"{where}: a name of {len(name)} characters is over gc.load's limit of {MAX_NAME_LENGTH}; "
                        f"give the tensor a shorter name")
    return name


def _structure_depth(spec) -> int:
    """How deeply the fetch structure nests (iterative: a deep structure must not overflow the stack)."""
    deepest = 0
    stack = [(spec, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)  # a leaf counts at its own depth, as the loader counts it
        if item is None:
            continue
        kind, _, children = item
        stack.extend((child if kind != "dict" else child[1], depth + 1) for child in children)
    return deepest


def _encode_structure(spec, where: str = "outputs"):
    """The nested fetch structure (see graphc.structure.flatten) as JSON."""
    if spec is None:
        return None
    kind, kind_type, children = spec
    if kind == "dict":
        items = []
        for key, child in children:
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise SaveError(f"{where}: dict keys must be str or int to be saved, got {key!r}")
            if isinstance(key, str) and len(key) > MAX_STR_PARAM:
                raise SaveError(f"{where}: an output dict key of {len(key)} characters is over gc.load's limit "
                                f"of {MAX_STR_PARAM}; use a shorter key")
            if not isinstance(key, str) and not MIN_INT_PARAM <= int(key) <= MAX_INT_PARAM:
                raise SaveError(f"{where}: the output dict key {int(key)} is outside the int64 range that gc.load "
                                f"accepts")
            items.append([["str", key] if isinstance(key, str) else ["int", int(key)],
                          _encode_structure(child, where)])
        return {"dict": items}
    name = "list" if issubclass(kind_type, list) else "tuple"
    return {name: [_encode_structure(child, where) for child in children]}


@functools.lru_cache(maxsize=1024)
def _site_file(file) -> str:
    """A source file as saved: its base name (the nodes of a graph share a few files)."""
    return os.path.basename(str(file))[:MAX_NAME_LENGTH]


def _site(node: Tensor):
    if node.site is None:
        return None
    file, line = node.site
    return [_site_file(file), min(max(int(line), 0), MAX_SITE_LINE)]


def _array_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in DTYPES:
        raise SaveError(f"an array of dtype {array.dtype} cannot be saved")
    little = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    return array.astype(little, copy=False).tobytes(order="C")


def _dtype_name(node: Tensor) -> str:
    """A node's dtype as the file writes it (``MULTI_DTYPE`` for a multi-output node itself)."""
    if node.primitive.multi_output and (node.shape, node.dtype) == MULTI_TYPE:
        return MULTI_DTYPE
    name = _dtype_text(node.dtype)
    if name not in DTYPES:
        raise SaveError(f"{node.describe()}: dtype {node.dtype} cannot be saved")
    return name


def _encode_nodes(order, index, input_ids, values, add_array, depth: int = 0) -> list[dict]:
    """The manifest entries of ``order`` (a graph's nodes, inputs before consumers)."""
    nodes: list[dict] = []
    builtin: dict[type, bool] = {}  # per op class, within this save (the registry may change between saves)
    for node in order:
        primitive = node.primitive
        name = _check_name(node.name, _Where(
            lambda node=node: f"gc.save: the {node.op} node named {_shorten(node.name)!r}"))
        if isinstance(node, Variable):
            nodes.append({"kind": "variable", "name": name, "array": add_array(values[id(node)])})
        elif id(node) in input_ids or isinstance(primitive, Placeholder):
            dtype = _dtype_text(node.dtype)
            if dtype not in DTYPES:
                raise SaveError(f"placeholder {name!r} has dtype {node.dtype}, which cannot be saved")
            nodes.append({"kind": "placeholder", "name": name if name else "input",
                          "shape": _encode_shape(node.shape, f"gc.save: placeholder {name!r}"),
                          "dtype": dtype})
        elif isinstance(primitive, Constant):
            nodes.append({"kind": "constant", "name": name, "array": add_array(np.asarray(primitive.value)),
                          "grad": bool(node.is_gradient)})
        elif isinstance(primitive, VariableLeaf):  # pragma: no cover - variables are Variable tensors
            raise SaveError(f"variable node without a value ({node.describe()})")
        else:
            cls = type(primitive)
            known = builtin.get(cls)
            if known is None:
                known = builtin[cls] = _is_builtin_op_class(cls)
            if not known:
                raise _refuse_op(primitive, node)
            dtype = _dtype_name(node)
            encoded = _encode_op(primitive, _Where(lambda node=node: f"op {node.op!r} ({node.describe()})"), depth)
            nodes.append({"kind": "op", "op": encoded["op"], "params": encoded["params"],
                          "inputs": [index[id(p)] for p in node.inputs],
                          "shape": _encode_shape(node.shape, _Where(lambda node=node: f"gc.save: {node.describe()}")),
                          "dtype": dtype, "name": name, "grad": bool(node.is_gradient),
                          "site": _site(node)})
    return nodes


def _encode_graph(graph: InnerGraph, where: str, depth: int) -> dict:
    """An inner graph (a loop's body) as ``{"nodes", "inputs", "outputs"}``; its constants' arrays
    go to the file's one array table, like the outer graph's."""
    add_array = getattr(_local, "add_array", None)
    if add_array is None:  # pragma: no cover - only encode() encodes ops
        raise SaveError(f"{where}: an inner graph can only be saved as part of a function")
    inputs = list(graph.inputs)
    input_ids = {id(t) for t in inputs}
    order = inputs + [node for node in graph.nodes() if id(node) not in input_ids]
    index = {id(node): k for k, node in enumerate(order)}
    return {"nodes": _encode_nodes(order, index, input_ids, {}, add_array, depth + 1),
            "inputs": [index[id(t)] for t in inputs], "outputs": [index[id(t)] for t in graph.outputs]}


def _functions(fns) -> tuple[list[tuple[str | None, object]], bool]:
    """``([(name, Function), ...], is_a_model)``: one Function, or a dict of them (checked)."""
    if isinstance(fns, Function):
        return [(None, fns)], False
    if not isinstance(fns, Mapping):
        raise TypeError(f"gc.save takes a compiled Function (gc.function(...)) or a dict of them, "
                        f"got {type(fns).__name__}")
    if not fns:
        raise ValueError("gc.save: the dict of functions is empty")
    items = []
    for name, fn in fns.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            raise TypeError(f"gc.save: function names must be non-empty strings (at most {MAX_NAME_LENGTH} "
                            f"characters), got {str(name)[:60]!r}")
        if not isinstance(fn, Function):
            raise TypeError(f"gc.save: {name!r} is a {type(fn).__name__}, not a compiled Function (gc.function(...))")
        items.append((name, fn))
    if len(items) > MAX_FUNCTIONS:
        raise ValueError(f"gc.save: {len(items)} functions, more than the limit {MAX_FUNCTIONS}")
    return items, True


def _encode_function(fn, index: dict[int, int]) -> dict:
    """One function's entry: its inputs, outputs, structure and updates as node indices."""
    plan = fn.plan
    entry = {
        "inputs": [index[id(t)] for t in plan.inputs],
        "outputs": [index[id(t)] for t in plan.outputs],
        "structure": _encode_structure(fn._spec),
        "updates": [[index[id(var)], index[id(value)]] for var, value in plan.updates],
        "optimize": bool(fn.optimize),
    }
    if getattr(fn, "inplace_updates", False):
        # an execution option, written only when set: files of other functions stay as they were
        entry["inplace_updates"] = True
    if getattr(fn, "check_numerics", False):
        entry["check_numerics"] = True  # likewise
    return entry


def encode(fns) -> bytes:
    """The bytes :func:`save` writes for the compiled Function (or dict of Functions) ``fns``."""
    functions, is_model = _functions(fns)
    for _, fn in functions:
        depth = _structure_depth(fn._spec)
        if depth > MAX_STRUCTURE_DEPTH:
            raise SaveError(f"gc.save: the outputs are nested {depth} levels deep, over gc.load's limit of "
                            f"{MAX_STRUCTURE_DEPTH}; return a flatter structure (a dict of lists, say)")
    # one node list for all the functions: a node (a shared variable above all) is stored once
    order: list[Tensor] = []
    index: dict[int, int] = {}
    input_ids: set[int] = set()
    for _, fn in functions:
        plan = fn.plan
        input_ids.update(id(t) for t in plan.inputs)
        for node in plan.graph_order():  # each function's order is topological, so is their union
            if id(node) not in index:
                index[id(node)] = len(order)
                order.append(node)
    if len(order) > MAX_NODES:
        raise SaveError(f"gc.save: the graph has {len(order)} nodes, over gc.load's limit of {MAX_NODES}")
    arrays: list[dict] = []
    chunks: list[bytes] = []
    offset = 0

    def add_array(array: np.ndarray) -> int:
        nonlocal offset
        data = _array_bytes(array)
        arrays.append({"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset,
                       "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
        return len(arrays) - 1

    # every variable of every function read together: a model is saved as of one moment
    values = snapshot([node for node in order if isinstance(node, Variable)])
    _local.add_array = add_array
    try:
        nodes = _encode_nodes(order, index, input_ids, values, add_array)
    finally:
        _local.add_array = None
    if is_model:
        version = MODEL_VERSION
        manifest = {"format": MODEL_FORMAT_NAME, "version": version, "graphc_version": __version__,
                    "arrays": arrays, "nodes": nodes,
                    "functions": [dict(_encode_function(fn, index), name=name) for name, fn in functions]}
    else:
        version = FUNCTION_VERSION
        manifest = {"format": FORMAT_NAME, "version": version, "graphc_version": __version__,
                    "arrays": arrays, "nodes": nodes, **_encode_function(functions[0][1], index)}
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    manifest_bytes = text.encode("ascii")
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise SaveError(f"gc.save: the manifest would be {len(manifest_bytes)} bytes, over gc.load's limit of "
                        f"{MAX_MANIFEST_BYTES}")
    data = b"".join(chunks)
    body = _HEADER.pack(MAGIC, version, 0, len(manifest_bytes), len(data)) + manifest_bytes + data
    return body + hashlib.sha256(body).digest()


def save(fn, path) -> None:
    """Write the compiled Function ``fn`` (optimized graph and variable values) to ``path``.

    ``fn`` may also be a dict ``{name: Function}`` of functions sharing variables
    (a training step and a prediction function): every shared variable is stored
    once, and :func:`load` gives the dict back with the sharing restored. Raises
    :class:`SaveError` for functions the safe format cannot hold, such as ones
    using ``gc.custom_op`` ops (pickle those instead). The same program always
    writes the same bytes.
    """
    data = encode(fn)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    # written to a temporary file, then renamed over ``path`` (a reader never sees half a file);
    # created with mode 0o666 so that the user's umask decides, as for any file they write
    # (mkstemp's 0600 made shared model files unreadable to the group)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(directory, f".graphc-{secrets.token_hex(8)}.tmp")
        try:
            handle = os.open(temporary, flags, 0o666)
            break
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
    else:  # pragma: no cover
        raise FileExistsError(f"gc.save: could not create a temporary file in {directory}")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ======================================================================================
# loading
# ======================================================================================

def _fail(message: str) -> LoadError:
    return LoadError(message)


def _reject_duplicates(pairs):
    result = dict(pairs)  # in C; a duplicate key shows as a shorter dict
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _fail(f"manifest: duplicate key {key!r}")
            seen.add(key)
    return result


def _reject_float(text):
    raise _fail(f"manifest: JSON numbers with a fraction or exponent are not allowed ({text[:40]!r})")


def _reject_constant(text):
    raise _fail(f"manifest: {text} is not allowed")


def _obj(value, keys: set, where: str) -> dict:
    if type(value) is dict and value.keys() == keys:
        return value  # the common case without building a set; the checks below say what is wrong
    if not isinstance(value, dict):
        raise _fail(f"{where}: expected an object, got {type(value).__name__}")
    if set(value) != keys:
        missing = sorted(keys - set(value))
        extra = sorted(set(value) - keys)
        raise _fail(f"{where}: " + "; ".join(part for part in (
            f"missing keys {missing}" if missing else "", f"unexpected keys {extra}" if extra else "") if part))
    return value


def _list(value, where: str, max_length: int | None = None) -> list:
    if not isinstance(value, list):
        raise _fail(f"{where}: expected a list, got {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise _fail(f"{where}: {len(value)} entries, more than the limit {max_length}")
    return value


def _int(value, where: str, low: int = 0, high: int = MAX_DIM) -> int:
    if type(value) is not int:
        raise _fail(f"{where}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(f"{where}: {value} is out of range [{low}, {high}]")
    return value


def _bool(value, where: str) -> bool:
    if type(value) is not bool:
        raise _fail(f"{where}: expected true or false, got {type(value).__name__}")
    return value


def _str(value, where: str, allow_none: bool = False, max_length: int = MAX_NAME_LENGTH) -> str | None:
    if value is None and allow_none:
        return None
    if type(value) is not str:
        raise _fail(f"{where}: expected a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise _fail(f"{where}: string longer than {max_length} characters")
    return value


#: the loadable dtypes by name (``np.dtype(name)`` parses the name at every call)
_DTYPES_BY_NAME: dict[str, np.dtype] = {name: np.dtype(name) for name in DTYPES}


def _dtype(value, where: str) -> np.dtype:
    dtype = _DTYPES_BY_NAME.get(value) if type(value) is str else None
    if dtype is None:
        raise _fail(f"{where}: unknown dtype {value!r}")
    return dtype


def _shape(value, where: str, allow_unknown: bool) -> tuple:
    entries = _list(value, where, MAX_RANK)
    if all((type(entry) is int and 0 <= entry <= MAX_DIM) or (entry is None and allow_unknown)
           for entry in entries):
        return tuple(entries)  # the common case, checked in one pass; the loop below says what is wrong
    result = []
    for position, entry in enumerate(entries):
        if entry is None and allow_unknown:
            result.append(None)
        else:
            result.append(_int(entry, f"{where}[{position}]"))
    return tuple(result)


def _decode_value(value, where: str, depth: int = 0):
    if depth > MAX_PARAM_DEPTH:
        raise _fail(f"{where}: parameter nested too deeply")
    if not isinstance(value, list) or not value or type(value[0]) is not str:
        raise _fail(f"{where}: expected a typed value [tag, ...]")
    tag = value[0]
    if tag == "none":
        if len(value) != 1:
            raise _fail(f"{where}: malformed none")
        return None
    if len(value) != 2:
        raise _fail(f"{where}: a {tag!r} value has exactly one payload")
    payload = value[1]
    if tag == "bool":
        return _bool(payload, where)
    if tag == "int":
        return _int(payload, where, MIN_INT_PARAM, MAX_INT_PARAM)
    if tag == "float":
        text = _str(payload, where, max_length=64)
        try:
            return float.fromhex(text)
        except (ValueError, OverflowError) as exc:
            raise _fail(f"{where}: bad float {text!r}") from exc
    if tag == "str":
        return _str(payload, where, max_length=MAX_STR_PARAM)
    if tag == "dtype":
        return _dtype(payload, where)
    if tag == "tuple":
        items = _list(payload, where, MAX_TUPLE_PARAM)
        return tuple(_decode_value(item, _Where(lambda k=k: f"{where}[{k}]"), depth + 1)
                     for k, item in enumerate(items))
    if tag == "op":
        entry = _obj(payload, {"op", "params"}, where)
        return _build_op(entry["op"], entry["params"], where, depth + 1)
    if tag == "graph":
        return _decode_graph(payload, where, depth + 1)
    raise _fail(f"{where}: unknown value tag {tag!r}")


_ANNOTATION_TAGS = {"int": (int,), "float": (float, int), "bool": (bool,), "str": (str,), "tuple": (tuple,),
                    "np.dtype": (np.dtype,), "dtype": (np.dtype,), "None": (type(None),)}


@functools.lru_cache(maxsize=1024)
def _allowed_types(annotation) -> tuple[type, ...] | None:
    """The types a field annotation such as ``'int | None'`` allows, or None for one we do not model
    (parsed once per annotation, not once per node)."""
    allowed: list[type] = []
    for part in annotation.split("|"):
        base = part.strip().split("[")[0]
        if base not in _ANNOTATION_TAGS:
            if base.endswith("Op"):
                allowed.append(Op)
                continue
            return None  # an annotation we do not model: the op's own checks and infer decide
        allowed.extend(_ANNOTATION_TAGS[base])
    return tuple(allowed)


def _check_annotation(annotation, value, where) -> None:
    """Check a decoded value against a dataclass field annotation such as ``'int | None'``."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", "")
    allowed = _allowed_types(annotation)
    if allowed is None:
        return
    if isinstance(value, bool) and bool not in allowed:
        raise _fail(f"{where}: expected {annotation}, got a bool")
    if not isinstance(value, allowed):
        raise _fail(f"{where}: expected {annotation}, got {type(value).__name__}")


def _op_class(name, where: str) -> type:
    state = getattr(_local, "load", None)
    known = state["classes"] if state is not None else {}
    cls = known.get(name) if type(name) is str else None
    if cls is None:
        cls = known[name] = _checked_op_class(name, where)  # once per op name and file
    return cls


def _checked_op_class(name, where: str) -> type:
    if type(name) is not str:
        raise _fail(f"{where}: op name must be a string")
    if name not in REGISTRY and name in LAZY_OP_MODULES:
        importlib.import_module(LAZY_OP_MODULES[name])  # a fixed built-in module, never a name from the file
    cls = REGISTRY.get(name)
    if cls is None or not _is_builtin_op_class(cls):
        raise _fail(f"{where}: unknown op {name[:100]!r} (only graphc's built-in ops can be loaded)")
    return cls


@functools.cache
def _param_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in _init_fields(cls))


def _build_op(name, params, where, depth: int = 0) -> Op:
    cls = _op_class(name, where)
    fields = _init_fields(cls)
    names = _param_names(cls)
    if not (type(params) is dict and params.keys() == names):
        _obj(params, names, f"{where} (op {name!r}) params")  # raises, saying what is wrong
    where = _Where(lambda outer=where: f"{outer} (op {name!r})")
    if not fields:  # most ops have no parameters
        return _construct(cls, {}, where)
    values = {}
    for field in fields:
        here = _Where(lambda name=field.name: f"{where} parameter {name!r}")
        value = _decode_value(params[field.name], here, depth)
        _check_annotation(field.type, value, here)
        values[field.name] = value
    return _construct(cls, values, where)


def _construct(cls: type, values: dict, where) -> Op:
    try:
        return cls(**values)
    except Exception as exc:  # noqa: BLE001 - the op refused its parameters
        raise _fail(f"{where}: invalid parameters: {type(exc).__name__}: {exc}") from exc


class _StepStub:
    """Stands in for a fused step's node when asking the fuser whether its op may be fused."""

    __slots__ = ("primitive", "inputs")

    def __init__(self, primitive, arity: int) -> None:
        self.primitive = primitive
        self.inputs = (None,) * arity


def _positional_arity(primitive) -> tuple[int, int]:
    """(fewest, most) positional arguments ``primitive.impl`` takes."""
    import inspect

    try:
        parameters = list(inspect.signature(primitive.impl).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - built-in ops have Python impls
        return 0, MAX_INPUTS_PER_NODE
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return sum(p.default is p.empty for p in positional), MAX_INPUTS_PER_NODE
    return sum(p.default is p.empty for p in positional), len(positional)


#: op class -> the check a loaded node of that op gets before ``infer``: ``check(primitive, inputs, where)``
#: raises LoadError where the op's parameters claim what its ``infer`` takes on trust (a fused program, an
#: output shape). Registered with ``@_load_check(cls, ...)`` below; ops without an entry need none.
_LOAD_CHECKS: dict[type, Callable] = {}


def _load_check(*classes: type) -> Callable:
    def register(check: Callable) -> Callable:
        for cls in classes:
            _LOAD_CHECKS[cls] = check
        return check
    return register


def _check_loaded_op(primitive, inputs: list, where: str) -> None:
    """The load check registered for ``primitive``'s class, if any (raises LoadError)."""
    check = _LOAD_CHECKS.get(type(primitive))
    if check is not None:
        check(primitive, inputs, where)


def _check_fused_header(primitive, inputs: list, where: str) -> None:
    """A fused op's input count, step count, dtypes and source lines agree with each other and the node."""
    steps, n = primitive.steps, primitive.n_inputs
    if n != len(inputs):
        raise _fail(f"{where}: the fused program declares {n} inputs, the node has {len(inputs)}")
    if not steps:
        raise _fail(f"{where}: a fused op with an empty program")
    if len(primitive.dtypes) != len(steps):
        raise _fail(f"{where}: a fused op with {len(steps)} steps declares {len(primitive.dtypes)} dtypes")
    if primitive.sites and len(primitive.sites) != len(steps):
        raise _fail(f"{where}: a fused op with {len(steps)} steps has {len(primitive.sites)} source lines")
    for site in primitive.sites:
        if site is not None and not (isinstance(site, tuple) and len(site) == 2 and isinstance(site[0], str)
                                     and type(site[1]) is int):
            raise _fail(f"{where}: a fused step's source line must be (file, line) or none")


def _fused_step_type(step, available: int, types: list, declared, here: str) -> tuple:
    """The (shape, dtype) of one fused step ``(op, argument indices)``, whose arguments must be among the
    first ``available`` of ``types``, checked to be a step the fuser could have written, with ``declared``
    its dtype (raises LoadError)."""
    if not (isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], Op) and isinstance(step[1], tuple)):
        raise _fail(f"{here}: expected (op, argument indices)")
    op, args = step
    if not args or any(type(a) is not int or not 0 <= a < available for a in args):
        raise _fail(f"{here}: arguments must be indices of the inputs or of earlier steps (below {available})")
    if isinstance(op, Fused) or not fusable(_StepStub(op, len(args))):
        raise _fail(f"{here}: op {op.name!r} cannot be a step of a fused op (only element-wise ops that "
                    f"compute a fresh array)")
    low, high = _positional_arity(op)
    if not low <= len(args) <= high:
        raise _fail(f"{here}: op {op.name!r} takes {low}..{high} arguments, the program gives {len(args)}")
    try:
        shape, dtype = op.infer(*(_Stub(*types[a]) for a in args))
    except Exception as exc:  # noqa: BLE001 - the step rejects its arguments
        raise _fail(f"{here}: op {op.name!r} rejects its arguments: {type(exc).__name__}: {exc}") from exc
    if not isinstance(declared, np.dtype) or declared != np.dtype(dtype):
        raise _fail(f"{here}: declares dtype {declared}, but op {op.name!r} gives {np.dtype(dtype)}")
    return tuple(shape), np.dtype(dtype)


@_load_check(Fused)
def _check_fused(primitive, inputs: list, where: str) -> None:
    """A fused op's program must be one the fuser could have written, checked in full.

    A program that is empty, refers to a later or negative value, applies a view op
    (``stop_gradient`` returns its input) or declares dtypes its steps do not have
    would make the node return an array it did not compute (a feed, say), which the
    executor could then overwrite.
    """
    _check_fused_header(primitive, inputs, where)
    types = [(t.shape, t.dtype) for t in inputs]
    for k, step in enumerate(primitive.steps):
        types.append(_fused_step_type(step, len(inputs) + k, types, primitive.dtypes[k],
                                      f"{where} fused step {k}"))


def _compatible(a: tuple, b: tuple) -> bool:
    """Same rank, and equal sizes wherever both are known."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _declared_shape(primitive, inputs: list, operands: int, where: str) -> tuple:
    """The output shape an op declares as its parameter ``shape``, checked to be a valid shape that fits
    its shape reference input (the one input after the first ``operands``, if any) or, without one, has
    no unknown sizes (raises LoadError).

    ``sum_to``, ``broadcast_like``, ``reshape_like``, ``take_grad`` and ``getitem_grad`` return ``shape``
    as their type without looking at it; a file could declare any shape (``reshape_like`` to a shape its
    reference does not have, a ``getitem_grad`` scattering into 10**12 zeros for a gradient of three
    entries). Each op's own check below then compares it with what the op computes.
    """
    shape = tuple(primitive.shape)
    name = primitive.name
    if any(size is not None and (type(size) is not int or not 0 <= size <= MAX_DIM) for size in shape) \
            or len(shape) > MAX_RANK:
        raise _fail(f"{where}: {name} has an invalid shape {shape!r:.80}")
    refs = inputs[operands:]
    if len(refs) > 1:
        raise _fail(f"{where}: {name} takes at most one shape reference input, got {len(refs)}")
    if refs and not _compatible(tuple(refs[0].shape), shape):
        raise _fail(f"{where}: {name} declares shape {format_shape(shape)}, but its reference input has "
                    f"{format_shape(refs[0].shape)}")
    if not refs and None in shape:
        raise _fail(f"{where}: {name} declares shape {format_shape(shape)} with unknown sizes and no reference "
                    f"input to take them from at run time")
    return shape


@_load_check(shape_ops.BroadcastLike)
def _check_broadcast_like(primitive, inputs: list, where: str) -> None:
    _declared_shape(primitive, inputs, 1, where)  # infer checks that the input broadcasts to the shape


@_load_check(shape_ops.ReshapeLike)
def _check_reshape_like(primitive, inputs: list, where: str) -> None:
    shape = _declared_shape(primitive, inputs, 1, where)
    source = inputs[0]
    total, wanted = known_size(tuple(source.shape)), known_size(shape)
    if total is not None and wanted is not None and total != wanted:
        raise _fail(f"{where}: reshape_like of {format_shape(source.shape)} ({total} elements) to "
                    f"{format_shape(shape)} ({wanted} elements)")


@_load_check(shape_ops.SumTo)
def _check_sum_to(primitive, inputs: list, where: str) -> None:
    shape = _declared_shape(primitive, inputs, 1, where)
    source = inputs[0]
    if len(shape) > len(source.shape) or not all(
            t == 1 or t is None or s is None or s == t
            for s, t in zip(tuple(source.shape)[len(source.shape) - len(shape):], shape)):
        raise _fail(f"{where}: sum_to cannot sum {format_shape(source.shape)} down to {format_shape(shape)}")


def _check_scatter_target(primitive, shape: tuple, forward: Op, args: list, gradient, where: str) -> None:
    """A scatter's target ``shape``: indexing it with ``forward`` (and ``args``) must give the shape of
    ``gradient``, what is scattered (raises LoadError)."""
    name = primitive.name
    try:
        implied, _ = forward.infer(_Stub(shape, gradient.dtype), *args)
    except Exception as exc:  # noqa: BLE001 - the index does not fit the declared shape
        raise _fail(f"{where}: {name}: its index does not fit shape {format_shape(shape)}: "
                    f"{type(exc).__name__}: {exc}") from exc
    if not _compatible(tuple(implied), tuple(gradient.shape)):
        raise _fail(f"{where}: {name} declares shape {format_shape(shape)}, whose {forward.name} has shape "
                    f"{format_shape(implied)}, but the gradient has {format_shape(gradient.shape)}")


@_load_check(shape_ops.TakeGrad)
def _check_take_grad(primitive, inputs: list, where: str) -> None:
    shape = _declared_shape(primitive, inputs, 2, where)
    if primitive.axis is not None and not 0 <= primitive.axis < len(shape):
        raise _fail(f"{where}: take_grad axis {primitive.axis} is out of range for {format_shape(shape)}")
    _check_scatter_target(primitive, shape, shape_ops.Take(primitive.axis), [inputs[1]], inputs[0], where)


@_load_check(shape_ops.GetitemGrad)
def _check_getitem_grad(primitive, inputs: list, where: str) -> None:
    if not 0 <= primitive.num_arrays <= len(inputs) - 1:
        raise _fail(f"{where}: getitem_grad declares {primitive.num_arrays} index arrays, it has "
                    f"{len(inputs) - 1} inputs besides the gradient")
    operands = 1 + primitive.num_arrays
    shape = _declared_shape(primitive, inputs, operands, where)
    _check_scatter_target(primitive, shape, shape_ops.Getitem(primitive.index), inputs[1:operands], inputs[0],
                          where)


def _decode_structure(value, where: str, depth: int = 0):
    if depth > MAX_STRUCTURE_DEPTH:
        raise _fail(f"{where}: nested too deeply")
    if value is None:
        return None, 1
    if not isinstance(value, dict) or len(value) != 1:
        raise _fail(f"{where}: expected null or an object with one key (list, tuple or dict)")
    (kind, payload), = value.items()
    items = _list(payload, f"{where}.{kind}")
    count = 0
    if kind in ("list", "tuple"):
        children = []
        for k, item in enumerate(items):
            child, n = _decode_structure(item, f"{where}.{kind}[{k}]", depth + 1)
            children.append(child)
            count += n
        return ("seq", list if kind == "list" else tuple, children), count
    if kind == "dict":
        children = []
        seen = set()
        for k, item in enumerate(_list(payload, f"{where}.dict")):
            pair = _list(item, f"{where}.dict[{k}]")
            if len(pair) != 2:
                raise _fail(f"{where}.dict[{k}]: expected [key, value]")
            key = _decode_value(pair[0], f"{where}.dict[{k}] key", MAX_PARAM_DEPTH)
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise _fail(f"{where}.dict[{k}]: keys must be str or int")
            if key in seen:
                raise _fail(f"{where}.dict: duplicate key {key!r}")
            seen.add(key)
            child, n = _decode_structure(pair[1], f"{where}.dict[{k}]", depth + 1)
            children.append((key, child))
            count += n
        return ("dict", dict, children), count
    raise _fail(f"{where}: unknown structure kind {kind!r}")


def _read_file(path) -> tuple[bytes, bytes, int]:
    """(manifest bytes, data bytes, format version) after checking header, sizes and checksum."""
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size or size < _HEADER.size + _DIGEST_SIZE:
            if header.startswith(b"\x80") or header.startswith(b"PK"):
                raise _fail(f"{path}: not a graphc file (it looks like a pickle or zip archive); gc.load reads "
                            f"only files written by gc.save")
            raise _fail(f"{path}: truncated: {size} bytes, shorter than a graphc header")
        magic, version, flags, manifest_length, data_length = _HEADER.unpack(header)
        if magic != MAGIC:
            hint = (" (it looks like a pickle; gc.load never unpickles: load pickles only from sources you trust, "
                    "with pickle.load)") if header[:1] == b"\x80" else ""
            raise _fail(f"{path}: not a graphc file: bad magic bytes{hint}")
        if version not in READ_VERSIONS:
            raise _fail(f"{path}: unsupported format version {version} (this graphc reads versions "
                        f"{', '.join(map(str, READ_VERSIONS))})")
        if flags != 0:
            raise _fail(f"{path}: unknown header flags {flags:#x}")
        if manifest_length > MAX_MANIFEST_BYTES:
            raise _fail(f"{path}: declared manifest size {manifest_length} is over the limit")
        expected = _HEADER.size + manifest_length + data_length + _DIGEST_SIZE
        if expected != size:
            what = "truncated" if expected > size else "has trailing bytes"
            raise _fail(f"{path}: {what}: the header declares {expected} bytes, the file has {size}")
        rest = stream.read(size - _HEADER.size)
    if len(rest) != size - _HEADER.size:
        raise _fail(f"{path}: truncated while reading")
    body_end = manifest_length + data_length
    digest = hashlib.sha256(header)
    digest.update(memoryview(rest)[:body_end])
    if digest.digest() != rest[body_end:]:
        raise _fail(f"{path}: checksum mismatch: the file is corrupted or was modified")
    return rest[:manifest_length], rest[manifest_length:body_end], version


def _parse_manifest(raw: bytes, path) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"{path}: manifest is not UTF-8") from exc
    try:
        manifest = json.loads(text, object_pairs_hook=_reject_duplicates, parse_float=_reject_float,
                              parse_constant=_reject_constant)
    except LoadError:
        raise
    except (ValueError, RecursionError) as exc:
        raise _fail(f"{path}: manifest is not valid JSON: {exc}") from exc
    if isinstance(manifest, dict) and manifest.get("format") == MODEL_FORMAT_NAME:
        return _obj(manifest, _MODEL_KEYS, "manifest")
    if isinstance(manifest, dict):  # the execution options, present only when set
        return _obj(manifest, _MANIFEST_KEYS | _present_options(manifest), "manifest")
    return _obj(manifest, _MANIFEST_KEYS, "manifest")


def _load_arrays(entries, data: bytes) -> list[np.ndarray]:
    arrays = []
    running = 0
    for k, entry in enumerate(_list(entries, "arrays", MAX_NODES)):
        where = f"arrays[{k}]"
        entry = _obj(entry, _ARRAY_KEYS, where)
        dtype = _dtype(entry["dtype"], f"{where}.dtype")
        shape = _shape(entry["shape"], f"{where}.shape", allow_unknown=False)
        offset = _int(entry["offset"], f"{where}.offset")
        nbytes = _int(entry["nbytes"], f"{where}.nbytes")
        count = 1
        for size in shape:
            count *= size
            if count * dtype.itemsize > len(data):
                raise _fail(f"{where}: declared shape {list(shape)} needs more bytes than the file holds")
        if count * dtype.itemsize != nbytes:
            raise _fail(f"{where}: {nbytes} bytes declared, but shape {list(shape)} of {dtype} needs "
                        f"{count * dtype.itemsize}")
        if offset != running or offset + nbytes > len(data):
            raise _fail(f"{where}: bytes [{offset}, {offset + nbytes}) are not where the previous array ended "
                        f"({running}) or run past the data ({len(data)} bytes)")
        running += nbytes
        stored = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
        array = np.frombuffer(data, dtype=stored, count=count, offset=offset).reshape(shape)
        if dtype.kind == "b" and count and np.frombuffer(data, np.uint8, count, offset).max() > 1:
            raise _fail(f"{where}: a bool array holds bytes other than 0 and 1")
        array = array.astype(dtype, copy=True)
        array.flags.writeable = False
        arrays.append(array)
    if running != len(data):
        raise _fail(f"arrays: they cover {running} bytes of {len(data)} bytes of data")
    return arrays


def _build_graph(manifest: dict, arrays: list[np.ndarray], path, version: int = FUNCTION_VERSION):
    """The loaded Function (a version 1 file), or the dict of Functions (version 2)."""
    expected = MODEL_FORMAT_NAME if version == MODEL_VERSION else FORMAT_NAME
    if manifest["format"] != expected:
        raise _fail(f"manifest.format: expected {expected!r} in a version {version} file, got "
                    f"{str(manifest['format'])[:60]!r}")
    if manifest["version"] != version or type(manifest["version"]) is not int:
        raise _fail(f"manifest.version: {str(manifest['version'])[:20]} does not match the header's format "
                    f"version {version}")
    _str(manifest["graphc_version"], "manifest.graphc_version", max_length=64)
    tensors, kinds = _build_nodes(manifest, arrays, path)
    if version == FUNCTION_VERSION:
        return _build_function(manifest, tensors, kinds, path, "")
    functions: dict = {}
    entries = _list(manifest["functions"], "functions", MAX_FUNCTIONS)
    if not entries:
        raise _fail("functions: the file holds no function")
    for k, entry in enumerate(entries):
        where = f"functions[{k}]"
        keys = _FUNCTION_KEYS | (_present_options(entry) if isinstance(entry, dict) else set())
        entry = _obj(entry, keys, where)
        name = _str(entry["name"], f"{where}.name")
        if not name:
            raise _fail(f"{where}.name: a function needs a non-empty name")
        if name in functions:
            raise _fail(f"{where}.name: {name[:100]!r} is used twice")
        functions[name] = _build_function(entry, tensors, kinds, path, f"{where}.")
    return functions


def _build_nodes(manifest: dict, arrays: list[np.ndarray], path) -> tuple[list[Tensor], list[str]]:
    """Every node of the file, in order, checked; and each one's kind."""
    entries = _list(manifest["nodes"], "nodes", MAX_NODES)
    label = os.path.basename(os.fspath(path))
    _local.load = {"arrays": arrays, "used": set(), "label": label, "nodes": len(entries), "classes": {}}
    try:
        return _decode_nodes(entries, "nodes", allow_variables=True, depth=0)
    finally:
        _local.load = None


def _decode_nodes(entries: list, prefix: str, allow_variables: bool, depth: int) -> tuple[list[Tensor], list[str]]:
    """The tensors of a node list (the outer graph's, or an inner graph's), every node checked:
    known kinds and keys, arrays used once, ops from the registry, inputs only earlier nodes, and
    every re-inferred type equal to the one the file declares."""
    state = _local.load
    arrays, used_arrays, label = state["arrays"], state["used"], state["label"]
    tensors: list[Tensor] = []
    kinds: list[str] = []
    for k, entry in enumerate(entries):
        where = f"{prefix}[{k}]"
        origin = (f"<{label} node {k}>" if prefix == "nodes" else f"<{label} {where}>", 0)
        if not isinstance(entry, dict) or entry.get("kind") not in _NODE_KEYS:
            raise _fail(f"{where}: expected an object whose kind is one of {sorted(_NODE_KEYS)}")
        kind = entry["kind"]
        if kind == "variable" and not allow_variables:
            raise _fail(f"{where}: an inner graph cannot hold a variable (its outer tensors are inputs)")
        _obj(entry, _NODE_KEYS[kind], where)
        name = _str(entry["name"], f"{where}.name", allow_none=kind != "placeholder")
        if kind in ("constant", "variable"):
            array_index = _int(entry["array"], f"{where}.array", 0, len(arrays) - 1)
            if array_index in used_arrays:
                raise _fail(f"{where}.array: array {array_index} is used twice")
            used_arrays.add(array_index)
            value = arrays[array_index]
            if kind == "constant":
                grad = _bool(entry["grad"], f"{where}.grad")
                tensor = Tensor(Constant(value), (), value.shape, value.dtype, name=name,
                                site=origin, is_gradient=grad)
            else:
                tensor = Variable(VariableLeaf(), value, name)
        elif kind == "placeholder":
            if not name:
                raise _fail(f"{where}.name: a placeholder needs a non-empty name")
            shape = _shape(entry["shape"], f"{where}.shape", allow_unknown=True)
            dtype = _dtype(entry["dtype"], f"{where}.dtype")
            tensor = Tensor(Placeholder(), (), shape, dtype, name=name, site=origin, is_gradient=False)
        else:
            tensor = _decode_op_node(entry, k, name, where, origin, tensors, depth)
        tensors.append(tensor)
        kinds.append(kind)
    return tensors, kinds


def _decode_site(site, where: str):
    """A node's saved ``[file, line]`` (or None) as a site tuple."""
    if site is None:
        return None
    if (type(site) is list and len(site) == 2 and type(site[0]) is str and len(site[0]) <= MAX_NAME_LENGTH
            and type(site[1]) is int and 0 <= site[1] <= MAX_SITE_LINE):
        return site[0], site[1]  # the common case in one test; the checks below say what is wrong
    site = _list(site, f"{where}.site")
    if len(site) != 2:
        raise _fail(f"{where}.site: expected [file, line]")
    return _str(site[0], f"{where}.site[0]"), _int(site[1], f"{where}.site[1]", 0, MAX_SITE_LINE)


def _decode_op_node(entry: dict, k: int, name: str | None, where: str, origin: tuple, tensors: list[Tensor],
                    depth: int) -> Tensor:
    """Node ``k``, an op node: its inputs earlier nodes, its op built from the registry and checked
    against them, and its re-inferred type equal to the declared one."""
    shape = _shape(entry["shape"], f"{where}.shape", allow_unknown=True)
    multi = entry["dtype"] == MULTI_DTYPE
    dtype = MULTI_TYPE[1] if multi else _dtype(entry["dtype"], f"{where}.dtype")
    grad = _bool(entry["grad"], f"{where}.grad")
    parents = _list(entry["inputs"], f"{where}.inputs", MAX_INPUTS_PER_NODE)
    for position, parent in enumerate(parents):
        if type(parent) is not int or not 0 <= parent < k:
            raise _fail(f"{where}.inputs[{position}]: {str(parent)[:20]} does not refer to an earlier "
                        f"node (inputs must come before their consumers; no cycles)")
    inputs = [tensors[parent] for parent in parents]
    site = _decode_site(entry["site"], where)
    primitive = _build_op(entry["op"], entry["params"], where, depth)
    if multi != bool(primitive.multi_output):
        raise _fail(f"{where}: dtype {entry['dtype']!r} does not fit op {entry['op']!r}")
    _check_loaded_op(primitive, inputs, where)
    try:
        inferred_shape, inferred_dtype = primitive.infer(*inputs)
    except Exception as exc:  # noqa: BLE001 - infer rejects the inputs: the file is inconsistent
        raise _fail(f"{where}: op {entry['op']!r} rejects its inputs: {type(exc).__name__}: {exc}") from exc
    if tuple(inferred_shape) != shape or np.dtype(inferred_dtype) != dtype:
        raise _fail(f"{where}: op {entry['op']!r} declares shape {list(shape)} {dtype}, but its inputs "
                    f"give {list(inferred_shape)} {np.dtype(inferred_dtype)}")
    return Tensor(primitive, inputs, shape, dtype, name=name,
                  site=site if site is not None else origin, is_gradient=grad)


_GRAPH_KEYS = {"nodes", "inputs", "outputs"}


def _decode_graph(payload, where: str, depth: int) -> InnerGraph:
    """An inner graph: its node list checked like the outer graph's, within the same limits."""
    state = getattr(_local, "load", None)
    if state is None:  # pragma: no cover - only the loader decodes ops
        raise _fail(f"{where}: an inner graph outside a file")
    payload = _obj(payload, _GRAPH_KEYS, where)
    entries = _list(payload["nodes"], f"{where}.nodes", MAX_NODES)
    state["nodes"] += len(entries)
    if state["nodes"] > MAX_NODES:
        raise _fail(f"{where}: more than {MAX_NODES} nodes in the file's graphs")
    tensors, kinds = _decode_nodes(entries, f"{where}.nodes", allow_variables=False, depth=depth + 1)
    inputs = []
    for position, value in enumerate(_list(payload["inputs"], f"{where}.inputs", MAX_NODES)):
        if type(value) is not int or not 0 <= value < len(tensors) or kinds[value] != "placeholder":
            raise _fail(f"{where}.inputs[{position}]: {str(value)[:20]} is not a placeholder of this graph")
        inputs.append(tensors[value])
    outputs = []
    for position, value in enumerate(_list(payload["outputs"], f"{where}.outputs", MAX_NODES)):
        if type(value) is not int or not 0 <= value < len(tensors):
            raise _fail(f"{where}.outputs[{position}]: {str(value)[:20]} is not a node of this graph")
        outputs.append(tensors[value])
    try:
        return InnerGraph(inputs, outputs)
    except GraphcError as exc:  # an input listed twice, a placeholder that is not an input, no outputs
        raise _fail(f"{where}: {exc}") from exc


def _build_function(manifest: dict, tensors: list[Tensor], kinds: list[str], path, prefix: str):
    """One function of the file (``prefix`` names where its entry is, e.g. ``"functions[1]."``)."""

    optimize = _bool(manifest["optimize"], f"{prefix or 'manifest.'}optimize")
    inplace_updates = _bool(manifest.get("inplace_updates", False), f"{prefix or 'manifest.'}inplace_updates")
    check_numerics = _bool(manifest.get("check_numerics", False), f"{prefix or 'manifest.'}check_numerics")

    def node_ref(value, where: str) -> int:
        if type(value) is not int or not 0 <= value < len(tensors):
            raise _fail(f"{where}: {str(value)[:20]} is not a node index")
        return value

    inputs = []
    for position, value in enumerate(_list(manifest["inputs"], f"{prefix}inputs", MAX_NODES)):
        k = node_ref(value, f"{prefix}inputs[{position}]")
        if kinds[k] != "placeholder":
            raise _fail(f"{prefix}inputs[{position}]: node {k} is a {kinds[k]}, not a placeholder")
        if any(t is tensors[k] for t in inputs):
            raise _fail(f"{prefix}inputs[{position}]: node {k} is listed twice")
        inputs.append(tensors[k])
    outputs = [tensors[node_ref(v, f"{prefix}outputs[{p}]")]
               for p, v in enumerate(_list(manifest["outputs"], f"{prefix}outputs", MAX_NODES))]
    spec, count = _decode_structure(manifest["structure"], f"{prefix}structure")
    if count != len(outputs):
        raise _fail(f"{prefix}structure: it holds {count} tensors, but there are {len(outputs)} outputs")
    pairs = []
    for position, pair in enumerate(_list(manifest["updates"], f"{prefix}updates", MAX_NODES)):
        pair = _list(pair, f"{prefix}updates[{position}]")
        if len(pair) != 2:
            raise _fail(f"{prefix}updates[{position}]: expected [variable, new value]")
        variable = node_ref(pair[0], f"{prefix}updates[{position}][0]")
        if kinds[variable] != "variable":
            raise _fail(f"{prefix}updates[{position}]: node {variable} is not a variable")
        pairs.append((tensors[variable], tensors[node_ref(pair[1], f"{prefix}updates[{position}][1]")]))
    try:
        updates = normalize_updates(pairs)
    except Exception as exc:  # noqa: BLE001 - an update the function constructor would refuse
        raise _fail(f"{prefix}updates: {exc}") from exc
    try:
        return rebuild_function(inputs, outputs, spec, updates, optimize, inplace_updates=inplace_updates,
                                check_numerics=check_numerics)
    except Exception as exc:  # noqa: BLE001 - e.g. a placeholder the graph needs is not an input
        what = f"function {manifest['name']!r}" if prefix else "the graph"
        raise _fail(f"{path}: {what} cannot be compiled: {type(exc).__name__}: {exc}") from exc


def load(path):
    """Load a Function written by :func:`save`; it runs without optimizing again.

    A file saved from a dict of functions gives back that dict (same names, same
    order), whose functions share their variables again as they did when saved.
    Nothing in the file is executed. Any malformed, truncated or tampered file
    raises :class:`graphc.LoadError` (a missing or unreadable file raises the
    usual ``OSError``).
    """
    path = os.fspath(path)
    with open(path, "rb"):
        pass  # OSError for a missing/unreadable file, before anything else
    try:
        manifest_bytes, data, version = _read_file(path)
        manifest = _parse_manifest(manifest_bytes, path)
        arrays = _load_arrays(manifest["arrays"], data)
        return _build_graph(manifest, arrays, path, version)
    except LoadError:
        raise
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - the promise: a bad file raises LoadError and nothing else
        raise LoadError(f"{path}: cannot load: {type(exc).__name__}: {exc}") from exc
