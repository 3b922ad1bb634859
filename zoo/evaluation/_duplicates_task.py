"""The duplicates task: items in known duplicate groups (items that share a group value are
duplicates of each other; an item alone in its group has none), found as ``zoo dedup`` finds
them at a similarity threshold, scored by pairwise precision, recall and F1."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.duplicates import DEFAULT_THRESHOLD, find_duplicates

from ._labelled_tasks import _Labelled
from ._task import Embedded, Scored

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._model import Model


@dataclass
class Duplicates(_Labelled):
    """Pairs of duplicates found at ``threshold`` (cosine) against the known groups."""

    label_column: str = "group"
    threshold: float = DEFAULT_THRESHOLD

    name: ClassVar[str] = "duplicates"
    primary: ClassVar[str] = "f1"
    shown: ClassVar[tuple[str, ...]] = ("f1", "precision", "recall")

    def score(self, model: Model, embedded: Mapping[str, Embedded], seed: int) -> Scored:
        import numpy as np

        count = len(self.examples)
        found = [group.ids for group in find_duplicates(embedded["items"].path, self.threshold)]
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            by_label.setdefault(label, []).append(i)
        truth = _pairs(by_label.values(), count)
        predicted = _pairs(found, count)
        hits = np.intersect1d(truth, predicted)

        def recompute(drawn: np.ndarray) -> dict[str, float]:
            weight = np.bincount(drawn, minlength=count).astype(np.float64)
            return _precision_recall(*(_weight(keys, weight, count) for keys in (hits, predicted, truth)))

        return Scored(recompute(np.arange(count)), count, recompute=recompute,
                      details={"pairs_found": len(predicted), "pairs_known": len(truth)})

    def describe(self, seed: int) -> dict[str, Any]:
        return {**super().describe(seed), "threshold": self.threshold,
                "scoring": "pairwise: a pair of items is a duplicate pair if they share a group"}


def _pairs(groups: Any, count: int) -> np.ndarray:
    """Every pair of positions within each group, as sorted keys ``low * count + high``."""
    import numpy as np

    keys = []
    for members in groups:
        at = np.asarray(sorted(members), dtype=np.int64)
        low, high = np.triu_indices(len(at), k=1)
        keys.append(at[low] * count + at[high])
    return np.unique(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)


def _weight(keys: np.ndarray, weight: np.ndarray, count: int) -> float:
    """The pairs' count when each item counts as often as a resample drew it."""
    return float((weight[keys // count] * weight[keys % count]).sum())


def _precision_recall(hits: float, predicted: float, truth: float) -> dict[str, float]:
    precision = hits / predicted if predicted else 0.0
    recall = hits / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
