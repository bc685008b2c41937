"""A word-window classifier in the style of the classic NLP lecture: named-entity tags from context.

Every word is classified from a window of five words centred on it. The window's word vectors
are looked up in an embedding matrix with ``gc.take``, concatenated, and scored:

    x = [e(w-2); e(w-1); e(w); e(w+1); e(w+2)]     (embeddings, trained too)
    h = f(W x + b)                                   (f = tanh)
    s = U^T h                                        (one score per class)
    p = softmax(s)                                   (classes: O, PER, LOC)

The corpus is built here from templates with people and places, so the script needs no data.
Test sentences use templates held out of training (made of known words), and people and places
never seen in training: those are unknown words, so only their context can tell what they are.

Run:  python examples/word_window_classifier.py
"""

from __future__ import annotations

import argparse

import numpy as np

import graphc as gc

PEOPLE = ["anna", "ben", "chen", "dara", "elif", "femi", "gita", "hugo", "ines", "jonas", "kofi", "lena"]
PLACES = ["paris", "lagos", "lima", "oslo", "delhi", "cairo", "quito", "seoul", "rome", "perth", "kyiv", "tunis"]
TRAIN_TEMPLATES = [
    "{p} flew to {l} last week", "{p} lives in {l}", "yesterday {p} met {q} in {l}",
    "the museum in {l} hired {p}", "{p} and {q} moved from {l} to {m}", "we saw {p} near {l}",
    "{p} said that {l} is cold", "a friend of {p} works in {l}", "{l} welcomed {p} warmly",
    "people in {l} like {p}", "{p} wrote a book about {l}", "after lunch {p} called {q}",
]
TEST_TEMPLATES = ["{p} met {q} in {l}", "in {l} {p} called {q}", "{p} moved to {l} last week",
                  "we saw {p} in {m} with {q}", "the friend of {q} flew to {l}"]
TAGS = ["O", "PER", "LOC"]
PAD = "<pad>"


def make_sentences(templates, n: int, rng: np.random.Generator, people, places):
    """n tagged sentences: lists of (word, tag index)."""
    sentences = []
    for _ in range(n):
        template = templates[rng.integers(len(templates))]
        p, q = rng.choice(people, 2, replace=False)
        l, m = rng.choice(places, 2, replace=False)
        slots = {"{p}": (p, 1), "{q}": (q, 1), "{l}": (l, 2), "{m}": (m, 2)}
        sentences.append([slots.get(token, (token, 0)) for token in template.split()])
    return sentences


def windows(sentences, vocab: dict, size: int = 2):
    """(word-index windows of shape (n, 2*size+1), tags of shape (n,)); unknown words map to <unk>."""
    rows, tags = [], []
    for sentence in sentences:
        ids = [vocab[PAD]] * size + [vocab.get(w, vocab["<unk>"]) for w, _ in sentence] + [vocab[PAD]] * size
        for k, (_, tag) in enumerate(sentence):
            rows.append(ids[k:k + 2 * size + 1])
            tags.append(tag)
    return np.array(rows, dtype=np.int64), np.array(tags, dtype=np.int64)


def main(epochs: int = 30, dim: int = 16, hidden: int = 32, lr: float = 0.3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # people and places seen in training, and some never seen (the model must use the context)
    seen_people, new_people = PEOPLE[:9], PEOPLE[9:]
    seen_places, new_places = PLACES[:9], PLACES[9:]
    train = make_sentences(TRAIN_TEMPLATES, 600, rng, seen_people, seen_places)
    test = make_sentences(TEST_TEMPLATES, 200, rng, PEOPLE, PLACES)
    words = sorted({w for s in train for w, _ in s})
    vocab = {w: k for k, w in enumerate([PAD, "<unk>"] + words)}
    x_train, y_train = windows(train, vocab)
    x_test, y_test = windows(test, vocab)
    print(f"corpus: {len(train)} training sentences ({len(x_train)} windows), {len(test)} test sentences "
          f"({len(x_test)} windows), vocabulary {len(vocab)}; unseen names at test time: "
          f"{', '.join(new_people + new_places)}")

    window = x_train.shape[1]
    idx = gc.placeholder("windows", shape=(None, window), dtype="int64")
    tags = gc.placeholder("tags", shape=(None,), dtype="int64")
    E = gc.variable(rng.normal(0, 0.1, (len(vocab), dim)), name="E")              # embeddings
    W = gc.variable(rng.normal(0, 1 / np.sqrt(window * dim), (window * dim, hidden)), name="W")
    b = gc.variable(np.zeros(hidden), name="b")
    U = gc.variable(rng.normal(0, 1 / np.sqrt(hidden), (hidden, len(TAGS))), name="U")

    x = gc.take(E, idx, axis=0).reshape(-1, window * dim)      # (batch, 5, dim) -> (batch, 5*dim)
    h = gc.tanh(x @ W + b)                                    # f(Wx + b), a row per window
    scores = h @ U                                            # s = U^T h for every class
    probs = gc.softmax(scores)
    loss = gc.mean(gc.softmax_cross_entropy(scores, tags))
    params = [E, W, b, U]
    grads = gc.grad(loss, params)                             # the gradient of E is a scatter-add of rows
    step = gc.function([idx, tags], loss, updates={p: p - lr * g for p, g in zip(params, grads)})
    predict = gc.function([idx], probs)

    unk = vocab["<unk>"]
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for k in range(0, len(order), 64):
            batch = x_train[order[k:k + 64]].copy()
            batch[rng.random(batch.shape) < 0.1] = unk         # word dropout: <unk> learns to mean "any word"
            losses.append(float(step(batch, y_train[order[k:k + 64]])))
    train_acc = float(np.mean(predict(x_train).argmax(1) == y_train))
    test_pred = predict(x_test).argmax(1)
    test_acc = float(np.mean(test_pred == y_test))
    entity = y_test > 0
    entity_acc = float(np.mean(test_pred[entity] == y_test[entity]))
    print(f"loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f}; accuracy: train {train_acc:.1%}, "
          f"held-out templates {test_acc:.1%} (entities only: {entity_acc:.1%})")

    sentence = "yesterday lena flew to kyiv with anna".split()
    ids = [vocab[PAD]] * 2 + [vocab.get(w, unk) for w in sentence] + [vocab[PAD]] * 2
    probabilities = predict(np.array([ids[k:k + 5] for k in range(len(sentence))], dtype=np.int64))
    print("  tagged: " + "  ".join(f"{w}/{TAGS[t]}" for w, t in zip(sentence, probabilities.argmax(1))))
    assert test_acc >= 0.9, f"held-out accuracy {test_acc:.1%}"
    return {"train_accuracy": train_acc, "test_accuracy": test_acc, "entity_accuracy": entity_acc,
            "first_loss": losses[0], "last_loss": float(np.mean(losses[-20:])),
            "tagged": [TAGS[t] for t in probabilities.argmax(1)]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    main(epochs=args.epochs)
