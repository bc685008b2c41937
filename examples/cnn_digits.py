"""A small convolutional network on scikit-learn's 8x8 handwritten digits, trained with graphc.

The model: conv 3x3 (1 -> 16 channels, padding 1), ReLU, 2x2 max pooling, conv 3x3 (16 -> 32,
padding "same"), ReLU, 2x2 max pooling, and a dense layer from the 32 x 2 x 2 features to the
ten classes. ``gc.grad`` appends the backward pass (convolution gradients are transposed
convolutions and weight correlations, max pooling's gradient routes to each window's maximum),
and ONE compiled function runs forward, backward and an Adam update (``gc.optim.adam``, its
learning rate fed each step to follow a cosine schedule); the weights start from ``gc.init``'s
He initialization.

The training images are shifted by up to one pixel at random each epoch (the test images are
not). The script prints the test accuracy, shows a tqdm progress bar, and draws the trained
first-layer filters with matplotlib into ``examples/output/cnn_digits_filters.png``.

Run:  python examples/cnn_digits.py            (98.9 % test accuracy; 10 s of CPU, 45 s wall on a loaded machine)
      python examples/cnn_digits.py --fast     (a quick run for CI)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# the matrices here are small: a second BLAS thread only waits for its share (and spins while it
# waits on a busy machine); set before NumPy loads its BLAS, unless the caller chose otherwise
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import graphc as gc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import out_dir  # noqa: E402


def load_data(seed: int):
    """Images (N, 1, 8, 8) scaled to [0, 1] and integer labels, split 75 % / 25 % (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]   # pixels were 0..16
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=seed)


def shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every image moved by -1, 0 or 1 pixel along each axis (zeros come in at the edges)."""
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, size=(2, len(images)))
    out = np.empty_like(images)
    for k in range(len(images)):
        out[k] = padded[k, :, dy[k]:dy[k] + 8, dx[k]:dx[k] + 8]
    return out


def build_model(seed: int, channels=(16, 32)):
    """The graph: a batch of images goes in, logits and the mean loss come out."""
    c1, c2 = channels
    x = gc.placeholder("x", (None, 1, 8, 8), "float32")
    y = gc.placeholder("y", (None,), "int64")
    # He initialization with PyTorch's fans: a kernel (O, C, kh, kw) has fan_in C * kh * kw
    w1 = gc.variable(gc.init.he_normal((c1, 1, 3, 3), seed=seed, dtype="float32"), name="conv1")
    b1 = gc.variable(gc.init.zeros((1, c1, 1, 1), dtype="float32"), name="b1")
    w2 = gc.variable(gc.init.he_normal((c2, c1, 3, 3), seed=seed + 1, dtype="float32"), name="conv2")
    b2 = gc.variable(gc.init.zeros((1, c2, 1, 1), dtype="float32"), name="b2")
    w3 = gc.variable(gc.init.glorot_uniform((c2 * 4, 10), seed=seed + 2, dtype="float32"), name="dense")
    b3 = gc.variable(gc.init.zeros((10,), dtype="float32"), name="b3")

    h = gc.max_pool2d(gc.relu(gc.conv2d(x, w1, padding=1) + b1), 2)          # (N, c1, 4, 4)
    h = gc.max_pool2d(gc.relu(gc.conv2d(h, w2, padding="same") + b2), 2)     # (N, c2, 2, 2)
    logits = gc.reshape(h, (-1, c2 * 4)) @ w3 + b3
    loss = gc.mean(gc.softmax_cross_entropy(logits, y))
    return {"x": x, "y": y, "logits": logits, "loss": loss, "params": [w1, b1, w2, b2, w3, b3]}


def main(epochs: int = 30, batch_size: int = 32, lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
         out: str | None = None, progress: bool = True, picture: bool = True) -> dict:
    """Train and evaluate; returns the numbers (accuracy, losses, seconds, the filter picture)."""
    from tqdm import tqdm

    started, cpu_started = time.perf_counter(), time.process_time()
    x_train, x_test, y_train, y_test = load_data(seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8 pixels, 10 classes")
    m = build_model(seed)
    rate = gc.placeholder("lr", (), "float32")  # fed each step: the schedule needs no recompiling
    updates = gc.optim.adam(m["loss"], m["params"], lr=rate, weight_decay=weight_decay)
    step = gc.function([m["x"], m["y"], rate], m["loss"], updates=updates)
    predict = gc.function([m["x"]], m["logits"])

    rng = np.random.default_rng(seed)
    n_batches = int(np.ceil(len(x_train) / batch_size))
    running, losses = None, []
    with tqdm(total=epochs * n_batches, desc="training", unit="step", disable=not progress,
              mininterval=0.2, file=sys.stdout) as bar:
        for epoch in range(epochs):
            current = np.float32(lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay to zero
            for images, labels in gc.data.minibatches(shift(x_train, rng), y_train, batch_size=batch_size,
                                                      seed=rng):
                loss = float(step(images, labels, current))
                running = loss if running is None else 0.95 * running + 0.05 * loss
                bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}", refresh=False)
                bar.update()
            losses.append(running)
    train_seconds = time.perf_counter() - started

    test_accuracy = float(np.mean(np.argmax(predict(x_test), axis=1) == y_test))
    train_accuracy = float(np.mean(np.argmax(predict(x_train), axis=1) == y_train))
    print(f"train accuracy {train_accuracy:.2%}   test accuracy {test_accuracy:.2%}")
    cpu_seconds = time.process_time() - cpu_started
    print(f"training took {train_seconds:.1f} s, {cpu_seconds:.1f} s of CPU "
          f"({epochs * n_batches / train_seconds:.0f} steps/s)")
    filters = (plot_filters(m["params"][0].value, os.path.join(out_dir(out), "cnn_digits_filters.png"))
               if picture else None)
    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy, "first_loss": losses[0],
            "final_loss": losses[-1], "train_seconds": train_seconds, "cpu_seconds": cpu_seconds,
            "seconds": time.perf_counter() - started,
            "filters": filters}


def plot_filters(weights: np.ndarray, path: str) -> str:
    """The first layer's 3x3 filters, one small image each (blue negative, red positive)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    count = weights.shape[0]
    columns = 8
    rows = int(np.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9 + 0.4), dpi=100)
    limit = float(np.abs(weights).max())
    for k, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if k < count:
            axis.imshow(weights[k, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
    figure.suptitle("first-layer 3x3 filters after training")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    print(f"  first-layer filters: {path}")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set (default 30)")
    parser.add_argument("--fast", action="store_true", help="a short run for CI (8 epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam's initial learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 added to the gradients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="directory for the picture (default examples/output)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    result = main(epochs=8 if args.fast else args.epochs, batch_size=args.batch_size, lr=args.lr,
                  weight_decay=args.weight_decay, seed=args.seed, out=args.out, progress=not args.no_progress)
    print(f"done in {result['seconds']:.1f} s")
    if not args.fast:
        assert result["test_accuracy"] >= 0.985, f"test accuracy {result['test_accuracy']:.2%} is below 98.5 %"
        # the CPU time: on a machine shared with other jobs the wall clock measures the neighbours too
        assert result["cpu_seconds"] < 60, f"took {result['cpu_seconds']:.0f} s of CPU, more than a minute"
