"""Graph-to-graph passes and the default optimization pipeline.

One module per pass family: ``prune``, ``stabilize``, ``simplify``, ``fold``,
``cse``, ``fuse``; ``pipeline`` holds the explicit default pipeline and
``optimize``; ``core`` the report and the local-rewrite engine.

Importing this package provides ``gc.grad``'s forward rewrite (the stabilizer) through the
hook ``graphc.autodiff.FORWARD_REWRITE``: autodiff sits a layer below the passes.
"""

from graphc.autodiff import FORWARD_REWRITE
from graphc.passes.core import Report
from graphc.passes.pipeline import CANONICAL_PASSES, DEFAULT_PIPELINE, FUSING_PIPELINE, optimize, optimize_tensors
from graphc.passes.stabilize import stabilize_for_grad

FORWARD_REWRITE.provide(stabilize_for_grad)

__all__ = ["CANONICAL_PASSES", "DEFAULT_PIPELINE", "FUSING_PIPELINE", "Report", "optimize", "optimize_tensors"]
