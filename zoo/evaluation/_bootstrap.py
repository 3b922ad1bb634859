"""Bootstrap confidence intervals over the items of a task (queries, test items), paired across
models: every model is scored on the same resamples (one seeded draw sequence), so the
difference between two models is measured on the same data each time, not only each figure.

A metric that is a mean over items (recall@10 of each query, whether each test item was
right) is resampled by its per-item values; any other (macro-F1, V-measure, pairwise duplicate
precision) is recomputed on each resample by the task's own function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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
    """Each metric's value on each of ``resamples`` draws of item positions with replacement:
    ``per_item`` columns averaged by how often each position was drawn, ``recompute``'s metrics
    computed on draws of ``items`` positions. Columns of one length share their draws (a task may
    score two sets: queries and, reversed, corpus items); the draws depend on ``seed`` and the
    length alone, so every model gets the same ones."""
    import numpy as np

    by_length: dict[int, list[str]] = {}
    for name, values in per_item.items():
        by_length.setdefault(len(values), []).append(name)
    out: dict[str, np.ndarray] = {}
    for length, names in by_length.items():
        values = np.stack([np.asarray(per_item[name], dtype=np.float64) for name in names], axis=1)
        means = np.stack([np.bincount(drawn, minlength=length) @ values / length
                          for drawn in _draws(length, resamples, seed)])
        out.update({name: means[:, i] for i, name in enumerate(names)})
    if recompute is not None:
        draws = [recompute(drawn) for drawn in _draws(items, resamples, seed)]
        out.update({name: np.asarray([d[name] for d in draws], dtype=np.float64) for name in draws[0]})
    return out


def _draws(length: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``resamples`` draws of ``length`` positions with replacement, fixed by seed and length."""
    import numpy as np

    rng = np.random.default_rng([seed, length])
    for _ in range(resamples):
        yield rng.integers(0, length, length)


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
