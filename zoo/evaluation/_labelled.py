"""Scores of labelled items from their embeddings, with scikit-learn: k-NN and linear-probe
classification on a fixed stratified split, k-means clustering, and the per-item correctness a
bootstrap resamples.

The linear probe follows CLIP_benchmark's protocol (and the CLIP paper's): a logistic regression
on the frozen training rows, its regularisation chosen on a stratified validation part of the
training split, then refit on the whole training split with that strength and scored on the test
split. The sweep is small (:data:`PROBE_C`, seven strengths a decade apart); ties go to the
stronger regularisation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.core._rows import unit_rows
from zoo.errors import ZooError

if TYPE_CHECKING:
    import numpy as np

#: inverse regularisation strengths the linear probe tries, strongest first
PROBE_C = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
PROBE_MAX_ITER = 1000
#: the share of the training split that chooses the probe's regularisation
PROBE_VALIDATION = 0.2
KNN_K = 10


@dataclass(frozen=True)
class Split:
    """Positions of the training and test items, written to the output so a result can be rerun."""

    train: list[int]
    test: list[int]
    seed: int
    test_fraction: float


def stratified_split(labels: Sequence[Any] | np.ndarray, test_fraction: float, seed: int) -> Split:
    """A fixed stratified split of item positions (scikit-learn's ``train_test_split``)."""
    import numpy as np
    from sklearn.model_selection import train_test_split


    positions = np.arange(len(labels))
    try:
        train, test = train_test_split(positions, test_size=test_fraction, random_state=seed,
                                       stratify=np.asarray(labels, dtype=object).astype(str))
    except ValueError as exc:  # a class too small to be on both sides
        counts = Counter(str(label) for label in labels)
        rarest = min(counts, key=counts.__getitem__)
        raise ZooError(f"cannot split {len(labels)} labelled items {test_fraction:g} for testing with every class "
                       f"on both sides ({exc}); class {rarest!r} has {counts[rarest]} items: give each class at "
                       "least 5 items, or fewer classes") from None
    return Split(sorted(int(i) for i in train), sorted(int(i) for i in test), seed, test_fraction)


def knn_predict(rows: np.ndarray, labels: np.ndarray, split: Split, k: int = KNN_K) -> np.ndarray:
    """The test items' labels by a majority of their ``k`` nearest training items (cosine)."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(split.train)), metric="cosine")
    knn.fit(rows[split.train], labels[split.train])
    return knn.predict(rows[split.test])


@dataclass(frozen=True)
class Probe:
    """The linear probe's test predictions and the strength its sweep chose."""

    predictions: np.ndarray
    c: float
    validation_accuracy: dict[float, float]


def linear_probe(rows: np.ndarray, labels: np.ndarray, split: Split) -> Probe:
    """Choose ``C`` from :data:`PROBE_C` on a stratified validation part of the training split,
    refit on all of it, predict the test split; see the module."""
    from sklearn.linear_model import LogisticRegression

    train_rows, train_labels = rows[split.train], labels[split.train]
    inner = stratified_split(train_labels, PROBE_VALIDATION, split.seed)
    accuracy = {}
    for c in PROBE_C:
        fitted = LogisticRegression(C=c, max_iter=PROBE_MAX_ITER).fit(train_rows[inner.train],
                                                                      train_labels[inner.train])
        accuracy[c] = float((fitted.predict(train_rows[inner.test]) == train_labels[inner.test]).mean())
    best = max(PROBE_C, key=lambda c: (accuracy[c], -c))
    fitted = LogisticRegression(C=best, max_iter=PROBE_MAX_ITER).fit(train_rows, train_labels)
    return Probe(fitted.predict(rows[split.test]), best, accuracy)


def kmeans_assignments(rows: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """k-means on the unit rows (cosine geometry), ``clusters`` centres, ten starts."""
    from sklearn.cluster import KMeans


    return KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(unit_rows(rows))


def macro_f1(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[Any] | None = None) -> float:
    """scikit-learn's macro-averaged F1 over ``labels`` (default: those present in either); a
    class never predicted nor present scores 0."""
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, average="macro", labels=labels, zero_division=0))


def v_measure(truth: np.ndarray, assigned: np.ndarray) -> float:
    """scikit-learn's V-measure of a clustering against the labels."""
    from sklearn.metrics import v_measure_score

    return float(v_measure_score(truth, assigned))
