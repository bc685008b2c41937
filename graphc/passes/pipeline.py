"""The default optimization pipeline and ``gc.optimize``.

The pipeline is an explicit tuple of named passes. ``canonicalize`` runs the
local passes (stabilize, simplify, fold, cse) in a loop until a whole round
changes nothing (every pass returns the very same tensors), so the pipeline
is idempotent: optimizing an optimized graph returns it unchanged.
``FUSING_PIPELINE`` adds element-wise fusion after it (opt-in; see its comment).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from graphc.passes.core import Pass, Report, current_report, op_counts, recording, run_pass
from graphc.passes.cse import cse
from graphc.passes.fold import fold_constants
from graphc.passes.fuse import fuse
from graphc.passes.prune import prune
from graphc.passes.simplify import simplify
from graphc.passes.stabilize import stabilize
from graphc.structure import flatten, unflatten
from graphc.tensor import Tensor

#: the local passes ``canonicalize`` repeats to a fixed point, in order
CANONICAL_PASSES: tuple[tuple[str, Pass], ...] = (
    ("stabilize", stabilize),
    ("simplify", simplify),
    ("fold", fold_constants),
    ("cse", cse),
)

#: a bound on canonicalization rounds (each round is linear in the graph size; 2-3 are typical)
MAX_ROUNDS = 8


def canonicalize(outputs: list[Tensor]) -> list[Tensor]:
    """Run ``CANONICAL_PASSES`` in order, repeatedly, until a round changes nothing."""
    report = current_report()
    for round_number in range(1, MAX_ROUNDS + 1):
        before = outputs
        for name, function in CANONICAL_PASSES:
            outputs = run_pass(name, function, outputs)
        if report is not None:
            report.rounds = max(report.rounds, round_number)
        if all(a is b for a, b in zip(before, outputs)):
            break
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


def run_pipeline(outputs: Sequence[Tensor], pipeline: Sequence[tuple[str, Pass]] = DEFAULT_PIPELINE
                 ) -> list[Tensor]:
    outputs = list(outputs)
    for name, function in pipeline:
        if name == "canonicalize":  # its inner passes are timed one by one
            outputs = function(outputs)
        else:
            outputs = run_pass(name, function, outputs)
    return outputs


def optimize_tensors(tensors: Sequence[Tensor], pipeline: Sequence[tuple[str, Pass]] = DEFAULT_PIPELINE
                     ) -> list[Tensor]:
    """Run the pipeline over the graph computing ``tensors``; same positions back."""
    return run_pipeline(tensors, pipeline)


def optimize(outputs, report: bool = False, pipeline: Sequence[tuple[str, Pass]] | None = None):
    """The optimized graph's outputs, in the structure of ``outputs``.

    With ``report=True``, ``(outputs, report)``: ``str(report)`` is a table of
    node counts (total and per op) before and after, how many times each rule
    fired, and the time each pass took. ``pipeline`` is a sequence of
    ``(name, pass)`` pairs (None: ``graphc.passes.DEFAULT_PIPELINE``;
    ``FUSING_PIPELINE`` adds element-wise fusion). Rewrites are exact under IEEE
    rules; ``outputs`` is a Tensor or a nested list/tuple/dict of Tensors (else
    ``TypeError``).
    """
    if pipeline is None:
        pipeline = DEFAULT_PIPELINE
    if isinstance(pipeline, (str, bytes)) or not isinstance(pipeline, (list, tuple)) or not all(
            isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str) and callable(step[1])
            for step in pipeline):
        raise TypeError("optimize: pipeline must be a sequence of (name, pass) pairs, such as "
                        "graphc.passes.DEFAULT_PIPELINE or FUSING_PIPELINE")
    flat, spec = flatten(outputs)
    result = Report()
    start = time.perf_counter()
    with recording(result):
        result.before = op_counts(flat)
        optimized = run_pipeline(flat, pipeline)
        result.after = op_counts(optimized)
    result.seconds = time.perf_counter() - start
    structured = unflatten(spec, optimized)
    return (structured, result) if report else structured
