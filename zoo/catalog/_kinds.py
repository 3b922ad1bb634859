"""Model kinds: what a model gives, which verbs it answers, and (for kinds that give rows) the
:class:`~zoo.core._rows.RowFormat` that ``zoo embed``, ``zoo index`` and ``zoo search`` store and
search them with.

zoo registers ``embedder`` (dense rows), ``reranker`` (scores of pairs) and ``multi-vector`` (one
matrix of token vectors per item, ColBERT-style); a plugin registers more
(:func:`zoo.hookspecs.zoo_register_kinds`): sparse term weights. A verb asked of a model of another
kind is refused by name, with what the model does instead.
"""

from __future__ import annotations

from typing import Any

from zoo.errors import UnsupportedModelKindError

from ._registry import DENSE_ROWS, Kind, get_registry
from ._spec import a_kind


def wrong_kind(name: str, kind: str, asked: str, why: str = "") -> UnsupportedModelKindError:
    """The error for ``name``, of ``kind``, where ``asked`` is needed: what it does and what to use."""
    kinds = get_registry().kinds
    does = f"it {kinds[kind].description}" if kind in kinds else f"no installed plugin registers kind {kind!r}"
    use = {"reranker": "a reranker (a CrossEncoder folder, or a catalogue entry that zoo list shows with "
                       "'rerank' in its dim column)",
           "embedder": "an embedder (zoo list shows its width in the dim column)"}.get(asked, a_kind(asked))
    return UnsupportedModelKindError(f"{name} is {a_kind(kind)}{f' ({why})' if why else ''}, not {a_kind(asked)}: "
                                     f"{does}; use {use}")


def refuse_verb(name: str, kind: Kind, verb: str) -> UnsupportedModelKindError:
    """The error for ``verb`` asked of ``name``, a model of ``kind`` that does not answer it."""
    serving = [k.name for k in get_registry().kinds.values() if verb in k.verbs]
    return UnsupportedModelKindError(f"{name} is {a_kind(kind.name)}: it {kind.description}; {verb} needs "
                                     f"{' or '.join(a_kind(k) for k in serving) or 'a kind no plugin registers'}")


def builtin_kinds(register: Any) -> None:
    """zoo's own kinds (called by its defaults plugin)."""
    register("embedder", description="embeds inputs as one dense vector each (featurize, zoo embed, zoo search); "
                                     "it does not score pairs",
             verbs=("featurize", "classify", "finetune"), rows=DENSE_ROWS)
    register("reranker", description="scores (query, document) pairs (model.rerank, model.score, zoo rerank, "
                                     "zoo search --rerank); it gives no embeddings",
             verbs=("score", "rerank"))
    register("multi-vector", description="embeds each input as a matrix of token vectors, scored by MaxSim late "
                                         "interaction (featurize, zoo embed, zoo search); it gives no single vector",
             verbs=("featurize",), rows="zoo.core._token_rows:MultiVectorRows")
