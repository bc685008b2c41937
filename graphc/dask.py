"""Run graphc graphs on Dask: ``to_dask`` (lazy evaluation) and ``DataParallel`` (training).

Optional: ``pip install "graphc[dask]"``. ``import graphc`` never imports this module or Dask.

``to_dask`` lowers the optimized graph op by op to a ``dask.array`` graph. The lowering of an
op is registered here by op class (subclasses inherit their base's rule):

* element-wise ops run their own NumPy ``impl`` block by block (``map_blocks`` over
  broadcast, chunk-aligned operands), so every element is computed exactly as ``Session.run``
  computes it;
* ``sum``/``mean``/``max``/``min``/``prod`` become Dask's tree reductions;
* ``matmul``/``dot``/``outer``/``einsum`` become Dask's blocked linear algebra;
* shape ops become Dask's shape functions;
* ops that couple the elements along some axes (softmax and its family, ``logsumexp``, the
  cross-entropies, exclusive products) rechunk those axes to one chunk and run ``impl`` per block;
* scatter-like gradient ops (``take_grad``, ``getitem_grad`` with index arrays) gather their
  operands into one block: correct for any chunking, but not parallel;
* a loop (``gc.scan``) runs whole in one task (its compiled body, step after step), and its
  ``output`` nodes pick its values.

An op without a rule is an error naming it.

``DataParallel`` trains on a ``dask.distributed`` cluster: one compiled gradient ``Function`` is
sent to the workers once; each step computes every chunk's gradient on the workers, sums them
on the cluster and applies the optimizer's update locally.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import dask.array as da
import numpy as np

from graphc import random as graphc_random
from graphc.autodiff import grad
from graphc.compile import compile_inner
from graphc.custom import CustomOp
from graphc.errors import FeedError, GraphcError, ShapeError
from graphc.function import check_feed, function
from graphc.graph import clone
from graphc.leaves import Constant, Placeholder, VariableLeaf, placeholder
from graphc.op import Output
from graphc.ops import arrange, conv, cumulative, elementwise, linalg, nn, ordering, reduce, shape
from graphc.passes import optimize_tensors
from graphc.passes.fuse import Fused
from graphc.scan import Scan
from graphc.session import resolve_feeds
from graphc.structure import flatten, unflatten
from graphc.tensor import Tensor, Variable, consumers, toposort
from graphc.types import format_shape, shapes_match

__all__ = ["DataParallel", "LOWERINGS", "lowers", "to_dask"]

Lowering = Callable[[Tensor, list], "da.Array"]

#: op class -> function(node, lowered inputs) -> dask array
LOWERINGS: dict[type, Lowering] = {}


def _registrar(table: dict, *op_classes: type) -> Callable:
    """A decorator entering the decorated rule in ``table`` for each of ``op_classes``."""

    def register(rule):
        for op_class in op_classes:
            table[op_class] = rule
        return rule

    return register


def _rule_for(table: dict, node: Tensor):
    """``node``'s op's rule in ``table``: its class's own, else its nearest base class's (or None)."""
    for op_class in type(node.primitive).__mro__:
        rule = table.get(op_class)
        if rule is not None:
            return rule
    return None


def lowers(*op_classes: type) -> Callable[[Lowering], Lowering]:
    """Register the decorated function as the Dask lowering of ``op_classes`` (and subclasses)."""
    return _registrar(LOWERINGS, *op_classes)


def lowering_of(node: Tensor) -> Lowering:
    """The rule for ``node``'s op: its class's own, else its nearest base class's."""
    rule = _rule_for(LOWERINGS, node)
    if rule is not None:
        return rule
    raise GraphcError(f"to_dask: no Dask lowering for op {node.op!r} ({node.describe()}); "
                      f"register one with graphc.dask.lowers({type(node.primitive).__name__})")


def _meta(node: Tensor) -> np.ndarray:
    return np.empty((0,) * node.ndim, dtype=node.dtype)


def _one_chunk_along(x: da.Array, axes) -> da.Array:
    """``x`` with each of ``axes`` in a single chunk (the other axes keep their chunks)."""
    axes = [a % x.ndim for a in axes] if x.ndim else []
    if all(len(x.chunks[a]) <= 1 for a in axes):
        return x
    return x.rechunk({a: -1 for a in axes})


def _one_block(x: da.Array) -> da.Array:
    return x.rechunk(-1) if x.ndim and x.npartitions > 1 else x


# ---- element-wise ------------------------------------------------------------------------------

@lowers(elementwise.Elementwise, nn.SigmoidCrossEntropy, Fused)
def _blockwise(node, args):
    """``impl`` per block over chunk-aligned, broadcast operands."""
    if not args:
        return da.from_array(node.primitive.impl())
    operands = da.broadcast_arrays(*args) if len(args) > 1 else list(args)
    return da.map_blocks(node.primitive.impl, *operands, dtype=node.dtype, meta=_meta(node))


# ---- reductions --------------------------------------------------------------------------------

_TREE_REDUCTIONS = {reduce.Sum: da.sum, reduce.Mean: da.mean, reduce.Max: da.max, reduce.Min: da.min,
                    reduce.Prod: da.prod}


@lowers(*_TREE_REDUCTIONS)
def _tree_reduction(node, args):
    op = node.primitive
    reduction = _TREE_REDUCTIONS[type(op)]
    kwargs = {"dtype": node.dtype} if type(op) in (reduce.Sum, reduce.Mean, reduce.Prod) else {}
    result = reduction(args[0], axis=op.axes, keepdims=op.keepdims, **kwargs)
    return result.astype(node.dtype, copy=False)


@lowers(reduce.Logsumexp)
def _reduce_in_blocks(node, args):
    """Rechunk the reduced axes to one chunk, then ``impl`` per block."""
    op = node.primitive
    x = _one_chunk_along(args[0], op.axes)
    if op.keepdims:
        chunks = tuple((1,) if a in op.axes else c for a, c in enumerate(x.chunks))
        return da.map_blocks(op.impl, x, chunks=chunks, dtype=node.dtype, meta=_meta(node))
    return da.map_blocks(op.impl, x, drop_axis=list(op.axes), dtype=node.dtype, meta=_meta(node))


@lowers(reduce.ReducedCount)
def _reduced_count(node, args):
    count = math.prod(args[0].shape[a] for a in node.primitive.axes)
    return da.from_array(np.asarray(count, dtype=node.dtype))


# ---- ops coupling the elements along axes ------------------------------------------------------

def _coupled_axes(node) -> tuple:
    op = node.primitive
    if isinstance(op, (reduce.ProdOthers, reduce.SoftmaxOver)):
        return op.axes
    if isinstance(op, linalg.DiagonalMask):
        return tuple(a for group in op.groups for a in group)
    return (op.axis,)


@lowers(nn.Softmax, nn.LogSoftmax, reduce.SoftmaxOver, reduce.ProdOthers, linalg.DiagonalMask)
def _same_shape_along(node, args):
    """An output of the input's shape whose entries depend on whole lines along some axes."""
    x = _one_chunk_along(args[0], _coupled_axes(node))
    return da.map_blocks(node.primitive.impl, x, dtype=node.dtype, meta=_meta(node))


@lowers(reduce.ProdOthersGrad)
def _prod_others_grad(node, args):
    """Like prod_others: whole lines along the axes in one chunk, for both operands."""
    axes = node.primitive.axes
    x, g = da.broadcast_arrays(*args)
    x, g = _one_chunk_along(x, axes), _one_chunk_along(g, axes).rechunk(_one_chunk_along(x, axes).chunks)
    return da.map_blocks(node.primitive.impl, x, g, dtype=node.dtype, meta=_meta(node))


def _letters(n: int, skip: str = "") -> str:
    return "".join(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in skip)[:n]


@lowers(nn.SoftmaxCrossEntropy)
def _cross_entropy(node, args):
    op = node.primitive
    logits, labels = args
    axis = op.axis % logits.ndim
    logits = _one_chunk_along(logits, [axis])
    index = _letters(logits.ndim)
    out_index = index[:axis] + index[axis + 1:]
    if op.sparse:
        label_index = out_index[len(out_index) - labels.ndim:]
    else:
        labels = _one_chunk_along(labels, [axis - (logits.ndim - labels.ndim)])
        label_index = index[logits.ndim - labels.ndim:]
    return da.blockwise(op.impl, out_index, logits, index, labels, label_index, dtype=node.dtype,
                        concatenate=True, meta=_meta(node))


@lowers(nn.SparseTarget)
def _sparse_target(node, args):
    op = node.primitive
    labels, logits = args
    axis = op.axis % logits.ndim
    logits = _one_chunk_along(logits, [axis])
    index = _letters(logits.ndim)
    label_index = index[:axis] + index[axis + 1:]
    return da.blockwise(op.impl, index, labels, label_index, logits, index, dtype=node.dtype,
                        concatenate=True, meta=_meta(node))


@lowers(nn.SoftmaxMinusOneHot)
def _softmax_minus_one_hot(node, args):
    logits, labels = args
    logits = _one_chunk_along(logits, [1])  # each row's softmax needs the whole row
    return da.blockwise(node.primitive.impl, "ab", logits, "ab", labels, "a", dtype=node.dtype,
                        concatenate=True, meta=_meta(node))


# ---- linear algebra ----------------------------------------------------------------------------

@lowers(linalg.Matmul)
def _matmul(node, args):
    return da.matmul(*args).astype(node.dtype, copy=False)


@lowers(linalg.Dot)
def _dot(node, args):
    a, b = args
    if a.ndim == 0 or b.ndim == 0:
        return (a * b).astype(node.dtype, copy=False)
    return da.tensordot(a, b, axes=((a.ndim - 1,), (max(b.ndim - 2, 0),))).astype(node.dtype, copy=False)


@lowers(linalg.Outer)
def _outer(node, args):
    return da.outer(*args).astype(node.dtype, copy=False)


@lowers(linalg.Einsum)
def _einsum(node, args):
    subscripts = node.primitive.subscripts
    inputs = subscripts.split("->")[0].split(",")
    if any(len(set(term.replace(".", ""))) != len(term.replace(".", "")) for term in inputs):
        # a letter repeated within one operand (a diagonal): Dask's blocked einsum cannot take it
        return _whole(node, args)
    return da.einsum(subscripts, *args, dtype=node.dtype)


# ---- shape ops ---------------------------------------------------------------------------------

@lowers(shape.Identity)
def _identity(node, args):
    return args[0]


@lowers(shape.Reshape)
def _reshape(node, args):
    return args[0].reshape(node.primitive.shape)


@lowers(shape.ReshapeLike)
def _reshape_like(node, args):
    return args[0].reshape(args[1].shape if len(args) > 1 else node.primitive.shape)


@lowers(shape.BroadcastTo)
def _broadcast_to(node, args):
    return da.broadcast_to(args[0], node.primitive.shape)


@lowers(shape.BroadcastLike)
def _broadcast_like(node, args):
    return da.broadcast_to(args[0], args[1].shape if len(args) > 1 else node.primitive.shape)


@lowers(shape.SumTo)
def _sum_to(node, args):
    x = args[0]
    target = args[1].shape if len(args) > 1 else node.primitive.shape
    if x.shape == tuple(target):
        return x
    lead = x.ndim - len(target)
    axes = tuple(range(lead)) + tuple(lead + i for i, size in enumerate(target)
                                      if size == 1 and x.shape[lead + i] != 1)
    summed = da.sum(x, axis=axes, keepdims=True) if axes else x
    return summed.reshape(target)


@lowers(shape.Transpose)
def _transpose(node, args):
    return da.transpose(args[0], node.primitive.axes)


@lowers(shape.ExpandDims)
def _expand_dims(node, args):
    return da.expand_dims(args[0], node.primitive.axes)


@lowers(shape.Squeeze)
def _squeeze(node, args):
    return da.squeeze(args[0], node.primitive.axes)


@lowers(shape.Concatenate)
def _concatenate(node, args):
    return da.concatenate([a.astype(node.dtype, copy=False) for a in args], axis=node.primitive.axis)


@lowers(shape.Stack)
def _stack(node, args):
    return da.stack([a.astype(node.dtype, copy=False) for a in args], axis=node.primitive.axis)


@lowers(shape.ConcatPiece)
def _concat_piece(node, args):
    op = node.primitive
    g, *xs = args
    start = sum(x.shape[op.axis] for x in xs[:op.index])
    stop = start + xs[op.index].shape[op.axis]
    return g[(slice(None),) * op.axis + (slice(start, stop),)]


@lowers(shape.Take)
def _take(node, args):
    op = node.primitive
    x, indices = args
    if op.axis is None:
        x, axis = x.reshape(-1), 0
    else:
        axis = op.axis
    x = _one_chunk_along(x, [axis])
    x_index = _letters(x.ndim)
    index_letters = _letters(indices.ndim, skip=x_index)
    out_index = x_index[:axis] + index_letters + x_index[axis + 1:]
    return da.blockwise(lambda block, ind: np.take(block, ind, axis=axis), out_index, x, x_index,
                        indices, index_letters, dtype=node.dtype, concatenate=True, meta=_meta(node))


@lowers(shape.OneHot)
def _one_hot(node, args):
    (indices,) = args
    return da.map_blocks(node.primitive.impl, indices, new_axis=indices.ndim,
                         chunks=indices.chunks + ((node.primitive.depth,),), dtype=node.dtype, meta=_meta(node))


@lowers(shape.Getitem)
def _getitem(node, args):
    x, *arrays = args
    entries = node.primitive.index
    if not arrays:
        return x[shape._numpy_index(entries, [])]
    if len(arrays) == 1 and arrays[0].ndim == 1 and sum(e[0] not in ("newaxis", "ellipsis") for e in entries) == 1:
        return x[shape._numpy_index(entries, arrays)]  # one integer/bool array along one axis: Dask's own
    return _whole(node, args)


@lowers(CustomOp)
def _whole(node, args, out_shape=None):
    """Gather every operand into one block and run ``impl`` there (scatter-like and custom ops)."""
    import dask

    if out_shape is None:
        stand_ins = [placeholder("operand", a.shape, a.dtype) for a in args]
        out_shape, _ = node.primitive.infer(*stand_ins)
    if None in out_shape:  # the size depends on the values
        out_shape = tuple(math.nan if s is None else s for s in out_shape)
    task = dask.delayed(node.primitive.impl, pure=True)(*[_one_block(a) for a in args])
    return da.from_delayed(task, shape=tuple(out_shape), dtype=node.dtype, meta=_meta(node))


@lowers(Scan)
def _loop(node, args):
    """A loop runs whole, in one task: each step needs the one before (every operand in one block).

    Its result is the tuple of the loop's outputs (a Dask ``Delayed``); ``output`` nodes pick them.
    The body is compiled once, here, as the executor compiles it.
    """
    import dask

    op = node.primitive
    run = op.compiled_impl(compile_inner)
    # the outputs' shapes from the operands' (Dask knows a fed sequence's length)
    stand_ins = [placeholder("operand", tuple(None if math.isnan(n) else n for n in a.shape), a.dtype)
                 for a in args]
    shapes = [shape for shape, _ in op.output_types(*stand_ins)]
    return dask.delayed(run, pure=True, nout=len(op.emits))(*[_one_block(a) for a in args]), shapes


@lowers(Output)
def _output(node, args):
    """Output ``index`` of a multi-output node (a loop), as one block."""
    ((values, shapes),) = args
    shape = tuple(math.nan if s is None else s for s in shapes[node.primitive.index])
    return da.from_delayed(values[node.primitive.index], shape=shape, dtype=node.dtype, meta=_meta(node))


@lowers(shape.TakeGrad)
def _take_grad(node, args):
    # inputs: g, indices, then the reference whose run-time shape is the result's (if not static)
    return _whole(node, args, args[2].shape if len(args) > 2 else node.primitive.shape)


@lowers(shape.GetitemGrad)
def _getitem_grad(node, args):
    op = node.primitive
    rest = args[1 + op.num_arrays:]  # after g and the index arrays: the shape reference, if any
    return _whole(node, args, rest[0].shape if rest else op.shape)


# ---- section 15 and convolutions ----------------------------------------------------------------

@lowers(reduce.Reduction)
def _generic_reduction(node, args):
    """Reductions without a tree form of their own (var, std, norm): rechunk, then ``impl``."""
    return _reduce_in_blocks(node, args)


@lowers(reduce.AnyOf, reduce.AllOf)
def _any_all(node, args):
    reduction = da.all if isinstance(node.primitive, reduce.AllOf) else da.any
    return reduction(args[0], axis=node.primitive.axes, keepdims=node.primitive.keepdims)


@lowers(reduce.Argmax)
def _argmax(node, args):
    op = node.primitive
    pick = da.argmin if isinstance(op, reduce.Argmin) else da.argmax
    return pick(args[0], axis=op.axis, keepdims=op.keepdims).astype(np.int64, copy=False)


@lowers(ordering.Sort, cumulative.Cumulative, cumulative.Shift, cumulative.LinearScan, arrange.Tril)
def _along_axis(node, args):
    """Same-shape ops coupling the entries along one axis (the last two for tril/triu)."""
    axes = (-2, -1) if isinstance(node.primitive, arrange.Tril) else (node.primitive.axis,)
    operands = [_one_chunk_along(a, axes) for a in args]
    if len(operands) > 1:
        operands = da.broadcast_arrays(*operands)
    return da.map_blocks(node.primitive.impl, *operands, dtype=node.dtype, meta=_meta(node))


@lowers(ordering.TopK)
def _top_k(node, args):
    x = _one_chunk_along(args[0], [-1])
    return da.map_blocks(node.primitive.impl, x, chunks=x.chunks[:-1] + ((node.primitive.k,),),
                         dtype=node.dtype, meta=_meta(node))


@lowers(ordering.TakeAlongAxis)
def _take_along_axis(node, args):
    x, indices = args
    axis = node.primitive.axis % x.ndim
    x = _one_chunk_along(x, [axis])
    index = _letters(x.ndim)
    picked = index[:axis] + index[axis].upper() + index[axis + 1:]  # the indices' own size along axis
    return da.blockwise(node.primitive.impl, picked, x, index, _one_chunk_along(indices, [axis]), picked,
                        dtype=node.dtype, concatenate=True, meta=_meta(node))


@lowers(arrange.Tile, arrange.Repeat, arrange.Flip, arrange.Roll, arrange.Split, arrange.Diagonal)
def _dispatched(node, args):
    """Ops whose ``impl`` is NumPy API that Dask implements (``np.tile``, slicing, ...)."""
    result = node.primitive.impl(*args)
    if not isinstance(result, da.Array):  # NumPy computed it: the op's impl is not Dask-aware
        raise GraphcError(f"to_dask: {node.op!r} did not lower to a Dask array")
    return result.astype(node.dtype, copy=False)


@lowers(arrange.TileGrad, arrange.RepeatGrad, arrange.SplitGrad, arrange.DiagonalGrad,
        ordering.TakeAlongAxisGrad, graphc_random.RandomOp, graphc_random.StepKeys)
def _whole_with_reference(node, args):
    """Scatter-like gradients and random draws: one block (a draw reads the generator's state
    and does not advance it)."""
    return _whole(node, args, _reference_shape(node, args))


def _reference_shape(node, args):
    stand_ins = [placeholder("operand", a.shape, a.dtype) for a in args]
    out_shape, _ = node.primitive.infer(*stand_ins)
    if None in out_shape and hasattr(node.primitive, "shape") and len(args) > 1:
        op = node.primitive
        if isinstance(op, graphc_random.RandomOp):  # the like= input, or the last parameter (a loop's
            at = 1 + op.n_params if op.like else len(args) - 1 - op.stepped  # step key comes last)
            return args[at].shape
        out_shape = args[-1].shape  # the run-time reference input
    return out_shape


@lowers(nn.ShapeCheck, shape.SqueezeCheck)
def _checked_at_lowering(node, args):
    """Run-time shape checks: Dask's shapes are known, so the check runs now."""
    op, x = node.primitive, args[0]
    if isinstance(op, nn.ShapeCheck) and x.shape != args[1].shape:
        raise ShapeError(f"to_dask: softmax_cross_entropy: probability labels of shape {x.shape} for logits of "
                         f"shape {args[1].shape} ({node.describe()}): they must have the logits' shape")
    if isinstance(op, shape.SqueezeCheck) and any(x.shape[a] == 1 for a in op.axes):
        raise ShapeError(f"to_dask: squeeze() kept an axis of size 1 whose size was unknown when the graph was "
                         f"built ({node.describe()}); pass axis= to say which axes to remove")
    return x


#: for each convolution op, the positions of its inputs whose axis 0 is the examples
_PER_EXAMPLE = {conv.Conv2d: (0,), conv.Conv2dTranspose: (0,), conv.Conv2dInputGrad: (0, 2), conv.MaxPool2d: (0,),
                conv.AvgPool2d: (0,), conv.MaxPool2dGrad: (0, 1, 2), conv.MaxPool2dGather: (0, 1, 2),
                conv.AvgPool2dGrad: (0, 1), conv.Pad: (0,), conv.Conv2dColumns: (0,)}


@lowers(*_PER_EXAMPLE)
def _per_example(node, args):
    """Ops computing each example from that example alone: chunks of examples, whole otherwise."""
    op = node.primitive
    if isinstance(op, conv.Pad) and tuple(op.pad_width[0]) != (0, 0):
        return _whole(node, args)
    carriers = _PER_EXAMPLE[type(op)]
    first = args[carriers[0]]
    operands = [a.rechunk({0: first.chunks[0]} | {k: -1 for k in range(1, a.ndim)}) if i in carriers
                else _one_block(a) for i, a in enumerate(args)]
    rows = tuple(placeholder("operand", (1,) + a.shape[1:] if i in carriers else a.shape, a.dtype)
                 for i, a in enumerate(args))
    out_shape, _ = op.infer(*rows)  # the shape of one example's result
    chunks = (first.chunks[0],) + tuple((size,) for size in out_shape[1:])
    # the windows' copy (conv2d_columns) has one axis more than its input, a convolution of it one less
    # (those axes are whole: one block)
    new_axis = list(range(first.ndim, len(out_shape))) or None
    drop_axis = list(range(len(out_shape), first.ndim)) or None
    return da.map_blocks(op.impl, *operands, chunks=chunks, dtype=node.dtype, meta=_meta(node), new_axis=new_axis,
                         drop_axis=drop_axis)


@lowers(conv.Conv2dWeightGrad)
def _summed_over_examples(node, args):
    """The weight gradient: one partial sum per chunk of examples, tree-summed."""
    import dask

    x, g, w = args
    chunks = x.chunks[0]
    x = x.rechunk({0: chunks} | {k: -1 for k in range(1, x.ndim)})
    g = g.rechunk({0: chunks} | {k: -1 for k in range(1, g.ndim)})
    weight = _one_block(w)
    parts = [dask.delayed(node.primitive.impl)(xb, gb, weight)
             for xb, gb in zip(x.to_delayed().reshape(-1), g.to_delayed().reshape(-1))]
    return da.from_delayed(_tree_sum(parts), shape=w.shape, dtype=node.dtype, meta=_meta(node))


# ---- the batch-parallel fast path -------------------------------------------------------------
#
# A node's batch status: CONST (no batch dependence), an int (row-wise: entry i along that axis
# depends only on example i), SUM / MEAN (a reduction over the examples of a row-wise node: the
# "frontier", computed per chunk and combined), or POST (computed from frontier and CONST
# values only). A graph whose every node has a status is batch-parallel: one compiled Function
# per chunk computes the frontier and the row-wise outputs; the rest runs op by op on Dask.

CONST, SUM, MEAN, POST = "const", "sum", "mean", "post"


class _NotBatchParallel(Exception):
    pass


BatchRule = Callable[[Tensor, list], object]
#: op class -> function(node, input statuses) -> the node's status, for nodes with row-wise inputs
BATCH_RULES: dict[type, BatchRule] = {}


def batch_rule(*op_classes: type) -> Callable[[BatchRule], BatchRule]:
    """Register how ``op_classes`` carry the batch axis (see ``_status``)."""
    return _registrar(BATCH_RULES, *op_classes)


def _aligned(node: Tensor, statuses: list) -> int:
    """The output axis of the batch for right-aligned (broadcasting) operands; CONST operands
    must not span it."""
    positions = set()
    for tensor, status in zip(node.inputs, statuses):
        offset = node.ndim - tensor.ndim
        if isinstance(status, int):
            positions.add(status + offset)
    if len(positions) != 1:
        raise _NotBatchParallel
    (position,) = positions
    for tensor, status in zip(node.inputs, statuses):
        axis = position - (node.ndim - tensor.ndim)
        if status == CONST and axis >= 0 and tensor.shape[axis] != 1:
            raise _NotBatchParallel  # a per-example constant: not known chunk by chunk
    return position


@batch_rule(elementwise.Elementwise, nn.SigmoidCrossEntropy, Fused, shape.Identity)
def _batch_elementwise(node, statuses):
    return _aligned(node, statuses)


def _after_reduction(axis: int, axes, keepdims: bool) -> int:
    return axis if keepdims else axis - sum(a < axis for a in axes)


@batch_rule(reduce.Reduction)
def _batch_reduction_rule(node, statuses):
    op, (axis,) = node.primitive, statuses
    if axis not in op.axes:
        return _after_reduction(axis, op.axes, op.keepdims)
    if isinstance(op, reduce.Sum):
        return SUM
    if isinstance(op, reduce.Mean):
        return MEAN
    raise _NotBatchParallel


@batch_rule(nn.Softmax, nn.LogSoftmax, reduce.SoftmaxOver, reduce.ProdOthers, linalg.DiagonalMask)
def _batch_along(node, statuses):
    (axis,) = statuses
    if axis in tuple(a % node.ndim for a in _coupled_axes(node)):
        raise _NotBatchParallel
    return axis


@batch_rule(reduce.ProdOthersGrad)
def _batch_prod_others_grad(node, statuses):
    position = _aligned(node, statuses)
    if position in tuple(a % node.ndim for a in node.primitive.axes):
        raise _NotBatchParallel
    return position


@batch_rule(shape.SqueezeCheck)
def _batch_squeeze_check(node, statuses):
    if statuses[0] in node.primitive.axes:  # a chunk of one example is not a batch of one
        raise _NotBatchParallel
    return statuses[0]


@batch_rule(nn.ShapeCheck)
def _batch_shape_check(node, statuses):
    if not isinstance(statuses[0], int) or statuses[0] != statuses[1]:
        raise _NotBatchParallel
    return statuses[0]


@batch_rule(nn.SoftmaxCrossEntropy)
def _batch_cross_entropy(node, statuses):
    logits, labels = node.inputs
    axis = node.primitive.axis % logits.ndim
    position = statuses[0]
    if not isinstance(position, int) or position == axis:
        raise _NotBatchParallel
    out = _after_reduction(position, (axis,), False)
    label_offset = (node.ndim if node.primitive.sparse else logits.ndim) - labels.ndim
    if statuses[1] != CONST and statuses[1] + label_offset != (out if node.primitive.sparse else position):
        raise _NotBatchParallel
    return out


@batch_rule(linalg.Matmul, linalg.Dot)
def _batch_matmul(node, statuses):
    a, b = node.inputs
    if a.ndim != 2 or b.ndim != 2:
        raise _NotBatchParallel
    sa, sb = statuses
    if sa == 0 and sb == CONST:
        return 0
    if sa == CONST and sb == 1:
        return 1
    if sa == 1 and sb == 0:
        return SUM  # the examples are contracted: x.T @ g, a weight's gradient
    raise _NotBatchParallel


@batch_rule(linalg.Einsum)
def _batch_einsum(node, statuses):
    terms, out = node.primitive.subscripts.split("->")
    letters = set()
    for term, status in zip(terms.split(","), statuses):
        if "." in term:
            raise _NotBatchParallel
        if isinstance(status, int):
            letters.add(term[status])
    if len(letters) != 1:
        raise _NotBatchParallel
    (letter,) = letters
    for term, status in zip(terms.split(","), statuses):
        if status == CONST and letter in term:
            raise _NotBatchParallel
        if isinstance(status, int) and term.count(letter) != 1:
            raise _NotBatchParallel
    return out.index(letter) if letter in out else SUM


@batch_rule(shape.Transpose)
def _batch_transpose(node, statuses):
    return list(node.primitive.axes).index(statuses[0])


@batch_rule(shape.ExpandDims)
def _batch_expand_dims(node, statuses):
    kept = [a for a in range(node.ndim) if a not in node.primitive.axes]
    return kept[statuses[0]]


@batch_rule(shape.Squeeze)
def _batch_squeeze(node, statuses):
    if statuses[0] in node.primitive.axes:
        raise _NotBatchParallel
    return _after_reduction(statuses[0], node.primitive.axes, False)


@batch_rule(shape.Reshape)
def _batch_reshape(node, statuses):
    # only reshapes that keep the examples on axis 0 (their count is the unknown size)
    if statuses[0] != 0 or node.inputs[0].shape[0] is not None or node.shape[0] is not None:
        raise _NotBatchParallel
    if None in node.inputs[0].shape[1:] or None in node.shape[1:]:
        raise _NotBatchParallel
    return 0


@batch_rule(shape.BroadcastLike, shape.ReshapeLike)
def _batch_like(node, statuses):
    x, *ref = node.inputs
    if not ref or not isinstance(statuses[1], int):
        raise _NotBatchParallel
    position = statuses[1]
    if isinstance(node.primitive, shape.ReshapeLike) and statuses[0] != position:
        raise _NotBatchParallel
    if statuses[0] != CONST and statuses[0] + node.ndim - x.ndim != position:
        raise _NotBatchParallel
    return position


@batch_rule(shape.SumTo)
def _batch_sum_to(node, statuses):
    x = node.inputs[0]
    lead = x.ndim - node.ndim
    if len(statuses) > 1 and isinstance(statuses[1], int):
        if statuses[0] - lead != statuses[1]:
            raise _NotBatchParallel
        return statuses[1]
    axis = statuses[0] - lead
    if axis < 0 or (node.shape[axis] == 1 and x.shape[statuses[0]] != 1):
        return SUM  # the batch axis is summed away
    raise _NotBatchParallel


@batch_rule(shape.Concatenate, shape.Stack)
def _batch_join(node, statuses):
    if CONST in statuses or len(set(statuses)) != 1:
        raise _NotBatchParallel
    axis, position = node.primitive.axis, statuses[0]
    if isinstance(node.primitive, shape.Stack):
        return position + (axis <= position)
    if axis == position:
        raise _NotBatchParallel
    return position


@batch_rule(shape.ConcatPiece)
def _batch_concat_piece(node, statuses):
    if statuses[0] == node.primitive.axis or len(set(statuses)) != 1:
        raise _NotBatchParallel
    return statuses[0]


@batch_rule(shape.Take)
def _batch_take(node, statuses):
    axis, (sx, si) = node.primitive.axis, statuses
    if axis is None:
        raise _NotBatchParallel
    if isinstance(sx, int) and si == CONST and sx != axis:
        return sx if sx < axis else sx + node.inputs[1].ndim - 1
    if sx == CONST and isinstance(si, int):
        return axis + si  # an embedding lookup of the examples' indices
    raise _NotBatchParallel


@batch_rule(shape.TakeGrad)
def _batch_take_grad(node, statuses):
    axis, sg, si = node.primitive.axis, statuses[0], statuses[1]
    ref = statuses[2] if len(statuses) > 2 else CONST
    if axis is not None and isinstance(si, int) and ref == CONST and sg == axis + si:
        return SUM  # scatter-add of the examples into a table: an embedding's gradient
    raise _NotBatchParallel


@batch_rule(shape.OneHot)
def _batch_one_hot(node, statuses):
    return statuses[0]


@batch_rule(shape.Getitem, shape.GetitemGrad)
def _batch_getitem(node, statuses):
    # the examples' axis kept whole in front: x[:, ...] (or the gradient of it)
    entries = node.primitive.index
    if statuses[0] != 0 or not entries or entries[0] != ("slice", None, None, None):
        raise _NotBatchParallel
    if any(s != CONST for s in statuses[1:-1]) or len(set(statuses[1:]) - {CONST, 0}):
        raise _NotBatchParallel
    if isinstance(node.primitive, shape.GetitemGrad) and (len(statuses) - 1 == node.primitive.num_arrays):
        raise _NotBatchParallel  # no run-time shape reference: the result's batch size is static
    return 0


@batch_rule(ordering.Sort, cumulative.Cumulative, cumulative.Shift, arrange.Flip, arrange.Roll)
def _batch_along_axis(node, statuses):
    op = node.primitive
    axes = op.axes if hasattr(op, "axes") else (op.axis,)
    if any(not isinstance(s, int) and s != CONST for s in statuses):
        raise _NotBatchParallel
    (position,) = {s for s in statuses if isinstance(s, int)}
    if position in tuple(a % node.ndim for a in axes):
        raise _NotBatchParallel
    return position


@batch_rule(ordering.TopK, arrange.Tril)
def _batch_not_last(node, statuses):
    (position,) = statuses
    if position >= node.ndim - (2 if isinstance(node.primitive, arrange.Tril) else 1):
        raise _NotBatchParallel
    return position


@batch_rule(*_PER_EXAMPLE)
def _batch_per_example(node, statuses):
    op = node.primitive
    carriers = _PER_EXAMPLE[type(op)]
    if isinstance(op, conv.Pad) and tuple(op.pad_width[0]) != (0, 0):
        raise _NotBatchParallel
    if all(statuses[i] == 0 for i in carriers) and all(s == CONST for i, s in enumerate(statuses)
                                                         if i not in carriers):
        return 0
    raise _NotBatchParallel


@batch_rule(conv.Conv2dWeightGrad)
def _batch_weight_grad(node, statuses):
    if statuses[0] == 0 and statuses[1] == 0 and statuses[2] == CONST:
        return SUM
    raise _NotBatchParallel


def _status(node: Tensor, statuses: list):
    """``node``'s batch status from its inputs' (raises _NotBatchParallel)."""
    if all(s == CONST for s in statuses):
        return CONST
    if any(s in (SUM, MEAN, POST) for s in statuses):
        if any(isinstance(s, int) for s in statuses):
            raise _NotBatchParallel  # row-wise work that needs a reduction over all examples
        return POST
    rule = _rule_for(BATCH_RULES, node)
    if rule is None:
        raise _NotBatchParallel
    return rule(node, statuses)


def _batch_feeds(feeds: dict) -> dict:
    """The feeds that carry the examples: Dask arrays for placeholders of unknown first size."""
    batch = {node: value for node, value in feeds.items()
             if isinstance(value, da.Array) and node.ndim and node.shape[0] is None}
    lengths = {value.shape[0] for value in batch.values()}
    return batch if len(lengths) == 1 and not math.isnan(next(iter(lengths))) else {}


def _batch_statuses(order: list, batch: dict) -> tuple[dict, dict] | None:
    """Every node's batch status, and the counts of examples the graph takes (reduced_count over
    the batch axis, as mean's gradient uses) with their values for the whole batch; None if the
    graph is not batch-parallel."""
    statuses: dict[Tensor, object] = {}
    counts: dict[Tensor, np.ndarray] = {}
    examples = next(iter(batch.values())).shape[0] if batch else 0
    try:
        for node in order:
            if node in batch:
                statuses[node] = 0
            elif not node.inputs:
                statuses[node] = CONST
            elif isinstance(node.primitive, reduce.ReducedCount) and isinstance(statuses[node.inputs[0]], int):
                # each chunk must divide by the number of examples of the whole batch
                statuses[node] = CONST
                axis, x = statuses[node.inputs[0]], node.inputs[0]
                sizes = [examples if a == axis else x.shape[a] for a in node.primitive.axes]
                if None in sizes:
                    raise _NotBatchParallel
                counts[node] = np.asarray(math.prod(sizes), dtype=node.dtype)
            else:
                statuses[node] = _status(node, [statuses[i] for i in node.inputs])
    except _NotBatchParallel:
        return None
    return statuses, counts


def _tree_sum(parts: list):
    import dask

    while len(parts) > 1:
        paired = [dask.delayed(np.add)(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        parts = paired + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def _run_batch_parallel(outputs: list, order: list, statuses: dict, counts: dict, feeds: dict,
                        batch: dict) -> dict:
    """Values of the frontier and the row-wise outputs, from one compiled Function per chunk."""
    import dask

    users = consumers(order)
    wanted = set(outputs)
    frontier = [n for n in order if statuses[n] in (SUM, MEAN)
                and (n in wanted or any(statuses[c] == POST for c in users.get(id(n), ())))]
    rowwise = [n for n in outputs if isinstance(statuses[n], int)]
    # non-batch feeds and variables are inputs too: variables enter with their values of now
    fed = [n for n in order if (n in feeds and n not in batch) or isinstance(n.primitive, VariableLeaf)
           or n in counts]
    fn = function(list(batch) + fed, frontier + rowwise, optimize=False)
    chunks = next(iter(batch.values())).chunks[0]
    blocks = [value.rechunk({0: chunks} | {a: -1 for a in range(1, value.ndim)}).to_delayed().reshape(-1)
              for value in batch.values()]
    others = [counts[n] if n in counts else feeds[n] if n in feeds else np.array(n.value) for n in fed]
    call = dask.delayed(fn, pure=True, nout=len(frontier) + len(rowwise))
    results = [call(*(block[k] for block in blocks), *others) for k in range(len(chunks))]
    values = {node: _combined(node, statuses[node], [r[j] for r in results], chunks)
              for j, node in enumerate(frontier)}
    for j, node in enumerate(rowwise, start=len(frontier)):
        values[node] = _concatenated(node, statuses[node], [r[j] for r in results], chunks)
    return values


def _combined(node: Tensor, status, parts: list, chunks: tuple) -> da.Array:
    """A frontier node from its chunks' values: their sum, weighted by chunk size for a mean."""
    import dask

    if status == MEAN:
        total = sum(chunks)
        parts = [dask.delayed(np.multiply)(part, size / total) for part, size in zip(parts, chunks)]
    if None in node.shape:
        return _whole_delayed(_tree_sum(parts), node)
    return da.from_delayed(_tree_sum(parts), shape=node.shape, dtype=node.dtype, meta=_meta(node))


def _concatenated(node: Tensor, axis: int, parts: list, chunks: tuple) -> da.Array:
    """A row-wise output from its chunks' values, joined along the examples' axis."""
    pieces = []
    for part, size in zip(parts, chunks):
        piece_shape = tuple(size if a == axis else s for a, s in enumerate(node.shape))
        pieces.append(_whole_delayed(part, node) if None in piece_shape else
                      da.from_delayed(part, shape=piece_shape, dtype=node.dtype, meta=_meta(node)))
    return da.concatenate(pieces, axis=axis)


def _whole_delayed(task, node: Tensor) -> da.Array:
    return da.from_delayed(task, shape=(math.nan,) * node.ndim, dtype=node.dtype, meta=_meta(node))


# ---- the driver --------------------------------------------------------------------------------

def _leaf(node: Tensor) -> da.Array:
    if isinstance(node.primitive, Placeholder):
        raise FeedError(f"to_dask: no value for placeholder {node.name!r} ({node.describe()}): "
                        f"give it in feed_dict")
    if isinstance(node.primitive, Constant):
        return da.from_array(node.primitive.value)
    if isinstance(node.primitive, VariableLeaf):
        return da.from_array(np.array(node.value))  # a snapshot: later set_value does not change it
    raise GraphcError(f"to_dask: unexpected leaf {node.describe()}")


def _fed(node: Tensor, value) -> da.Array:
    if not isinstance(value, da.Array):
        return da.from_array(check_feed(node, value))
    label = f"placeholder {node.name!r}" if isinstance(node.primitive, Placeholder) else node.describe()
    if not shapes_match(node.shape, value.shape) or any(math.isnan(s) for s in value.shape):
        raise FeedError(f"to_dask: feed for {label} has shape {format_shape(value.shape)}, "
                        f"expected {format_shape(node.shape)}")
    if value.dtype != node.dtype:
        if not np.can_cast(value.dtype, node.dtype, casting="same_kind"):
            raise FeedError(f"to_dask: feed for {label} has dtype {value.dtype}, which cannot be cast "
                            f"safely to {node.dtype}")
        value = value.astype(node.dtype)
    return value


def to_dask(outputs, feed_dict=None, *, batch_parallel: bool = True):
    """Lazy ``dask.array`` values of ``outputs`` (a tensor or nested list/tuple/dict of tensors).

    ``feed_dict`` maps placeholders (or their names) to ``dask.array`` or NumPy values, chunked
    along any axes. The graph is optimized as ``gc.Session(optimize=True)`` does, then lowered op
    by op; variables enter with their current values. ``.compute()`` equals ``Session.run`` to
    rounding (tree reductions sum in another order). Raises ``FeedError`` for a missing or
    mismatched feed, and ``GraphcError`` naming an op that has no Dask lowering.

    When the graph is batch-parallel over the Dask feeds of placeholders whose first size is
    unknown (every path keeps their axis 0, the examples, until a sum or mean over it), and
    ``batch_parallel`` is true, one compiled graphc ``Function`` per chunk of examples computes
    those sums and means (tree-summed across chunks, means weighted by chunk size) and the
    row-wise outputs (concatenated); what follows the sums runs op by op.
    """
    flat, spec = flatten(outputs)
    feeds = resolve_feeds(feed_dict, flat)
    # a fed intermediate tensor becomes an input before optimizing, as in Session.run
    stand_ins = {t: placeholder(t.name or f"fed {t.op}", t.shape, t.dtype)
                 for t in feeds if not isinstance(t.primitive, Placeholder)}
    if stand_ins:
        flat = clone(flat, stand_ins)
    feeds = {stand_ins.get(t, t): _fed(t, value) for t, value in feeds.items()}
    optimized = optimize_tensors(flat) if flat else []
    values: dict[Tensor, da.Array] = {}
    order = toposort(optimized)
    batch = _batch_feeds(feeds) if batch_parallel else {}
    analysis = _batch_statuses(order, batch) if batch else None
    statuses = analysis[0] if analysis else None
    if analysis is not None:
        values.update(_run_batch_parallel(optimized, order, *analysis, feeds, batch))
        values.update((node, da.from_array(count)) for node, count in analysis[1].items())
    for node in order:
        if node in values or (statuses is not None and statuses[node] not in (CONST, POST)):
            continue
        if not node.inputs:
            values[node] = feeds[node] if node in feeds else _leaf(node)
            continue
        args = [values[i] for i in node.inputs]
        try:
            result = lowering_of(node)(node, args)
        except GraphcError:
            raise
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise GraphcError(f"to_dask: lowering {node.describe()} failed: {exc}") from exc
        values[node] = result
    return unflatten(spec, [values[node] for node in optimized])


# ---- data-parallel training --------------------------------------------------------------------

def _chunk_gradients(fn, weight: float, params: list, *chunk):
    """Run the compiled gradient function on one chunk; its gradients times ``weight``."""
    loss, *grads = fn(*chunk, *params)
    return [float(loss) * weight] + [np.asarray(g) * weight for g in grads]


def _add_gradients(a: list, b: list) -> list:
    return [x + y for x, y in zip(a, b)]


def _batch_reduction(loss: Tensor, inputs: Sequence[Tensor]) -> str:
    """``"mean"`` or ``"sum"``: how ``loss`` combines the examples (axis 0 of the inputs)."""
    input_set = set(inputs)
    found = set()
    for node in toposort([loss]):
        op = node.primitive
        if isinstance(op, (reduce.Sum, reduce.Mean)) and 0 in op.axes and node.inputs:
            if any(leaf in input_set for leaf in toposort([node.inputs[0]])):
                found.add(op.name)
    if len(found) != 1:
        raise ShapeError(f"DataParallel: the loss must be a sum or a mean over the batch (axis 0 of the "
                         f"inputs); found reductions over axis 0: {sorted(found) or 'none'}")
    return found.pop()


class DataParallel:
    """Data-parallel training of ``loss`` over ``params`` on a ``dask.distributed`` cluster.

    ``inputs`` are the placeholders fed with the batch (axis 0 is the example axis), ``loss`` a
    0-d sum or mean over the batch, ``params`` the variables to train. ``optimizer`` is a
    ``gc.optim`` function (default ``gc.optim.sgd``) called as ``optimizer(grads, params, lr=lr)``.
    ``client`` is a ``distributed.Client`` (default: the current one).

    The compiled gradient function (parameters as inputs) is sent to the workers once. Each
    ``step(*batch)`` sends the current parameter values, computes every chunk's gradient on the
    workers (weighted by the chunk's share of the batch for a mean loss), sums them on the
    cluster, and applies the update locally: the same trajectory as single-machine training on
    the whole batch. If the cluster loses a worker and with it the parameters or the function,
    the step is retried with freshly sent data.
    """

    def __init__(self, inputs, loss: Tensor, params, optimizer=None, client=None, lr=0.01,
                 retries: int = 3) -> None:
        from distributed import default_client

        self.inputs = list(inputs)
        self.params = list(params)
        if not all(isinstance(p, Variable) for p in self.params):
            raise TypeError("DataParallel: params must be graphc Variables")
        self.reduction = _batch_reduction(loss, self.inputs)
        self.client = client if client is not None else default_client()
        self.retries = retries
        grads = grad(loss, self.params)
        self._grad_fn = function(self.inputs + self.params, [loss] + list(grads))
        grad_inputs = [placeholder(f"grad {p.name or i}", p.shape, p.dtype) for i, p in enumerate(self.params)]
        if optimizer is None:
            from graphc import optim  # the default optimizer; graphc.optim is an upper-layer sibling

            optimizer = optim.sgd
        rule = optimizer
        self._apply = function(grad_inputs, [], updates=rule(grad_inputs, self.params, lr=lr))
        self._fn_future = None
        self.losses: list[float] = []

    def _send_function(self):
        if self._fn_future is None:
            self._fn_future = self.client.scatter(self._grad_fn, broadcast=True, hash=False)
        return self._fn_future

    def step_graph(self, *batch):
        """The Dask graph of one step's gradients (a ``dask.delayed`` value; nothing runs yet).

        Its result is ``[loss, *gradients]`` for ``batch``; ``step`` computes it on the cluster
        and applies the update. The current parameter values are sent to the workers now.
        """
        import dask

        batch = [b if isinstance(b, da.Array) else da.from_array(np.asarray(b)) for b in batch]
        rows = batch[0].shape[0]
        if any(b.shape[0] != rows for b in batch):
            raise ShapeError(f"DataParallel: the batch's arrays have different lengths {[b.shape[0] for b in batch]}")
        batch = [b.rechunk({0: batch[0].chunks[0]} | {a: -1 for a in range(1, b.ndim)}) for b in batch]
        blocks = [b.to_delayed().reshape(-1) for b in batch]
        fn = self._send_function()
        # hash=False: new keys every step, so a changed array never collides with released data
        params = self.client.scatter([np.array(p.value) for p in self.params], broadcast=True, hash=False)
        # each chunk's gradient, then a tree sum, all on the cluster
        parts = [dask.delayed(_chunk_gradients, pure=False)(fn, size / rows if self.reduction == "mean" else 1.0,
                                                            params, *(block[k] for block in blocks))
                 for k, size in enumerate(batch[0].chunks[0])]
        while len(parts) > 1:
            paired = [dask.delayed(_add_gradients, pure=False)(parts[i], parts[i + 1])
                      for i in range(0, len(parts) - 1, 2)]
            parts = paired + ([parts[-1]] if len(parts) % 2 else [])
        return parts[0]

    def step(self, *batch) -> float:
        """One training step on ``batch`` (dask or NumPy arrays aligned on axis 0); the loss before it."""
        if len(batch) != len(self.inputs):
            raise TypeError(f"DataParallel.step: expected {len(self.inputs)} arrays (one per input), "
                            f"got {len(batch)}")
        for attempt in range(self.retries + 1):
            try:
                loss, *grads = self.client.compute(self.step_graph(*batch)).result()
                break
            except Exception:  # noqa: BLE001 - a lost worker surfaces as several error types
                if attempt == self.retries:
                    raise
                self._fn_future = None  # the function may have been lost with a worker: send it again
        self._apply(*grads)
        self.losses.append(loss)
        return loss

    def fit(self, *arrays, epochs: int = 1, batch_size: int = 32, seed=None) -> list[float]:
        """Train for ``epochs`` over batches of ``arrays`` (aligned on axis 0); every step's loss.

        Each epoch visits the rows in the order of ``np.random.default_rng(seed).permutation``
        (one generator for the whole fit, so the same seed gives the same batches); the last
        batch of an epoch may be shorter.
        """
        if not arrays:
            raise TypeError("DataParallel.fit: give one array per input")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataParallel.fit: batch_size must be a positive int, got {batch_size!r}")
        rows = arrays[0].shape[0]
        if any(a.shape[0] != rows for a in arrays):
            raise ShapeError(f"DataParallel.fit: arrays have different lengths "
                             f"{[a.shape[0] for a in arrays]}")
        rng = np.random.default_rng(seed)
        losses = []
        for _ in range(epochs):
            order = rng.permutation(rows)
            for start in range(0, rows, batch_size):
                rows_taken = np.sort(order[start:start + batch_size])
                losses.append(self.step(*(a[rows_taken] for a in arrays)))
        return losses
