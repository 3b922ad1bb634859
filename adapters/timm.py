"""timm image models: pooled pre-logits features, the pretrained head, and the data config and
transform resolved from the model's own pretrained config (so preprocessing cannot drift)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from zoo.catalog._spec import ModelSpec, Source, split_revision
from zoo.core._encoder import Built
from zoo.errors import UnknownModelError, ZooError, close_matches
from zoo.store._checkpoint import load_state_dict, weights_file

from .hf_folders import FolderFormat
from .image import ImageBackboneAdapter

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from zoo.store._model_files import ModelFiles


def remap_in_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict whose tensors follow ``target``'s order and shapes under other names
    (a checkpoint of the same architecture written by another code base)."""
    if len(state) != len(target):
        raise ZooError(f"checkpoint has {len(state)} tensors, the architecture expects {len(target)}")
    out = {}
    for (src_key, tensor), (dst_key, expected) in zip(state.items(), target.items()):
        if tensor.shape != expected.shape:
            raise ZooError(f"checkpoint tensor {src_key!r} {tuple(tensor.shape)} does not fit {dst_key!r} "
                           f"{tuple(expected.shape)}; the key order differs from the architecture's")
        out[dst_key] = tensor
    return out


def imagenet_labels(model: torch.nn.Module) -> list[str] | None:
    """The class names of a timm model's ImageNet head (None for other heads)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model)
    if not subset:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


class TimmAdapter(ImageBackboneAdapter):
    """A ``timm.create_model`` architecture with its pretrained weights."""

    backend = "timm"
    #: a timm model: its members (``pretrained_cfg``, ``forward_intermediates``...) are the architecture's
    model: Any

    @classmethod
    def spec_for_id(cls, backend: str, backend_id: str) -> ModelSpec:
        import timm

        name, revision = split_revision(backend_id)
        arch = name.split(".")[0]
        if not timm.is_model(arch):
            raise UnknownModelError(f"timm:{name}", [f"timm:{m}" for m in close_matches(arch, timm.list_models())],
                                    hint="(see timm.list_models())")
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is None or not cfg.hf_hub_id:
            tags = timm.list_pretrained(f"{arch}.*")
            raise ZooError(f"timm has no hub weights for {name!r}; pretrained tags: {', '.join(tags) or 'none'}")
        return ModelSpec(name=f"timm:{backend_id}", modality="vision", backend=backend, backend_id=name,
                         sources=(Source("hub", cfg.hf_hub_id, revision=revision),))

    @classmethod
    def spec_for_path(cls, path: Path, found: FolderFormat) -> ModelSpec:
        """A spec for a folder timm wrote (``save_for_hf``, a timm hub repository's files)."""
        return ModelSpec(name=str(path), modality="vision", backend=cls.backend, backend_id=str(path),
                         sources=(Source("path", str(path)),), config={"folder": found.describe()})

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype) -> Built:
        import timm
        from timm.data import create_transform, resolve_model_data_config

        model: Any  # a timm model (num_features, head_hidden_size)
        if spec.config.get("folder", {}).get("format") == "timm":
            # timm's own reader of its folder format: config.json's architecture, model_args and
            # pretrained_cfg (current or pre-0.9 layout), then the weights beside it.
            model = _create_from_folder(files.root)
        elif spec.config.get("key_map") == "in-order":
            weights = weights_file(spec, files)
            model = timm.create_model(spec.backend_id, pretrained=False)
            state = load_state_dict(weights, key=spec.config.get("state_key"))
            model.load_state_dict(remap_in_order(state, model.state_dict()))
        else:
            # timm's own pretrained loading (its checkpoint filters included), from the verified file.
            weights = weights_file(spec, files)
            model = timm.create_model(spec.backend_id, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        data_config = resolve_model_data_config(model)
        return Built(model, int(getattr(model, "head_hidden_size", None) or model.num_features),
                     {"preprocessing": {**data_config, **spec.preprocessing}},
                     {"transform": create_transform(**data_config, is_training=False),
                      "labels": functools.partial(imagenet_labels, model)})

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    def blocks(self) -> list[list[str]]:
        """timm's own coarse grouping (what it uses for layer-wise learning-rate decay), without the
        stem and without the pretrained classifier, which a finetuned head replaces."""
        from timm.models import group_modules

        classifier = self.model.pretrained_cfg.get("classifier") or "head"
        groups = group_modules(self.model, self.model.group_matcher(coarse=True))
        blocks = [[n for n in names if n != classifier and not n.startswith(classifier + ".")]
                  for _, names in sorted(groups.items())][1:]
        return [b for b in blocks if b]

    def forward_features(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        return net.forward_head(net.forward_features(x), pre_logits=True)

    def layer_dims(self, layers: tuple[int, ...]) -> list[int]:
        """The channels of each feature level timm's ``forward_intermediates`` gives (stages of
        a CNN, blocks of a ViT: ``model.feature_info``)."""
        info = getattr(self.model, "feature_info", None)
        if not info or not hasattr(self.model, "forward_intermediates"):
            return super().layer_dims(layers)
        for index in layers:
            if not -len(info) <= index < len(info):
                raise ValueError(f"{self.name} has {len(info)} feature levels: layer must be from {-len(info)} "
                                 f"to {len(info) - 1}, not {index}")
        return [int(info[i]["num_chs"]) for i in layers]

    def encode_layers(self, batch: torch.Tensor, *, pool: str | None, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Each level of ``forward_intermediates`` (NCHW), averaged over its positions."""
        count = len(self.model.feature_info)
        wanted = [i % count for i in layers]
        maps = self.model.forward_intermediates(self._to_device(batch), indices=sorted(set(wanted)),
                                                intermediates_only=True)
        pooled = dict(zip(sorted(set(wanted)), (m.float().mean(dim=(2, 3)) for m in maps)))
        return [pooled[i] for i in wanted]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _create_from_folder(root: Path) -> torch.nn.Module:
    """``timm.create_model("local-dir:ROOT", pretrained=True)``, with a config timm cannot build
    named with its file."""
    import timm

    try:
        return timm.create_model(f"local-dir:{root}", pretrained=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as exc:
        raise ZooError(f"timm cannot build the model {root / 'config.json'} describes: {type(exc).__name__}: "
                       f"{exc}") from exc
