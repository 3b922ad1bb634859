"""Bootstrap confidence intervals over the items of a task (queries, test items), paired across
models: every model is scored on the same resamples (one seeded draw sequence), so the
difference between two models is measured on the same data each time, not only each figure.

A metric that is a mean over items (recall@10 of each query, whether each test item was
right) is resampled by its per-item values; any other (macro-F1, V-measure, pairwise duplicate
precision) is recomputed on each resample by the task's own function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95

#: a metric recomputed on the item positions of one resample (positions repeat)
Recompute = Callable[["np.ndarray"], Mapping[str, float]]


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval at :data:`CONFIDENCE`."""

    low: float
    high: float


def resampled(items: int, per_item: Mapping[str, np.ndarray], recompute: Recompute | None = None, *,
              resamples: int = RESAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """Each metric's value on each of ``resamples`` draws of ``items`` positions with replacement:
    ``per_item`` columns averaged by how often each position was drawn, ``recompute``'s metrics
    computed on the drawn positions. The draws depend on ``seed`` and ``items`` alone."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names = list(per_item)
    values = np.stack([np.asarray(per_item[name], dtype=np.float64) for name in names], axis=1) if names \
        else np.empty((items, 0))
    out: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        drawn = rng.integers(0, items, items)
        means = np.bincount(drawn, minlength=items) @ values / items
        for name, mean in zip(names, means):
            out[name].append(float(mean))
        for name, value in (recompute(drawn) if recompute else {}).items():
            out.setdefault(name, []).append(float(value))
    return {name: np.asarray(draws) for name, draws in out.items()}


def interval(draws: np.ndarray) -> Interval:
    """The central :data:`CONFIDENCE` share of the resampled values."""
    import numpy as np

    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(low), float(high))


def distinguishable(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two models' paired resamples of one metric differ: the :data:`CONFIDENCE` interval
    of their difference, resample by resample, leaves out zero."""
    difference = interval(a - b)
    return difference.low > 0 or difference.high < 0
