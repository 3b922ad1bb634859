"""A multi-vector (late-interaction, ColBERT-style) model: sentence-transformers'
``MultiVectorEncoder``, run by its own module pipeline.

``MultiVectorEncoder(folder)`` reads every format such models ship in: its own save, PyLate's
(``model_type: ColBERT``, the prefixes and lengths at the top level), and Stanford-NLP ColBERT
checkpoints (``HF_ColBERT`` with the projection at the root and ``artifact.metadata``). zoo drives
it inside the featurize engine as ``encode_query`` / ``encode_document`` do: the role's prompt put
before each text (a ColBERT's ``[Q]`` / ``[D]`` marker), the library's preprocessing for the role
(``task``: the query length, the ``[MASK]`` expansion of queries, the document length), the
modules' forward pass, each input's token vectors where the scoring mask keeps them (the
``MultiVectorMask``'s skiplist), then the model's own token pooling and ``truncate_dim``. The
numbers are the library's; batching by token count, progress, skip mode and provenance are zoo's.

A page-image retriever (ColPali, ColQwen2: a transformers ``*ForRetrieval`` folder, or one
sentence-transformers saved) is :class:`PageRetrieverAdapter`: its documents are images (a page
each, decoded by zoo's image decoder, then the library's processor and model), its queries texts,
through a text tower on the same weights; their token vectors score each other by MaxSim.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import Built, DeviceStage, Encoder, ExportPlan
from zoo.errors import ModelFormatError

from .sentence_transformers import load_sentence_transformers, output_width, preprocess_each, save_st
from .transformers import TransformersAdapter

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


class MultiVectorAdapter(TransformersAdapter):
    """A ``MultiVectorEncoder``; ``model`` is the encoder itself, ``embed_dim`` the width of a token
    vector. A batch gives one ``(tokens, embed_dim)`` tensor per input."""

    pooling_modes: tuple[str, ...] = ()
    strategies: ClassVar[tuple[str, ...]] = ()  # zoo's finetune trains single vectors and classifiers
    #: the role this copy runs (sentence-transformers' ``task``); None: ``encode``'s own path
    role: str | None = None
    #: the inputs the pipeline's Transformer must take (its ``modality_config``)
    takes: ClassVar[frozenset[str]] = frozenset({"text"})

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False, device_map: Any = None) -> Built:
        root = files.root
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype,
                                                    model_class="MultiVectorEncoder",
                                                    trust_remote_code=trust_remote_code, device_map=device_map)
        _check_inputs(root, model, cls.takes)
        dim = output_width(model, root)  # a token vector's
        changes = {"kind": "multi-vector", "normalize": False, **settled,
                   "config": {**spec.config, "similarity": model.similarity_fn_name}}
        tokenizer = getattr(model.tokenizer, "tokenizer", model.tokenizer)  # a processor's own tokenizer
        return Built(model, int(dim), changes,
                     {"tokenizer": tokenizer, "max_length": settled["preprocessing"].get("max_length")},
                     placed=device_map is not None)

    def for_role(self, role: str | None) -> Encoder:
        """A copy (sharing the model) that preprocesses and runs inputs as ``role``'s."""
        if role == self.role:
            return self
        runner = copy.copy(self)
        runner.role = role
        return runner

    # -- featurize ------------------------------------------------------------------------------

    # Longest first by token count (Encoder's batching by lengths()), each batch through the
    # library's own preprocessing for the role.
    plan_batches = Encoder.plan_batches

    def lengths(self, items: Sequence[Any]) -> list[int]:
        return list(self.tokenizer(list(items), truncation=self.max_length is not None, max_length=self.max_length,
                                   return_length=True, return_attention_mask=False,
                                   return_token_type_ids=False)["length"])

    def collate(self, items: list[str]) -> dict[str, Any]:
        """sentence-transformers' preprocessing of the (already prompted) texts as the role's."""
        return dict(self.model.preprocess(items, task=self.role))

    # One tensor per input, not a (B, D) tensor: the multi-vector kind's TokenBuffer takes them.
    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> list[torch.Tensor]:  # type: ignore[override]
        """Each input's token vectors as ``MultiVectorEncoder.encode`` returns them: where the
        pipeline's scoring mask keeps them, then the model's token pooling and ``truncate_dim``."""
        import torch

        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
        features = self.model(features, task=self.role)
        masks = features["attention_mask"].bool()
        rows = [tokens[mask] for tokens, mask in zip(features["token_embeddings"], masks)]
        if self.model.token_pooling is not None:
            rows = self.model.token_pooling.pool(rows, task=self.role)
        if self.model.truncate_dim is not None:
            rows = [torch.nn.functional.normalize(row[..., :self.model.truncate_dim].float(), dim=-1) for row in rows]
        return [row.float() for row in rows]

    def export_plan(self) -> ExportPlan:
        return Encoder.export_plan(self)  # token matrices run on PyTorch only

    def save(self, directory: Any) -> Path:
        """The model as sentence-transformers saves it, with zoo's manifest beside it."""
        return save_st(self, directory)


def _check_inputs(root: Path, model: Any, takes: frozenset[str]) -> None:
    """The pipeline takes the inputs its folder said (the loader read them from its config)."""
    modalities = {str(m) for m in getattr(model[0], "modality_config", None) or {"text": None}}
    if modalities != takes:
        raise ModelFormatError(f"{root}: a multi-vector pipeline for {', '.join(sorted(modalities))} inputs, where "
                               f"its files said {', '.join(sorted(takes))}")


class PageRetrieverAdapter(MultiVectorAdapter):
    """A page-image retriever: this encoder embeds the pages (images), its ``text`` tower the
    queries, both through the library's preprocessing for the role and its forward pass."""

    takes: ClassVar[frozenset[str]] = frozenset({"text", "image"})
    parallel_decode: ClassVar[bool] = True  # pages decode in the workers
    # Pages decode a batch at a time and batch in input order: sorting them by size would hold
    # every decoded page (megabytes each) in memory before the first batch.
    lengths = Encoder.lengths  # type: ignore[assignment]

    def __init__(self, spec: ModelSpec, model: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.text_tower = MultiVectorAdapter(spec, model, tokenizer=self.tokenizer, max_length=self.max_length,
                                             files=self.files, device=self.device, dtype=self.dtype)

    @property
    def preprocess(self) -> Any:
        """The model's processor (its image processor and tokenizer)."""
        return self.model[0].processor

    def towers(self) -> Mapping[str, Encoder]:
        return {"vision": self, "text": self.text_tower}

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return {"items": list(items)}

    def device_stage(self) -> DeviceStage:
        """The library preprocesses each batch of decoded pages in the model's process, so a page
        its processor refuses (sides too unequal) is named by its row and the others go on."""
        return DeviceStage(self.decode, self.preprocessed)

    def preprocessed(self, batch: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[int, str]]]:
        """sentence-transformers' preprocessing of the pages as the role's, and the rows it refused."""
        return preprocess_each(lambda pages: self.model.preprocess(pages, task=self.role), batch["items"])
