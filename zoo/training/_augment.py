"""Train-time augmentation of images from the weights' own data config, by the library that trains
them: timm's ``create_transform(is_training=True)`` for timm weights, and for torchvision's (whose
package ships no train transform) timm's at the weights' evaluation crop size, mean, std and
interpolation (some were trained at another crop size: ResNet-50 V2 at 176), or an
``auto_augment`` policy (``rand-m9-mstd0.5-inc1``, ``augmix-m5-w3``, ``original``, ``3a``...);
open_clip's own ``image_transform(is_train=True)`` of the model's preprocess config for open_clip
towers. And timm's ``Mixup`` (mixup and cutmix) with soft targets. Validation and prediction keep
the weights' evaluation transform.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

from ._config import FinetuneConfig

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.core._encoder import Encoder

#: the data-config keys timm's create_transform takes from a model's pretrained config
_DATA_KEYS = ("input_size", "interpolation", "mean", "std")


def train_collate(encoder: Encoder, config: FinetuneConfig) -> Callable[[list[Any]], Any]:
    """How training inputs become a batch: the encoder's own decode and collate, or, with
    ``config.augment``, its decoded images through the train-time transform of its library."""
    if config.augment is None:
        return lambda items: encoder.collate([encoder.decode(x) for x in items])
    import torch

    build = _TRAIN_TRANSFORMS.get(encoder.backend)
    if build is None:
        raise ZooError(f"augment uses the train-time transform of the weights' data config (timm's, or "
                       f"open_clip's), and {encoder.spec.name} ({encoder.backend}) has none: leave augment unset "
                       "for it")
    transform = build(encoder.spec, config.augment)
    return lambda items: torch.stack([transform(encoder.decode(x)) for x in items])


def _timm_transform(spec: ModelSpec, augment: str) -> Callable[[Any], Any]:
    """timm's train transform of a timm (or torchvision) data config."""
    from timm.data import create_transform

    data = spec.preprocessing
    missing = [k for k in _DATA_KEYS if k not in data]
    if missing:
        raise ZooError(f"{spec.name}'s data config has no {', '.join(missing)}, which timm's train transform needs; "
                       "leave augment unset for it")
    policy = None if augment == "weights" else augment
    try:
        return create_transform(**{k: data[k] for k in _DATA_KEYS}, is_training=True, auto_augment=policy)
    except (ValueError, KeyError, AssertionError) as exc:
        raise ZooError(f"augment={augment!r} is no timm auto_augment policy ({exc}); use 'weights' or one "
                       "such as 'rand-m9-mstd0.5-inc1'") from None


def _open_clip_transform(spec: ModelSpec, augment: str) -> Callable[[Any], Any]:
    """open_clip's own train transform of the model's preprocess config (what its training runs)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    if augment != "weights":
        raise ZooError(f"augment={augment!r}: open_clip's train transform takes no auto_augment policy; use "
                       "augment='weights' for it")
    fields = {k: spec.preprocessing[k] for k in PreprocessCfg.__dataclass_fields__ if k in spec.preprocessing}
    return image_transform_v2(PreprocessCfg(**fields), is_train=True)


_TRAIN_TRANSFORMS: dict[str, Callable[[ModelSpec, str], Callable[[Any], Any]]] = {
    "timm": _timm_transform, "torchvision": _timm_transform, "open_clip": _open_clip_transform}


def mixer(config: FinetuneConfig, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], Any] | None:
    """timm's ``Mixup`` for ``config.mixup`` / ``config.cutmix`` (alphas), or None: it mixes a
    batch of images and turns its labels into soft targets."""
    if not (config.mixup or config.cutmix):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=config.mixup or 0.0, cutmix_alpha=config.cutmix or 0.0, label_smoothing=0.0,
                 num_classes=num_classes)
