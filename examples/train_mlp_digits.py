"""Train a two-layer perceptron on scikit-learn's handwritten digits with graphc.

The digits (1,797 images of 8x8 pixels, ten classes) ship inside scikit-learn,
so nothing is downloaded. The script

1. declares the model once as a graph (placeholders for a batch, variables for
   the weights, initialized with ``gc.init.he_uniform`` / ``glorot_uniform``),
   with dropout on the hidden layer in training (``gc.dropout``, a fresh mask
   from a ``gc.random.Generator`` at every step) and switched off for prediction,
2. builds ONE training step with ``gc.optim.adam``: forward pass, ``gc.grad``,
   and the Adam update of every weight and of Adam's own moments, all in a
   single compiled call (``gc.function(..., updates=...)``); the learning rate
   is a variable, lowered for the last epochs without recompiling,
3. trains on ``gc.data.minibatches`` with a tqdm progress bar showing the
   running loss,
4. reports the test accuracy, saves the model (``{"train": step, "predict":
   predict}``, sharing their weights) with ``gc.save``, loads it back and shows
   that the loaded ``predict`` classifies the test set exactly as before, and
   that the loaded ``train`` step moves the loaded ``predict``,
5. plots the loss curve (matplotlib) and draws the optimized graph (when
   Graphviz's ``dot`` is installed).

Run:  python examples/train_mlp_digits.py            (30 epochs, a few seconds)
      python examples/train_mlp_digits.py --fast     (a quick run for CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

if __name__ == "__main__":
    # The matrices here are small (a batch of 32 by 512 hidden units): BLAS threads cost more than they
    # save, and on a busy machine spinning threads make each step up to 20 times slower. Set before NumPy
    # loads OpenBLAS; a value you set in the environment wins.
    for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

import graphc as gc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import draw, out_dir  # noqa: E402


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (pixels 0..16, labels), from the data file scikit-learn ships.

    The file is read with NumPy: importing scikit-learn itself (``sklearn.datasets.load_digits``,
    the fallback) costs seconds, more than training here.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
        if os.path.exists(path):
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return digits.data, digits.target


def load_data(seed: int):
    """Pixels scaled to [0, 1] and integer labels, split 75 % / 25 %, stratified (each class in proportion)."""
    pixels, labels = load_digits()
    images = pixels.astype(np.float64) / 16.0               # (1797, 64), pixels were 0..16
    labels = labels.astype(np.int64)                        # (1797,)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test[members[:round(0.25 * len(members))]] = True
    return images[~test], images[test], labels[~test], labels[test]


def build_model(n_in: int, n_hidden: int, n_classes: int, weight_decay: float, lr: float, seed: int,
                pixel_mean: np.ndarray, pixel_scale: np.ndarray, dropout: float = 0.0):
    """The graph: a batch goes in, logits and the mean loss come out; Adam updates the weights.

    Training sees the hidden layer through dropout (a fresh mask at every step, from a
    generator whose state the step advances by itself); prediction has dropout switched off.
    """
    x = gc.placeholder("x", shape=(None, n_in))                        # a batch of images
    # standardized inside the graph (constants from the training set), so the saved predict takes raw pixels
    standardized = (x - gc.constant(pixel_mean)) / gc.constant(pixel_scale)
    y = gc.placeholder("y", shape=(None,), dtype="int64")              # their labels
    w1 = gc.variable(gc.init.he_uniform((n_in, n_hidden), seed=seed), name="W1")      # (fan_in, fan_out)
    b1 = gc.variable(gc.init.zeros(n_hidden), name="b1")
    w2 = gc.variable(gc.init.glorot_uniform((n_hidden, n_classes), seed=seed + 1), name="W2")
    b2 = gc.variable(gc.init.zeros(n_classes), name="b2")

    hidden = gc.relu(standardized @ w1 + b1)
    generator = gc.random.Generator(seed)
    train_logits = gc.dropout(hidden, dropout, generator, training=True) @ w2 + b2
    logits = gc.dropout(hidden, dropout, generator, training=False) @ w2 + b2   # evaluation: no dropout
    data_loss = gc.mean(gc.softmax_cross_entropy(train_logits, y)).with_name("loss")
    penalty = weight_decay * (gc.sum(gc.square(w1)) + gc.sum(gc.square(w2)))
    loss = (data_loss + penalty).with_name("cost")

    params = [w1, b1, w2, b2]
    rate = gc.variable(lr, name="lr")                      # a variable: changed between epochs, no recompiling
    updates = gc.optim.adam(loss, params, lr=rate)         # gradients d(cost)/d(W1), ... and Adam's moments
    return {"x": x, "y": y, "lr": rate, "logits": logits, "loss": data_loss, "updates": updates,
            "params": params}


def accuracy(predict, images, labels) -> float:
    return float(np.mean(np.argmax(predict(images), axis=1) == labels))


def main(epochs: int = 30, batch_size: int = 32, hidden: int = 512, lr: float = 4e-3,
         weight_decay: float = 3e-4, dropout: float = 0.2, seed: int = 0, out: str | None = None,
         progress: bool = True, picture: bool = True) -> dict:
    """Train, evaluate, save, reload and draw; returns the numbers (accuracy, losses, timings, written files)."""
    from tqdm import tqdm

    started = time.perf_counter()
    x_train, x_test, y_train, y_test = load_data(seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8 pixels, 10 classes")

    # pixels that are always 0 in training keep scale 0.1, not 0: standardizing never divides by zero
    m = build_model(x_train.shape[1], hidden, 10, weight_decay, lr, seed,
                    pixel_mean=x_train.mean(axis=0), pixel_scale=x_train.std(axis=0) + 0.1, dropout=dropout)
    compile_started = time.perf_counter()
    # ONE compiled function: forward, backward and the Adam update of every weight in a single call.
    step = gc.function([m["x"], m["y"]], m["loss"], updates=m["updates"])
    predict = gc.function([m["x"]], m["logits"])              # shares the weights with the step
    compile_seconds = time.perf_counter() - compile_started

    rng = np.random.default_rng(seed)                         # one stream: every epoch its own order
    n_batches = int(np.ceil(len(x_train) / batch_size))
    running, losses = None, []
    train_started = time.perf_counter()
    with tqdm(total=epochs * n_batches, desc="training", unit="step", disable=not progress,
              mininterval=0.2, file=sys.stdout) as bar:
        for epoch in range(epochs):
            if epoch == int(0.75 * epochs):
                m["lr"].set_value(lr * 0.3)                   # a lower rate for the last quarter
            for batch_x, batch_y in gc.data.minibatches(x_train, y_train, batch_size=batch_size, seed=rng):
                loss = float(step(batch_x, batch_y))
                running = loss if running is None else 0.95 * running + 0.05 * loss
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}", refresh=False)
                bar.update()
            losses.append(running)
    train_seconds = time.perf_counter() - train_started

    test_accuracy = accuracy(predict, x_test, y_test)
    train_accuracy = accuracy(predict, x_train, y_train)
    print(f"train accuracy {train_accuracy:.2%}   test accuracy {test_accuracy:.2%}")
    print(f"compile {compile_seconds * 1e3:.0f} ms, training {train_seconds:.2f} s "
          f"({epochs * n_batches / train_seconds:.0f} steps/s)")

    directory = out_dir(out)
    saved = os.path.join(directory, "digits_model.gcf")
    gc.save({"train": step, "predict": predict}, saved)       # the shared weights are stored once
    print(f"model saved with gc.save: {saved} ({os.path.getsize(saved) / 1024:.0f} KiB), "
          f"functions 'train' and 'predict'")
    model = gc.load(saved)   # a safe load: no code from the file runs, every node is checked
    loaded_accuracy = accuracy(model["predict"], x_test, y_test)
    same = bool(np.array_equal(model["predict"](x_test), predict(x_test)))
    assert same and loaded_accuracy == test_accuracy, (loaded_accuracy, test_accuracy)
    print(f"  gc.load gives it back: the loaded predict classifies the test set with {loaded_accuracy:.2%}, "
          f"as before saving")
    before = model["predict"](x_test[:64])
    model["train"](x_test[:64], y_test[:64])                  # one step of the loaded training function...
    moved = not np.array_equal(model["predict"](x_test[:64]), before)
    assert moved                                              # ...changes what the loaded predict computes
    print("  the loaded train and predict share their weights: a loaded training step moves the loaded predict")

    drawn = draw(step, os.path.join(directory, "digits_step.svg")) if picture else None
    curve = plot_losses(losses, os.path.join(directory, "digits_loss.png")) if picture else None
    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy, "first_loss": losses[0],
            "final_loss": losses[-1], "epochs": epochs, "compile_seconds": compile_seconds,
            "train_seconds": train_seconds, "seconds": time.perf_counter() - started, "saved": saved,
            "loaded_test_accuracy": loaded_accuracy, "loaded_predict_moves": moved,
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
    parser.add_argument("--fast", action="store_true", help="a short run for CI (20 epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=512, help="hidden units")
    parser.add_argument("--lr", type=float, default=4e-3, help="Adam's learning rate")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout rate of the hidden layer in training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="directory for the saved step and the picture "
                                                    "(default examples/output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    result = main(epochs=20 if args.fast else args.epochs, batch_size=args.batch_size, hidden=args.hidden,
                  lr=args.lr, dropout=args.dropout, seed=args.seed, out=args.out, progress=not args.no_progress)
    print(f"done in {result['seconds']:.1f} s")
    assert result["test_accuracy"] >= 0.975, f"test accuracy {result['test_accuracy']:.2%} is below 97.5 %"
