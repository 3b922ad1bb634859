"""Contrastive finetuning: the embedding itself trains on ``(anchor, positive)`` pairs or
``(anchor, positive, negative)`` triplets, every other positive and negative of the batch serving
as a negative too.

The loss is sentence-transformers' own :class:`MultipleNegativesRankingLoss`, computed from the
embeddings zoo's encoders give (``compute_loss_from_embeddings``): the scale, the symmetric
variant (``directions=("query_to_doc", "doc_to_query")``, averaged per direction) and, under
``torchrun``, the negatives gathered across processes with gradients are its. A Matryoshka run sums
that loss over each declared leading width, as sentence-transformers' ``MatryoshkaLoss`` does with
weights of 1. Checkpoints, resuming and the best epoch work as in classification
(:mod:`zoo.training._loop`); the saved folder holds the trained backbone (or, with
``strategy="lora"``, its adapter) and no head.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from zoo import __version__
from zoo.core._model import Model, features
from zoo.core._towers import column_tower
from zoo.errors import ZooError
from zoo.evaluation._retrieval import Cutoffs
from zoo.evaluation._retrieval_task import judge_pairs, pair_scores
from zoo.store._manifest import MANIFEST, read_json
from zoo.store._provenance import weights_provenance

from ._checkpoints import (
    RESUME,
    load_state,
    prune,
    read_resume,
    rng_state,
    save_state,
    set_rng_state,
    write_run_manifest,
)
from ._config import FinetuneConfig
from ._data import Pairs, fingerprint, read_pairs
from ._distributed import Dist
from ._finetuned import FORMAT, FinetunedCheckpoint
from ._logging import RunLog
from ._loop import FinetuneResult, run_epochs
from ._lora import ADAPTER_MARK, TrainedBackbone
from ._optim import (
    Stepper,
    adamw,
    batch_groups,
    check_layer_decay,
    make_scheduler,
    param_groups,
    steps_per_epoch,
    training_settings,
)
from ._strategies import apply_plan, plan_for_epoch, set_train_mode

if TYPE_CHECKING:
    import torch

#: rows of texts embedded together in training: a batch's texts go through in pieces of similar
#: length (see ``_ContrastiveRun._embed``)
TEXT_PIECE = 8
#: the retrieval figures validation reports (zoo evaluate's, on the validation pairs)
VALIDATION_CUTOFFS = Cutoffs(accuracy=(), precision_recall=(1, 10), mrr=(10,), ndcg=(10,), map=())


def contrastive_loss(config: FinetuneConfig, *, kind: str = "mnrl", model: Any = None, gather: bool = False,
                     rank: int = 0, world: int = 1) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """The loss of a batch from its columns' embeddings: ``[anchors, positives(, negatives)]`` for
    ``mnrl`` (sentence-transformers' ``MultipleNegativesRankingLoss``), ``[images, texts]`` for
    ``clip`` / ``siglip`` (open_clip's ``ClipLoss`` / ``SigLipLoss``, at ``model``'s learned
    ``logit_scale`` and ``logit_bias``); summed over ``config.matryoshka_dims`` where given."""
    one = _ranking(config, gather) if kind == "mnrl" else _open_clip(kind, model, rank, world)
    dims = config.matryoshka_dims

    def loss(embeddings: list[torch.Tensor]) -> torch.Tensor:
        if not dims:
            return one(embeddings)
        return sum((one([e[:, :d] for e in embeddings]) for d in dims), embeddings[0].new_zeros(()))

    return loss


def _ranking(config: FinetuneConfig, gather: bool) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    directions = ("query_to_doc", "doc_to_query") if config.symmetric else ("query_to_doc",)
    ranking = MultipleNegativesRankingLoss(None, scale=config.scale, directions=directions,  # type: ignore[arg-type]
                                           partition_mode="per_direction" if config.symmetric else "joint",
                                           gather_across_devices=gather)
    # The ranking loss's targets are the batch positions; it reads no labels.
    return lambda embeddings: ranking.compute_loss_from_embeddings(embeddings, None)  # type: ignore[arg-type]


def temperature_owner(module: Any) -> Any:
    """The module holding a contrastive model's learned ``logit_scale`` (and ``logit_bias``): the
    model itself, or the one inside a pipeline that wraps it (a sentence-transformers CLIP)."""
    import torch

    return next((m for m in module.modules() if isinstance(getattr(m, "logit_scale", None), torch.nn.Parameter)),
                module)


def _open_clip(kind: str, model: Any, rank: int, world: int) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """open_clip's loss on unit-length image and text rows, as its training script computes it."""
    import torch
    from open_clip.loss import ClipLoss, SigLipLoss

    model = temperature_owner(model)
    unit = torch.nn.functional.normalize
    if kind == "siglip":
        siglip = SigLipLoss(rank=rank, world_size=world)
        return lambda e: siglip(unit(e[0], dim=-1), unit(e[1], dim=-1), model.logit_scale.exp(), model.logit_bias)
    clip = ClipLoss(gather_with_grad=world > 1, rank=rank, world_size=world)
    return lambda e: clip(unit(e[0], dim=-1), unit(e[1], dim=-1), model.logit_scale.exp())


def train_contrastive(model: Model, train: Any, val: Any, config: FinetuneConfig) -> FinetuneResult:
    """Train ``model``'s embedding as ``config`` says; see :meth:`zoo.Model.finetune`."""
    return run_epochs(_ContrastiveRun(model, train, val, config), model.name, config, label="contrastive",
                      shown=("train_loss", "val_recall@10"))


class _ContrastiveRun:
    """One contrastive run's state: the pairs, a copy of the model, the optimizer and schedule."""

    def __init__(self, base: Model, train: Any, val: Any, config: FinetuneConfig) -> None:
        import torch

        self.base, self.config = base, config
        self.dist = Dist.from_env(base.device)
        self.out = config.output_dir
        if self.dist.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()
        columns = {"anchor_column": config.anchor_column, "positive_column": config.positive_column,
                   "negative_column": config.negative_column}
        self.train_ex = read_pairs(train, **columns)
        self.val_ex = read_pairs(val, **columns) if val is not None else None
        if self.val_ex is None and config.val_fraction:
            self.train_ex, self.val_ex = _split(self.train_ex, config.val_fraction, config.seed)
        if len(self.train_ex) == 0:
            raise ZooError("no contrastive training examples are left once the validation ones are held out: give "
                           "more pairs, or a smaller val_fraction")
        too_wide = [d for d in config.matryoshka_dims if d > base.embed_dim]
        if too_wide:
            raise ZooError(f"matryoshka_dims {too_wide} are wider than {base.name}'s {base.embed_dim} dimensions")
        self.pool = base.embed_options(pool=config.pool).pool
        self.model = copy.deepcopy(base)  # the caller's pretrained model keeps its weights
        self.towers = column_towers(self.model, self.train_ex)
        self.kind = loss_kind(config, self.model, self.towers)
        self.blocks = self.model.encoder.blocks()
        torch.manual_seed(config.seed)
        self.backbone = TrainedBackbone(self.model.model, config.lora, skip=locked_towers(self.model, config.lock))
        self.locked = locked_parameters(self.model, config.lock)
        self.params = [p for name, p in self.model.model.named_parameters()
                       if id(p) not in self.locked and (config.lora is None or ADAPTER_MARK in name)]
        self.optimizer = adamw(self._param_groups(), base.device, lr=config.head_lr)
        steps = config.epochs * steps_per_epoch(math.ceil(len(self.train_ex) / self.dist.world), config)
        self.stepper = Stepper(self.optimizer, make_scheduler(self.optimizer, steps, config), self.params, config,
                               base.device, sync=self.dist.average_gradients,
                               log=RunLog(self.out, config.tensorboard, self.dist.rank))
        self.loss = self._loss(rank=self.dist.rank, world=self.dist.world)
        # Every rank evaluates the same validation pairs: gathered, they would meet themselves as negatives.
        self.eval_loss = self._loss(rank=0, world=1)
        self.start = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None
        self.settings = self._settings()

    def _loss(self, *, rank: int, world: int) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        """The run's loss over a batch's columns, in the order its kind takes them."""
        loss = contrastive_loss(self.config, kind=self.kind, model=self.model.model, gather=world > 1, rank=rank,
                                world=world)
        if self.kind == "mnrl":
            return loss
        order = [self.towers.index(t) for t in ("vision", "text")]  # open_clip's losses take images first
        return lambda embeddings: loss([embeddings[i] for i in order])

    def _param_groups(self) -> list[dict[str, Any]]:
        """The trained parameters, at their layer's learning rate (``layer_decay``), with no weight
        decay on those of one dimension (biases, gains, the learned temperature and bias, as
        open_clip's training and the Hugging Face ``Trainer`` leave them)."""
        c = self.config
        check_layer_decay(list(self.model.encoder.towers()), c)  # its own, not one over another
        return param_groups(list(self.model.model.named_parameters()), {id(p) for p in self.params}, c.head_lr,
                            c.weight_decay, blocks=self.blocks, layer_decay=c.layer_decay)

    def _settings(self) -> dict[str, Any]:
        """What identifies the run: resuming with other settings is refused."""
        c = self.config
        return {"objective": c.objective, "strategy": c.strategy, "epochs": c.epochs, "lr": c.head_lr,
                "batch_size": c.batch_size, "seed": c.seed, "unfreeze_blocks": c.unfreeze_blocks,
                "weight_decay": c.weight_decay, "pool": self.pool, "scale": c.scale, "symmetric": c.symmetric,
                "matryoshka_dims": list(c.matryoshka_dims), "loss": self.kind, "lock": list(c.lock),
                "world_size": self.dist.world, **training_settings(c),
                "train": fingerprint(zip(*self.train_ex.columns())),
                "val": fingerprint(zip(*self.val_ex.columns())) if self.val_ex is not None else None}

    def resume(self) -> None:
        """Continue from the last finished epoch recorded in ``resume.json``, if there is one."""

        state = read_resume(self.out, self.settings)
        if state is None:
            return
        self.backbone.restore(self.out, state["backbone"])
        saved = load_state(self.out / state["state"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.stepper.load_state_dict(saved["stepper"])
        set_rng_state(saved["rng"])
        self.start, self.history, self.best = state["epoch"], state["history"], state["best"]

    def _embed(self, inputs: list[Any], tower: str) -> torch.Tensor:
        """One column of a batch through its tower, with gradients where parameters train. Texts
        go through in pieces of :data:`TEXT_PIECE`, shortest first, each padded to its own
        longest text rather than the batch's (featurize's length sort, kept inside the batch, so
        the rows and the negatives they meet are the same), and come back in their order."""
        import torch

        if tower != "text" or len(inputs) <= TEXT_PIECE:
            return self._embed_piece(inputs, tower)
        lengths = self.model.towers[tower].lengths(inputs) or [len(x) for x in inputs]
        order = sorted(range(len(inputs)), key=lambda i: lengths[i])
        rows = torch.cat([self._embed_piece([inputs[i] for i in order[start:start + TEXT_PIECE]], tower)
                          for start in range(0, len(order), TEXT_PIECE)])
        back = [0] * len(order)
        for place, i in enumerate(order):
            back[i] = place
        return rows[back]

    def _embed_piece(self, inputs: list[Any], tower: str) -> torch.Tensor:
        encoder = self.model.towers[tower]
        batch = encoder.collate([encoder.decode(x) for x in inputs])
        with self.stepper.autocast():
            return features(encoder, batch, self.pool if encoder is self.model.encoder else None, normalize=False)

    def backward(self, batch: list[list[Any]], share: float = 1.0) -> torch.Tensor:
        """The loss of one batch's columns, its gradients (weighed by ``share``, the batch's part
        of its accumulation group) added into the parameters: at once, or ``mini_batch_size`` rows
        at a time with the embeddings' gradients cached."""
        size = self.config.mini_batch_size
        if size is None or size >= len(batch[0]):
            loss = self.loss([self._embed(column, tower) for column, tower in zip(batch, self.towers)])
            self.stepper.backward(loss, share)
            return loss.detach()
        return cached_backward(lambda e: self.loss(e) * share, batch,
                               lambda rows, c: self._embed(rows, self.towers[c]), size, self.model.device) / share

    def train_epoch(self, epoch: int) -> float:
        """One pass over this rank's share of the shuffled pairs; returns the mean loss."""
        import torch

        c = self.config
        plan = plan_for_epoch(c.strategy, epoch, unfreeze_blocks=c.unfreeze_blocks, freeze_epochs=c.freeze_epochs)
        apply_plan(self.model.model, plan, self.blocks)
        for param in self.model.model.parameters():
            if id(param) in self.locked:
                param.requires_grad_(False)
        set_train_mode(self.model.model, plan)
        order = self.dist.epoch_order(len(self.train_ex), c.seed, epoch)
        columns = self.train_ex.columns()
        loss_sum = count = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for group in batch_groups(order, c):
            rows = sum(len(idx) for idx in group)
            group_loss = 0.0
            for idx in group:
                loss = self.backward([[column[i] for i in idx] for column in columns], len(idx) / rows).item()
                group_loss += loss * len(idx) / rows
                loss_sum += loss * len(idx)
                count += len(idx)
            self.stepper.step(group_loss)
            if self.kind != "mnrl":  # as open_clip's training does: a temperature of at most 100
                with torch.no_grad():
                    temperature_owner(self.model.model).logit_scale.clamp_(0, math.log(100))
        loss_sum, count = self.dist.sum(loss_sum, count)
        return loss_sum / count

    def evaluate(self) -> dict[str, float]:
        """The validation loss (batch by batch, in order) and the retrieval figures of ``zoo
        evaluate`` on the validation pairs (each anchor ranks every distinct positive by cosine):
        recall@1 and @10, precision@1 and @10, MRR@10 and nDCG@10."""
        import torch

        assert self.val_ex is not None  # evaluate runs only with validation pairs
        self.model.model.eval()
        size, columns = self.config.batch_size, self.val_ex.columns()
        losses, anchors, positives = [], [], []
        with torch.inference_mode():
            for start in range(0, len(self.val_ex), size):
                embedded = [self._embed(column[start:start + size], tower)
                            for column, tower in zip(columns, self.towers)]
                losses.append(self.eval_loss(embedded).item() * len(embedded[0]))
                anchors.append(embedded[0])
                positives.append(embedded[1])
        judged = judge_pairs(self.val_ex.anchors, self.val_ex.positives)
        figures = pair_scores(torch.cat(anchors).float().cpu().numpy(), torch.cat(positives).float().cpu().numpy(),
                              judged, VALIDATION_CUTOFFS)
        return {"val_loss": sum(losses) / len(self.val_ex), **{f"val_{k}": v for k, v in figures.items()}}

    def checkpoint(self, epoch: int, record: dict[str, float]) -> None:
        """Record the epoch; rank 0 saves the backbone, and the manifests that name it, atomically."""

        self.history.append(record)
        score = [record["val_recall@10"], -record["val_loss"]] if self.val_ex is not None \
            else [-record["train_loss"]]
        improved = self.best is None or score > list(self.best["score"])
        if improved:
            self.best = {"epoch": epoch + 1, "score": score}
        if self.dist.rank == 0:
            tag = f"e{epoch + 1:03d}"
            backbone = self.backbone.save(self.out, tag)
            state = save_state(self.out / f"{tag}.state.pt", {
                "optimizer": self.optimizer.state_dict(), "stepper": self.stepper.state_dict(),
                "rng": rng_state()})
            common = self._manifest_common()
            if improved:
                write_run_manifest(self.out, MANIFEST, {**common, "backbone": backbone, "epoch": epoch + 1,
                                                        "history": self.history}, [backbone["file"]])
            write_run_manifest(self.out, RESUME, {**common, "epoch": epoch + 1, "history": self.history,
                                                  "best": self.best, "backbone": backbone, "state": state},
                               [backbone["file"], state])
            prune(self.out)
        self.dist.barrier()

    def _manifest_common(self) -> dict[str, Any]:
        return {"format": FORMAT, "zoo_version": __version__, "objective": "contrastive",
                "base": weights_provenance(self.base.spec, self.base.files), "pool": self.pool,
                "embed_dim": self.base.embed_dim, "matryoshka_dims": list(self.config.matryoshka_dims),
                "settings": self.settings, "head": None}

    def load_best(self) -> Model:
        """The best epoch's weights, read back from what was saved (so the result is what zoo.load gives)."""
        manifest = read_json(self.out / MANIFEST)
        self.backbone.finish(self.out, manifest["backbone"])
        self.model.model.eval()
        return FinetunedCheckpoint.adapted(self.out, manifest, self.model)


def cached_backward(loss_of: Callable[[list[torch.Tensor]], torch.Tensor], batch: list[list[Any]],
                    embed: Callable[[list[Any], int], torch.Tensor], size: int, device: Any) -> torch.Tensor:
    """GradCache (Gao et al., 2021), as sentence-transformers' cached losses do it: embed the
    batch's columns ``size`` rows at a time without a graph, take the loss and its gradients with
    respect to those embeddings over the whole batch, then embed each chunk again with a graph and
    carry its share of the cached gradients into the parameters. ``embed(rows, column)`` gives
    one chunk's embeddings; each chunk's second pass replays the random state of its first (the
    same dropout), so the gradients are those of the loss over the whole batch at once (BatchNorm
    aside: each chunk normalises by its own statistics, as sentence-transformers' cached losses do).
    A column whose tower trains nothing is not carried further than its first chunk."""
    import torch

    chunks = [[column[s:s + size] for s in range(0, len(column), size)] for column in batch]
    states: list[list[Any]] = [[] for _ in chunks]
    cached = []
    with torch.no_grad():
        for c, parts in enumerate(chunks):
            rows = []
            for part in parts:
                states[c].append(_random_state(device))
                rows.append(embed(part, c))
            cached.append(torch.cat(rows).requires_grad_())
    loss = loss_of(cached)
    loss.backward()  # into the cached embeddings, and the loss's own parameters (a learned temperature)
    for c, parts in enumerate(chunks):
        grads = cast(torch.Tensor, cached[c].grad).split([len(part) for part in parts])
        for part, grad, state in zip(parts, grads, states[c]):
            with _replayed(state, device):
                again = embed(part, c)
            if not again.requires_grad:  # a tower with nothing to train (locked, or frozen by the strategy)
                break
            again.backward(grad)
    return loss.detach()


def _random_state(device: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU generator's state, and the device's where the model runs on CUDA."""
    import torch

    cuda = torch.cuda.get_rng_state(device) if torch.device(device).type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextmanager
def _replayed(state: tuple[torch.Tensor, torch.Tensor | None], device: Any) -> Iterator[None]:
    """Run a block from a saved random state, leaving the generators as they were before it."""
    import torch

    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def column_towers(model: Model, pairs: Pairs) -> list[str]:
    """The tower each column of ``pairs`` goes through (:func:`column_tower`)."""
    return [column_tower(model, name, column) for name, column in zip(("anchor", "positive", "negative"),
                                                                       pairs.columns())]


def loss_kind(config: FinetuneConfig, model: Model, towers: list[str]) -> str:
    """The loss ``config.loss`` names, with ``auto`` resolved: open_clip's SigLIP loss for an
    image-text model with a logit bias, its CLIP loss for one without, else the ranking loss."""
    pairs_of_two_kinds = sorted(set(towers)) == ["text", "vision"] and len(towers) == 2
    if config.loss in ("clip", "siglip") and not pairs_of_two_kinds:
        raise ZooError(f"loss={config.loss!r} takes image-caption pairs (an image column and a text column); "
                       f"these columns go through {', '.join(towers)}: use loss='mnrl'")
    kind = config.loss
    if kind == "auto" and not pairs_of_two_kinds:
        kind = "mnrl"
    elif kind == "auto":
        kind = "siglip" if getattr(temperature_owner(model.model), "logit_bias", None) is not None else "clip"
    if kind != "mnrl" and (config.symmetric or config.scale != 20.0):
        raise ZooError(f"symmetric and scale are options of the ranking loss (mnrl); open_clip's {kind} loss is "
                       "symmetric already and learns its own temperature: leave them unset, or pass loss='mnrl'")
    return kind


def locked_towers(model: Model, lock: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a parameter or layer name lies in a tower ``lock`` names (``vision``, ``text``),
    which stays as it is: the image tower is the module its encoder names, the text tower every
    other one but the learned temperature and bias."""
    if not lock:
        return lambda name: False
    image_prefixes = getattr(model.encoder, "image_prefixes", None)
    unknown = [t for t in lock if t not in ("vision", "text")]
    if image_prefixes is None or unknown:
        raise ZooError(f"lock={lock!r}: only the 'vision' and 'text' towers of an image-text model can be locked")
    prefixes = tuple(f"{p}." for p in image_prefixes())

    def locked(name: str) -> bool:
        last = name.rsplit(".", 1)[-1]  # the temperature and bias, wherever the model sits in a pipeline
        tower = "vision" if f"{name}.".startswith(prefixes) else None if last.startswith("logit_") else "text"
        return tower in lock

    return locked


def locked_parameters(model: Model, lock: tuple[str, ...]) -> set[int]:
    """The ids of the parameters of the towers ``lock`` names (see :func:`locked_towers`)."""
    locked = locked_towers(model, lock)
    return {id(param) for name, param in model.model.named_parameters() if locked(name)}


def _split(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """Hold out ``fraction`` of the pairs (at least one), chosen at random for ``seed``."""
    import random

    if not 0 < fraction < 1:
        raise ValueError(f"val fraction must lie in (0, 1), got {fraction}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(pairs) * fraction))
    return pairs.subset(sorted(order[held:])), pairs.subset(sorted(order[:held]))

