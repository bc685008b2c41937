"""A character-level recurrent network as one `gc.scan` loop, trained with backpropagation through time.

The recurrence is written once, as the body of a loop; the number of steps is the length of the
text windows fed at run time, so one compiled function trains on windows of any length:

    h_t = tanh(x_t Wxh + h_{t-1} Whh + bh)        x_t: one-hot character, shape (batch, V)
    y_t = h_t Why + by                            scores for the next character

The loss is the mean cross-entropy over all steps. ``gc.grad`` through the scan *is*
backpropagation through time: the gradient is another scan that walks the steps backwards,
summing one contribution to Whh per step (docs/scan.md). ``gc.check_grad`` confirms it against
finite differences on short windows, then the network learns to continue a small text and
samples from it greedily. (Until graphc had loops, this example unrolled the recurrence in a
Python loop: the graph, its compile time and its gradient grew with the window length.)

Run:  python examples/char_rnn.py
"""

from __future__ import annotations

import argparse

import numpy as np

import graphc as gc

TEXT = ("the cat sat on the mat. the dog sat on the log. the cat saw the dog. "
        "the dog saw the cat on the mat. ")


def build(vocab_size: int, hidden: int, rng: np.random.Generator):
    """The model for windows of any length: chars has shape (batch, steps + 1), steps known at run time."""
    chars = gc.placeholder("chars", shape=(None, None), dtype="int64")   # a batch of text windows
    Wxh = gc.variable(rng.normal(0, 0.3, (vocab_size, hidden)), name="Wxh")
    Whh = gc.variable(np.eye(hidden) * 0.5 + rng.normal(0, 0.05, (hidden, hidden)), name="Whh")
    bh = gc.variable(np.zeros(hidden), name="bh")
    Why = gc.variable(rng.normal(0, 0.3, (hidden, vocab_size)), name="Why")
    by = gc.variable(np.zeros(vocab_size), name="by")
    params = [Wxh, Whh, bh, Why, by]

    inputs = gc.transpose(chars[:, :-1])                         # (steps, batch): the loop walks axis 0
    targets = gc.transpose(chars[:, 1:])
    h0 = gc.zeros_like(gc.one_hot(chars[:, 0], hidden))          # zeros of shape (batch, hidden)

    def step(x_t, y_t, h, Wxh, Whh, bh, Why, by):                # slices, previous state, non-sequences
        h = gc.tanh(gc.one_hot(x_t, vocab_size) @ Wxh + h @ Whh + bh)
        scores = h @ Why + by
        return h, gc.softmax_cross_entropy(scores, y_t), scores

    _, losses, scores = gc.scan(step, sequences=[inputs, targets], outputs_info=[h0, None, None],
                                non_sequences=params, name="rnn")
    loss = gc.mean(losses)
    # only the last step's scores are read: the optimizer keeps only them (scan.last_state), not a trace
    return {"chars": chars, "params": params, "loss": loss, "last_scores": scores[-1]}


def main(epochs: int = 120, hidden: int = 48, steps: int = 16, lr: float = 0.5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    alphabet = sorted(set(TEXT))
    index = {c: k for k, c in enumerate(alphabet)}
    encoded = np.array([index[c] for c in TEXT * 3], dtype=np.int64)
    V = len(alphabet)
    print(f"text of {len(TEXT)} characters, alphabet of {V}; windows of {steps} steps, {hidden} hidden units")

    # 1. backprop through time is right: compare with finite differences on short windows
    small = build(V, 6, np.random.default_rng(seed))
    sample = np.stack([encoded[k:k + 5] for k in range(0, 12, 4)])
    error = gc.check_grad(small["loss"], small["params"], {small["chars"]: sample})
    print(f"check_grad through the 4-step scan (all five weight tensors): largest relative error {error:.1e}")

    # 2. train on every window of the text
    model = build(V, hidden, rng)
    params = model["params"]
    grads = gc.grad(model["loss"], params)
    clipped = [gc.clip(g, -5.0, 5.0) for g in grads]             # the usual guard against exploding gradients
    step = gc.function([model["chars"]], model["loss"],
                       updates={p: p - lr * g for p, g in zip(params, clipped)})
    starts = np.arange(len(TEXT))
    windows = np.stack([encoded[s:s + steps + 1] for s in starts])
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(windows))
        for k in range(0, len(order), 32):
            losses.append(float(step(windows[order[k:k + 32]])))
    print(f"loss (nats per character): {losses[0]:.3f} at the start, {np.mean(losses[-10:]):.3f} at the end "
          f"(uniform guessing: {np.log(V):.3f})")
    # the same compiled loss on windows twice as long: the loop's length is only known at run time
    evaluate = gc.function([model["chars"]], model["loss"])
    longer = np.stack([encoded[s:s + 2 * steps + 1] for s in starts])
    long_loss = float(evaluate(longer))
    print(f"loss on windows of {2 * steps} steps (same graph, fed at run time): {long_loss:.3f}")

    # 3. greedy sampling: feed the last `steps` characters, take the most likely next one
    predict = gc.function([model["chars"]], gc.softmax(model["last_scores"]))
    text = "the dog sa"
    while len(text) < 70:
        context = [index[c] for c in text[-steps:].rjust(steps)] + [0]
        text += alphabet[int(np.argmax(predict(np.array([context], dtype=np.int64))[0]))]
    print(f"greedy continuation of 'the dog sa': {text!r}")

    final = float(np.mean(losses[-10:]))
    assert error < 1e-4
    assert final < 0.5 * losses[0], "training should at least halve the loss"
    return {"check_grad_error": error, "first_loss": losses[0], "final_loss": final, "sample": text,
            "long_window_loss": long_loss}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=120)
    args = parser.parse_args()
    main(epochs=args.epochs)
