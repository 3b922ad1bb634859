"""The finetuning loop behind :meth:`zoo.Adapter.finetune`: one loop for every backend and modality.

Deterministic for a seed: each epoch's shuffle comes from ``(seed, epoch)`` and the RNG state is
saved with every checkpoint, so a run killed at any moment and resumed with ``resume=True`` ends
with the metrics of an uninterrupted run. Under ``torchrun`` it trains data-parallel with
``torch.distributed`` (gloo on CPU, nccl on GPU); only rank 0 writes.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import ZooError
from ..manifest import MANIFEST
from .data import Examples, label_index, read_examples, stratified_split
from .finetuned import FORMAT, FinetunedModel, features
from .heads import build_head, fit_standardization
from .store import (RESUME, load_state, load_tensors, prune, read_run_manifest, save_state, save_tensors,
                    write_run_manifest)
from .strategies import apply_plan, check_strategy, plan_for_epoch, set_train_mode

if TYPE_CHECKING:
    import torch

    from ..adapter import Adapter


@dataclass
class FinetuneResult:
    """What a finetuning run produced.

    Attributes:
        history: one dict per epoch: ``epoch``, ``train_loss`` and, with validation data,
            ``val_loss``, ``val_accuracy``, ``val_macro_f1``; also ``seconds``.
        best_epoch: the epoch whose weights were kept (best validation accuracy, then loss).
        best_checkpoint: the folder ``zoo.load`` reads the best model from (``output_dir``).
        model: the best model, ready to ``predict``.
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_checkpoint: Path
    model: FinetunedModel


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: str) -> _Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def gather_rows(self, shard: Any, indices: list[int], total: int) -> Any:
        """Reassemble a feature matrix computed in shards (rows ``indices`` on this rank)."""
        import torch

        if self.world == 1:
            return shard
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, (indices, shard.cpu()))
        out = torch.empty((total, shard.shape[1]), dtype=shard.dtype)
        for idx, rows in parts:
            out[idx] = rows
        return out


class _Classifier:
    """Backbone + head as one trainable ``nn.Module`` (built lazily to keep torch out of import)."""

    @staticmethod
    def build(adapter: Adapter, head: torch.nn.Module, pool: str | None) -> torch.nn.Module:
        import torch

        class Classifier(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = adapter.model
                self.head = head

            def forward(self, batch: Any) -> torch.Tensor:
                return self.head(features(adapter, batch, pool))

        return Classifier()


def _fingerprint(examples: Examples) -> str:
    digest = hashlib.sha256()
    for item, label in zip(examples.inputs, examples.labels):
        digest.update(repr((item if isinstance(item, (str, int, float)) else type(item).__name__, label)).encode())
    return digest.hexdigest()[:16]


def _metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    import torch
    from sklearn.metrics import f1_score

    loss = torch.nn.functional.cross_entropy(logits, y).item()
    pred = logits.argmax(1)
    return {"val_loss": loss, "val_accuracy": (pred == y).float().mean().item(),
            "val_macro_f1": float(f1_score(y.numpy(), pred.numpy(), average="macro",
                                           labels=list(range(num_classes)), zero_division=0))}


def finetune(
    adapter: Adapter,
    train: Any,
    val: Any = None,
    *,
    output_dir: str | os.PathLike[str],
    strategy: str = "linear-probe",
    epochs: int = 5,
    lr: float | None = None,
    backbone_lr: float | None = None,
    batch_size: int = 32,
    head: str = "linear",
    seed: int = 0,
    unfreeze_blocks: int = 2,
    freeze_epochs: int = 1,
    weight_decay: float = 0.01,
    val_fraction: float | None = None,
    pool: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> FinetuneResult:
    """Train a classifier on ``adapter``; see :meth:`zoo.Adapter.finetune`."""
    import torch
    from tqdm.auto import tqdm

    check_strategy(strategy)
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    dist = _Dist.from_env(adapter.device)
    out = Path(output_dir)
    if dist.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()

    train_ex = read_examples(train, text_column=text_column, label_column=label_column)
    val_ex = read_examples(val, text_column=text_column, label_column=label_column) if val is not None else None
    if val_ex is None and val_fraction:
        train_ex, val_ex = stratified_split(train_ex, val_fraction, seed)
    if len(train_ex) == 0:
        raise ZooError("no training examples")
    classes = label_index(train_ex.labels)
    if val_ex is not None and (unseen := set(val_ex.labels) - set(classes)):
        raise ZooError(f"validation labels not in the training data: {sorted(map(str, unseen))}")
    index = {c: i for i, c in enumerate(classes)}
    y_train = torch.tensor([index[label] for label in train_ex.labels])
    y_val = torch.tensor([index[label] for label in val_ex.labels]) if val_ex is not None else None

    lr = lr if lr is not None else (1e-2 if strategy == "linear-probe" else 1e-3)
    backbone_lr = backbone_lr if backbone_lr is not None else lr / 10
    pool = adapter.check_pool(pool)
    settings = {"strategy": strategy, "epochs": epochs, "lr": lr, "backbone_lr": backbone_lr,
                "batch_size": batch_size, "head": head, "seed": seed, "unfreeze_blocks": unfreeze_blocks,
                "freeze_epochs": freeze_epochs, "weight_decay": weight_decay, "pool": pool,
                "world_size": dist.world, "train": _fingerprint(train_ex),
                "val": _fingerprint(val_ex) if val_ex is not None else None}

    # A copy, so the caller's pretrained model keeps its weights when the backbone trains.
    trains_backbone = strategy != "linear-probe"
    model = copy.deepcopy(adapter) if trains_backbone else adapter
    torch.manual_seed(seed)
    head_module = build_head(head, model.embed_dim, len(classes)).to(model.device)
    blocks = model.blocks()

    x_train = x_val = None
    if not trains_backbone:  # the linear probe: embed once, then train only the head
        shard = list(range(dist.rank, len(train_ex), dist.world))
        x_shard = model.featurize([train_ex.inputs[i] for i in shard], batch_size=batch_size,
                                  pool=pool, return_tensors="pt", progress=progress)
        x_train = dist.gather_rows(x_shard, shard, len(train_ex)).to(model.device)
        if val_ex is not None:
            x_val = model.featurize(val_ex.inputs, batch_size=batch_size, pool=pool, return_tensors="pt",
                                    progress=False).to(model.device)
        fit_standardization(head_module, x_train)

    params = [{"params": list(head_module.parameters()), "lr": lr}]
    if trains_backbone:
        params.append({"params": list(model.model.parameters()), "lr": backbone_lr})
    optimizer = torch.optim.AdamW(params, weight_decay=weight_decay)
    module = _Classifier.build(model, head_module, pool) if trains_backbone else head_module

    start, history, best = 0, [], None
    state = read_run_manifest(out, RESUME) if resume else None
    if state is not None:
        if state["settings"] != settings:
            changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
            raise ZooError(f"{out} holds a run with other settings ({', '.join(changed)}); "
                           "use another output_dir or the same settings")
        load_tensors(head_module, out / state["head"])
        if state.get("backbone"):
            load_tensors(model.model, out / state["backbone"])
        saved = load_state(out / state["state"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        start, history, best = state["epoch"], state["history"], state["best"]

    base = {"name": adapter.spec.name, "revision": adapter.spec.revision, "sha256": dict(adapter.spec.sha256),
            "modality": adapter.modality, "backend": adapter.backend,
            "source": adapter.files.source.describe() if adapter.files else None}
    common = {"format": FORMAT, "zoo_version": __version__, "base": base, "labels": classes, "pool": pool,
              "head": {"type": head, "in_features": model.embed_dim, "num_classes": len(classes)},
              "settings": settings}

    decode = model.decoder()
    ddp_plan, ddp_module = None, module
    bar = tqdm(range(start, epochs), initial=start, total=epochs, desc=f"finetune {adapter.name}", unit="epoch",
               disable=(not progress if progress is not None else False) or dist.rank != 0)
    for epoch in bar:
        began = time.perf_counter()
        plan = plan_for_epoch(strategy, epoch, unfreeze_blocks=unfreeze_blocks, freeze_epochs=freeze_epochs)
        if trains_backbone:
            apply_plan(model.model, plan, blocks)
            set_train_mode(model.model, plan)
        head_module.train()
        if dist.world > 1 and plan != ddp_plan:  # DDP fixes the trainable set when it is built
            from torch.nn.parallel import DistributedDataParallel

            ddp_module, ddp_plan = DistributedDataParallel(module, find_unused_parameters=trains_backbone), plan

        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_ex), generator=generator).tolist()
        per_rank = math.ceil(len(order) / dist.world)
        order = (order * 2)[: per_rank * dist.world][dist.rank::dist.world]
        loss_sum = count = 0.0
        for start_i in range(0, len(order), batch_size):
            idx = order[start_i:start_i + batch_size]
            if x_train is not None:
                batch = x_train[idx]
            else:
                batch = model.collate([decode(train_ex.inputs[i]) for i in idx])
            logits = ddp_module(batch)
            loss = torch.nn.functional.cross_entropy(logits, y_train[idx].to(logits.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            count += len(idx)
        loss_sum, count = dist.sum(loss_sum, count)
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": loss_sum / count}

        if val_ex is not None:
            head_module.eval()
            model.model.eval()
            with torch.inference_mode():
                if x_val is not None:
                    logits = head_module(x_val)
                else:
                    logits = torch.cat([head_module(features(model, batch, pool)) for batch in
                                        _ordered_batches(model, val_ex.inputs, decode, batch_size)])
            record.update(_metrics(logits.float().cpu(), y_val, len(classes)))
        record["seconds"] = round(time.perf_counter() - began, 3)
        history.append(record)
        score = (record["val_accuracy"], -record["val_loss"]) if val_ex is not None else (-record["train_loss"],)
        improved = best is None or list(score) > list(best["score"])
        if improved:
            best = {"epoch": epoch + 1, "score": list(score)}

        if dist.rank == 0:
            tag = f"e{epoch + 1:03d}"
            backbone_file = save_tensors(out / f"{tag}.backbone.safetensors", model.model) if trains_backbone else None
            head_file = save_tensors(out / f"{tag}.head.safetensors", head_module)
            state_file = save_state(out / f"{tag}.state.pt", {"optimizer": optimizer.state_dict(),
                                                                "rng": torch.get_rng_state()})
            weights = [f for f in (head_file, backbone_file) if f]
            if improved:
                write_run_manifest(out, MANIFEST, {
                    **common, "head": {**common["head"], "file": head_file},
                    "backbone": {"file": backbone_file} if backbone_file else None,
                    "epoch": epoch + 1, "history": history}, weights)
            write_run_manifest(out, RESUME, {
                **common, "epoch": epoch + 1, "history": history, "best": best, "head": head_file,
                "backbone": backbone_file, "state": state_file}, [*weights, state_file])
            prune(out)
        dist.barrier()
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("train_loss", "val_accuracy")})
        if on_epoch_end is not None:
            on_epoch_end(record)

    if dist.rank == 0:
        from .plot import plot_history

        plot_history(history, out / "curves.png", title=f"{adapter.name} ({strategy})")
    dist.barrier()
    best_model = _load_best(out, model, head_module)
    return FinetuneResult(history=history, best_epoch=best["epoch"], best_checkpoint=out, model=best_model)


def _ordered_batches(model: Adapter, inputs: list[Any], decode: Callable[[Any], Any], batch_size: int):
    for start in range(0, len(inputs), batch_size):
        yield model.collate([decode(x) for x in inputs[start:start + batch_size]])


def _load_best(out: Path, model: Adapter, head: torch.nn.Module) -> FinetunedModel:
    """The best epoch's weights, read back from what was saved (so the result is what zoo.load gives)."""
    from ..manifest import read_json

    manifest = read_json(out / MANIFEST)
    load_tensors(head, out / manifest["head"]["file"])
    if manifest.get("backbone"):
        load_tensors(model.model, out / manifest["backbone"]["file"])
    model.model.eval()
    spec = FinetunedModel.spec_for_path(out, manifest)
    spec = spec.replace(normalize=model.spec.normalize, pooling=manifest.get("pool"))
    return FinetunedModel(spec, model, head, manifest["labels"], pool=manifest.get("pool"), files=None)
