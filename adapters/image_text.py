"""What image-text (CLIP-style) adapters share: two towers into one embedding space.

``featurize(images)`` (the same call as every other modality) and ``featurize_images`` embed images;
``featurize_texts`` embeds texts into the same space. Both L2-normalise by default, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from zoo.adapter import Adapter
from zoo.blocks import default_blocks
from zoo.featurize import OnError
from zoo.plugins.text import decode_text

from .device_images import DecodesImages, ImageBatcher

if TYPE_CHECKING:
    import numpy as np
    import torch

    from zoo.spec import ModelSpec


class ImageTextAdapter(DecodesImages, Adapter):
    """A contrastive image-text model; subclasses implement the two towers and tokenisation."""

    normalize_default = True  # a dot product of unit vectors is the cosine similarity CLIP was trained on

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, image_transform: Callable[[Any], Any],
                 tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.image_transform = image_transform
        self.images = ImageBatcher(image_transform, self.device)
        self.tokenizer = tokenizer

    @property
    def preprocess(self) -> dict[str, Any]:
        """``{"image": transform, "text": tokenizer}`` bound to these weights."""
        return {"image": self.image_transform, "text": self.tokenizer}

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

    def _plan_texts(self, texts: Sequence[str], batch_size: int) -> Iterator[tuple[list[int], Any]]:
        for start in range(0, len(texts), batch_size):
            positions = list(range(start, min(start + batch_size, len(texts))))
            yield positions, self.tokenize([texts[i] for i in positions])

    def image_tower(self) -> tuple[str, torch.nn.Module]:
        """``(module path, module)`` of the image encoder: what classification finetunes."""
        raise NotImplementedError

    def blocks(self) -> list[list[str]]:
        prefix, tower = self.image_tower()
        return [[f"{prefix}.{name}" for name in block] for block in default_blocks(tower)]

    # -- public API -----------------------------------------------------------------------------

    def featurize_images(self, images: Iterable[Any], **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed images (paths, PIL images, arrays, tensors); the same as :meth:`featurize`."""
        return self.featurize(images, **kwargs)

    def featurize_texts(
        self,
        texts: Iterable[str],
        *,
        batch_size: int = 32,
        normalize: bool | None = None,
        return_tensors: Literal["np", "pt"] = "np",
        progress: bool | None = None,
        on_error: OnError = "raise",
        calibration: np.ndarray | None = None,
        **options: Any,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts into the image embedding space (same contract as :meth:`featurize`; the
        options ``prompt`` / ``prompt_text`` put a prompt before each text)."""
        return self._embed(texts, self._options(options.pop("options", None), options, texts=True),
                           encode=self.encode_texts, decode=decode_text, plan=self._plan_texts, batch_size=batch_size,
                           normalize=self.resolve_normalize(normalize), return_tensors=return_tensors,
                           progress=progress, on_error=on_error, calibration=calibration, desc="featurize texts")[0]
