"""A finetuned model: the base model with its trained backbone weights, where they changed, plus a
classification head (``objective: classification``) or none (``contrastive``: the embedding
itself trained), saved as safetensors with a ``zoo.json`` manifest and loaded by ``zoo.load``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._spec import ModelSpec, Source
from zoo.core._encoder import Built, Encoder
from zoo.core._model import Head, Model
from zoo.errors import IntegrityError
from zoo.store._manifest import MANIFEST, read_json

from ._checkpoints import load_tensors
from ._heads import build_head
from ._lora import apply_saved_backbone

if TYPE_CHECKING:
    from zoo.store._model_files import ModelFiles

FORMAT = "zoo-finetuned/1"


class FinetunedCheckpoint(Encoder):
    """The ``finetuned`` backend: a folder ``finetune`` wrote, loaded as its base model (which the
    loader loads first, as ``spec.requires`` names it) with the trained head and backbone weights.
    Never an encoder itself: :meth:`attach` returns the base's :class:`~zoo.core._model.Model` facade
    over the same encoder, with a :class:`~zoo.core._model.Head`."""

    backend = "finetuned"
    strategies = ()  # finetune the base model instead

    @classmethod
    def spec_for_path(cls, path: Path, manifest: dict[str, Any]) -> ModelSpec:
        base = manifest["base"]
        name = str(base["model"])
        head = manifest.get("head")
        objective = manifest.get("objective", "classification")
        settings = manifest.get("settings", {})
        lineage = {"objective": objective, "data": settings.get("train"),
                   **({"merged_alpha": manifest["merged"]["alpha"]} if manifest.get("merged") else {})}
        return ModelSpec(name=str(path), modality=base["modality"], backend=cls.backend, backend_id=name,
                         embed_dim=head["in_features"] if head else manifest["embed_dim"],
                         sources=(Source("path", str(path)),), sha256=manifest["files"], requires=(name,),
                         config=lineage, matryoshka_dims=tuple(manifest.get("matryoshka_dims") or ()),
                         description=f"finetuned ({objective}) from {name}")

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, **options: Any) -> Built:
        raise TypeError(f"{spec.name} is a finetuned model: load it with zoo.load, which loads its base "
                        f"{spec.backend_id!r} first")

    @classmethod
    def attach(cls, spec: ModelSpec, files: ModelFiles, base: Model) -> Model:
        """Put the saved head (and backbone weights, where they trained) on ``base``."""
        manifest = read_json(files.root / MANIFEST)
        # The base's files were verified against its current pins: equal pins mean equal weights.
        for name, recorded in manifest["base"].get("sha256", {}).items():
            pinned = base.spec.sha256.get(name)
            if pinned is not None and pinned != recorded:
                raise IntegrityError(f"{name} of base model {spec.backend_id!r}", recorded, pinned)
        if manifest.get("backbone"):
            apply_saved_backbone(base.model, files.root, manifest["backbone"])
        if not manifest.get("head"):
            return cls.adapted(files.root, manifest, base, files)
        head_info = manifest["head"]
        module = build_head(head_info["type"], head_info["in_features"], head_info["num_classes"],
                            **head_info.get("options", {}))
        load_tensors(module, files.root / head_info["file"])
        spec = spec.replace(modality=base.modality, normalize=base.spec.normalize, pooling=manifest.get("pool"))
        return Model(base.encoder, spec=spec, head=Head(module, list(manifest["labels"]), manifest.get("pool")),
                     files=files)

    @classmethod
    def adapted(cls, folder: Path, manifest: dict[str, Any], base: Model, files: ModelFiles | None = None) -> Model:
        """A contrastive run's model: ``base`` with the trained backbone already in place, under the
        saved folder's spec (its pooling, its Matryoshka widths)."""
        spec = cls.spec_for_path(folder, manifest)
        spec = spec.replace(modality=base.modality, normalize=base.spec.normalize, pooling=manifest.get("pool"))
        return Model(base.encoder, spec=spec, files=files)
