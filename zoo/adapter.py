"""The interface every loaded model answers: :class:`Adapter`.

An adapter wraps one backend library (transformers, timm, ...) behind the same verbs:
:meth:`Adapter.load_pretrained`, :meth:`Adapter.featurize`, :meth:`Adapter.save`, with the
preprocessing its weights expect in :attr:`Adapter.preprocess`. Subclasses implement loading,
``plan_batches`` / ``encode_batch`` and ``preprocess``; the shared featurize engine
(:mod:`zoo.featurize`) does the rest, so every modality has one contract.

This module imports no torch at import time: adapters import their backend when they load.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .errors import PluginError
from .featurize import FeaturizeReport, OnError, run_featurize

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .sources import ModelFiles
    from .spec import ModelSpec
    from .training.loop import FinetuneResult


def resolve_device(device: str | None) -> str:
    """``None`` or ``"auto"`` picks CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype(dtype: Any) -> torch.dtype:
    """``None`` -> float32; accepts torch dtypes and names like ``"bf16"`` / ``"bfloat16"``."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}
    name = aliases.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'")
    return value


class Adapter(ABC):
    """A loaded pretrained model.

    Attributes:
        spec: the :class:`~zoo.spec.ModelSpec` it was loaded from.
        model: the backend's ``torch.nn.Module``.
        files: where its verified files are (``None`` for a model built in memory).
        device: the torch device string it lives on.
        last_report: what the last :meth:`featurize` call kept and skipped.
    """

    #: Human-readable backend name, e.g. ``"transformers"``.
    backend: ClassVar[str] = ""
    #: Pooling modes :meth:`featurize` accepts (first is the default when the spec names none).
    pooling_modes: ClassVar[tuple[str, ...]] = ()
    #: Whether decoding and :meth:`collate` may run in DataLoader workers (``num_workers``).
    parallel_decode: ClassVar[bool] = True
    #: Finetuning strategies this adapter supports (the conformance kit runs each).
    strategies: ClassVar[tuple[str, ...]] = ("linear-probe", "full", "partial", "freeze-unfreeze")

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, files: ModelFiles | None, device: str) -> None:
        self.spec = spec
        self.model = model
        self.files = files
        self.device = device
        self.last_report = FeaturizeReport()

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def load_pretrained(
        cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: Any = None, **options: Any
    ) -> Adapter:
        """Build the model from verified local ``files`` and put it on ``device`` in eval mode."""

    @classmethod
    def spec_for_id(cls, backend: str, backend_id: str) -> ModelSpec:
        """A spec for a pass-through name ``scheme:backend_id`` (e.g. ``hf:org/name@rev``)."""
        raise PluginError(f"backend {backend!r} does not support pass-through names")

    # -- what it is -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def modality(self) -> str:
        return self.spec.modality

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width ``D`` of :meth:`featurize`'s output."""

    @property
    @abstractmethod
    def preprocess(self) -> Any:
        """The tokenizer / transform / feature extractor bound to these weights."""

    def decoder(self) -> Callable[[Any], Any]:
        """The function that validates and decodes one input item (the modality's, by default)."""
        from .registry import get_registry

        return get_registry().modality(self.modality).decode

    # -- featurize ------------------------------------------------------------------------------

    def plan_batches(self, items: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], Any]]:
        """Group decoded items into model inputs: yields ``(positions, batch)``.

        ``positions`` index into ``items``. Items with a :meth:`size` are batched longest first, so
        each batch pads to similar lengths; otherwise input order is kept. :meth:`collate` builds
        each batch.
        """
        order = list(range(len(items)))
        if items and self.size(items[0]) is not None:
            order.sort(key=lambda i: -self.size(items[i]))
        for start in range(0, len(order), batch_size):
            positions = order[start:start + batch_size]
            yield positions, self.collate([items[i] for i in positions])

    @property
    def sorts_by_size(self) -> bool:
        """Whether batching looks at every item first (to sort by length), so featurize decodes the
        whole input before the first batch; otherwise items decode batch by batch, in input order."""
        cls = type(self)
        return cls.plan_batches is not Adapter.plan_batches or cls.size is not Adapter.size

    def size(self, item: Any) -> float | None:
        """How much padding an item would need in a batch (its length), or None when sizes are equal."""
        return None

    def collate(self, items: list[Any]) -> Any:
        """Turn a list of decoded items into one batch for :meth:`encode_batch`."""
        raise NotImplementedError(f"{type(self).__name__} must implement collate or plan_batches")

    @abstractmethod
    def encode_batch(self, batch: Any, *, pool: str | None = None) -> torch.Tensor:
        """One forward pass of the frozen model: a ``(B, D)`` tensor."""

    def check_pool(self, pool: str | None) -> str | None:
        """Validate a pooling mode; ``None`` means the spec's default."""
        if pool is None:
            return self.spec.pooling or (self.pooling_modes[0] if self.pooling_modes else None)
        if pool not in self.pooling_modes:
            from .errors import did_you_mean

            choices = ", ".join(self.pooling_modes) or "none"
            raise ValueError(f"unknown pool {pool!r} for {self.name}{did_you_mean(pool, self.pooling_modes)} "
                             f"(choices: {choices})")
        return pool

    def featurize(
        self,
        inputs: Iterable[Any],
        *,
        batch_size: int = 32,
        normalize: bool | None = None,
        pool: str | None = None,
        return_tensors: Literal["np", "pt"] = "np",
        progress: bool | None = None,
        on_error: OnError = "raise",
        num_workers: int = 0,
    ) -> np.ndarray | torch.Tensor:
        """Embed ``inputs`` with the frozen model.

        Args:
            inputs: a sequence of items of the model's modality (``str`` for text).
            batch_size: items per forward pass.
            normalize: L2-normalise each row; ``None`` uses the model's default.
            pool: pooling mode where the model has a choice (see :attr:`pooling_modes`).
            return_tensors: ``"np"`` (default) or ``"pt"``.
            progress: show a progress bar; ``None`` shows one for long inputs.
            on_error: ``"raise"`` stops at the first bad item with an error naming its index;
                ``"skip"`` leaves it out, warns, and records it in :attr:`last_report`.
            num_workers: decode and preprocess in this many worker processes, overlapping the
                model (images and audio; text is tokenised in batches here).

        Returns:
            ``(N, D)`` float32, rows in input order (``N`` excludes skipped items); ``(0, D)``
            for empty input.
        """
        pool = self.check_pool(pool)
        return run_featurize(
            self,
            inputs,
            encode=lambda batch: self.encode_batch(batch, pool=pool),
            dim=self.embed_dim,
            batch_size=batch_size,
            normalize=bool(self.spec.normalize) if normalize is None else normalize,
            return_tensors=return_tensors,
            progress=progress,
            on_error=on_error,
            num_workers=num_workers if self.parallel_decode else 0,
        )

    # -- finetuning -----------------------------------------------------------------------------

    def blocks(self) -> list[list[str]]:
        """The backbone's blocks, first to last, as lists of module paths (``partial`` finetuning
        trains the last few). The default finds the layer stack; adapters may say better."""
        from .training.strategies import default_blocks

        return default_blocks(self.model)

    def finetune(self, train: Any, val: Any = None, **kwargs: Any) -> FinetuneResult:
        """Train a classifier on this model and save it so that ``zoo.load(output_dir)`` reads it back.

        Args:
            train: ``(inputs, labels)``, a sequence of ``(input, label)`` pairs, a folder with one
                subfolder per class, or a CSV / JSONL file (``text_column``, ``label_column``).
            val: validation data in the same forms (or ``val_fraction=0.2`` to hold out a split).
            output_dir: where checkpoints go (required).
            strategy: ``linear-probe`` (backbone frozen, embeddings computed once), ``full``,
                ``partial`` (last ``unfreeze_blocks`` blocks train) or ``freeze-unfreeze`` (frozen for
                ``freeze_epochs``, then everything trains).
            epochs, lr, backbone_lr, batch_size, weight_decay, seed: the usual; ``lr`` is the
                head's (default 1e-2 for the probe, 1e-3 otherwise), ``backbone_lr`` defaults to
                ``lr / 10``.
            head: ``linear`` or ``mlp``.
            resume: continue the run in ``output_dir`` from its last finished epoch.
            on_epoch_end: called with each epoch's metrics.

        Returns:
            A :class:`~zoo.training.loop.FinetuneResult` with per-epoch metrics, the best epoch, the
            checkpoint folder and the trained model (``predict``, ``predict_proba``).
        """
        from .training.loop import finetune

        return finetune(self, train, val, **kwargs)

    # -- saving ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model so that ``zoo.load(directory)`` reads it back."""
        raise NotImplementedError(f"{type(self).__name__} cannot save yet")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} modality={self.modality} "
                f"dim={self.embed_dim} device={self.device}>")
