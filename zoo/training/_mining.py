"""Hard negatives for contrastive finetuning: for each ``(anchor, positive)`` pair, the passages a
model ranks nearest the anchor that are not its positives, kept only where they score far enough
below the positive (a margin, relative or absolute) to be unlikely unlabelled positives.

sentence-transformers' ``mine_hard_negatives`` is the reference, and its triplet output is
reproduced: the same candidate corpus (the given ``corpus`` then the positives, each item once),
the same window of ranks (``range_min`` up to ``range_max``, with its default), the same filters
in the same order against the same positive score (the lowest of an anchor's positives), and the
same triplets in the same order (``tests/test_mining.py`` compares the two on one model). zoo
embeds with its own featurize, so any modality mines: images by captions with an image-text
model, recordings with an audio one; texts take the model's query and document prompts as
sentence-transformers' ``encode_query`` / ``encode_document`` pick them. Candidates come from the
flat FAISS index that ``zoo index`` builds.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._loader import load
from zoo.core._embed_options import retrieval_prompts
from zoo.core._model import Model
from zoo.embeddings._tables import write_rows
from zoo.errors import ZooError
from zoo.search import nearest_rows

from ._contrastive import column_towers
from ._data import Pairs, read_pairs

if TYPE_CHECKING:
    import numpy as np

SAMPLING = ("top", "random")


@dataclass
class MinedNegatives:
    """Mined triplets with their scores (cosine similarity to the anchor), and what was left out.

    Attributes:
        triplets: ``(anchor, positive, negative)``, grouped by anchor in first-seen order.
        positive_scores, negative_scores: each triplet's two scores.
        skipped: candidates each filter removed (``absolute_margin``, ``relative_margin``,
            ``max_score``, ``min_score``), as sentence-transformers counts them.
        short: ``(anchor, positive)`` pairs that got fewer than ``num_negatives`` negatives.
        range_max: the window's end, as given or as defaulted.
    """

    triplets: Pairs
    positive_scores: list[float]
    negative_scores: list[float]
    skipped: dict[str, int] = field(default_factory=dict)
    short: int = 0
    range_max: int = 0

    def __len__(self) -> int:
        return len(self.triplets)

    def summary(self) -> str:
        """What was mined, in a few lines: counts, mean scores, what each filter dropped."""
        def mean(values: list[float]) -> str:
            return f"{sum(values) / len(values):.4f}" if values else "-"

        lines = [f"{len(self)} triplets; mean score of the positives {mean(self.positive_scores)}, "
                 f"of the negatives {mean(self.negative_scores)} (cosine, range_max {self.range_max})"]
        lines += [f"dropped {count} candidates by {name}" for name, count in self.skipped.items()]
        if self.short:
            lines.append(f"{self.short} pairs got fewer negatives than asked for: raise range_max, or loosen the "
                         "margins and max_score")
        return "\n".join(lines)

    def write(self, path: str | os.PathLike[str], *, anchor_column: str = "anchor",
              positive_column: str = "positive", negative_column: str = "negative") -> Path:
        """The triplets as a CSV / TSV / JSONL / parquet table (by ``path``'s suffix) that
        ``finetune(objective="contrastive")`` reads, with ``positive_score`` and
        ``negative_score`` columns beside them."""
        t = self.triplets
        return write_rows(path, {anchor_column: t.anchors, positive_column: t.positives,
                                 negative_column: t.negatives or [], "positive_score": self.positive_scores,
                                 "negative_score": self.negative_scores})


def mine_negatives(model: Model | str, pairs: Any, *, corpus: Sequence[Any] | None = None, num_negatives: int = 3,
                   range_min: int = 0, range_max: int | None = None, max_score: float | None = None,
                   min_score: float | None = None, absolute_margin: float | None = None,
                   relative_margin: float | None = None, sampling: str = "top", seed: int = 0,
                   query_prompt: str | None = None, corpus_prompt: str | None = None, batch_size: int = 32,
                   anchor_column: str = "anchor", positive_column: str = "positive",
                   progress: bool | None = None) -> MinedNegatives:
    """Hard negatives for ``pairs`` (anything ``finetune(objective="contrastive")`` reads), mined
    with ``model`` (a :class:`~zoo.Model` or a name :func:`zoo.load` takes) from the positives
    and ``corpus``.

    Of each anchor's nearest candidates (cosine), ranks ``range_min`` to ``range_max`` are
    considered (default: ``range_min + num_negatives + most positives of one anchor``, or ten
    times the negatives where a filter is set, as sentence-transformers does); the anchor itself
    and its positives never count. A candidate is dropped if it scores within
    ``absolute_margin`` of the anchor's lowest positive, above ``positive - |positive| *
    relative_margin`` (NV-Retriever's "TopK-PercPos": ``relative_margin=0.05``), above
    ``max_score`` or below ``min_score``. ``sampling="top"`` keeps the best ``num_negatives``
    left, ``"random"`` draws them (with ``seed``). Each ``(anchor, positive)`` pair becomes one
    triplet per negative found. ``query_prompt`` and ``corpus_prompt`` name prompts the model
    declares (sentence-transformers' ``query_prompt_name`` / ``corpus_prompt_name``), not the
    prompt text."""
    _check_settings(num_negatives, range_min, sampling)
    model = load(model) if isinstance(model, str) else model
    model.require_dense("mine_negatives")
    given = read_pairs(pairs, anchor_column=anchor_column, positive_column=positive_column)
    queries, docs, positives = _lookup(given, corpus)
    most = max(Counter(given.anchors).values())
    if range_max is None:
        filtered = any(x is not None for x in (absolute_margin, relative_margin, max_score))
        range_max = range_min + num_negatives * (10 if filtered else 1) + most
    _check_window(num_negatives, range_min, range_max)
    query_rows, doc_rows = _embed(model, queries, docs, query_prompt, corpus_prompt, batch_size, progress)
    scores, found = _candidates(query_rows, doc_rows, range_max + most + 1)
    doc_at = {doc: i for i, doc in enumerate(docs)}
    _exclude(scores, found, [doc_at.get(q, -1) for q in queries], positives)
    lowest, pair_scores = _positive_scores(query_rows, doc_rows, positives)
    skipped = _apply_filters(scores, lowest, absolute_margin=absolute_margin, relative_margin=relative_margin,
                             max_score=max_score, min_score=min_score)
    chosen, chosen_scores = _pick(scores, found, range_min, range_max, num_negatives, sampling, seed)
    mined = _triplets(queries, docs, positives, pair_scores, chosen, chosen_scores)
    mined.skipped, mined.range_max = skipped, range_max
    return mined


def _check_settings(num_negatives: int, range_min: int, sampling: str) -> None:
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be at least 1, not {num_negatives!r}")
    if range_min < 0:
        raise ValueError(f"range_min must be 0 or more, not {range_min!r}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}, not {sampling!r}")


def _check_window(num_negatives: int, range_min: int, range_max: int) -> None:
    if range_min >= range_max:
        raise ValueError(f"range_min must be below range_max; got range_min={range_min}, range_max={range_max}")
    if num_negatives > range_max - range_min:
        raise ValueError(f"cannot mine {num_negatives} negatives per anchor from ranks {range_min} to {range_max}: "
                         "lower num_negatives or range_min, or raise range_max")


def _lookup(given: Pairs, corpus: Sequence[Any] | None) -> tuple[list[Any], list[Any], list[list[int]]]:
    """The distinct anchors, the distinct candidates (``corpus`` then the positives) and, for
    each anchor, the candidate positions of its distinct positives, all in first-seen order."""
    try:
        queries = list(dict.fromkeys(given.anchors))
        docs = list(dict.fromkeys([*(corpus or []), *given.positives]))
    except TypeError:
        raise ZooError("mining looks inputs up by value: give anchors, positives and corpus as texts or file "
                       "paths, not arrays or images in memory") from None
    doc_at = {doc: i for i, doc in enumerate(docs)}
    query_at = {query: i for i, query in enumerate(queries)}
    positives: list[list[int]] = [[] for _ in queries]
    for anchor, positive in zip(given.anchors, given.positives):
        if doc_at[positive] not in positives[query_at[anchor]]:
            positives[query_at[anchor]].append(doc_at[positive])
    return queries, docs, positives


def _embed(model: Model, queries: list[Any], docs: list[Any], query_prompt: str | None, corpus_prompt: str | None,
           batch_size: int, progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length rows of the anchors and of the candidates, each through its tower; texts with
    the prompt asked for, else the one sentence-transformers' ``encode_query`` /
    ``encode_document`` would pick from those the model declares."""
    import numpy as np

    towers = column_towers(model, Pairs(queries, docs))
    query_prompt, corpus_prompt = retrieval_prompts(model.spec.prompts, query_prompt, corpus_prompt)
    out = []
    for items, tower, prompt in ((queries, towers[0], query_prompt), (docs, towers[1], corpus_prompt)):
        options = model.embed_options(tower=tower, normalize=True, prompt=prompt if tower == "text" else None)
        out.append(np.asarray(model.featurize(items, options=options, batch_size=batch_size, progress=progress)))
    return out[0], out[1]


def _candidates(query_rows: np.ndarray, doc_rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each anchor's ``count`` nearest candidates from a flat index, padded with position -1 and
    score -inf where there are fewer candidates than that."""
    import numpy as np

    scores, found = nearest_rows(doc_rows, query_rows, count)
    missing = count - scores.shape[1]
    if missing > 0:
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
        found = np.pad(found, ((0, 0), (0, missing)), constant_values=-1)
    scores[found < 0] = -np.inf
    return scores, found


def _exclude(scores: np.ndarray, found: np.ndarray, self_at: list[int], positives: list[list[int]]) -> None:
    """An anchor is never its own negative (where it is also a candidate), nor is any of its positives."""
    import numpy as np

    scores[found == np.asarray(self_at)[:, None]] = -np.inf
    for q, own in enumerate(positives):
        scores[q, np.isin(found[q], own)] = -np.inf


def _positive_scores(query_rows: np.ndarray, doc_rows: np.ndarray,
                     positives: list[list[int]]) -> tuple[np.ndarray, list[list[float]]]:
    """Each anchor's lowest positive score (what margins are measured from), and every positive's."""
    import numpy as np

    pair_scores = [[float(query_rows[q] @ doc_rows[p]) for p in own] for q, own in enumerate(positives)]
    return np.array([min(s) for s in pair_scores], dtype=np.float32), pair_scores


def _apply_filters(scores: np.ndarray, lowest: np.ndarray, **limits: float | None) -> dict[str, int]:
    """Drop (score -inf) the candidates each limit rules out, in sentence-transformers' order;
    returns how many each dropped."""
    import numpy as np

    rules = {
        "absolute_margin": lambda m: scores + m > lowest[:, None],
        "relative_margin": lambda m: scores > (lowest - np.abs(lowest) * m)[:, None],
        "max_score": lambda m: scores > m,
        "min_score": lambda m: (scores < m) & np.isfinite(scores),
    }
    skipped = {}
    for name, rule in rules.items():
        limit = limits[name]
        if limit is None:
            continue
        removed = rule(limit)
        scores[removed] = -np.inf
        if removed.any():
            skipped[name] = int(removed.sum())
    return skipped


def _pick(scores: np.ndarray, found: np.ndarray, range_min: int, range_max: int, num_negatives: int, sampling: str,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The negatives of each anchor: its candidates ranked by what is left of their scores,
    ranks ``range_min`` to ``range_max``, then the first ``num_negatives`` or a random draw of
    them (among those not dropped, best first)."""
    import numpy as np

    order = np.argsort(-scores, axis=1, kind="stable")[:, :range_max][:, range_min:]
    window, ranked = np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1)
    if sampling == "top":
        return ranked[:, :num_negatives], window[:, :num_negatives]
    rng = random.Random(seed)
    rows = np.arange(len(window))[:, None]
    options = np.maximum(np.isfinite(window).sum(1), num_negatives)
    drawn = np.array([rng.sample(range(n), k=num_negatives) for n in options.tolist()], dtype=np.int64)
    drawn_scores, drawn_found = window[rows, drawn], ranked[rows, drawn]
    best_first = np.argsort(-drawn_scores, axis=1, kind="stable")
    return np.take_along_axis(drawn_found, best_first, 1), np.take_along_axis(drawn_scores, best_first, 1)


def _triplets(queries: list[Any], docs: list[Any], positives: list[list[int]], pair_scores: list[list[float]],
              chosen: np.ndarray, chosen_scores: np.ndarray) -> MinedNegatives:
    """One triplet per ``(anchor, positive)`` pair and negative found, grouped by anchor."""
    import numpy as np

    anchors, pos, neg, pos_scores, neg_scores = [], [], [], [], []
    short = 0
    for q, own in enumerate(positives):
        kept = [(int(d), float(s)) for d, s in zip(chosen[q], chosen_scores[q]) if np.isfinite(s)]
        short += len(own) * (len(kept) < chosen.shape[1])
        for p, p_score in zip(own, pair_scores[q]):
            for d, d_score in kept:
                anchors.append(queries[q])
                pos.append(docs[p])
                neg.append(docs[d])
                pos_scores.append(p_score)
                neg_scores.append(d_score)
    return MinedNegatives(Pairs(anchors, pos, neg), pos_scores, neg_scores, short=short)
