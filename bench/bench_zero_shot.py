"""Zero-shot classification with label names alone, against chance and a trained linear probe.

MiniLM on six categories of Debian's fortunes (every quote of 20 to 400 characters). The same
held-out 30% (stratified, seed 0) is scored by: zero-shot with the bare category names; zero-shot
with a template; a logistic-regression probe trained on the other 70% of the same embeddings.

    python bench/bench_zero_shot.py
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from bench_inputs import FORTUNES

CATEGORIES = ["computers", "science", "food", "love", "sports", "politics"]


def corpus() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for category in CATEGORIES:
        quotes = [q.strip() for q in (FORTUNES / category).read_text(errors="replace").split("\n%\n")]
        quotes = [q for q in quotes if 20 < len(q) < 400]
        texts += quotes
        labels += [category] * len(quotes)
    return texts, labels


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    import zoo

    texts, labels = corpus()
    model = zoo.load("minilm-l6", device="cpu")
    X = model.featurize(texts, progress=False)
    train, test = train_test_split(np.arange(len(texts)), test_size=0.3, stratify=labels, random_state=0)
    truth = [labels[i] for i in test]

    def accuracy(predicted: list[str]) -> float:
        return float(np.mean([p == t for p, t in zip(predicted, truth)]))

    held_out = [texts[i] for i in test]
    bare = accuracy(model.predict(held_out, labels=CATEGORIES, progress=False))
    templated = accuracy(model.predict(held_out, labels=CATEGORIES, template="A quote about {}.", progress=False))
    probe = LogisticRegression(max_iter=2000).fit(X[train], [labels[i] for i in train])
    linear = accuracy(list(probe.predict(X[test])))
    majority = Counter(truth).most_common(1)[0][1] / len(truth)
    print(f"MiniLM-L6, {len(texts)} fortunes in {len(CATEGORIES)} categories, {len(test)} held out")
    print(f"  chance (uniform / majority class): {1 / len(CATEGORIES):.3f} / {majority:.3f}")
    print(f"  zero-shot, label names only:       {bare:.3f}")
    print(f"  zero-shot, 'A quote about {{}}.':    {templated:.3f}")
    print(f"  linear probe on {len(train)} labelled:    {linear:.3f}")


if __name__ == "__main__":
    main()
