"""Hand-written NumPy reference for the MLP benchmarks.

One SGD step of an MLP with ReLU hidden layers, mean softmax cross-entropy
over integer labels and L2 weight decay ``wd / 2 * sum(W ** 2)`` on the weights
(not the biases). Written the way a strong NumPy engineer would write it:

* no wasted temporaries (``out=`` and in-place operators),
* the ReLU mask taken from the activation (so pre-activations are not kept),
* the softmax of the forward pass reused by the backward pass,
* each layer's update applied as soon as its gradients are complete, while the
  arrays are hot in cache, and the gradient buffers reused for the update.

``functional=True`` leaves the parameters untouched and returns new arrays
(the semantics graphc's atomic updates give); the default updates in place.
"""

from __future__ import annotations

import numpy as np


def init_params(sizes: list[int], dtype, seed: int = 0) -> list[np.ndarray]:
    """[W1, b1, W2, b2, ...] with He-scaled normal weights and small biases."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype))
        params.append((rng.standard_normal(fan_out) * 0.01).astype(dtype))
    return params


def sgd_step(params: list[np.ndarray], x: np.ndarray, labels: np.ndarray, lr: float, wd: float,
             functional: bool = False) -> tuple[float, list[np.ndarray]]:
    """One SGD step; returns (loss before the step, parameters after it)."""
    n_layers = len(params) // 2
    dtype = params[0].dtype.type
    lr_, wd_ = dtype(lr), dtype(wd)
    # forward: keep each layer's input (ReLU outputs)
    acts = [x]
    h = x
    for k in range(n_layers):
        w, b = params[2 * k], params[2 * k + 1]
        z = h @ w
        z += b
        if k < n_layers - 1:
            np.maximum(z, 0, out=z)
        acts.append(z)
        h = z
    logits = acts.pop()
    batch = logits.shape[0]
    rows = np.arange(batch)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    totals = probs.sum(axis=1, keepdims=True)
    loss = float(np.log(totals).mean() - logits[rows, labels].mean())
    loss += 0.5 * float(wd) * sum(float(np.vdot(params[2 * k], params[2 * k])) for k in range(n_layers))
    # backward: d = (softmax - onehot) / batch, in the probs buffer
    probs /= totals
    probs[rows, labels] -= 1
    probs *= dtype(1.0 / batch)
    delta = probs
    new_params = list(params)
    for k in range(n_layers - 1, -1, -1):
        w, b = params[2 * k], params[2 * k + 1]
        h = acts[k]
        grad_w = h.T @ delta
        grad_b = delta.sum(axis=0)
        if k > 0:
            delta_prev = delta @ w.T          # uses the old w: before the update
            delta_prev *= acts[k] > 0         # ReLU mask from the activation
        # update this layer now, while its arrays are hot; reuse the gradient buffers
        grad_w += wd_ * w
        grad_w *= lr_
        grad_b *= lr_
        if functional:
            np.subtract(w, grad_w, out=grad_w)
            np.subtract(b, grad_b, out=grad_b)
            new_params[2 * k], new_params[2 * k + 1] = grad_w, grad_b
        else:
            w -= grad_w
            b -= grad_b
        if k > 0:
            delta = delta_prev
    return loss, new_params
