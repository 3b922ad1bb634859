"""What a finetuning run is asked to do: :class:`FinetuneConfig`, shared by
:meth:`zoo.Adapter.finetune`, the ``zoo finetune`` command and the training plugin.

This module is part of the core and imports no torch: the training itself lives in
:mod:`zoo.training`, a built-in plugin that implements the ``zoo_finetune`` hook.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import did_you_mean

from ._lora import LoraSettings

STRATEGIES = ("linear-probe", "full", "partial", "freeze-unfreeze", "lora")
HEADS = ("linear", "mlp")
#: what a run trains: a classifier on labelled inputs, or the embedding itself on pairs
OBJECTIVES = ("classification", "contrastive")
#: a contrastive run's loss: ``auto`` is sentence-transformers' ranking loss (``mnrl``) for inputs
#: of one tower, and open_clip's ``siglip`` (a model with a logit bias) or ``clip`` for image-text
CONTRASTIVE_LOSSES = ("auto", "mnrl", "clip", "siglip")
#: the learning rate over the run, after a linear warmup (transformers' schedules)
SCHEDULES = ("linear", "cosine", "constant")
#: the forward pass's arithmetic: autocast to bf16 / fp16 (fp16 with a loss scaler)
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")


def _check_choice(kind: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}{did_you_mean(value, choices)} (choices: {', '.join(choices)})")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one finetuning run.

    Attributes:
        output_dir: where checkpoints go; ``zoo.load(output_dir)`` reads the best model back.
        objective: ``classification`` (a head on labelled inputs) or ``contrastive`` (the
            embedding itself, on ``(anchor, positive)`` pairs or ``(anchor, positive, negative)``
            triplets with in-batch negatives: sentence-transformers' MultipleNegativesRankingLoss).
        strategy: ``auto`` (``full`` for a contrastive run, else ``linear-probe``),
            ``linear-probe`` (backbone frozen, embeddings computed once), ``full``, ``partial``
            (the last ``unfreeze_blocks`` blocks train) or ``freeze-unfreeze`` (frozen for
            ``freeze_epochs``, then everything trains) or ``lora`` (low-rank adapters beside the
            frozen backbone's layers train, with peft; the folder saves the adapter alone).
        epochs, batch_size, weight_decay, seed: the usual.
        lr: the head's learning rate (``None``: 1e-2 for the probe, 1e-3 otherwise); in a
            contrastive run, the backbone's (``None``: 2e-5).
        backbone_lr: the backbone's (``None``: ``lr / 10``).
        head: ``linear`` or ``mlp``.
        val_fraction: hold out this fraction of each class when no validation data is given.
        pool: pooling mode, where the model has a choice.
        resume: continue the run in ``output_dir`` from its last finished epoch.
        progress: show a progress bar (``None``: the default of tqdm).
        text_column, label_column: the columns of a CSV / JSONL / parquet training file.
        anchor_column, positive_column, negative_column: the columns of a contrastive training
            file (the negative column is optional).
        scale: contrastive: the similarity scale (the inverse temperature; 20 as in
            sentence-transformers).
        symmetric: contrastive: also rank each positive's anchor among the batch's anchors.
        matryoshka_dims: contrastive: also train each of these leading widths (Matryoshka
            representation learning); the saved model declares them.
        loss: contrastive: ``auto``, ``mnrl`` (in-batch negatives, any tower), ``clip`` or
            ``siglip`` (open_clip's losses, for image-caption pairs, with the model's own learned
            temperature and bias).
        lock: contrastive: towers of an image-text model kept frozen (``("vision",)``: open_clip's
            ``lock_image``; ``("text",)``: ``lock_text``).
        mini_batch_size: contrastive: embed each batch this many rows at a time and cache the
            gradients of the embeddings (GradCache, as sentence-transformers'
            ``CachedMultipleNegativesRankingLoss``): the negatives are those of the whole
            ``batch_size``, the memory that of ``mini_batch_size`` rows (``None``: all at once).
        lora_r, lora_alpha, lora_dropout: ``lora``: the adapters' rank, scale (``alpha / r``)
            and dropout.
        lora_targets: ``lora``: the names of the layers to adapt (peft's ``target_modules``;
            ``None``: every linear layer of the backbone, see :mod:`zoo.training._lora`).
        schedule: the learning rate after warmup: ``linear`` decay to 0 (the default, as the
            Hugging Face ``Trainer``), ``cosine`` or ``constant``.
        warmup: the share of the steps over which the learning rate rises linearly from 0.
        accumulate: batches whose gradients add up to one optimizer step (``batch_size=8,
            accumulate=4`` steps as ``batch_size=32`` would, in the memory of 8 rows).
        max_grad_norm: clip the gradients' global norm to this (``None``: no clipping).
        precision: ``fp32``, ``bf16`` (autocast; on the CPU only where it is faster, see
            docs/benchmarks.md) or ``fp16`` (autocast with torch's loss scaler, which skips a step
            whose gradients overflow; for GPUs without bf16, and slower than fp32 on most CPUs).
        early_stopping: stop once the validation score has not improved for this many epochs
            (``None``: run every epoch); needs validation data.
        layer_decay: each block's learning rate is this times the one above it (BEiT, as timm's
            ``param_groups_layer_decay``); ``None``: one rate.
        class_weights: classification: ``"balanced"`` (scikit-learn's ``n / (classes * count)``)
            or a ``{label: weight}`` dict, weighing each class's cross-entropy.
        augment: vision: train-time augmentation with timm's transform of the weights' data config:
            ``"weights"`` (random resized crop, flip, colour jitter) or a timm ``auto_augment``
            policy (``"rand-m9-mstd0.5-inc1"``...); ``None``: the evaluation transform.
        group_by_length: classification of texts: batch rows of similar length (each run of 50
            batches' shuffled rows sorted by length, as transformers' ``group_by_length``), so
            batches carry less padding; ``None``: on for texts that run through the backbone each
            batch, off otherwise (contrastive batches stay random: their rows are the negatives).
        mixup, cutmix: classification of images: timm's Mixup alphas (``0.8``, ``1.0`` as timm's
            recipes), with soft targets; ``None``: off.
        tensorboard: write each step's loss and learning rate and each epoch's metrics for
            TensorBoard under ``output_dir/tensorboard`` (not part of the run's identity).
        on_epoch_end: called with each epoch's metrics (not part of the run's identity).
    """

    output_dir: Path
    objective: str = "classification"
    strategy: str = "auto"
    epochs: int = 5
    lr: float | None = None
    backbone_lr: float | None = None
    batch_size: int = 32
    head: str = "linear"
    seed: int = 0
    unfreeze_blocks: int = 2
    freeze_epochs: int = 1
    weight_decay: float = 0.01
    val_fraction: float | None = None
    pool: str | None = None
    resume: bool = False
    progress: bool | None = None
    text_column: str = "text"
    label_column: str = "label"
    anchor_column: str = "anchor"
    positive_column: str = "positive"
    negative_column: str = "negative"
    scale: float = 20.0
    symmetric: bool = False
    matryoshka_dims: tuple[int, ...] = ()
    loss: str = "auto"
    lock: tuple[str, ...] = ()
    mini_batch_size: int | None = None
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None
    schedule: str = "linear"
    warmup: float = 0.1
    accumulate: int = 1
    max_grad_norm: float | None = None
    precision: str = "fp32"
    early_stopping: int | None = None
    layer_decay: float | None = None
    class_weights: str | dict[Any, float] | None = None
    tensorboard: bool = False
    augment: str | None = None
    mixup: float | None = None
    cutmix: float | None = None
    group_by_length: bool | None = None
    on_epoch_end: Callable[[dict[str, float]], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.output_dir is None:
            raise ValueError("finetune needs output_dir: the folder that zoo.load reads the model back from")
        object.__setattr__(self, "output_dir", Path(os.fspath(self.output_dir)))
        _check_choice("objective", self.objective, OBJECTIVES)
        contrastive = self.objective == "contrastive"
        if self.strategy == "auto":  # the embedding trains whole; a classifier starts as a probe
            object.__setattr__(self, "strategy", "full" if contrastive else "linear-probe")
        _check_choice("strategy", self.strategy, STRATEGIES)
        if contrastive and (self.backbone_lr is not None or self.head != "linear"):
            raise ValueError("a contrastive run has no head: its lr is the backbone's; leave backbone_lr and head "
                             "unset")
        if contrastive and self.strategy in ("linear-probe", "freeze-unfreeze"):
            raise ValueError(f"strategy {self.strategy!r} trains a head on a frozen backbone; a contrastive run "
                             "trains the embedding itself: use 'full', 'partial' or 'lora'")
        self._check_lora()
        self._check_training()
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, not {self.scale!r}")
        object.__setattr__(self, "matryoshka_dims", tuple(sorted({int(d) for d in self.matryoshka_dims}, reverse=True)))
        if any(d < 1 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive widths, not {self.matryoshka_dims}")
        _check_choice("loss", self.loss, CONTRASTIVE_LOSSES)
        object.__setattr__(self, "lock", tuple(self.lock))
        if not contrastive and (self.symmetric or self.matryoshka_dims or self.loss != "auto" or self.lock
                                or self.mini_batch_size is not None):
            raise ValueError("symmetric, matryoshka_dims, loss, lock and mini_batch_size are options of "
                             "objective='contrastive'")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, not {self.mini_batch_size!r}")
        _check_choice("head", self.head, HEADS)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")

    def _check_training(self) -> None:
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("precision", self.precision, TRAINING_PRECISIONS)
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a share of the steps, in [0, 1), not {self.warmup!r}")
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"accumulate counts batches per optimizer step, >= 1, not {self.accumulate!r}")
        if (self.mixup or self.cutmix) and (self.objective != "classification" or self.class_weights is not None):
            raise ValueError("mixup and cutmix mix a classifier's labels: objective='classification', without "
                             "class_weights")
        if any(a is not None and not a > 0 for a in (self.mixup, self.cutmix)):
            raise ValueError(f"mixup and cutmix are Beta-distribution alphas, > 0; got {self.mixup!r}, {self.cutmix!r}")
        if self.precision == "fp16" and self.mini_batch_size is not None:
            raise ValueError("mini_batch_size (GradCache) takes the gradients of cached embeddings, which a fp16 "
                             "loss scaler does not reach: use precision='bf16' with it")
        if self.group_by_length is not None and not isinstance(self.group_by_length, bool):
            raise ValueError(f"group_by_length is True, False or None (texts: on), not {self.group_by_length!r}")
        if self.group_by_length and self.objective == "contrastive":
            raise ValueError("group_by_length groups a classifier's texts; a contrastive batch's rows are each "
                             "other's negatives, so its batches stay random")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, not {self.max_grad_norm!r}")
        if self.early_stopping is not None and (isinstance(self.early_stopping, bool)
                                                or not isinstance(self.early_stopping, int) or self.early_stopping < 1):
            raise ValueError(f"early_stopping is a patience in epochs, >= 1, not {self.early_stopping!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must lie in (0, 1], not {self.layer_decay!r}")
        if self.layer_decay is not None and self.strategy == "linear-probe":
            raise ValueError("layer_decay sets the backbone's learning rates, and a linear probe trains none: leave "
                             "it unset, or choose a strategy that trains the backbone")
        if self.class_weights is not None and (self.objective != "classification" or not (
                self.class_weights == "balanced" or isinstance(self.class_weights, dict))):
            raise ValueError(f"class_weights is 'balanced' or a {{label: weight}} dict, for objective="
                             f"'classification'; got {self.class_weights!r} with objective={self.objective!r}")

    def _check_lora(self) -> None:
        lora_set = (self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_targets) != (8, 16.0, 0.0, None)
        if lora_set and self.strategy != "lora":
            raise ValueError("lora_r, lora_alpha, lora_dropout and lora_targets are options of strategy='lora'")
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise ValueError(f"lora_r is the adapters' rank, a positive integer, not {self.lora_r!r}")
        if not self.lora_alpha > 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_alpha must be positive and lora_dropout in [0, 1); got {self.lora_alpha!r}, "
                             f"{self.lora_dropout!r}")
        if self.lora_targets is not None:
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @property
    def lora(self) -> LoraSettings | None:
        """The :class:`~zoo.training._lora.LoraSettings` of a ``lora`` run, else None."""
        if self.strategy != "lora":
            return None
        return LoraSettings(self.lora_r, float(self.lora_alpha), float(self.lora_dropout), self.lora_targets)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FinetuneConfig:
        """A config from keyword arguments; an unknown one gets a "did you mean"."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                raise TypeError(f"finetune got an unexpected option {key!r}{did_you_mean(key, names)}")
        return cls(**options)

    def replace(self, **changes: Any) -> FinetuneConfig:
        return dataclasses.replace(self, **changes)

    @property
    def head_lr(self) -> float:
        """``lr``, or its default for the strategy."""
        if self.lr is not None:
            return self.lr
        if self.objective == "contrastive":
            return 2e-5  # the backbone's own rate: there is no head
        return 1e-2 if self.strategy == "linear-probe" else 1e-3

    @property
    def effective_backbone_lr(self) -> float:
        return self.backbone_lr if self.backbone_lr is not None else self.head_lr / 10
