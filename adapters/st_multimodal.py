"""A sentence-transformers model over a vision-language model (a VLM embedder whose Transformer
takes texts, images and chat messages, since sentence-transformers 5.4), run by the library's own
module pipeline: texts, images, and items that combine a text and an image
(``{"text": ..., "image": ...}``: one row for the pair), each through ``preprocess`` and the
pipeline as ``SentenceTransformer.encode`` runs them.

Its towers are ``vision`` (images), ``text`` and ``combined`` (the combined items, a modality of
their own: ``zoo/plugins/combined.py``); all three give rows of one space.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import Built, Encoder
from zoo.errors import ModelFormatError, UnsupportedOptionError
from zoo.plugins.combined import COMBINED

from .sentence_transformers import (
    as_texts,
    check_feature_extraction,
    ends_with_normalize,
    load_sentence_transformers,
    output_width,
    run_pipeline,
    save_st,
)
from .transformers import TransformersFamily

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


class STMultimodalAdapter(TransformersFamily, Encoder):
    """``model`` is the ``SentenceTransformer``; this encoder is its image tower."""

    strategies: ClassVar[tuple[str, ...]] = ()  # finetuning a VLM embedder is not a zoo verb yet
    parallel_decode: ClassVar[bool] = False  # the library's processor runs a batch at a time, here

    def __init__(self, spec: ModelSpec, model: Any, *, tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.tokenizer = tokenizer
        self._others = {"text": PipelineTower(self, as_texts), COMBINED: PipelineTower(self)}

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        root = files.root
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        check_feature_extraction(root, model)
        if not {"text", "image", "message"} <= set(model.modalities):
            raise ModelFormatError(f"{root}: a sentence-transformers pipeline for {', '.join(model.modalities)} "
                                   "inputs; zoo runs those of texts, images and their combinations (chat messages)")
        prompts = [name for name, text in settled["prompts"].items() if text]  # "" placeholders put nothing in
        if prompts:  # the library puts a message model's prompts in as a system message
            raise ModelFormatError(f"{root}: its prompts ({', '.join(prompts)}) go in as a system message, which zoo "
                                   "does not place yet")
        return Built(model, output_width(model, root), {"normalize": ends_with_normalize(model), **settled},
                     {"tokenizer": model.tokenizer})

    @property
    def preprocess(self) -> Any:
        """The model's processor (its tokenizer, image processor and chat template)."""
        return self.model[0].processor

    def towers(self) -> Mapping[str, Encoder]:
        return {"vision": self, **self._others}

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """The library's preprocessing of a batch of one kind of input (images, texts or combined
        items), which it recognises from the items themselves."""
        return dict(self.model.preprocess(items))

    def prompt_features(self, prompt: str) -> dict[str, Any] | None:
        raise UnsupportedOptionError(f"{self.name} takes a prompt as a system message, which zoo does not place "
                                     "yet; leave prompt and prompt_text unset")

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        return run_pipeline(self.model, {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()})

    def save(self, directory: Any) -> Path:
        """The pipeline as sentence-transformers saves it, with zoo's manifest beside it."""
        return save_st(self, directory)


class PipelineTower(Encoder):
    """Another tower of the same pipeline (texts, combined items): the owner's preprocessing and
    forward pass, for that kind of input."""

    parallel_decode: ClassVar[bool] = False
    strategies: ClassVar[tuple[str, ...]] = ()

    def __init__(self, owner: STMultimodalAdapter, wrap: Callable[[list[Any]], list[Any]] = list) -> None:
        super().__init__(owner.spec, owner.model, files=owner.files, device=owner.device, dtype=owner.dtype)
        self.owner, self.wrap = owner, wrap  # wrap: texts as explicit text inputs

    @property
    def preprocess(self) -> Any:
        return self.owner.preprocess

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return self.owner.collate(self.wrap(items))

    def prompt_features(self, prompt: str) -> dict[str, Any] | None:
        return self.owner.prompt_features(prompt)

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        return self.owner.encode_batch(batch, pool=pool)
