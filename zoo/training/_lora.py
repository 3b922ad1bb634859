"""LoRA (Hu et al., 2021) through peft: low-rank adapters added beside a backbone's layers, which
alone train, so that a finetune saves megabytes instead of the whole model.

peft does the work (its ``LoraConfig``, ``get_peft_model``, adapter state dict and
``merge_and_unload``); zoo chooses the layers, saves the adapter as safetensors under the run's
sha256-checked manifest, and merges it into the base's weights when the folder is loaded. Merged,
a LoRA finetune runs at the base model's speed with no peft code in its forward pass, and exports
to ONNX / OpenVINO as the base does; the adapter stays a separate, small file on disk.

The layers, unless ``lora_targets`` names them: every linear layer of the backbone but its output
layer (peft's ``all-linear``; QLoRA's finding: adapting all of them beats adapting the
attention's query and value alone), with
``nn.MultiheadAttention`` adapted as a whole (peft's way: its output projection is not called as a
module, so an adapter on it alone would silently do nothing); a backbone with no linear layer (a
convolutional network) adapts its ungrouped convolutions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.store._atomic import atomic_path

from ._checkpoints import load_tensors, save_tensors

if TYPE_CHECKING:
    import torch

#: where the adapter's low-rank weights live in parameter names (what trains)
ADAPTER_MARK = ".lora_"


@dataclass(frozen=True)
class LoraSettings:
    """The adapter's shape: rank ``r``, scale ``alpha / r``, dropout, and the layers it adapts
    (``None``: chosen as the module says)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None

    def record(self, targets: list[str]) -> dict[str, Any]:
        """What the manifest keeps: enough to rebuild the same adapter on the same base."""
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "targets": sorted(targets)}


def default_targets(module: torch.nn.Module, skip: Callable[[str], bool] = lambda name: False) -> list[str]:
    """The names of the layers LoRA adapts by default (see the module), leaving out those ``skip``
    says (a locked tower)."""
    import torch

    attention = [n for n, m in module.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    inside = tuple(f"{n}." for n in attention)
    heads = _heads(module)
    linear = [n for n, m in module.named_modules()
              if isinstance(m, torch.nn.Linear) and not n.startswith(inside) and id(m) not in heads]
    chosen = attention + linear
    if not chosen:
        chosen = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    return [n for n in chosen if not skip(n)]


def _heads(module: torch.nn.Module) -> set[int]:
    """The output layers a backbone names (timm's ``get_classifier()``, transformers'
    ``get_output_embeddings()``), which embeddings never pass through: as peft's ``all-linear``
    leaves out a model's output layer."""
    import torch

    found: set[int] = set()
    for getter in ("get_classifier", "get_output_embeddings"):
        head = getattr(module, getter, None)
        head = head() if callable(head) else None
        if isinstance(head, torch.nn.Module):
            found.update(id(m) for m in head.modules())
    return found


def add_adapter(module: torch.nn.Module, settings: LoraSettings,
                skip: Callable[[str], bool] = lambda name: False) -> tuple[Any, dict[str, Any]]:
    """Put fresh LoRA adapters into ``module`` (in place: its own forward and methods run them);
    returns peft's model around it and the record that rebuilds it. Only adapter weights train."""
    targets = list(settings.targets) if settings.targets is not None else default_targets(module, skip)
    if not targets:
        raise ZooError("LoRA found no layer to adapt (no linear layer, no ungrouped convolution): name them with "
                       "lora_targets, or use strategy='full'")
    record = settings.record(targets)
    return _inject(module, record), record


def _inject(module: torch.nn.Module, record: dict[str, Any]) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("LoRA needs peft: pip install 'zoo-models[lora]'") from None

    config = LoraConfig(r=record["r"], lora_alpha=record["alpha"], lora_dropout=record["dropout"],
                        target_modules=list(record["targets"]))
    try:
        with warnings.catch_warnings():  # peft reads a transformers attribute that warns of its own rename
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(module, config)
    except ValueError as exc:  # peft names the target it could not find or adapt
        raise ZooError(f"LoRA cannot adapt {record['targets'][:5]}...: {exc}") from None


def save_adapter(path: Path, peft_model: Any) -> str:
    """The adapter's weights (peft's state dict of them) as safetensors, atomically; returns the name."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path.name


def load_adapter(peft_model: Any, path: Path) -> None:
    """Put saved adapter weights back into ``peft_model`` (resuming, or reading the best epoch)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(peft_model, load_file(str(path)))
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if ADAPTER_MARK in k]
    if unexpected:
        raise ZooError(f"{path} holds adapter weights this model has no layer for ({unexpected[0]}...)")


def merge_adapter(module: torch.nn.Module, record: dict[str, Any], path: Path) -> None:
    """``module`` (the base's weights) with the saved adapter merged into them, in place: what
    loading a LoRA finetune does."""
    peft_model = _inject(module, record)
    load_adapter(peft_model, path)
    peft_model.merge_and_unload()


class TrainedBackbone:
    """What a run trains of a backbone and saves each epoch: every weight, or (``strategy="lora"``)
    a LoRA adapter beside the frozen weights. The manifest entry it writes says which, and
    :func:`apply_saved_backbone` reads either back."""

    def __init__(self, module: torch.nn.Module, lora: LoraSettings | None = None,
                 skip: Callable[[str], bool] = lambda name: False) -> None:
        self.module = module
        self.peft: Any = None
        self.record: dict[str, Any] | None = None
        if lora is not None:
            self.peft, self.record = add_adapter(module, lora, skip)

    def save(self, folder: Path, tag: str) -> dict[str, Any]:
        """This epoch's weights (or adapter) as a new file; returns the manifest entry naming it."""
        if self.peft is None:
            return {"file": save_tensors(folder / f"{tag}.backbone.safetensors", self.module)}
        return {"file": save_adapter(folder / f"{tag}.adapter.safetensors", self.peft), "lora": self.record}

    def restore(self, folder: Path, entry: dict[str, Any]) -> None:
        """Put saved weights (or adapter) back, to resume training from them."""
        if self.peft is None:
            load_tensors(self.module, folder / entry["file"])
        else:
            load_adapter(self.peft, folder / entry["file"])

    def finish(self, folder: Path, entry: dict[str, Any]) -> None:
        """The saved best weights in place, an adapter merged into them: the module as
        :func:`zoo.load` gives it."""
        self.restore(folder, entry)
        if self.peft is not None:
            self.peft.merge_and_unload()
            self.peft = None


def apply_saved_backbone(module: torch.nn.Module, folder: Path, entry: dict[str, Any]) -> None:
    """A finetuned folder's backbone onto ``module`` (the base's weights): its trained weights, or
    its LoRA adapter merged into them."""
    if entry.get("lora"):
        merge_adapter(module, entry["lora"], folder / entry["file"])
    else:
        load_tensors(module, folder / entry["file"])
