"""A reranker: sentence-transformers' ``CrossEncoder``, run by its own module pipeline.

``CrossEncoder(folder)`` reads every format the library has written (its ``modules.json`` since v6,
the ``config.json`` marks of v2-v5, a plain sequence classifier, a causal language model scored by
its "yes" / "no" logits with a ``LogitScore`` module) and zoo drives it inside the featurize engine:
pairs batched by token count, progress, skip mode and named errors stay zoo's, the scores are the
library's (its tokenisation of the pair, its forward pass, its ``activation_fn``), as
``CrossEncoder.predict`` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import Built, Encoder, ExportPlan
from zoo.errors import ModelFormatError, UnsupportedOptionError

from .hf_folders import read_json
from .sentence_transformers import load_sentence_transformers, save_st
from .transformers import TransformersAdapter

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


class CrossEncoderAdapter(TransformersAdapter):
    """A ``CrossEncoder``; ``model`` is the ``CrossEncoder`` itself, ``embed_dim`` its number of
    labels (one relevance score for a reranker). Its items are decoded ``(query, document)`` pairs."""

    pooling_modes: tuple[str, ...] = ()
    strategies: ClassVar[tuple[str, ...]] = ()  # finetuning a reranker is not a zoo verb yet

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False, device_map: Any = None) -> Built:
        root = files.root
        _check_activation(root, trust_remote_code)
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype, model_class="CrossEncoder",
                                                    trust_remote_code=trust_remote_code, device_map=device_map)
        max_length = settled["preprocessing"].get("max_length")
        changes = {"kind": "reranker", "normalize": False, **settled,
                   "config": {**spec.config, "activation": type(model.activation_fn).__name__}}
        return Built(model, int(model.num_labels), changes, {"tokenizer": model.tokenizer, "max_length": max_length},
                     placed=device_map is not None)

    # -- scoring --------------------------------------------------------------------------------

    def lengths(self, items: Sequence[Any]) -> list[int]:
        """Each pair's token count, query and document tokenised together and truncated as the
        model truncates them."""
        queries, documents = [q for q, _ in items], [d for _, d in items]
        encoded = self.tokenizer(queries, documents, truncation=True, max_length=self.max_length,
                                 return_length=True, return_attention_mask=False, return_token_type_ids=False)
        return list(encoded["length"])

    # Longest pairs first by token count (Encoder's batching by lengths()), as for a
    # sentence-transformers pipeline, not TransformersAdapter's single tokenising pass.
    plan_batches = Encoder.plan_batches

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """The batch's pairs; :meth:`encode_batch` preprocesses them with the call's prompt."""
        return {"pairs": [[q, d] for q, d in items]}

    def prompt_features(self, prompt: str) -> dict[str, Any]:
        """The prompt travels to sentence-transformers' preprocessing, which places it itself."""
        return {"prompt": prompt}

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        """``(B, num_labels)`` scores as ``CrossEncoder.predict`` gives them: its preprocessing of
        the pairs (and prompt), the pipeline's ``scores`` in float32, the model's ``activation_fn``."""
        features = self.model.preprocess(batch["pairs"], prompt=batch.get("prompt"))
        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
        scores = self.model(features)["scores"].float()
        scores = self.model.activation_fn(scores)
        return scores.reshape(scores.shape[0], -1)

    # -- what a reranker does not do ------------------------------------------------------------

    def export_plan(self) -> ExportPlan:
        raise UnsupportedOptionError(f"{self.name} is a reranker: it runs on PyTorch (runtime='torch')")

    def save(self, directory: Any) -> Path:
        """The reranker as sentence-transformers saves it, with zoo's manifest beside it."""
        return save_st(self, directory)


def _check_activation(root: Path, trust_remote_code: bool) -> None:
    """An activation named by a class outside torch is code the folder brings; sentence-transformers
    would quietly swap in its default for it, which changes every score, so zoo refuses by name."""
    for name, keys in (("config_sentence_transformers.json", ("activation_fn",)),
                       ("config.json", ("sentence_transformers", "activation_fn")),
                       ("config.json", ("sbert_ce_default_activation_function",))):
        value: Any = read_json(root / name) if (root / name).is_file() else {}
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and not value.startswith("torch.") and not trust_remote_code:
            raise ModelFormatError(f"{root / name} names activation {value!r}, code from outside torch; zoo runs "
                                   "it only with zoo.load(..., trust_remote_code=True)")
