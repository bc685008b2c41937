"""Build a small model graph, differentiate it, run one SGD step and print what it computed.

Run:  python examples/quickstart.py
"""

import numpy as np

import graphc as gc


def main() -> dict:
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", shape=(None, 4))          # a batch of 4-feature inputs
    labels = gc.placeholder("labels", shape=(None,), dtype="int64")
    w = gc.variable(rng.normal(scale=0.5, size=(4, 3)), name="W")
    b = gc.variable(np.zeros(3), name="b")

    logits = gc.matmul(x, w) + b
    loss = gc.mean(gc.softmax_cross_entropy(logits, labels))
    grad_w, grad_b = gc.grad(loss, [w, b])

    step = gc.function([x, labels], [loss, grad_w], updates={w: w - 0.5 * grad_w, b: b - 0.5 * grad_b})
    batch = rng.normal(size=(8, 4))
    targets = (batch[:, 0] > 0).astype(np.int64) + (batch[:, 1] > 0).astype(np.int64)
    losses = []
    for _ in range(50):
        value, _ = step(batch, targets)
        losses.append(float(value))
    print(f"loss before training: {losses[0]:.4f}")
    print(f"loss after 50 steps : {losses[-1]:.4f}")
    print("W after training:\n", np.round(w.value, 3))
    return {"first_loss": losses[0], "last_loss": losses[-1]}


if __name__ == "__main__":
    result = main()
    assert result["last_loss"] < result["first_loss"], "training should lower the loss"
