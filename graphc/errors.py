"""The error classes of the public contract.

Every error graphc raises on purpose derives from :class:`GraphcError`, and the
ones that correspond to a built-in category also derive from it, so callers can
catch either ``gc.ShapeError`` or the plain ``ValueError``.
"""

from __future__ import annotations


class GraphcError(Exception):
    """Base class of every error raised by graphc."""


class ShapeError(GraphcError, ValueError):
    """Shapes that cannot broadcast, contract or be reshaped."""


class FeedError(GraphcError, ValueError):
    """A bad feed: missing, unknown, wrongly shaped or unsafely cast."""


class DTypeError(GraphcError, TypeError):
    """A dtype an op cannot take (also a ``TypeError``); the message names the op and the dtypes."""


class GradientError(GraphcError):
    """A gradient that cannot be built or that failed a numerical check."""


class ExecutionError(GraphcError):
    """An exception raised inside an op while a graph ran."""


class LoadError(GraphcError):
    """A saved file that is malformed, tampered with or of an unknown version."""
