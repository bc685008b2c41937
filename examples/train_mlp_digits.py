"""Train a two-layer perceptron on scikit-learn's handwritten digits with graphc.

The digits (1,797 images of 8x8 pixels, ten classes) ship inside scikit-learn,
so nothing is downloaded. The script

1. declares the model once as a graph (placeholders for a batch, variables for
   the weights),
2. appends the gradient of the loss with ``gc.grad``,
3. compiles ONE training step with ``gc.function(..., updates=...)``: forward
   pass, backward pass and SGD update in a single call,
4. runs minibatch SGD with a tqdm progress bar showing the running loss,
5. reports the test accuracy, saves the compiled step with ``gc.save``, plots the
   loss curve (matplotlib) and draws the optimized graph (when Graphviz's ``dot``
   is installed).

Run:  python examples/train_mlp_digits.py            (30 epochs, a few seconds)
      python examples/train_mlp_digits.py --fast     (a quick run for CI)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import graphc as gc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import draw, out_dir  # noqa: E402


def load_data(seed: int):
    """Pixels scaled to [0, 1] and integer labels, split 75 % / 25 % (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.data.astype(np.float64) / 16.0          # (1797, 64), pixels were 0..16
    labels = digits.target.astype(np.int64)                 # (1797,)
    return train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=seed)


def build_model(n_in: int, n_hidden: int, n_classes: int, weight_decay: float, seed: int):
    """The graph: a batch goes in, logits and the mean loss come out."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", shape=(None, n_in))                        # a batch of images
    y = gc.placeholder("y", shape=(None,), dtype="int64")              # their labels
    lr = gc.placeholder("lr")                                          # learning rate, fed each step
    w1 = gc.variable(rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_hidden)), name="W1")
    b1 = gc.variable(np.zeros(n_hidden), name="b1")
    w2 = gc.variable(rng.normal(0.0, np.sqrt(1.0 / n_hidden), (n_hidden, n_classes)), name="W2")
    b2 = gc.variable(np.zeros(n_classes), name="b2")

    hidden = gc.relu(x @ w1 + b1)
    logits = hidden @ w2 + b2
    data_loss = gc.mean(gc.softmax_cross_entropy(logits, y))
    penalty = weight_decay * (gc.sum(gc.square(w1)) + gc.sum(gc.square(w2)))
    loss = data_loss + penalty

    params = [w1, b1, w2, b2]
    grads = gc.grad(loss, params)                           # symbol to symbol: new nodes in the same graph
    updates = {p: p - lr * g for p, g in zip(params, grads)}
    return {"x": x, "y": y, "lr": lr, "logits": logits, "loss": data_loss, "updates": updates,
            "params": params}


def main(epochs: int = 30, batch_size: int = 32, hidden: int = 128, lr: float = 0.1,
         weight_decay: float = 1e-4, seed: int = 0, out: str | None = None, progress: bool = True,
         picture: bool = True) -> dict:
    """Train, evaluate, save and draw; returns the numbers (accuracy, losses, timings, written files)."""
    from tqdm import tqdm

    started = time.perf_counter()
    x_train, x_test, y_train, y_test = load_data(seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8 pixels, 10 classes")

    m = build_model(x_train.shape[1], hidden, 10, weight_decay, seed)
    compile_started = time.perf_counter()
    # ONE compiled function: forward, backward and the SGD update of every weight in a single call.
    step = gc.function([m["x"], m["y"], m["lr"]], m["loss"], updates=m["updates"])
    predict = gc.function([m["x"]], m["logits"])
    compile_seconds = time.perf_counter() - compile_started

    rng = np.random.default_rng(seed)
    n_batches = int(np.ceil(len(x_train) / batch_size))
    running, losses = None, []
    train_started = time.perf_counter()
    with tqdm(total=epochs * n_batches, desc="training", unit="step", disable=not progress,
              mininterval=0.2, file=sys.stdout) as bar:
        for epoch in range(epochs):
            rate = lr * (0.5 if epoch >= 0.75 * epochs else 1.0)   # halve the rate for the last quarter
            order = rng.permutation(len(x_train))
            for k in range(n_batches):
                batch = order[k * batch_size:(k + 1) * batch_size]
                loss = float(step(x_train[batch], y_train[batch], rate))
                running = loss if running is None else 0.95 * running + 0.05 * loss
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}", refresh=False)
                bar.update()
            losses.append(running)
    train_seconds = time.perf_counter() - train_started

    test_accuracy = float(np.mean(np.argmax(predict(x_test), axis=1) == y_test))
    train_accuracy = float(np.mean(np.argmax(predict(x_train), axis=1) == y_train))
    print(f"train accuracy {train_accuracy:.2%}   test accuracy {test_accuracy:.2%}")
    print(f"compile {compile_seconds * 1e3:.0f} ms, training {train_seconds:.2f} s "
          f"({epochs * n_batches / train_seconds:.0f} steps/s)")

    directory = out_dir(out)
    saved = os.path.join(directory, "digits_step.gcf")
    gc.save(step, saved)
    print(f"compiled training step saved with gc.save: {saved} ({os.path.getsize(saved) / 1024:.0f} KiB)")
    reloaded = gc.load(saved)   # a safe load: no code from the file runs, every node is checked
    batch_x, batch_y = x_test[:64], y_test[:64]
    expected = gc.Session().run(m["loss"], {m["x"]: batch_x, m["y"]: batch_y})
    again = reloaded(batch_x, batch_y, 0.0)  # the reloaded step carries copies of the trained weights
    assert np.isclose(again, expected), (again, expected)
    print(f"  gc.load gives it back: loss on a test batch {float(again):.4f}, as before saving")

    drawn = draw(step, os.path.join(directory, "digits_step.svg")) if picture else None
    curve = plot_losses(losses, os.path.join(directory, "digits_loss.png")) if picture else None
    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy, "first_loss": losses[0],
            "final_loss": losses[-1], "epochs": epochs, "compile_seconds": compile_seconds,
            "train_seconds": train_seconds, "seconds": time.perf_counter() - started, "saved": saved,
            "picture": drawn, "loss_curve": curve}


def plot_losses(losses: list, path: str) -> str:
    """The running training loss after each epoch, drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3.2), dpi=100)
    axes.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3)
    axes.set(xlabel="epoch", ylabel="running loss (cross-entropy)", yscale="log",
             title="MLP on the digits, trained with graphc")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    print(f"  loss curve: {path}")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set (default 30)")
    parser.add_argument("--fast", action="store_true", help="a short run for CI (15 epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128, help="hidden units")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="directory for the saved step and the picture "
                                                    "(default examples/output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    result = main(epochs=15 if args.fast else args.epochs, batch_size=args.batch_size, hidden=args.hidden,
                  lr=args.lr, seed=args.seed, out=args.out, progress=not args.no_progress)
    print(f"done in {result['seconds']:.1f} s")
    assert result["test_accuracy"] >= 0.95, f"test accuracy {result['test_accuracy']:.2%} is below 95 %"
