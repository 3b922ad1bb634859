"""Train-time augmentation of images from the weights' own data config, as timm trains them: its
``create_transform(is_training=True)`` (random resized crop at the weights' input size, horizontal
flip, colour jitter, or an ``auto_augment`` policy: ``rand-m9-mstd0.5-inc1``, ``augmix-m5-w3``,
``original``, ``3a``...), normalised with the weights' mean and std; and timm's ``Mixup`` (mixup
and cutmix) with soft targets. Validation and prediction keep the weights' evaluation transform.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

from ._config import FinetuneConfig

if TYPE_CHECKING:
    import torch

    from zoo.core._encoder import Encoder

#: the data-config keys timm's create_transform takes from a model's pretrained config
_DATA_KEYS = ("input_size", "interpolation", "mean", "std")


def train_collate(encoder: Encoder, config: FinetuneConfig) -> Callable[[list[Any]], Any]:
    """How training inputs become a batch: the encoder's own decode and collate, or, with
    ``config.augment``, its decoded images through timm's train-time transform."""
    if config.augment is None:
        return lambda items: encoder.collate([encoder.decode(x) for x in items])
    import torch
    from timm.data import create_transform

    data = encoder.spec.preprocessing
    if encoder.backend != "timm" or not all(k in data for k in _DATA_KEYS):
        raise ZooError(f"augment uses timm's train-time transform of the weights' data config, and "
                       f"{encoder.spec.name} ({encoder.backend}) has none: leave augment unset for it")
    policy = None if config.augment == "weights" else config.augment
    try:
        transform = create_transform(**{k: data[k] for k in _DATA_KEYS}, is_training=True, auto_augment=policy)
    except (ValueError, KeyError, AssertionError) as exc:
        raise ZooError(f"augment={config.augment!r} is no timm auto_augment policy ({exc}); use 'weights' or one "
                       "such as 'rand-m9-mstd0.5-inc1'") from None
    return lambda items: torch.stack([transform(encoder.decode(x)) for x in items])


def mixer(config: FinetuneConfig, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], Any] | None:
    """timm's ``Mixup`` for ``config.mixup`` / ``config.cutmix`` (alphas), or None: it mixes a
    batch of images and turns its labels into soft targets."""
    if not (config.mixup or config.cutmix):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=config.mixup or 0.0, cutmix_alpha=config.cutmix or 0.0, label_smoothing=0.0,
                 num_classes=num_classes)
