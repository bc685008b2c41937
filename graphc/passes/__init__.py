"""Graph-to-graph passes and the default optimization pipeline.

One module per pass family: ``prune``, ``stabilize``, ``simplify``, ``fold``,
``cse``, ``fuse``; ``pipeline`` holds the explicit default pipeline and
``optimize``; ``core`` the report and the local-rewrite engine.
"""

from graphc.passes.core import Report
from graphc.passes.pipeline import CANONICAL_PASSES, DEFAULT_PIPELINE, FUSING_PIPELINE, optimize, optimize_tensors

__all__ = ["CANONICAL_PASSES", "DEFAULT_PIPELINE", "FUSING_PIPELINE", "Report", "optimize", "optimize_tensors"]
