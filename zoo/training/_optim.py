"""The optimizer steps both training loops take (a classifier's and a contrastive run's): the
learning-rate schedule, gradient accumulation, clipping, mixed precision, averaging across ranks
and layer-wise learning-rate decay, each as the libraries users train with define it.

The schedules are transformers' (``get_scheduler``'s ``linear`` and ``cosine`` with a linear
warmup, ``constant`` after one), so a zoo run follows the learning rate the Hugging Face
``Trainer`` would. Accumulation weighs each batch's mean loss by its share of the rows of its
group, so ``batch_size=8, accumulate=2`` takes the steps of ``batch_size=16`` (for a loss that is
a mean over rows). Layer-wise decay is BEiT's, its layers numbered as timm's
``param_groups_layer_decay`` numbers them.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zoo.core._blocks import in_blocks
from zoo.errors import ZooError

from ._config import FinetuneConfig
from ._logging import RunLog

if TYPE_CHECKING:
    import torch

def training_settings(config: FinetuneConfig) -> dict[str, Any]:
    """The settings of this module (and LoRA's) that identify a run: resuming with others is refused."""
    weights = config.class_weights
    return {"schedule": config.schedule, "warmup": config.warmup, "accumulate": config.accumulate,
            "max_grad_norm": config.max_grad_norm, "precision": config.precision, "layer_decay": config.layer_decay,
            "early_stopping": config.early_stopping, "augment": config.augment, "mixup": config.mixup,
            "cutmix": config.cutmix, "group_by_length": config.group_by_length,
            "class_weights": {str(k): v for k, v in weights.items()} if isinstance(weights, dict) else weights,
            "lora": config.lora.record(list(config.lora.targets or ())) if config.lora is not None else None}


def steps_per_epoch(rows: int, config: FinetuneConfig) -> int:
    """Optimizer steps in one epoch of ``rows`` examples (this rank's share)."""
    return math.ceil(math.ceil(rows / config.batch_size) / config.accumulate)


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: FinetuneConfig) -> Any:
    """``config.schedule`` over ``total_steps``, warmed up linearly from 0 over ``config.warmup`` of
    them: the formulas of transformers' ``get_scheduler`` (``linear``, ``cosine``,
    ``constant_with_warmup``), which a test holds these to, so a zoo run follows the learning rate
    the Hugging Face ``Trainer`` would; written here because importing transformers for them cost
    a run of a timm model 1.7 s."""
    from torch.optim.lr_scheduler import LambdaLR

    # Rounded down: the warmup starts at a rate of 0, so a run of a few steps rounded up would
    # spend its only step warming up and train nothing.
    warmup = int(total_steps * config.warmup)
    decay = total_steps - warmup
    after = {"linear": lambda step: max(0.0, (total_steps - step) / max(1, decay)),
             "cosine": lambda step: max(0.0, 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, decay)))),
             "constant": lambda step: 1.0}[config.schedule]
    return LambdaLR(optimizer, lambda step: step / max(1, warmup) if step < warmup else after(step))


def check_layer_decay(towers: Sequence[str], config: FinetuneConfig) -> None:
    """Layer-wise decay numbers the blocks of one tower; a model of two is refused by name."""
    if config.layer_decay is not None and len(towers) > 1:
        raise ZooError(f"layer_decay numbers the blocks of one tower, and this model has {len(towers)} "
                       f"({', '.join(towers)}): leave layer_decay unset")


def layer_ids(named: Sequence[tuple[str, torch.nn.Parameter]], blocks: list[list[str]]) -> dict[str, int]:
    """Each parameter's layer, numbered as timm's ``param_groups_layer_decay`` numbers them: what
    comes before the first block (embeddings, stem) is layer 0, block ``i`` layer ``i``, what
    comes after the last (final norm, projection) one layer above it."""
    if not blocks:
        raise ZooError("layer_decay needs the model's blocks, and this backend names none: leave layer_decay unset")
    layers, seen_block = {}, False
    for name, _ in named:
        found = next((i + 1 for i, block in enumerate(blocks) if in_blocks(name, block)), None)
        seen_block = seen_block or found is not None
        layers[name] = found if found is not None else (len(blocks) + 1 if seen_block else 0)
    return layers


def param_groups(named: Sequence[tuple[str, torch.nn.Parameter]], trained: set[int], lr: float, weight_decay: float,
                 *, blocks: list[list[str]] | None = None, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """The optimizer's groups for the ``trained`` parameters (ids) of a module's ``named``
    parameters: no weight decay on parameters of one dimension or none (biases, norms' gains, a
    learned temperature), as timm and the Hugging Face ``Trainer`` leave them; with
    ``layer_decay``, the top layer at ``lr`` and each layer below at ``layer_decay`` times the one
    above (BEiT), layers counted over all of ``named`` (:func:`layer_ids`)."""
    layers = layer_ids(named, blocks or []) if layer_decay is not None else {}
    top = max(layers.values(), default=0)
    groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, param in named:
        if id(param) in trained:
            groups.setdefault((layers.get(name, top), param.ndim < 2), []).append(param)
    return [{"params": params, "weight_decay": 0.0 if flat else weight_decay,
             "lr": lr * (layer_decay ** (top - layer) if layer_decay is not None else 1.0)}
            for (layer, flat), params in sorted(groups.items())]


def adamw(params: list[dict[str, Any]], device: str, **settings: Any) -> torch.optim.Optimizer:
    """torch's AdamW, fused into one kernel over every tensor where torch has that for the device
    (CPU and CUDA): on the CPU its default steps the tensors one by one, which took 2.3 s of a
    20 s MiniLM epoch here (profiled), the same update in more time."""
    import torch

    return torch.optim.AdamW(params, fused=torch.device(device).type in ("cpu", "cuda"), **settings)


#: rows grouped by length come from runs of this many batches (transformers' megabatch of 50)
LENGTH_GROUP = 50


def length_grouped(order: list[int], lengths: Sequence[int], batch_size: int) -> list[int]:
    """``order`` (shuffled) with each run of :data:`LENGTH_GROUP` batches' rows sorted longest
    first, as transformers' ``LengthGroupedSampler`` orders them: a batch holds rows of similar
    length, so less padding, while which rows meet in a run stays random."""
    size = LENGTH_GROUP * batch_size
    return [i for start in range(0, len(order), size)
            for i in sorted(order[start:start + size], key=lambda i: -lengths[i])]


def batch_groups(order: list[int], config: FinetuneConfig) -> Iterator[list[list[int]]]:
    """The epoch's batches, ``config.accumulate`` to an optimizer step."""
    batches = [order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)]
    for start in range(0, len(batches), config.accumulate):
        yield batches[start:start + config.accumulate]


def warn_unless_native(precision: str) -> None:
    """Warn where this CPU has no instructions for ``precision`` that oneDNN uses (AVX512-BF16 /
    AMX for bf16, AVX512-FP16 / AMX-FP16 for fp16): there autocast emulates it, and a MiniLM
    finetune ran 25x slower than in fp32 (docs/benchmarks.md)."""
    import torch

    native = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    if not getattr(torch.ops.mkldnn, native)():
        warnings.warn(f"precision={precision!r}: this CPU has no {precision} instructions that torch uses "
                      f"(AVX512 {precision.upper()} or AMX), so training emulates them and runs far slower than "
                      "fp32 (25x for MiniLM on an AVX2 CPU, docs/benchmarks.md#finetuning-speed); use "
                      "precision='fp32' here", UserWarning, stacklevel=4)


class Stepper:
    """Backward passes and optimizer steps: the loss of each batch of a group weighed by its share
    of the group's rows (under fp16, scaled by a ``GradScaler``), then, once per group, gradients
    averaged across ranks (where ``sync``), clipped to ``max_grad_norm``, the step and the schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any, params: list[torch.nn.Parameter],
                 config: FinetuneConfig, device: str, sync: Callable[[list[torch.nn.Parameter]], None] | None = None,
                 log: RunLog | None = None) -> None:
        import torch

        self.optimizer, self.scheduler, self.params, self.config = optimizer, scheduler, params, config
        self.device_type = torch.device(device).type
        if self.device_type == "cpu" and config.precision != "fp32":
            warn_unless_native(config.precision)
        # fp16's narrow range needs a loss scale against underflow; bf16 has fp32's range and none.
        self.scaler = torch.amp.GradScaler(self.device_type) if config.precision == "fp16" else None
        self.sync = sync
        self.log = log
        self.steps = 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's precision: bf16 or fp16 autocast, or nothing for fp32."""
        import torch

        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)

    def backward(self, loss: torch.Tensor, share: float) -> None:
        """Gradients of ``loss`` (a batch's mean) weighed by ``share``, its rows over its group's."""
        weighted = loss * share
        (self.scaler.scale(weighted) if self.scaler is not None else weighted).backward()

    def step(self, loss: float) -> None:
        """The optimizer step that ends a group (whose loss was ``loss``), and the schedule's."""
        import torch

        self.steps += 1
        if self.log is not None:
            self.log.scalars(self.steps, {"loss": loss, "lr": max(g["lr"] for g in self.optimizer.param_groups)},
                             "train")

        if self.sync is not None:
            self.sync(self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        if self.scaler is None:
            self.optimizer.step()
            self.scheduler.step()
        elif self._scaled_step_taken():
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _scaled_step_taken(self) -> bool:
        """The scaler's step, which it skips when the gradients overflowed (and lowers the scale):
        then the schedule waits too, as the Hugging Face ``Trainer`` (accelerate) has it."""
        assert self.scaler is not None
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return self.scaler.get_scale() >= scale

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs besides the optimizer's: the schedule and the loss scale."""
        return {"scheduler": self.scheduler.state_dict(), "steps": self.steps,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` saved (resuming)."""
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps = state.get("steps", 0)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
