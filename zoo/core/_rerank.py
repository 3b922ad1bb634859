"""What a reranker's verbs share: pairs as inputs, and scores turned into a ranking.

A reranker (a model of kind ``reranker``) scores ``(query, document)`` pairs. Its verbs,
:meth:`zoo.Model.score` and :meth:`zoo.Model.rerank`, run through the one featurize engine like every
other verb: each pair is decoded by the tower's own decoder (a text pair by the text modality's),
pairs are batched by their encoder (longest first by token count), and a bad pair is an error naming
its index, or skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.errors import Unreadable

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Ranked:
    """One document of a ranking: its position in the documents given, its score and, when asked,
    the document itself (None otherwise). Unpacks as ``index, score, document``."""

    index: int
    score: float
    document: Any = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.index, self.score, self.document))


class PairDecode:
    """Decodes a ``(query, document)`` pair with the tower's decoder for each side (a class, so it
    pickles to decode workers)."""

    def __init__(self, decode: Callable[[Any], Any]) -> None:
        self.decode = decode

    def __call__(self, item: Any) -> tuple[Any, Any]:
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise TypeError(f"expected a (query, document) pair, got {_shape(item)}")
        for side in item:
            if isinstance(side, Unreadable):  # a line of a file that did not decode: say why
                raise ValueError(side.reason)
        return self.decode(item[0]), self.decode(item[1])


def _shape(item: Any) -> str:
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        return f"a {type(item).__name__} of {len(item)}"
    return f"a {type(item).__name__}"


def ranking(scores: np.ndarray, kept: Sequence[int], documents: Sequence[Any] | None,
            top_k: int | None) -> list[Ranked]:
    """The documents by descending score, ties in their given order (as sentence-transformers'
    ``CrossEncoder.rank`` sorts), the first ``top_k``. ``kept[i]`` is the document index of
    ``scores[i]`` (skipped documents are not ranked)."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")[:top_k]
    return [Ranked(int(kept[i]), float(scores[i]), documents[kept[i]] if documents is not None else None)
            for i in order]


def check_top_k(top_k: int | None) -> None:
    """``top_k`` is None (every document) or a positive integer."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (every document), not {top_k!r}")
