"""transformers image encoders (ViT, DINOv2, ConvNeXt, Swin, ...) with their own image processors.

The default pooling is what the model type's own ``*ForImageClassification`` head reads: the
class token for ViT and DeiT, the model's pooled output for the others (Swin's and BEiT's average
of patch tokens, the convolutional models' global pool). DINOv2's head reads its class token beside
the patches' mean; its embedding is the class token. A model type zoo has no such entry for is
refused by name rather than pooled by a guess."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Built
from zoo.errors import ModelFormatError

from .hf_folders import CLASS_TOKEN_TYPES, HEAD_POOLING
from .image import ImageBackboneAdapter
from .transformers import TransformersFamily, load_model_and_processor

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


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
        default_pool = head_pooling(spec, config, files.root, "vision")

        def transform(image: Any) -> torch.Tensor:
            return processor(images=image, return_tensors="pt")["pixel_values"][0]

        width = getattr(config, "hidden_size", 0) or getattr(config, "hidden_dim", 0) or config.hidden_sizes[-1]
        return Built(model, int(width),
                     {"pooling": default_pool}, {"transform": transform})

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.dtype)

    def encode_batch(self, batch: torch.Tensor, *, pool: str | None = None) -> torch.Tensor:
        return pool_output(self.model(pixel_values=self._to_device(batch)), self.model.config, pool, self.name)


def head_pooling(spec: ModelSpec, config: Any, root: Path, what: str) -> str:
    """The pooling a registry entry names, else what the model type's own classification head
    reads (:data:`~zoo.adapters.hf_folders.HEAD_POOLING`); a model type with no such rule is an
    error naming its config, never a guess."""
    pool = spec.pooling or HEAD_POOLING.get(config.model_type)
    if pool is None:
        raise ModelFormatError(
            f"{root / 'config.json'}: model_type {config.model_type!r} is a {what} model zoo has no pooling rule "
            f"for (it knows {', '.join(sorted(HEAD_POOLING))}); name one in a registry entry (pooling: cls, mean "
            "or pooler)")
    return pool


def pool_output(out: Any, config: Any, pool: str | None, name: str) -> torch.Tensor:
    """One row per input from a transformers vision or video model's output: its ``pooler`` output,
    its class token (``cls``), or the ``mean`` of its patch tokens (after the class token and any
    register tokens); a feature map (a convolutional model) is averaged over space."""
    if pool == "pooler":
        return out.pooler_output.flatten(1).float()
    if out.last_hidden_state.ndim != 3:  # a feature map: no tokens
        if pool == "cls":
            raise ValueError(f"{name} ({config.model_type}) is convolutional: it has no class token; use "
                             "pool='pooler' or 'mean'")
        return out.last_hidden_state.float().mean(dim=(2, 3))
    hidden = out.last_hidden_state.float()
    has_class_token = config.model_type in CLASS_TOKEN_TYPES
    if pool == "cls":
        if not has_class_token:
            raise ValueError(f"{name} ({config.model_type}) has no class token; use pool='pooler' or 'mean'")
        return hidden[:, 0]
    skip = int(has_class_token) + int(getattr(config, "num_register_tokens", 0) or 0)
    return hidden[:, skip:].mean(1)
