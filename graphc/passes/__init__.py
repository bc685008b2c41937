"""Graph-to-graph passes and the default optimization pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from graphc.tensor import Tensor


def optimize_tensors(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Run the default pipeline over the graph computing ``tensors``."""
    return list(tensors)
