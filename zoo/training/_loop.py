"""The finetuning loop behind :meth:`zoo.Model.finetune`: one loop for every backend and modality.

Deterministic for a seed: each epoch's shuffle comes from ``(seed, epoch)`` and the RNG state is
saved with every checkpoint, so a run killed at any moment and resumed with ``resume=True`` ends
with the metrics of an uninterrupted run. Under ``torchrun`` it trains data-parallel with
``torch.distributed`` (gloo on CPU, nccl on GPU); only rank 0 writes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zoo import __version__
from zoo.core._model import Head, Model, features
from zoo.evaluation._labelled import macro_f1
from zoo.store._manifest import MANIFEST, read_json
from zoo.store._provenance import weights_provenance

from ..errors import ZooError
from ._augment import mixer, train_collate
from ._checkpoints import (
    RESUME,
    load_state,
    load_tensors,
    prune,
    read_resume,
    rng_state,
    save_state,
    save_tensors,
    set_rng_state,
    write_run_manifest,
)
from ._config import FinetuneConfig
from ._data import fingerprint, label_index, read_examples, stratified_split
from ._distributed import Dist
from ._finetuned import FORMAT, FinetunedCheckpoint
from ._heads import build_head, fit_standardization
from ._logging import RunLog
from ._lora import ADAPTER_MARK, TrainedBackbone
from ._optim import (
    Stepper,
    adamw,
    batch_groups,
    check_layer_decay,
    length_grouped,
    make_scheduler,
    param_groups,
    steps_per_epoch,
    training_settings,
)
from ._plot import plot_history
from ._strategies import Plan, apply_plan, plan_for_epoch, set_train_mode

if TYPE_CHECKING:
    import torch

    from zoo.core._encoder import Encoder


@dataclass
class FinetuneResult:
    """What a finetuning run produced.

    Attributes:
        history: one dict per epoch: ``epoch``, ``train_loss`` and, with validation data,
            ``val_loss``, ``val_accuracy``, ``val_macro_f1``; also ``seconds``.
        best_epoch: the epoch whose weights were kept (best validation accuracy, then loss).
        best_checkpoint: the folder ``zoo.load`` reads the best model from (``output_dir``).
        model: the best model, ready to ``predict``.
        stopped_early: whether ``early_stopping`` ended the run before its last epoch.
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_checkpoint: Path
    model: Model
    stopped_early: bool = False


class _Classifier:
    """Backbone + head as one trainable ``nn.Module`` (built lazily to keep torch out of import)."""

    @staticmethod
    def build(encoder: Encoder, head: torch.nn.Module, pool: str | None) -> torch.nn.Module:
        import torch

        class Classifier(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = encoder.model
                self.head = head

            def forward(self, batch: Any) -> torch.Tensor:
                return self.head(features(encoder, batch, pool, bool(encoder.spec.normalize)))

        return Classifier()


def _class_weights(asked: Any, classes: list[Any], y: torch.Tensor) -> torch.Tensor | None:
    """Each class's weight in the training loss: scikit-learn's ``balanced`` (``n / (classes *
    count)``), or the ``{label: weight}`` given (every class named, no label unknown)."""
    import torch

    if asked is None:
        return None
    if asked == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight("balanced", classes=np.arange(len(classes)), y=y.numpy())
        return torch.tensor(weights, dtype=torch.float32)
    unknown = [k for k in asked if k not in classes]
    missing = [c for c in classes if c not in asked]
    if unknown or missing:
        raise ZooError(f"class_weights must name every class of the training data and no other: unknown "
                       f"{[str(k) for k in unknown]}, missing {[str(c) for c in missing]}")
    return torch.tensor([float(asked[c]) for c in classes], dtype=torch.float32)


def _metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    """The validation loss, and ``zoo evaluate``'s accuracy and macro-F1 (over every class)."""
    import torch

    loss = torch.nn.functional.cross_entropy(logits, y).item()
    pred = logits.argmax(1)
    return {"val_loss": loss, "val_accuracy": (pred == y).float().mean().item(),
            "val_macro_f1": macro_f1(y.numpy(), pred.numpy(), labels=list(range(num_classes)))}


def finetune(model: Model, train: Any, val: Any, config: FinetuneConfig) -> FinetuneResult:
    """Train a classifier on ``model`` as ``config`` says; see :meth:`zoo.Model.finetune`."""
    return run_epochs(_Run(model, train, val, config), model.name, config, label=config.strategy,
                      shown=("train_loss", "val_accuracy"))


def run_epochs(run: Any, name: str, config: FinetuneConfig, *, label: str, shown: tuple[str, ...]
               ) -> FinetuneResult:
    """The epochs of a run (a classifier's or a contrastive one's: anything with ``train_epoch``,
    ``evaluate``, ``checkpoint``, ``resume`` and ``load_best``), from where it got to, with a
    progress bar showing ``shown``, the curves drawn at the end, and the best epoch read back."""
    from tqdm.auto import tqdm

    if config.resume:
        run.resume()
    if config.early_stopping is not None and run.val_ex is None:
        raise ZooError("early_stopping watches the validation score: give val data or a val_fraction")
    disable = (not config.progress if config.progress is not None else False) or run.dist.rank != 0
    bar = tqdm(range(run.start, config.epochs), initial=run.start, total=config.epochs,
               desc=f"finetune {name} ({label})", unit="epoch", disable=disable)
    for epoch in bar:
        stop = _patience_spent(run.best, epoch, config.early_stopping)
        if run.dist.world > 1:  # every rank stops with the others, whatever its own evaluation said
            stop = run.dist.sum(float(stop))[0] > 0
        if stop:
            break
        began = time.perf_counter()
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": run.train_epoch(epoch)}
        if run.val_ex is not None:
            record.update(run.evaluate())
        record["seconds"] = round(time.perf_counter() - began, 3)
        run.checkpoint(epoch, record)
        run.stepper.log.scalars(run.stepper.steps, {k: v for k, v in record.items() if k != "epoch"}, "epoch")
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in shown})
        if config.on_epoch_end is not None:
            config.on_epoch_end(record)
    run.stepper.log.close()
    if run.dist.rank == 0:
        plot_history(run.history, run.out / "curves.png", title=f"{name} ({label})")
    run.dist.barrier()
    assert run.best is not None  # every run records at least one epoch (epochs >= 1)
    return FinetuneResult(history=run.history, best_epoch=run.best["epoch"], best_checkpoint=run.out,
                          model=run.load_best(), stopped_early=len(run.history) < config.epochs)


def _patience_spent(best: dict[str, Any] | None, epoch: int, patience: int | None) -> bool:
    """Whether ``patience`` epochs have passed since the best one, before ``epoch`` starts (so a
    resumed run that had stopped stops again)."""
    return patience is not None and best is not None and epoch - best["epoch"] >= patience


class _Run:
    """One finetuning run's state: data, model copy, head, optimizer, and where it has got to."""

    def __init__(self, base: Model, train: Any, val: Any, config: FinetuneConfig) -> None:
        import torch

        self.base, self.config = base, config
        self.dist = Dist.from_env(base.device)
        self.out = config.output_dir
        if self.dist.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        self._read_data(train, val)
        self.pool = base.embed_options(pool=config.pool).pool
        self.trains_backbone = config.strategy != "linear-probe"
        if (config.augment or config.mixup or config.cutmix) and not self.trains_backbone:
            raise ZooError("augment, mixup and cutmix change the images each epoch, and a linear probe embeds them "
                           "once: choose a strategy that trains the backbone")
        # A copy, so the caller's pretrained model keeps its weights when the backbone trains.
        self.model = copy.deepcopy(base) if self.trains_backbone else base
        self.encoder = self.model.encoder
        torch.manual_seed(config.seed)
        self.head = build_head(config.head, self.model.embed_dim, len(self.classes)).to(self.model.device)
        self.backbone = TrainedBackbone(self.model.model, config.lora) if self.trains_backbone else None
        self.blocks = self.encoder.blocks()
        self.x_train: torch.Tensor | None = None
        self.x_val: torch.Tensor | None = None
        if not self.trains_backbone:
            self._embed_once()
        params = param_groups(list(self.head.named_parameters()), {id(p) for p in self.head.parameters()},
                              config.head_lr, config.weight_decay)
        if self.trains_backbone:
            check_layer_decay(list(self.model.encoder.towers()), config)  # its own, not one over another
            named = list(self.model.model.named_parameters())
            trained = {id(p) for name, p in named if config.lora is None or ADAPTER_MARK in name}
            params += param_groups(named, trained, config.effective_backbone_lr, config.weight_decay,
                                   blocks=self.blocks, layer_decay=config.layer_decay)
        self.optimizer = adamw(params, base.device)
        shard = math.ceil(len(self.train_ex) / self.dist.world)
        self.stepper = Stepper(self.optimizer, make_scheduler(self.optimizer, config.epochs *
                                                              steps_per_epoch(shard, config), config),
                               [p for group in params for p in group["params"]], config, base.device,
                               log=RunLog(self.out, config.tensorboard, self.dist.rank))
        self.collate_train = train_collate(self.encoder, config)
        self.lengths = self._lengths()
        self.mix = mixer(config, len(self.classes))
        self.module = _Classifier.build(self.encoder, self.head, self.pool) if self.trains_backbone else self.head
        self.ddp_plan: Plan | None = None
        self.ddp_module = self.module
        self.start = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None
        self.settings = self._settings()

    def _lengths(self) -> list[int] | None:
        """Each training text's token count, where batches group by it (``group_by_length``)."""
        texts = self.trains_backbone and self.model.tower()[0] == "text"
        if self.config.group_by_length and not texts:
            raise ZooError("group_by_length batches texts of similar length; these inputs are not texts run through "
                           "the backbone each batch (a linear probe embeds them once): leave it out")
        if not texts or self.config.group_by_length is False:
            return None
        return self.encoder.lengths(self.train_ex.inputs) or [len(str(x)) for x in self.train_ex.inputs]

    def _read_data(self, train: Any, val: Any) -> None:
        import torch

        config = self.config
        columns = {"text_column": config.text_column, "label_column": config.label_column}
        self.train_ex = read_examples(train, **columns)
        self.val_ex = read_examples(val, **columns) if val is not None else None
        if self.val_ex is None and config.val_fraction:
            self.train_ex, self.val_ex = stratified_split(self.train_ex, config.val_fraction, config.seed)
        if len(self.train_ex) == 0:
            raise ZooError("no training examples")
        self.classes = label_index(self.train_ex.labels)
        if self.val_ex is not None and (unseen := set(self.val_ex.labels) - set(self.classes)):
            raise ZooError(f"validation labels not in the training data: {sorted(map(str, unseen))}")
        index = {c: i for i, c in enumerate(self.classes)}
        self.y_train = torch.tensor([index[label] for label in self.train_ex.labels])
        self.class_weights = _class_weights(config.class_weights, self.classes, self.y_train)
        self.y_val = torch.tensor([index[label] for label in self.val_ex.labels]) if self.val_ex is not None else None

    def _embed_once(self) -> None:
        """The linear probe: embed once (sharded across ranks), then train only the head."""
        dist, batch_size = self.dist, self.config.batch_size
        shard = list(range(dist.rank, len(self.train_ex), dist.world))
        x_shard = self.model.featurize([self.train_ex.inputs[i] for i in shard], batch_size=batch_size,
                                       pool=self.pool, return_tensors="pt", progress=self.config.progress)
        self.x_train = dist.gather_rows(x_shard, shard, len(self.train_ex)).to(self.model.device)
        if self.val_ex is not None:
            x_val = self.model.featurize(self.val_ex.inputs, batch_size=batch_size, pool=self.pool,
                                         return_tensors="pt", progress=False)
            self.x_val = cast("torch.Tensor", x_val).to(self.model.device)
        fit_standardization(self.head, self.x_train)

    def _settings(self) -> dict[str, Any]:
        """What identifies the run: resuming with other settings is refused."""
        c = self.config
        return {"strategy": c.strategy, "epochs": c.epochs, "lr": c.head_lr, "backbone_lr": c.effective_backbone_lr,
                "batch_size": c.batch_size, "head": c.head, "seed": c.seed, "unfreeze_blocks": c.unfreeze_blocks,
                "freeze_epochs": c.freeze_epochs, "weight_decay": c.weight_decay, "pool": self.pool,
                **training_settings(c),
                "world_size": self.dist.world, "train": fingerprint(zip(self.train_ex.inputs, self.train_ex.labels)),
                "val": fingerprint(zip(self.val_ex.inputs, self.val_ex.labels)) if self.val_ex is not None else None}

    def resume(self) -> None:
        """Continue from the last finished epoch recorded in ``resume.json``, if there is one."""

        state = read_resume(self.out, self.settings)
        if state is None:
            return
        load_tensors(self.head, self.out / state["head"])
        if self.backbone is not None:
            self.backbone.restore(self.out, state["backbone"])
        saved = load_state(self.out / state["state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.stepper.load_state_dict(saved["stepper"])
        set_rng_state(saved["rng"])
        self.start, self.history, self.best = state["epoch"], state["history"], state["best"]

    def _prepare_epoch(self, epoch: int) -> None:
        """Set what trains this epoch (and rebuild DDP when that changes: it fixes the set at build)."""
        c = self.config
        plan = plan_for_epoch(c.strategy, epoch, unfreeze_blocks=c.unfreeze_blocks, freeze_epochs=c.freeze_epochs)
        if self.trains_backbone:
            apply_plan(self.model.model, plan, self.blocks)
            set_train_mode(self.model.model, plan)
        self.head.train()
        if self.dist.world > 1 and plan != self.ddp_plan:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_module = DistributedDataParallel(self.module, find_unused_parameters=self.trains_backbone)
            self.ddp_plan = plan

    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's share of the shuffled training data; returns the mean loss."""
        import torch

        self._prepare_epoch(epoch)
        dist = self.dist
        order = dist.epoch_order(len(self.train_ex), self.config.seed, epoch)
        if self.lengths is not None:
            order = length_grouped(order, self.lengths, self.config.batch_size)
        loss_sum = count = 0.0
        weights = self.class_weights.to(self.model.device) if self.class_weights is not None else None
        self.optimizer.zero_grad(set_to_none=True)
        for group in batch_groups(order, self.config):
            # each batch's mean loss, weighed by its share of the group's (class-weighted) rows
            mass = [self._mass(idx, weights) for idx in group]
            group_loss = 0.0
            for idx, share in zip(group, (m / sum(mass) for m in mass)):
                batch = self.x_train[idx] if self.x_train is not None else \
                    self.collate_train([self.train_ex.inputs[i] for i in idx])
                target = self.y_train[idx]
                if self.mix is not None and len(idx) % 2 == 0:  # timm's Mixup pairs rows: an odd last batch
                    batch, target = self.mix(batch, target)      # stays unmixed (timm drops it instead)
                with self.stepper.autocast():
                    logits = self.ddp_module(batch)
                loss = torch.nn.functional.cross_entropy(logits.float(), target.to(logits.device), weight=weights)
                self.stepper.backward(loss, share)
                group_loss += loss.item() * share
                loss_sum += loss.item() * len(idx)
                count += len(idx)
            self.stepper.step(group_loss)
        loss_sum, count = dist.sum(loss_sum, count)
        return loss_sum / count

    def _mass(self, idx: list[int], weights: torch.Tensor | None) -> float:
        """What a batch's mean loss is divided by: its rows, or their class weights summed."""
        return float(len(idx)) if weights is None else float(weights[self.y_train[idx]].sum())

    def evaluate(self) -> dict[str, float]:
        """Validation loss, accuracy and macro-F1 of the current weights."""
        import torch

        self.head.eval()
        self.model.model.eval()
        with torch.inference_mode():
            if self.x_val is not None:
                logits = self.head(self.x_val)
            else:
                normalize = bool(self.encoder.spec.normalize)
                logits = torch.cat([self.head(features(self.encoder, batch, self.pool, normalize))
                                    for batch in self._val_batches()])
        assert self.y_val is not None  # evaluate runs only with validation examples
        return _metrics(logits.float().cpu(), self.y_val, len(self.classes))

    def _val_batches(self) -> Iterator[Any]:
        assert self.val_ex is not None  # evaluate runs only with validation examples
        inputs, size = self.val_ex.inputs, self.config.batch_size
        for start in range(0, len(inputs), size):
            yield self.encoder.collate([self.encoder.decode(x) for x in inputs[start:start + size]])

    def checkpoint(self, epoch: int, record: dict[str, float]) -> None:
        """Record the epoch; rank 0 saves its weights, and the manifests that name them, atomically."""

        self.history.append(record)
        score = (record["val_accuracy"], -record["val_loss"]) if self.val_ex is not None else (-record["train_loss"],)
        improved = self.best is None or list(score) > list(self.best["score"])
        if improved:
            self.best = {"epoch": epoch + 1, "score": list(score)}
        if self.dist.rank == 0:
            out, tag = self.out, f"e{epoch + 1:03d}"
            backbone = self.backbone.save(out, tag) if self.backbone is not None else None
            head = save_tensors(out / f"{tag}.head.safetensors", self.head)
            state = save_state(out / f"{tag}.state.pt", {"optimizer": self.optimizer.state_dict(),
                                                          "stepper": self.stepper.state_dict(),
                                                          "rng": rng_state()})
            weights = [head, *([backbone["file"]] if backbone else [])]
            common = self._manifest_common()
            if improved:
                write_run_manifest(out, MANIFEST, {
                    **common, "head": {**common["head"], "file": head}, "backbone": backbone,
                    "epoch": epoch + 1, "history": self.history}, weights)
            write_run_manifest(out, RESUME, {
                **common, "epoch": epoch + 1, "history": self.history, "best": self.best, "head": head,
                "backbone": backbone, "state": state}, [*weights, state])
            prune(out)
        self.dist.barrier()

    def _manifest_common(self) -> dict[str, Any]:
        base = self.base
        return {"format": FORMAT, "zoo_version": __version__, "base": weights_provenance(base.spec, base.files),
                "labels": self.classes, "pool": self.pool, "settings": self.settings,
                "head": {"type": self.config.head, "in_features": self.model.embed_dim,
                         "num_classes": len(self.classes)}}

    def load_best(self) -> Model:
        """The best epoch's weights, read back from what was saved (so the result is what zoo.load gives)."""
        manifest = read_json(self.out / MANIFEST)
        load_tensors(self.head, self.out / manifest["head"]["file"])
        if self.backbone is not None:
            self.backbone.finish(self.out, manifest["backbone"])
        self.model.model.eval()
        spec = FinetunedCheckpoint.spec_for_path(self.out, manifest)
        spec = spec.replace(normalize=self.model.spec.normalize, pooling=manifest.get("pool"))
        return Model(self.encoder, spec=spec, head=Head(self.head, list(manifest["labels"]), manifest.get("pool")))
