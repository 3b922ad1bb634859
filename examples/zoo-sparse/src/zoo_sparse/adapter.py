"""A sentence-transformers ``SparseEncoder`` folder (SPLADE: ``MLMTransformer`` + ``SpladePooling``,
or any pipeline of its modules), run by sentence-transformers' own modules.

zoo drives the pipeline inside its featurize engine, as it does a ``SentenceTransformer``: texts
batched by token count, each batch through ``SparseEncoder.preprocess`` and the modules' forward
pass, then ``select_max_active_dims`` where the model (or its config) caps the active dimensions,
the steps ``SparseEncoder.encode`` takes (``max_active_dims`` also goes to the modules' forward
pass, where a ``SparseAutoEncoder`` takes it as its ``k``). The numbers are the library's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zoo import Built, Encoder, load_sentence_transformers

if TYPE_CHECKING:
    import torch

    from zoo import ModelFiles, ModelSpec

# Modules that send queries and documents through different paths (inference-free SPLADE: a static
# term weighting for queries, the masked-LM model for documents).
_ROUTERS = ("Router", "Asym")


class SparseEncoderAdapter(Encoder):
    """``model`` is the ``SparseEncoder`` itself; rows are its ``(B, vocabulary)`` term weights."""

    backend = "sparse-encoder"
    strategies = ()  # zoo's finetune trains dense embeddings and classifiers, not term weights
    role: str | None = None  # the role this copy runs (a routed pipeline's); None: encode's own path

    def __init__(self, spec: ModelSpec, model: Any, *, tokenizer: Any = None, max_length: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.tokenizer, self.max_length = tokenizer, max_length

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        root = files.root
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype, model_class="SparseEncoder",
                                                    trust_remote_code=trust_remote_code)
        # SpladePooling learns its width on its first forward pass (get_embedding_dimension() says
        # the transformer's hidden size before that): one probe text through the pipeline says it,
        # through the documents' path where queries take another.
        dim = int(model.encode(["."], convert_to_sparse_tensor=False, show_progress_bar=False,
                               **({"task": "document"} if _routed(model) else {})).shape[-1])
        if model.max_active_dims:
            settled["preprocessing"] = {**settled["preprocessing"], "max_active_dims": model.max_active_dims}
        changes = {"kind": "sparse-encoder", "normalize": False, **settled}
        return Built(model, int(dim), changes,
                     {"tokenizer": model.tokenizer, "max_length": settled["preprocessing"].get("max_length")})

    def for_role(self, role: str | None) -> Encoder:
        """A routed pipeline (inference-free SPLADE) runs queries and documents through different
        modules: a copy sharing the model runs ``role``'s, as ``encode_query`` / ``encode_document``
        do. Any other pipeline encodes both alike: this encoder."""
        if not _routed(self.model) or role == self.role:
            return self
        runner = copy.copy(self)
        runner.role = role
        return runner

    @property
    def preprocess(self) -> Any:
        return self.tokenizer

    @property
    def vocabulary(self) -> list[str] | None:
        """Each dimension's token, in order (the tokenizer's; ``[i]`` for an id it has no token for),
        or None where the dimensions are not tokens (a ``SparseAutoEncoder``'s learned features)."""
        if any(type(module).__name__ == "SparseAutoEncoder" for module in self.model):
            return None
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(self.embed_dim)))
        return [token if token is not None else f"[{i}]" for i, token in enumerate(tokens)]

    # Longest first by token count, as SparseEncoder.encode sorts its inputs.
    def lengths(self, items: Sequence[Any]) -> list[int]:
        return list(self.tokenizer(list(items), truncation=True, max_length=self.max_length, return_length=True,
                                   return_attention_mask=False, return_token_type_ids=False)["length"])

    def collate(self, items: list[str]) -> dict[str, Any]:
        """sentence-transformers' own preprocessing of the (already prompted) texts, for the role."""
        return dict(self.model.preprocess(items, **self._task))

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        from sentence_transformers.util import select_max_active_dims

        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}
        cap = self.model.max_active_dims
        rows = self.model(features, **self._task, **({"max_active_dims": cap} if cap is not None else {})
                          )["sentence_embedding"]
        if cap is not None:
            rows = select_max_active_dims(rows, max_active_dims=cap)
        return rows.float()

    @property
    def _task(self) -> dict[str, str]:
        """The role as sentence-transformers' ``task`` keyword, where this copy runs one."""
        return {"task": self.role} if self.role is not None else {}


def _routed(model: Any) -> bool:
    """Whether the pipeline sends queries and documents through different modules."""
    return any(type(module).__name__ in _ROUTERS for module in model)
