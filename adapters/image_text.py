"""What image-text (CLIP-style) encoders share: two towers into one embedding space.

The model's towers are ``{"vision": the image encoder (this), "text": its TextTower}``, so
``model.featurize(images)`` and ``model.featurize(texts, tower="text")`` (or ``featurize_texts``)
embed into the same space. Both L2-normalise by default, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from zoo.core._blocks import default_blocks
from zoo.core._encoder import Encoder

from .device_images import DecodesImages, ImageBatcher

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec


class ImageTextAdapter(DecodesImages, Encoder):
    """A contrastive image-text model; subclasses implement the two towers and tokenisation."""

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, image_transform: Callable[[Any], Any],
                 tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.image_transform = image_transform
        self.images = ImageBatcher(image_transform, self.device)
        self.tokenizer = tokenizer
        self.text_tower = TextTower(self)

    @property
    def preprocess(self) -> dict[str, Any]:
        """``{"image": transform, "text": tokenizer}`` bound to these weights."""
        return {"image": self.image_transform, "text": self.tokenizer}

    def towers(self) -> Mapping[str, Encoder]:
        return {"vision": self, "text": self.text_tower}

    # -- the two towers -------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> Any:
        """Token ids (and whatever else the text tower needs) for a batch of texts."""
        raise NotImplementedError

    def encode_batch(self, batch: Any, *, pool: str | None = None) -> torch.Tensor:
        return self.encode_images(batch)

    def encode_images(self, pixels: Any) -> torch.Tensor:
        raise NotImplementedError

    def encode_texts(self, tokens: Any) -> torch.Tensor:
        raise NotImplementedError

    def image_tower(self) -> tuple[str, torch.nn.Module]:
        """``(module path, module)`` of the image encoder: what classification finetunes."""
        raise NotImplementedError

    def image_prefixes(self) -> tuple[str, ...]:
        """The module paths of every part of the image side (its encoder and any projection after
        it): what ``lock=("vision",)`` keeps frozen; every other module but the learned
        temperature and bias is the text side."""
        return (self.image_tower()[0],)

    def blocks(self) -> list[list[str]]:
        prefix, tower = self.image_tower()
        return [[f"{prefix}.{name}" for name in block] for block in default_blocks(tower)]


class TextOwner(Protocol):
    """A two-tower model whose text side :class:`TextTower` serves (image-text, audio-text)."""

    spec: ModelSpec
    model: torch.nn.Module
    files: Any
    device: str
    dtype: Any
    tokenizer: Any

    def tokenize(self, texts: list[str]) -> Any: ...

    def encode_texts(self, tokens: Any) -> torch.Tensor: ...


class TextTower(Encoder):
    """The text encoder of a two-tower model: the same weights, texts tokenised in input order."""

    parallel_decode = False  # tokenised here, a batch at a time

    def __init__(self, owner: TextOwner) -> None:
        super().__init__(owner.spec, owner.model, files=owner.files, device=owner.device, dtype=owner.dtype)
        self.owner = owner

    @property
    def preprocess(self) -> Any:
        return self.owner.tokenizer

    def collate(self, items: list[str]) -> Any:
        """The owner's tokenisation of a batch of texts (batched in input order)."""
        return self.owner.tokenize(items)

    def encode_batch(self, batch: Any, *, pool: str | None = None) -> torch.Tensor:
        return self.owner.encode_texts(batch)


def features_output(out: Any) -> torch.Tensor:
    """A transformers ``get_*_features`` result as float32 rows: transformers 5 returns a
    ModelOutput whose ``pooler_output`` is the projected embedding, 4.x the tensor itself."""
    return getattr(out, "pooler_output", out).float()


class FeaturesTextSide:
    """The text side of a transformers two-tower model (CLIP, CLAP, X-CLIP): its tokenizer, texts
    padded to the longest of the batch, and ``get_text_features``."""

    model: Any
    tokenizer: Any
    device: str

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))

    def encode_texts(self, tokens: dict[str, Any]) -> torch.Tensor:
        return features_output(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
