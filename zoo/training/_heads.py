"""Classification heads on top of a backbone's pooled features."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import did_you_mean
from ._config import HEADS

if TYPE_CHECKING:
    import torch


def build_head(kind: str, in_features: int, num_classes: int, *, hidden: int = 512, dropout: float = 0.1) -> Any:
    """``linear``: standardise, then one Linear layer. ``mlp``: standardise, Linear, GELU, dropout, Linear.

    Standardisation uses the training features' mean and std when they are known up front (the
    linear probe); otherwise it starts as the identity.
    """
    import torch

    class Standardize(torch.nn.Module):
        mean: torch.Tensor  # buffers
        std: torch.Tensor

        def __init__(self, dim: int) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("std", torch.ones(dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.std

    layers: list[torch.nn.Module]
    if kind == "linear":
        layers = [torch.nn.Linear(in_features, num_classes)]
    elif kind == "mlp":
        layers = [torch.nn.Linear(in_features, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
                  torch.nn.Linear(hidden, num_classes)]
    else:
        raise ValueError(f"unknown head {kind!r}{did_you_mean(kind, HEADS)} (choices: {', '.join(HEADS)})")
    return torch.nn.Sequential(Standardize(in_features), *layers)


def fit_standardization(head: torch.nn.Sequential, features: torch.Tensor) -> None:
    """Set the head's standardisation from training features."""
    standardize: Any = head[0]  # build_head's Standardize
    standardize.mean.copy_(features.mean(0))
    standardize.std.copy_(features.std(0).clamp(min=1e-6))
