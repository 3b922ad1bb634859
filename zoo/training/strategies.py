"""Which parameters train, per strategy and epoch (Lightning Flash's finetuning strategies, made
uniform across backends through each adapter's ``blocks()``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import did_you_mean

if TYPE_CHECKING:
    import torch

from ..adapter import Adapter

STRATEGIES = Adapter.strategies


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)} (choices: {', '.join(STRATEGIES)})")
    return name


@dataclass(frozen=True)
class Plan:
    """What trains in one epoch."""

    backbone: str  # "frozen", "all" or "last-blocks"
    unfreeze_blocks: int = 0


def plan_for_epoch(strategy: str, epoch: int, *, unfreeze_blocks: int, freeze_epochs: int) -> Plan:
    if strategy in ("linear-probe",):
        return Plan("frozen")
    if strategy == "full":
        return Plan("all")
    if strategy == "partial":
        return Plan("last-blocks", unfreeze_blocks)
    return Plan("frozen") if epoch < freeze_epochs else Plan("all")


def default_blocks(model: torch.nn.Module) -> list[list[str]]:
    """Parameter-name prefixes (module paths) of the backbone's blocks, first to last.

    The blocks are the entries of the longest ``ModuleList`` (the layer stack of most transformers
    and many CNNs; the later one on a tie), with the parameters that follow the stack (a final norm,
    a pooler) counted in the last block. Without a ``ModuleList``, the top-level children that hold
    parameters are the blocks.
    """
    import torch

    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]
    names = [n for n, _ in model.named_parameters()]
    if not lists:
        children = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
        return [[name] for name in children]
    best_name, best = max(enumerate(lists), key=lambda item: (len(item[1][1]), item[0]))[1]
    blocks = [[f"{best_name}.{i}"] for i in range(len(best))]
    last = [i for i, n in enumerate(names) if _matches(n, blocks[-1])]
    if last:
        blocks[-1] += names[last[-1] + 1:]
    return blocks


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def apply_plan(backbone: torch.nn.Module, plan: Plan, blocks: list[list[str]]) -> int:
    """Set ``requires_grad`` on the backbone for ``plan``; returns how many tensors train."""
    trainable: list[str] = []
    if plan.backbone == "last-blocks":
        trainable = [p for block in blocks[-plan.unfreeze_blocks:] for p in block] if plan.unfreeze_blocks else []
    count = 0
    for name, param in backbone.named_parameters():
        train = plan.backbone == "all" or (plan.backbone == "last-blocks" and _matches(name, trainable))
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
