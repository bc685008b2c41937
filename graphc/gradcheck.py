"""check_grad: symbolic gradients against central finite differences in float64."""

from __future__ import annotations

import numpy as np

from graphc.autodiff import grad
from graphc.errors import GradientError
from graphc.function import function
from graphc.graph import clone
from graphc.leaves import Constant, Placeholder, VariableLeaf, constant, placeholder
from graphc.session import Session, resolve_feeds
from graphc.tensor import Tensor, toposort

_DEFAULT_TOLERANCES = {  # (rtol, atol) by the lowest float precision involved
    2: (5e-2, 5e-2),
    4: (2e-2, 2e-3),
    8: (1e-5, 1e-6),
}


def _float64(value) -> np.ndarray:
    array = np.asarray(value)
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def check_grad(cost: Tensor, wrt, feed_dict=None, eps: float | None = None, rtol: float | None = None,
               atol: float | None = None) -> float:
    """Compare ``gc.grad(cost, wrt)`` with central differences at the point ``feed_dict``.

    The finite differences are taken on a float64 copy of the graph. Returns the
    largest relative error; raises ``GradientError`` naming the tensor and the
    worst entry when an entry is over ``atol + rtol * |numeric|``.
    """
    items = list(wrt) if isinstance(wrt, (list, tuple)) else [wrt]
    symbolic = grad(cost, items)
    feeds = resolve_feeds(feed_dict, [cost, *items])
    # the point: fed values, variables' values (read before the run: a call computing random draws
    # advances its generator's state, and the differences must use the draws the gradient saw), and
    # the values of intermediate wrt tensors, computed in the same run as the gradient
    point: dict[Tensor, np.ndarray] = {t: np.asarray(v) for t, v in feeds.items()}
    for node in toposort([cost, *items]):
        if isinstance(node.primitive, VariableLeaf) and node not in feeds:
            point[node] = node.value
    intermediate = [t for t in items if t not in feeds and not isinstance(t.primitive, (Placeholder,
                                                                                       VariableLeaf))]
    with Session(optimize=False) as session:
        analytic, point_values = session.run((symbolic, intermediate), feeds)
    point.update(zip(intermediate, point_values))
    replace, evaluate, leaves = _float64_copy(cost, items, point)
    base = [_float64(point[t]) for t in leaves]

    precision = min([t.dtype.itemsize for t in items] + [cost.dtype.itemsize])
    default_rtol, default_atol = _DEFAULT_TOLERANCES.get(precision, _DEFAULT_TOLERANCES[8])
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    eps = 1e-6 if eps is None else eps

    worst = 0.0
    for tensor, symbolic_value in zip(items, analytic):
        symbolic_value = np.asarray(symbolic_value, dtype=np.float64)
        numeric = np.zeros(symbolic_value.shape)  # stays 0 when the cost does not depend on it
        if tensor in replace:
            numeric = _central_differences(evaluate, base, leaves.index(tensor), eps)
        worst = max(worst, _compare(tensor, symbolic_value, numeric, rtol, atol))
    return worst


def _float64_copy(cost: Tensor, items: list[Tensor], point: dict[Tensor, np.ndarray]):
    """(replacements, a compiled float64 copy of the cost, its leaves in argument order).

    Every leaf (and every wrt) is replaced by a float64 placeholder, float constants by float64 ones;
    variables' values join ``point``.
    """
    replace: dict[Tensor, Tensor] = {}
    for node in toposort([cost], stop_at=items):
        if node in items or isinstance(node.primitive, (Placeholder, VariableLeaf)):
            dtype = np.float64 if node.dtype.kind == "f" else node.dtype
            replace[node] = placeholder(node.name or "input", node.shape, dtype)
            if isinstance(node.primitive, VariableLeaf):
                point.setdefault(node, node.value)  # (a variable behind an intermediate wrt)
        elif isinstance(node.primitive, Constant) and node.dtype.kind == "f":
            replace[node] = constant(node.primitive.value, dtype=np.float64)
    cost64 = clone([cost], replace)[0]
    leaves = [t for t in replace if isinstance(replace[t].primitive, Placeholder)]
    missing = [t for t in leaves if t not in point]
    if missing:
        raise GradientError(f"check_grad: no value for {missing[0].describe()}; put it in feed_dict")
    return replace, function([replace[t] for t in leaves], cost64, optimize=False), leaves


def _central_differences(evaluate, base: list[np.ndarray], position: int, eps: float) -> np.ndarray:
    """d cost / d (argument ``position``) of ``evaluate`` at ``base``, entry by entry."""
    values = list(base)
    center = np.array(base[position], dtype=np.float64)
    numeric = np.zeros(center.shape)
    for index in np.ndindex(center.shape):
        step = eps * max(1.0, abs(float(center[index])))
        plus, minus = center.copy(), center.copy()
        plus[index] += step
        minus[index] -= step
        values[position] = plus
        high = float(evaluate(*values))
        values[position] = minus
        low = float(evaluate(*values))
        numeric[index] = (high - low) / (2 * step)
    return numeric


def _compare(tensor: Tensor, symbolic_value: np.ndarray, numeric: np.ndarray, rtol: float, atol: float) -> float:
    """The largest relative error of ``symbolic_value`` against ``numeric``; raise if over tolerance."""
    difference = np.abs(symbolic_value - numeric)
    same = (symbolic_value == numeric) | (np.isnan(symbolic_value) & np.isnan(numeric))
    difference = np.where(same, 0.0, difference)
    scale = np.maximum(np.maximum(np.abs(symbolic_value), np.abs(numeric)), atol)
    relative = np.where(same, 0.0, difference / scale)
    relative = np.where(np.isnan(relative), np.inf, relative)
    over = ~same & ~(difference <= atol + rtol * np.abs(numeric))
    if np.any(over):
        entry = np.unravel_index(int(np.argmax(np.where(over, relative, -1.0))), numeric.shape)
        entry = tuple(int(i) for i in entry)
        raise GradientError(
            f"check_grad: gradient with respect to {tensor.describe()} is wrong at entry {entry}: "
            f"symbolic {symbolic_value[entry]!r}, numeric {numeric[entry]!r} "
            f"(relative error {relative[entry]:.3g}; rtol={rtol}, atol={atol})")
    return float(np.max(relative)) if relative.size else 0.0
