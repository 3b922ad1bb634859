"""transformers image-text models (CLIP, SigLIP, ...): ``get_image_features`` / ``get_text_features``
with the model's own processor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Built

from .image_text import FeaturesTextSide, ImageTextAdapter, features_output
from .transformers import TransformersFamily, load_model_and_processor

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


class HFImageTextAdapter(FeaturesTextSide, TransformersFamily, ImageTextAdapter):

    def __init__(self, *args: Any, padding: bool | str = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.padding = padding

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        from transformers import AutoModel, AutoProcessor

        model, processor = load_model_and_processor(files.root, AutoModel, AutoProcessor, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        dim = int(getattr(model.config, "projection_dim", 0) or model.config.text_config.hidden_size)
        # SigLIP was trained on texts padded to the full length; CLIP pads to the longest.
        padding = "max_length" if "siglip" in model.config.model_type else True

        def transform(image: Any) -> torch.Tensor:
            return processor(images=image, return_tensors="pt")["pixel_values"][0]

        return Built(model, dim, spec_changes={"normalize": True},  # CLIP's and SigLIP's cosine
                     parts={"image_transform": transform, "tokenizer": processor.tokenizer,
                                        "padding": padding})

    def image_tower(self) -> tuple[str, torch.nn.Module]:
        return "vision_model", self.model.vision_model

    def image_prefixes(self) -> tuple[str, ...]:
        """CLIP projects the image encoder's output with ``visual_projection`` (SigLIP has none)."""
        return ("vision_model", *(["visual_projection"] if hasattr(self.model, "visual_projection") else []))

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        return dict(self.tokenizer(texts, padding=self.padding, truncation=True, return_tensors="pt"))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return features_output(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
