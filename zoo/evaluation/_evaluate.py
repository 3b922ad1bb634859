"""``zoo.evaluate``: every model on the same data, one leaderboard."""

from __future__ import annotations

import gc
import itertools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import __version__
from zoo.errors import ZooError
from zoo.store._provenance import embedding_provenance

from ._bootstrap import CONFIDENCE, RESAMPLES, distinguishable, interval, resampled
from ._cache import default_cache_dir, embed_cached
from ._candidates import Candidate
from ._report import Leaderboard, Row

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._model import Model

    from ._task import Embedded, ItemSet, Task


def evaluate(models: Sequence[str | Model | Candidate], task: Task, *, output: str | os.PathLike[str] | None = None,
             cache_dir: str | os.PathLike[str] | None = None, seed: int = 0, resamples: int = RESAMPLES,
             batch_size: int = 32, device: str | None = None, runtime: str | None = None,
             progress: bool = True) -> Leaderboard:
    """Score every model on ``task``'s data and rank them.

    Args:
        models: names, folders, ``backend:id`` names or loaded models; a name may carry settings
            that make a variant of it, ``"minilm-l6[truncate_dim=128]"`` (see
            :class:`~zoo.evaluation.Candidate`).
        task: :class:`~zoo.evaluation.Retrieval`, :class:`~zoo.evaluation.Classification`,
            :class:`~zoo.evaluation.ZeroShot`, :class:`~zoo.evaluation.Clustering` or
            :class:`~zoo.evaluation.Duplicates`, holding the data.
        output: a folder to write ``leaderboard.json``, ``.parquet`` and ``.png`` into.
        cache_dir: where embeddings are kept between runs (default ``ZOO_HOME/evaluations``).
        seed: fixes the split, k-means and the bootstrap draws.
        resamples: bootstrap resamples per metric.

    Returns:
        The :class:`~zoo.evaluation.Leaderboard`, best first.
    """
    candidates = [Candidate.parse(m) for m in models]
    labels = [c.label for c in candidates]
    if not candidates or len(set(labels)) != len(labels):
        raise ZooError(f"compare one or more models, each once: got {labels}")
    if resamples < 100:
        raise ZooError(f"resamples={resamples}: a {CONFIDENCE:.0%} interval needs at least 100 (default {RESAMPLES})")
    sets = task.item_sets()  # the data is read, and refused, before any model loads
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    rows, draws = [], {}
    held: tuple[Any, Model] | None = None  # variants of one model in a row share its load
    for number, candidate in enumerate(candidates, 1):
        _say(progress, f"[{number}/{len(candidates)}] {candidate.label}: embedding {', '.join(s.name for s in sets)}")
        key = candidate.load_key(device, runtime)
        if held is None or held[0] != key:
            held = None
            gc.collect()
            held = (key, candidate.load(device, runtime))
        row, draws[candidate.label] = _run(candidate, held[1], task, sets, cache, seed=seed, resamples=resamples,
                                           batch_size=batch_size, progress=progress)
        rows.append(row)
    rows.sort(key=lambda r: -r.values[task.primary])
    record = {"data": task.describe(seed), "seed": seed, "resamples": resamples, "confidence": CONFIDENCE,
              "zoo_version": __version__}
    board = Leaderboard(task.name, task.primary, task.shown_metrics(), rows, _notes(rows, draws, task.primary), record)
    if output is not None:
        board.write(Path(output))
    return board


def _run(candidate: Candidate, model: Model, task: Task, sets: list[ItemSet], cache: Path, *, seed: int,
         resamples: int, batch_size: int, progress: bool) -> tuple[Row, np.ndarray]:
    """One model's row, and its primary metric's bootstrap draws for the comparisons."""
    task.check(model)
    options = {s.name: candidate.options(model, s, task) for s in sets}  # every setting checked before embedding
    embedded = {s.name: embed_cached(model, options[s.name], s, cache, batch_size=batch_size, progress=progress)
                for s in sets}
    _say(progress, f"      {candidate.label}: scoring")
    scored = task.score(model, embedded, seed)
    draws = resampled(scored.items, scored.per_item, scored.recompute, resamples=resamples, seed=seed)
    provenance = {name: embedding_provenance(model.spec, model.files, options=o, runtime=model.runtime)
                  for name, o in options.items()}
    row = Row(candidate.label, model.name, next(iter(options.values())).float_dim, scored.values,
              {name: interval(values) for name, values in draws.items()}, _pace(sets, embedded),
              _plain(model.spec.scores if candidate.as_published else {}), _plain(provenance),
              _plain(scored.details))
    return row, draws[task.primary]


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data (the catalogue's read-only mappings become dicts)."""
    return json.loads(json.dumps(value, default=lambda o: dict(o) if isinstance(o, Mapping) else str(o)))


def _pace(sets: list[ItemSet], embedded: dict[str, Embedded]) -> float | None:
    """Items per second over every set, each at the pace it was measured."""
    paces = [(len(s.items), embedded[s.name].items_per_second) for s in sets]
    if any(pace is None for _, pace in paces):
        return None
    return sum(n for n, _ in paces) / sum(n / pace for n, pace in paces if pace)


def _notes(rows: list[Row], draws: dict[str, np.ndarray], metric: str) -> list[str]:
    """For each model and the next best: whether the data tells them apart on ``metric``."""
    notes = []
    for better, worse in itertools.pairwise(rows):
        a, b = better.intervals[metric], worse.intervals[metric]
        overlap = a.low <= b.high and b.low <= a.high
        difference = interval(draws[better.label] - draws[worse.label])
        paired = f"paired difference {difference.low:+.3f} to {difference.high:+.3f}"
        if not distinguishable(draws[better.label], draws[worse.label]):
            notes.append(f"{better.label} and {worse.label}: not distinguishable on this data by {metric} "
                         f"({paired}, holding 0)")
        elif overlap:
            notes.append(f"{better.label} over {worse.label}: their {metric} intervals overlap, but on the same "
                         f"resamples {better.label} is ahead ({paired})")
    return notes


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)
