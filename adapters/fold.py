"""BatchNorm folding for frozen convolutional backbones.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be folded into
the convolution's weight and bias: one pass over the activations instead of two. On this project's
2-core CPU that made EfficientNet-Lite0 (channels_last) about 1.45x faster with outputs equal to
1e-5. Folding works on a copy; the trainable model keeps its BatchNorm layers.
"""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def fold_batchnorm(model: torch.nn.Module) -> tuple[torch.nn.Module, int]:
    """A copy of ``model`` with every ``Conv2d`` -> ``BatchNorm2d`` pair of sibling modules folded.

    A pair is a convolution directly followed, among its parent's children, by a BatchNorm over as
    many channels. Declaration order is not proof of data flow, so callers check the copy's output
    against the original once before trusting it. timm's ``BatchNormAct2d`` keeps its activation.

    Returns:
        The folded copy and how many pairs were folded (0 means nothing to gain).
    """
    import torch
    from torch import nn

    folded = copy.deepcopy(model)
    count = 0
    for parent in list(folded.modules()):
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and bn.track_running_stats and conv.out_channels == bn.num_features
                    and bn.running_mean is not None and bn.running_var is not None):
                continue
            with torch.no_grad():
                scale = torch.rsqrt(bn.running_var.float() + bn.eps)
                if bn.affine:
                    scale = scale * bn.weight.float()
                shift = -bn.running_mean.float() * scale
                if bn.affine:
                    shift = shift + bn.bias.float()
                if conv.bias is not None:
                    shift = shift + conv.bias.float() * scale
                dtype = conv.weight.dtype
                conv.weight = nn.Parameter((conv.weight.float() * scale.view(-1, 1, 1, 1)).to(dtype),
                                           requires_grad=False)
                conv.bias = nn.Parameter(shift.to(dtype), requires_grad=False)
            parent._modules[second] = _after_norm(bn)
            count += 1
    return folded, count


def _after_norm(bn: torch.nn.Module) -> torch.nn.Module:
    """What remains of a folded norm layer: nothing, or the activation of timm's ``BatchNormAct2d``."""
    from torch import nn

    tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    return nn.Sequential(*tail) if tail else nn.Identity()
