"""transformers image encoders (ViT, DINOv2, ConvNeXt, ...) with their own image processors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.adapter import Built

from .image import ImageBackboneAdapter
from .transformers import TransformersFamily, load_model_and_processor

if TYPE_CHECKING:
    import torch

    from zoo.model_files import ModelFiles
    from zoo.spec import ModelSpec


class HFVisionAdapter(TransformersFamily, ImageBackboneAdapter):
    """``cls`` (the class token: DINOv2's and ViT's embedding), ``mean`` of patch tokens, or ``pooler``."""

    pooling_modes = ("cls", "mean", "pooler")

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        from transformers import AutoImageProcessor, AutoModel

        model, processor = load_model_and_processor(files.root, AutoModel, AutoImageProcessor, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        config = model.config
        # Convolutional models have no tokens: their pooled output is the embedding.
        default_pool = "cls" if hasattr(config, "patch_size") else "pooler"

        def transform(image: Any) -> torch.Tensor:
            return processor(images=image, return_tensors="pt")["pixel_values"][0]

        return Built(model, int(getattr(config, "hidden_size", 0) or config.hidden_sizes[-1]),
                     {"pooling": spec.pooling or default_pool}, {"transform": transform})

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype)

    def encode_batch(self, batch: torch.Tensor, *, pool: str | None = None) -> torch.Tensor:
        out = self.model(pixel_values=self._to_device(batch))
        if pool == "pooler" or out.last_hidden_state.ndim != 3:
            return out.pooler_output.flatten(1).float()
        hidden = out.last_hidden_state.float()
        return hidden[:, 0] if pool == "cls" else hidden[:, 1:].mean(1)
