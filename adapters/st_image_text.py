"""A sentence-transformers model over images and texts (a CLIP-style ``Transformer`` whose
``modality_config`` names ``text`` and ``image``, since sentence-transformers 5.4), run by the
library's own module pipeline.

Its two towers share one space: images go through the library's preprocessing of an image (the
model's processor) and the pipeline with ``modality: image``, texts through its preprocessing of a
text and the pipeline with ``modality: text``, as ``SentenceTransformer.encode`` does for each kind
of input. A model that takes an image and a text together in one input would give one row for the
pair; such combined inputs are not read yet, and a pipeline that takes only them is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import Built
from zoo.errors import ModelFormatError
from zoo.training._config import STRATEGIES

from .image_text import ImageTextAdapter
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
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles

#: the inputs such a pipeline takes, as its Transformer's modality_config names them
MODALITIES = frozenset({"text", "image"})


class STImageTextAdapter(TransformersFamily, ImageTextAdapter):
    """``model`` is the ``SentenceTransformer``; its first module wraps the transformers model."""

    # zoo's LoRA wraps a transformers model itself; this one sits inside the pipeline's first module
    strategies: ClassVar[tuple[str, ...]] = tuple(s for s in STRATEGIES if s != "lora")

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        root = files.root
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        check_feature_extraction(root, model)
        taken = set(getattr(model[0], "modality_config", None) or {})
        if taken != MODALITIES:
            raise ModelFormatError(f"{root}: a sentence-transformers pipeline for {', '.join(sorted(map(str, taken)))} "
                                   "inputs; zoo runs its image and text inputs, each alone")

        def transform(image: Any) -> torch.Tensor:  # the library's preprocessing of one image
            return model.preprocess([image])["pixel_values"][0]

        _check_image_features(root, model)
        return Built(model, output_width(model, root), {"normalize": ends_with_normalize(model), **settled},
                     {"image_transform": transform, "tokenizer": model.tokenizer})

    def image_tower(self) -> tuple[str, torch.nn.Module]:
        return "0.model.vision_model", self.model[0].model.vision_model

    def image_prefixes(self) -> tuple[str, ...]:
        inner = self.model[0].model
        return ("0.model.vision_model", *(["0.model.visual_projection"] if hasattr(inner, "visual_projection") else []))

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """The library's preprocessing of a batch of (already prompted) texts."""
        return dict(self.model.preprocess(as_texts(texts)))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._pipeline({"pixel_values": pixels.to(self.device, self.dtype), "modality": "image"})

    def encode_texts(self, tokens: dict[str, Any]) -> torch.Tensor:
        return self._pipeline({k: v.to(self.device) if hasattr(v, "to") else v for k, v in tokens.items()})

    def _pipeline(self, features: dict[str, Any]) -> torch.Tensor:
        return run_pipeline(self.model, features)

    def save(self, directory: Any) -> Path:
        """The pipeline as sentence-transformers saves it, with zoo's manifest beside it."""
        return save_st(self, directory)


def _check_image_features(root: Path, model: Any) -> None:
    """zoo batches an image as its pixels alone; a processor that gives more per image (SigLIP2's
    patch masks and shapes) would need them too."""
    from PIL import Image

    given = set(model.preprocess([Image.new("RGB", (32, 32))])) - {"pixel_values", "modality"}
    if given:
        raise ModelFormatError(f"{root}: its processor gives {', '.join(sorted(given))} with each image's pixels, "
                               "which zoo does not batch yet")
