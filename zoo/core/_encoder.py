"""The backend contract: :class:`Encoder`, what a plugin implements to bring a library's models.

An encoder wraps one backend model (transformers, timm, open_clip...) and says how its inputs
become batches and batches become rows: ``_build`` (the model and its preprocessing from verified
files), ``collate`` (or ``plan_batches``) and ``encode_batch``. It owns no verb: the user's
:class:`zoo.Model` holds encoders, one per tower, and runs every verb (featurize, classify,
finetune, save) through the one featurize engine (:mod:`zoo.core._featurize`), so a backend writes only
what differs between libraries.

This module imports no torch at import time: encoders import their backend when they load.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, final

from zoo.errors import PluginError, RegistryError, UnsupportedOptionError, did_you_mean
from zoo.training._config import STRATEGIES

from ._blocks import default_blocks

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles

_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}

Decode = Callable[[Any], Any]


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
    """What a backend's ``_build`` returns to :meth:`Encoder.load_pretrained`.

    Attributes:
        model: the backend's module, on the CPU or already on the device; the build path moves it
            to the device and compute dtype and puts it in eval mode.
        embed_dim: the width the weights give (checked against the spec's).
        spec_changes: spec fields the weights settle (pooling, preprocessing...); ``normalize``
            here is the backend's default, used when the spec does not say; ``kind`` what the
            built model gives (``"embedder"`` unless it says otherwise).
        parts: further keyword arguments for the encoder's constructor (transform, tokenizer...).
        placed: the backend already placed the model (``device_map`` across devices): the build
            path leaves its devices and dtype alone.
    """

    model: torch.nn.Module
    embed_dim: int
    spec_changes: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)
    placed: bool = False


@dataclass
class ExportPlan:
    """How an encoder's forward pass exports to ONNX (:mod:`zoo.core._compiled`).

    Attributes:
        examples: collated batches: the first is traced, the others (other batch sizes and, for
            tokens, other padded lengths, one with no padding) are where the export must give
            PyTorch's rows.
        context: a context manager factory around the trace (transformers switches to eager
            attention, the form ONNX Runtime's optimizer fuses).
        fusion: arguments for ONNX Runtime's transformer optimizer (``model_type``,
            ``num_heads``, ``hidden_size``), or None to leave the graph to the session's own
            optimisations.
    """

    examples: list[Any]
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    fusion: dict[str, Any] | None = None


FinishBatch = Callable[[Any], tuple[Any, list[tuple[int, str]]]]


@dataclass(frozen=True)
class DeviceStage:
    """Decoding finished on the model's device (:meth:`Encoder.device_stage`).

    Attributes:
        decode: what featurize runs on each input (in the decode workers) instead of the
            modality's decoder; it may leave part of the work undone (a JPEG still encoded).
        finish: run in the model's process on each collated batch: returns the batch for
            :meth:`Encoder.encode_batch` and ``[(row, reason)]`` for the rows that could not be
            finished, which the batch no longer holds; featurize raises or skips those inputs as it
            does any bad input.
    """

    decode: Decode
    finish: FinishBatch


class Encoder(ABC):
    """One backend model behind zoo's engine.

    Attributes:
        spec: the :class:`~zoo.catalog._spec.ModelSpec` it was loaded from.
        model: the backend's ``torch.nn.Module``.
        files: where its verified files are (``None`` for a model built in memory).
        device: the torch device string it lives on.
        dtype: the compute dtype (``None`` when the encoder does not track one).
        decode: validates and decodes one input item: its modality's decoder, handed over when
            the :class:`zoo.Model` is built (the loader resolves it once, from the registry).
    """

    #: Human-readable backend name, e.g. ``"transformers"``.
    backend: ClassVar[str] = ""
    #: Pooling modes ``encode_batch`` accepts (first is the default when the spec names none); an
    #: encoder whose files fix their pooling sets none on the instance.
    pooling_modes: tuple[str, ...] = ()
    #: Whether decoding and :meth:`collate` may run in DataLoader workers (``num_workers``).
    parallel_decode: ClassVar[bool] = True
    #: Finetuning strategies this encoder supports (the conformance kit runs each).
    strategies: ClassVar[tuple[str, ...]] = STRATEGIES

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, files: ModelFiles | None, device: str,
                 dtype: torch.dtype | None = None, decode: Decode | None = None) -> None:
        self.spec = spec
        self.model = model
        self.files = files
        self.device = device
        self.dtype = dtype
        self.decode: Decode = decode or _unbound(spec.name)

    # -- loading --------------------------------------------------------------------------------

    @final
    @classmethod
    def load_pretrained(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: Any = None,
                        **options: Any) -> Encoder:
        """Build the model from verified local ``files`` and put it on ``device`` in eval mode.

        The one build path: reject unknown options, resolve the dtype, call the backend's
        :meth:`_build`, move the model, check its width against the spec, and settle the spec.
        """
        accepted_options = cls.load_options()
        unknown = sorted(set(options) - set(accepted_options)) if accepted_options is not None else []
        if unknown:
            accepted = ", ".join(accepted_options or ()) or "none"
            raise TypeError(f"unexpected option {unknown[0]!r} for {spec.name} ({cls.backend or cls.__name__} "
                            f"backend){did_you_mean(unknown[0], accepted_options or ())}; it accepts: {accepted}")
        torch_dtype = resolve_dtype(dtype)
        built = cls._build(spec, files, device=device, dtype=torch_dtype, **options)
        if built.placed:  # inputs go where the model's first weights are
            device = str(getattr(built.model, "device", None) or next(built.model.parameters()).device)
        else:
            built.model.to(device=device, dtype=torch_dtype)
        built.model.eval()
        if spec.embed_dim is not None and spec.embed_dim != built.embed_dim:
            raise RegistryError(f"model {spec.name!r} declares embed_dim {spec.embed_dim} but its weights give "
                                f"{built.embed_dim}; fix the registry entry")
        # the spec's normalize wins; the backend's (CLIP's unit vectors, a saved Normalize) is the default
        normalize = built.spec_changes.get("normalize", False) if spec.normalize is None else spec.normalize
        changes = {**built.spec_changes, "normalize": bool(normalize), "embed_dim": built.embed_dim,
                   "kind": built.spec_changes.get("kind", "embedder")}
        return cls(spec.replace(**changes), built.model, files=files, device=device, dtype=torch_dtype,
                   **built.parts)

    @final
    @classmethod
    def load_options(cls) -> tuple[str, ...] | None:
        """The options of ``zoo.load`` this encoder takes beyond device and dtype: the keyword-only
        parameters of its :meth:`_build` (None: it takes ``**options``, any)."""
        params = inspect.signature(cls._build).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("device", "dtype"))

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype) -> Built:
        """The backend's part of loading: the model and its preprocessing from verified files.
        Further ``zoo.load`` options (``trust_remote_code``...) are keyword-only parameters of the
        backend's own ``_build``; unknown ones are refused by name before it is called."""
        raise NotImplementedError(f"{cls.__name__} must implement _build")

    @classmethod
    def resolve_files(cls, spec: ModelSpec, files: ModelFiles) -> tuple[ModelSpec, type[Encoder]]:
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

    @final
    @property
    def name(self) -> str:
        return self.spec.name

    @final
    @property
    def modality(self) -> str:
        return self.spec.modality

    @final
    @property
    def embed_dim(self) -> int:
        """Width ``D`` of a row."""
        if self.spec.embed_dim is None:
            raise NotImplementedError(f"{type(self).__name__} has no embed_dim: set it in the spec or override")
        return int(self.spec.embed_dim)

    @property
    @abstractmethod
    def preprocess(self) -> Any:
        """The tokenizer / transform / feature extractor bound to these weights."""

    def towers(self) -> Mapping[str, Encoder]:
        """The encoders this model has, by the modality of the inputs each takes, the primary one
        first (what ``featurize`` embeds by default). One tower, itself, unless the model embeds
        several modalities into one space (an image-text model: ``{"vision": ..., "text": ...}``)."""
        return {self.modality: self}

    # -- batching -------------------------------------------------------------------------------

    def lengths(self, items: Sequence[Any]) -> list[int] | None:
        """Each decoded item's length in the units its batch pads to (tokens), for batching items
        of similar length together (:meth:`plan_batches`' default, finetuning's
        ``group_by_length``); None where inputs do not pad (the default)."""
        return None

    def plan_batches(self, items: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], Any]]:
        """Group decoded items into model inputs: yields ``(positions, batch)``, ``positions``
        indexing into ``items``. The default batches items of similar :meth:`lengths` together,
        longest first (:func:`longest_first`), where the encoder gives lengths, and keeps input
        order where it does not; :meth:`collate` builds each batch."""
        lengths = self.lengths(items)
        if lengths is not None:
            return longest_first(range(len(items)), batch_size, lambda i: lengths[i],
                                 lambda rows: self.collate([items[i] for i in rows]))
        return _in_order(self, items, batch_size)

    def collate(self, items: list[Any]) -> Any:
        """Turn a list of decoded items into one batch for :meth:`encode_batch`."""
        raise NotImplementedError(f"{type(self).__name__} must implement collate or plan_batches")

    def windows(self, item: Any) -> list[tuple[Any, float]] | None:
        """Cut one decoded input that is too long for the model into ``[(window, weight)]``, or
        return None to keep it whole (the default). featurize runs each window as one model input
        and averages their rows with the weights (their lengths), so memory is bounded by the
        window; long audio is cut this way."""
        return None

    def device_stage(self) -> DeviceStage | None:
        """Decoding split between the decode workers and the model's device, or None (the default)
        when :attr:`decode` does all of it on the CPU. Image encoders keep JPEGs encoded in the
        workers and decode them on the GPU."""
        return None

    def prompt_features(self, prompt: str) -> dict[str, Any] | None:
        """Entries every batch of texts that begin with ``prompt`` carries into :meth:`encode_batch`
        (sentence-transformers' ``prompt_length``, where its Pooling leaves the prompt out), or
        None (the default) when the prompt is just text. An encoder whose entries carry the prompt
        itself (under ``"prompt"``) places it in its own preprocessing (a reranker's; a
        vision-language pipeline's system message): zoo then puts it before no text, and it takes a
        prompt with every kind of input it reads."""
        return None

    def for_role(self, role: str | None) -> Encoder:
        """The encoder that runs inputs of ``role`` (``"query"``, ``"document"``; None: no role).
        This one (the default) where a role only picks the prompt; an encoder that runs the roles
        through different code, as sentence-transformers' ``task`` (a ColBERT's query expansion and
        lengths), returns a copy sharing the model that collates and encodes that role's way, so
        one featurize call runs one role throughout."""
        return self

    # -- the forward pass -----------------------------------------------------------------------

    @abstractmethod
    def encode_batch(self, batch: Any, *, pool: str | None = None) -> torch.Tensor:
        """One forward pass of the frozen model: a ``(B, D)`` tensor."""

    @final
    def resolve_pool(self, pool: str | None) -> str | None:
        """The pooling mode to use: ``pool`` if this model has it, the spec's default for ``None``."""
        if pool is None or pool == self.spec.pooling:
            return self.spec.pooling or (self.pooling_modes[0] if self.pooling_modes else None)
        if not self.pooling_modes:
            fixed = f"pools {self.spec.pooling!r}" if self.spec.pooling else "has no pooling step"
            raise UnsupportedOptionError(f"{self.name} {fixed}, as its files say, and has no other mode: leave "
                                         "pool= unset")
        if pool not in self.pooling_modes:
            choices = ", ".join(self.pooling_modes) or "none"
            raise ValueError(f"unknown pool {pool!r} for {self.name}{did_you_mean(pool, self.pooling_modes)} "
                             f"(choices: {choices})")
        return pool

    def layer_dims(self, layers: tuple[int, ...]) -> list[int]:
        """The width of each hidden layer in ``layers`` (negative indices count from the last).
        Backends with intermediate features (transformers, timm) override this and
        :meth:`encode_layers`."""
        raise UnsupportedOptionError(f"{self.name} ({self.backend or type(self).__name__} backend) does not "
                                     "give intermediate layers; layer= works with transformers and timm models")

    def encode_layers(self, batch: Any, *, pool: str | None, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """One forward pass: each layer in ``layers`` pooled to ``(B, d)``."""
        raise UnsupportedOptionError(f"{self.name} does not give intermediate layers")

    # -- other runtimes (zoo.core._compiled) ----------------------------------------------------------

    def export_plan(self) -> ExportPlan:
        """How :meth:`encode_batch` exports to ONNX: the batches to trace and check it on, the
        context of the trace and ONNX Runtime's fusion arguments. Text transformers and image
        backbones give one; the default runs on PyTorch only."""
        raise UnsupportedOptionError(f"{self.name} ({self.backend or type(self).__name__} backend) runs on PyTorch "
                                     "only; runtime='onnx' and 'openvino' serve transformers text models and "
                                     "timm / torchvision image models")

    # -- training and saving --------------------------------------------------------------------

    def classifier(self) -> tuple[Callable[[Any], torch.Tensor], list[Any]] | None:
        """The classifier head the weights ship with, if any: ``(logits of a collated batch,
        class names)``; :meth:`zoo.Model.predict_proba` uses it when no head was finetuned."""
        return None

    def blocks(self) -> list[list[str]]:
        """The backbone's blocks, first to last, as lists of module paths (``partial`` finetuning
        trains the last few). The default finds the layer stack; encoders may say better."""
        return default_blocks(self.model)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model so that ``zoo.load(directory)`` reads it back."""
        raise NotImplementedError(f"{type(self).__name__} cannot save yet")

    @final
    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} modality={self.modality} "
                f"dim={self.embed_dim} device={self.device}>")


def _in_order(encoder: Encoder, items: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], Any]]:
    """Batches of ``batch_size`` items in input order."""
    for start in range(0, len(items), batch_size):
        positions = list(range(start, min(start + batch_size, len(items))))
        yield positions, encoder.collate([items[i] for i in positions])


def longest_first(items: Sequence[Any], batch_size: int, length: Callable[[Any], float],
                  collate: Callable[[list[Any]], Any]) -> Iterator[tuple[list[int], Any]]:
    """Batches of items sorted by ``length``, longest first, so that each batch pads to similar
    lengths (what sentence-transformers' ``encode`` does with characters): an encoder's
    :meth:`Encoder.plan_batches` for inputs that pad."""
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    for start in range(0, len(order), batch_size):
        positions = order[start:start + batch_size]
        yield positions, collate([items[i] for i in positions])


def _unbound(name: str) -> Decode:
    """The decoder of an encoder no :class:`zoo.Model` holds yet: says so instead of guessing one."""

    def decode(item: Any) -> Any:
        raise PluginError(f"{name}'s encoder has no decoder: wrap it in zoo.Model(encoder), which binds its "
                          "modality's decoder from the registry (zoo.load does this)")

    return decode
