"""A backbone's blocks, first to last: what ``partial`` finetuning unfreezes from the end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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
    last = [i for i, n in enumerate(names) if in_blocks(n, blocks[-1])]
    if last:
        blocks[-1] += names[last[-1] + 1:]
    return blocks


def in_blocks(name: str, prefixes: Sequence[str]) -> bool:
    """Whether parameter ``name`` lies under one of the module paths ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)
