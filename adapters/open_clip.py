"""open_clip models, loaded with open_clip's own ``local-dir:`` format (``open_clip_config.json`` plus
weights, as its hub repositories hold them) from a verified folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._spec import ModelSpec, Source, split_revision
from zoo.core._encoder import Built
from zoo.errors import UnknownModelError, ZooError, close_matches

from .image_text import ImageTextAdapter

if TYPE_CHECKING:
    import torch

    from zoo.store._model_files import ModelFiles

CONFIG = "open_clip_config.json"


class OpenClipAdapter(ImageTextAdapter):
    """``open_clip.create_model_and_transforms`` with ``encode_image`` / ``encode_text``."""

    backend = "open_clip"
    #: an open_clip ``CLIP`` (or ``CustomTextCLIP``): ``visual``, ``encode_image``, ``encode_text``
    model: Any

    @classmethod
    def spec_for_id(cls, backend: str, backend_id: str) -> ModelSpec:
        """``ARCH/TAG`` (e.g. ``ViT-B-32/laion2b_s34b_b79k``) -> the hub repository open_clip names."""
        import open_clip

        ident, revision = split_revision(backend_id)
        arch, _, tag = ident.partition("/")
        if arch not in open_clip.list_models():
            hits = [f"open_clip:{h}" for h in close_matches(arch, open_clip.list_models())]
            raise UnknownModelError(f"open_clip:{arch}", hits, hint="(see open_clip.list_models())")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise ZooError(f"open_clip {arch} has no pretrained tag {tag!r}; choose from {', '.join(tags) or 'none'}")
        hub = (open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") or "").strip("/")
        if not hub:
            raise ZooError(f"open_clip {arch}/{tag} is not on the Hugging Face Hub; zoo cannot fetch it")
        repo = "/".join(hub.split("/")[:2])
        return ModelSpec(name=f"open_clip:{backend_id}", modality="image-text", backend=backend, backend_id=ident,
                         sources=(Source("hub", repo, revision=revision),))

    @classmethod
    def spec_for_path(cls, path: Path) -> ModelSpec:
        return ModelSpec(name=str(path), modality="image-text", backend=cls.backend, backend_id=str(path),
                         sources=(Source("path", str(path)),))

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype) -> Built:
        import open_clip

        if not (files.root / CONFIG).is_file():
            raise ZooError(f"{files.root} has no {CONFIG}; expected open_clip's hub folder format")
        ident = f"local-dir:{files.root}"
        model, _, preprocess = open_clip.create_model_and_transforms(ident, device=device)
        config = json.loads((files.root / CONFIG).read_text())
        settled = {k: list(v) if isinstance(v, tuple) else v
                   for k, v in open_clip.get_model_preprocess_cfg(model).items()}  # what its transforms read
        return Built(model, int(config["model_cfg"]["embed_dim"]),
                     {"preprocessing": {**config.get("preprocess_cfg", {}), **settled, **spec.preprocessing},
                      "normalize": True},  # unit vectors: their dot product is the cosine CLIP trained on
                     {"image_transform": preprocess, "tokenizer": open_clip.get_tokenizer(ident)})

    def image_tower(self) -> tuple[str, torch.nn.Module]:
        return "visual", self.model.visual

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device, self.dtype))

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens.to(self.device))
