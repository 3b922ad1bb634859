"""Which parameters train, per strategy and epoch (Lightning Flash's finetuning strategies, made
uniform across backends through each adapter's ``blocks()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zoo.core._blocks import in_blocks

from ._lora import ADAPTER_MARK

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Plan:
    """What trains in one epoch."""

    backbone: str  # "frozen", "all", "last-blocks" or "adapter" (LoRA's weights alone)
    unfreeze_blocks: int = 0


def plan_for_epoch(strategy: str, epoch: int, *, unfreeze_blocks: int, freeze_epochs: int) -> Plan:
    if strategy in ("linear-probe",):
        return Plan("frozen")
    if strategy == "full":
        return Plan("all")
    if strategy == "partial":
        return Plan("last-blocks", unfreeze_blocks)
    if strategy == "lora":
        return Plan("adapter")
    return Plan("frozen") if epoch < freeze_epochs else Plan("all")


def apply_plan(backbone: torch.nn.Module, plan: Plan, blocks: list[list[str]]) -> int:
    """Set ``requires_grad`` on the backbone for ``plan``; returns how many tensors train."""
    trainable: list[str] = []
    if plan.backbone == "last-blocks":
        trainable = [p for block in blocks[-plan.unfreeze_blocks:] for p in block] if plan.unfreeze_blocks else []
    count = 0
    for name, param in backbone.named_parameters():
        train = plan.backbone == "all" or (plan.backbone == "last-blocks" and in_blocks(name, trainable)) \
            or (plan.backbone == "adapter" and ADAPTER_MARK in name)
        param.requires_grad_(train)
        count += int(train)
    return count


def set_train_mode(backbone: torch.nn.Module, plan: Plan) -> None:
    """Train mode where something trains; BatchNorm of frozen parts stays in eval mode, so its running
    statistics are neither updated nor replaced by batch statistics."""
    import torch

    if plan.backbone == "frozen":
        backbone.eval()
        return
    backbone.train()
    for module in backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
