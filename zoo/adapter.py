"""The interface every loaded model answers: :class:`Adapter`.

An adapter wraps one backend library (transformers, timm, ...) behind the same verbs:
:meth:`Adapter.load_pretrained`, :meth:`Adapter.featurize`, :meth:`Adapter.finetune`,
:meth:`Adapter.save`, with the preprocessing its weights expect in :attr:`Adapter.preprocess`.

A backend implements ``_build`` (the model and its preprocessing from verified files),
``plan_batches`` / ``collate`` and ``encode_batch``; :meth:`Adapter.load_pretrained` (the one build
path, as timm's ``build_model_with_cfg``) and the shared featurize engine (:mod:`zoo.featurize`)
do the rest, so every modality has one contract.

This module imports no torch at import time: adapters import their backend when they load.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

from .blocks import default_blocks
from .errors import PluginError, RegistryError, did_you_mean
from .featurize import FeaturizeReport, OnError, run_featurize
from .finetune_config import STRATEGIES, FinetuneConfig
from .plugin_manager import get_plugin_manager
from .registry import get_registry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .model_files import ModelFiles
    from .spec import ModelSpec

_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}


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
    name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'")
    return value


@dataclass
class Built:
    """What a backend's ``_build`` returns to :meth:`Adapter.load_pretrained`.

    Attributes:
        model: the backend's module, on the CPU or already on the device; the build path moves it
            to the device and compute dtype and puts it in eval mode.
        embed_dim: the width the weights give (checked against the spec's).
        spec_changes: spec fields the weights settle (pooling, preprocessing...).
        parts: further keyword arguments for the adapter's constructor (transform, tokenizer...).
    """

    model: torch.nn.Module
    embed_dim: int
    spec_changes: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)


class Adapter(ABC):
    """A loaded pretrained model.

    Attributes:
        spec: the :class:`~zoo.spec.ModelSpec` it was loaded from.
        model: the backend's ``torch.nn.Module``.
        files: where its verified files are (``None`` for a model built in memory).
        device: the torch device string it lives on.
        dtype: the compute dtype (``None`` when the adapter does not track one).
        decode: validates and decodes one input item (its modality's decoder, handed over by the
            loader).
        last_report: what the last :meth:`featurize` call kept and skipped.
    """

    #: Human-readable backend name, e.g. ``"transformers"``.
    backend: ClassVar[str] = ""
    #: Pooling modes :meth:`featurize` accepts (first is the default when the spec names none).
    pooling_modes: ClassVar[tuple[str, ...]] = ()
    #: Whether decoding and :meth:`collate` may run in DataLoader workers (``num_workers``).
    parallel_decode: ClassVar[bool] = True
    #: Finetuning strategies this adapter supports (the conformance kit runs each).
    strategies: ClassVar[tuple[str, ...]] = STRATEGIES
    #: Keyword options :meth:`load_pretrained` accepts beyond device and dtype.
    load_options: ClassVar[tuple[str, ...]] = ()
    #: Whether featurize L2-normalises when the spec does not say.
    normalize_default: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, files: ModelFiles | None, device: str,
                 dtype: torch.dtype | None = None, decode: Callable[[Any], Any] | None = None) -> None:
        self.spec = spec
        self.model = model
        self.files = files
        self.device = device
        self.dtype = dtype
        self._decode = decode
        self.last_report = FeaturizeReport()

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def load_pretrained(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: Any = None,
                        **options: Any) -> Adapter:
        """Build the model from verified local ``files`` and put it on ``device`` in eval mode.

        The one build path: reject unknown options, resolve the dtype, call the backend's
        :meth:`_build`, move the model, check its width against the spec, and settle the spec.
        """
        unknown = sorted(set(options) - set(cls.load_options))
        if unknown:
            accepted = ", ".join(cls.load_options) or "none"
            raise TypeError(f"unexpected option {unknown[0]!r} for {spec.name} ({cls.backend or cls.__name__} "
                            f"backend){did_you_mean(unknown[0], cls.load_options)}; it accepts: {accepted}")
        torch_dtype = resolve_dtype(dtype)
        built = cls._build(spec, files, device=device, dtype=torch_dtype, **options)
        built.model.to(device=device, dtype=torch_dtype).eval()
        if spec.embed_dim is not None and spec.embed_dim != built.embed_dim:
            raise RegistryError(f"model {spec.name!r} declares embed_dim {spec.embed_dim} but its weights give "
                                f"{built.embed_dim}; fix the registry entry")
        changes = {"normalize": cls.normalize_default if spec.normalize is None else spec.normalize,
                   **built.spec_changes, "embed_dim": built.embed_dim}
        return cls(spec.replace(**changes), built.model, files=files, device=device, dtype=torch_dtype,
                   **built.parts)

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               **options: Any) -> Built:
        """The backend's part of loading: the model and its preprocessing from verified files."""
        raise NotImplementedError(f"{cls.__name__} must implement _build (or override load_pretrained)")

    @classmethod
    def resolve_files(cls, spec: ModelSpec, files: ModelFiles) -> tuple[ModelSpec, type[Adapter]]:
        """What the downloaded files say about ``spec``, and the class that loads them.

        Called once per load, before :meth:`load_pretrained`. The default changes nothing; a
        backend serving several modalities (transformers) reads the files' config here.
        """
        return spec, cls

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
    def embed_dim(self) -> int:
        """Width ``D`` of :meth:`featurize`'s output."""
        if self.spec.embed_dim is None:
            raise NotImplementedError(f"{type(self).__name__} has no embed_dim: set it in the spec or override")
        return int(self.spec.embed_dim)

    @property
    @abstractmethod
    def preprocess(self) -> Any:
        """The tokenizer / transform / feature extractor bound to these weights."""

    @property
    def decode(self) -> Callable[[Any], Any]:
        """Validates and decodes one input item: the modality's decoder, bound at load time."""
        if self._decode is None:
            # Built in memory rather than by zoo.load: look the decoder up once, then keep it.
            self._decode = get_registry().modality(self.modality).decode
        return self._decode

    def bind_decoder(self, decode: Callable[[Any], Any]) -> None:
        """Hand the adapter its modality's decoder (the loader does, once per load)."""
        self._decode = decode

    def decoder(self) -> Callable[[Any], Any]:
        """Deprecated: use :attr:`decode`."""
        warnings.warn("Adapter.decoder() is deprecated; use the Adapter.decode attribute", DeprecationWarning,
                      stacklevel=2)
        return self.decode

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

    def windows(self, item: Any) -> list[tuple[Any, float]] | None:
        """Cut one decoded input that is too long for the model into ``[(window, weight)]``, or
        return None to keep it whole (the default). featurize runs each window as one model input
        and averages their rows with the weights (their lengths), so memory is bounded by the
        window; long audio is cut this way."""
        return None

    @property
    def decodes_all_first(self) -> bool:
        """Whether batching looks at every decoded item before the first batch (to sort by length),
        so featurize decodes the whole input first; otherwise items decode batch by batch, in input
        order, and memory holds one batch."""
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

    def resolve_pool(self, pool: str | None) -> str | None:
        """The pooling mode to use: ``pool`` if this model has it, the spec's default for ``None``."""
        if pool is None:
            return self.spec.pooling or (self.pooling_modes[0] if self.pooling_modes else None)
        if pool not in self.pooling_modes:
            choices = ", ".join(self.pooling_modes) or "none"
            raise ValueError(f"unknown pool {pool!r} for {self.name}{did_you_mean(pool, self.pooling_modes)} "
                             f"(choices: {choices})")
        return pool

    def check_pool(self, pool: str | None) -> str | None:
        """Deprecated: use :meth:`resolve_pool` (it returns the chosen mode)."""
        warnings.warn("Adapter.check_pool() is deprecated; use Adapter.resolve_pool()", DeprecationWarning,
                      stacklevel=2)
        return self.resolve_pool(pool)

    def resolve_normalize(self, normalize: bool | None) -> bool:
        """``normalize``, or the model's default for ``None``."""
        return bool(self.spec.normalize) if normalize is None else normalize

    @overload
    def featurize(self, inputs: Iterable[Any], *, batch_size: int = ..., normalize: bool | None = ...,
                  pool: str | None = ..., return_tensors: Literal["np"] = ..., progress: bool | None = ...,
                  on_error: OnError = ..., num_workers: int = ...) -> np.ndarray: ...

    @overload
    def featurize(self, inputs: Iterable[Any], *, batch_size: int = ..., normalize: bool | None = ...,
                  pool: str | None = ..., return_tensors: Literal["pt"], progress: bool | None = ...,
                  on_error: OnError = ..., num_workers: int = ...) -> torch.Tensor: ...

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
        rows, _ = self.featurize_with_report(inputs, batch_size=batch_size, normalize=normalize, pool=pool,
                                             return_tensors=return_tensors, progress=progress, on_error=on_error,
                                             num_workers=num_workers)
        return rows

    def featurize_with_report(self, inputs: Iterable[Any], *, batch_size: int = 32, normalize: bool | None = None,
                              pool: str | None = None, return_tensors: Literal["np", "pt"] = "np",
                              progress: bool | None = None, on_error: OnError = "raise",
                              num_workers: int = 0) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """:meth:`featurize`, also returning which inputs were kept and which skipped (and why)."""
        pool = self.resolve_pool(pool)
        return self._run(inputs, encode=lambda batch: self.encode_batch(batch, pool=pool), dim=self.embed_dim,
                         batch_size=batch_size, normalize=self.resolve_normalize(normalize),
                         return_tensors=return_tensors, progress=progress, on_error=on_error,
                         num_workers=num_workers if self.parallel_decode else 0)

    def _run(self, inputs: Iterable[Any], **kwargs: Any) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """Every verb that runs the frozen model over inputs goes through here: the engine, then the
        :attr:`last_report` convenience, set in this one place."""
        kwargs.setdefault("decode", self.decode)
        if type(self).windows is not Adapter.windows:
            kwargs.setdefault("windows", self.windows)
        rows, report = run_featurize(self, inputs, **kwargs)
        self.last_report = report
        return rows, report

    # -- finetuning -----------------------------------------------------------------------------

    def blocks(self) -> list[list[str]]:
        """The backbone's blocks, first to last, as lists of module paths (``partial`` finetuning
        trains the last few). The default finds the layer stack; adapters may say better."""
        return default_blocks(self.model)

    def finetune(self, train: Any, val: Any = None, config: FinetuneConfig | None = None, **options: Any) -> Any:
        """Train a classifier on this model and save it so that ``zoo.load(output_dir)`` reads it back.

        Args:
            train: ``(inputs, labels)``, a sequence of ``(input, label)`` pairs, a folder with one
                subfolder per class, or a CSV / JSONL / parquet file (``text_column``, ``label_column``).
            val: validation data in the same forms (or ``val_fraction=0.2`` to hold out a split).
            config: a :class:`~zoo.finetune_config.FinetuneConfig`; ``options`` override its fields.
            **options: the config's fields as keywords: ``output_dir`` (required), ``strategy``
                (``linear-probe``, ``full``, ``partial``, ``freeze-unfreeze``), ``epochs``, ``lr``,
                ``backbone_lr``, ``batch_size``, ``head``, ``seed``, ``resume``, ``on_epoch_end``...

        Returns:
            A :class:`~zoo.training.FinetuneResult` with per-epoch metrics, the best epoch, the
            checkpoint folder and the trained model (``predict``, ``predict_proba``).
        """
        config = config.replace(**options) if config is not None else FinetuneConfig.from_options(options)
        result = get_plugin_manager().hook.zoo_finetune(model=self, train=train, val=val, config=config)
        if result is None:
            raise PluginError("no plugin implements finetuning (zoo_finetune); the built-in zoo.training "
                              "plugin provides it unless it was blocked")
        return result

    # -- saving ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model so that ``zoo.load(directory)`` reads it back."""
        raise NotImplementedError(f"{type(self).__name__} cannot save yet")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} modality={self.modality} "
                f"dim={self.embed_dim} device={self.device}>")
