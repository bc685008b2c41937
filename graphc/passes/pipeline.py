"""The default optimization pipeline and ``gc.optimize``.

The pipeline is an explicit tuple of named passes. ``canonicalize`` is one pass of the rewrite
engine over the graph: at each node, once its inputs are final, the rule families of
``CANONICAL_PASSES`` (stabilize, simplify, fold, in that order) fire until none applies and the
node is merged with its structural twin (cse), so one pass reaches the fixed point and the cost
is linear in the graph. Only a graph with loops runs the loop pass (``scan``) after it, and the
local pass again when that changed something. The pipeline is idempotent: optimizing an
optimized graph returns it unchanged. ``FUSING_PIPELINE`` adds element-wise fusion after it
(opt-in; see its comment). Everything an optimization shares (its report, the rules' cache) is
one :class:`~graphc.passes.core.RewriteContext` passed to every pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from graphc.passes.core import Pass, Report, RewriteContext, op_counts, rewrite, run_pass
from graphc.passes.cse import cse
from graphc.passes.fold import RULES as FOLD_RULES
from graphc.passes.fold import fold_constants
from graphc.passes.fuse import fuse
from graphc.passes.prune import prune
from graphc.passes.scan import optimize_scans
from graphc.passes.simplify import RULES as SIMPLIFY_RULES
from graphc.passes.simplify import simplify
from graphc.passes.stabilize import RULES as STABILIZE_RULES
from graphc.passes.stabilize import stabilize
from graphc.structure import flatten, unflatten
from graphc.tensor import Tensor, collector_paused


def optimize_loops(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """The ``scan`` pass: every loop's body optimized with ``DEFAULT_PIPELINE``, and the loop around it."""
    context = context if context is not None else RewriteContext()
    return optimize_scans(outputs, lambda body_outputs: run_pipeline(body_outputs, DEFAULT_PIPELINE, context),
                          context.count)


#: the canonicalizing passes, in the order their rules are tried at each node; each also runs alone
CANONICAL_PASSES: tuple[tuple[str, Pass], ...] = (
    ("stabilize", stabilize),
    ("simplify", simplify),
    ("fold", fold_constants),
    ("cse", cse),
    ("scan", optimize_loops),  # loops: bodies, hoisting, unused outputs/inputs
)

#: the rule families ``canonicalize`` applies together, in order (cse is the engine's merging)
CANONICAL_RULES = (("stabilize", STABILIZE_RULES), ("simplify", SIMPLIFY_RULES), ("fold", FOLD_RULES))

#: a bound on loop-pass rounds (a graph without loops takes one local pass and no loop pass)
MAX_ROUNDS = 8


def canonicalize(outputs: list[Tensor], context: RewriteContext | None = None) -> list[Tensor]:
    """The canonical form: one local pass to its fixed point; with loops, the loop pass and again."""
    context = context if context is not None else RewriteContext()
    report = context.report
    for round_number in range(1, MAX_ROUNDS + 1):
        context.loops = False
        outputs = rewrite(outputs, CANONICAL_RULES, context=context, merge=True, timed=True)
        if report is not None:
            report.rounds = max(report.rounds, round_number)
        if not context.loops:
            break
        looped = run_pass("scan", optimize_loops, outputs, context)
        if all(a is b for a, b in zip(looped, outputs)):
            break
        outputs = looped
    return outputs


#: the default pipeline, in order
DEFAULT_PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("prune", prune),
    ("canonicalize", canonicalize),
)

#: the default pipeline plus element-wise fusion (opt-in: ``gc.optimize(y, pipeline=FUSING_PIPELINE)``).
#: Not the default because it does not pay with this executor: the plan compiler already writes
#: element-wise steps in place into dying buffers, and expands fused nodes back into steps
#: (numbers in docs/optimizer.md, from bench/fusion_speed.py).
FUSING_PIPELINE: tuple[tuple[str, Pass], ...] = DEFAULT_PIPELINE + (
    ("fuse", fuse),
    # fused nodes have new keys, which can flip the canonical order of commutative consumers
    ("cse", cse),
)


def run_pipeline(outputs: Sequence[Tensor], pipeline: Sequence[tuple[str, Pass]] = DEFAULT_PIPELINE,
                 context: RewriteContext | None = None) -> list[Tensor]:
    """Run the passes of ``pipeline`` in order, all with the one ``context``."""
    context = context if context is not None else RewriteContext()
    outputs = list(outputs)
    with collector_paused():  # (every node the passes make stays alive: see collector_paused)
        for name, function in pipeline:
            if function is canonicalize:  # it times its rule families itself
                outputs = canonicalize(outputs, context)
            else:
                outputs = run_pass(name, function, outputs, context)
    return outputs


def optimize_tensors(tensors: Sequence[Tensor], pipeline: Sequence[tuple[str, Pass]] = DEFAULT_PIPELINE
                     ) -> list[Tensor]:
    """Run the pipeline over the graph computing ``tensors``; same positions back."""
    return run_pipeline(tensors, pipeline)


def optimize(outputs, report: bool = False, pipeline: Sequence[tuple[str, Pass]] | None = None):
    """The optimized graph's outputs, in the structure of ``outputs``.

    With ``report=True``, ``(outputs, report)``: ``str(report)`` is a table of
    node counts (total and per op) before and after, how many times each rule
    fired, and the time each pass (in ``canonicalize``: each rule family) took.
    ``pipeline`` is a sequence of ``(name, pass)`` pairs (None:
    ``graphc.passes.DEFAULT_PIPELINE``; ``FUSING_PIPELINE`` adds element-wise
    fusion); a pass takes the outputs, and may take the optimization's
    :class:`~graphc.passes.core.RewriteContext` as a second argument. Rewrites
    are exact under IEEE rules; ``outputs`` is a Tensor or a nested
    list/tuple/dict of Tensors (else ``TypeError``).
    """
    if pipeline is None:
        pipeline = DEFAULT_PIPELINE
    if isinstance(pipeline, (str, bytes)) or not isinstance(pipeline, (list, tuple)) or not all(
            isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str) and callable(step[1])
            for step in pipeline):
        raise TypeError("optimize: pipeline must be a sequence of (name, pass) pairs, such as "
                        "graphc.passes.DEFAULT_PIPELINE or FUSING_PIPELINE")
    flat, spec = flatten(outputs)
    if not report:  # no report: nothing counted, no extra traversals
        return unflatten(spec, run_pipeline(flat, pipeline))
    result = Report()
    start = time.perf_counter()
    result.before = op_counts(flat)
    optimized = run_pipeline(flat, pipeline, RewriteContext(report=result))
    result.after = op_counts(optimized)
    result.seconds = time.perf_counter() - start
    return unflatten(spec, optimized), result
