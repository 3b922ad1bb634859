"""torchvision classification models through the multi-weight API: ``get_model``, the weights
enum, and ``weights.transforms()`` as the preprocessing that travels with the weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zoo.catalog._spec import ModelSpec, Source
from zoo.core._encoder import Built
from zoo.errors import UnknownModelError, ZooError, close_matches
from zoo.store._checkpoint import load_state_dict, weights_file

from .image import ImageBackboneAdapter

if TYPE_CHECKING:
    import torch

    from zoo.store._model_files import ModelFiles


def split_weights_id(backend_id: str) -> tuple[str, str]:
    """``"resnet50.IMAGENET1K_V2"`` -> ``("resnet50", "IMAGENET1K_V2")``; no tag means ``DEFAULT``."""
    arch, _, tag = backend_id.partition(".")
    return arch, tag or "DEFAULT"


def weights_enum(backend_id: str) -> Any:
    import torchvision

    arch, tag = split_weights_id(backend_id)
    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError:
        hits = close_matches(arch, torchvision.models.list_models())
        raise UnknownModelError(f"torchvision:{arch}", [f"torchvision:{h}" for h in hits],
                                hint="(see torchvision.models.list_models())") from None
    try:
        return enum[tag]
    except KeyError:
        raise ZooError(f"torchvision {arch} has no weights {tag!r}; choose from "
                       f"{', '.join(w.name for w in enum)}") from None


def _replace_last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """Swap the final classifier Linear for Identity (so the model returns pre-logits) and return it."""
    import torch

    last: tuple[str, torch.nn.Linear] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = name, module
    if last is None:
        raise ZooError(f"{type(model).__name__} has no Linear classifier to take features before")
    path, head = last
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child.isdigit():  # a position in a Sequential
        cast("torch.nn.Sequential", parent)[int(child)] = torch.nn.Identity()
    else:
        setattr(parent, child, torch.nn.Identity())
    return head


class TorchvisionAdapter(ImageBackboneAdapter):
    """A torchvision classification architecture with one of its published weights."""

    backend = "torchvision"

    def __init__(self, *args: Any, head: torch.nn.Linear, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head = head

    @classmethod
    def spec_for_id(cls, backend: str, backend_id: str) -> ModelSpec:
        weights = weights_enum(backend_id)
        arch, _ = split_weights_id(backend_id)
        return ModelSpec(name=f"torchvision:{backend_id}", modality="vision", backend=backend,
                         backend_id=f"{arch}.{weights.name}", sources=(Source("url", weights.url),),
                         config={"weights": Path(weights.url).name})

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype) -> Built:
        import torchvision

        weights = weights_enum(spec.backend_id)
        arch, _ = split_weights_id(spec.backend_id)
        categories = weights.meta.get("categories") or []
        model = torchvision.models.get_model(arch, weights=None, num_classes=len(categories) or 1000)
        model.load_state_dict(load_state_dict(weights_file(spec, files)))
        head = _replace_last_linear(model).to(device=device, dtype=dtype).eval()
        transform = weights.transforms()
        data = {}
        if type(transform).__name__ == "ImageClassification":  # the data config timm's transforms read
            height, width = (list(transform.crop_size) * 2)[:2]  # one size is a square crop
            data = {"input_size": [3, height, width], "mean": list(transform.mean), "std": list(transform.std),
                    "interpolation": transform.interpolation.value}
        return Built(model, head.in_features,
                     {"preprocessing": {"transforms": repr(transform), **data, **spec.preprocessing}},
                     {"transform": transform, "labels": list(categories) or None, "head": head})

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    def forward_features(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
