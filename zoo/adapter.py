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
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .blocks import default_blocks
from .embed_options import EmbedOptions, LayerMerge, build_options
from .errors import PluginError, RegistryError, UnsupportedOptionError, did_you_mean
from .featurize import FeaturizeReport, OnError, run_featurize
from .finetune_config import STRATEGIES, FinetuneConfig
from .plugin_manager import get_plugin_manager
from .quantize import Precision, calibration_ranges, quantize
from .registry import get_registry
from .zero_shot import Template
from .zero_shot import classify as zero_shot_classify

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .compiled import CompiledEncoder
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


class Prompted:
    """A decoder that puts a prompt before each decoded text (a class, so it pickles to workers)."""

    def __init__(self, decode: Callable[[Any], Any], prompt: str) -> None:
        self.decode, self.prompt = decode, prompt

    def __call__(self, item: Any) -> Any:
        return self.prompt + self.decode(item)


@dataclass
class Built:
    """What a backend's ``_build`` returns to :meth:`Adapter.load_pretrained`.

    Attributes:
        model: the backend's module, on the CPU or already on the device; the build path moves it
            to the device and compute dtype and puts it in eval mode.
        embed_dim: the width the weights give (checked against the spec's).
        spec_changes: spec fields the weights settle (pooling, preprocessing...).
        parts: further keyword arguments for the adapter's constructor (transform, tokenizer...).
        placed: the backend already placed the model (``device_map`` across devices): the build
            path leaves its devices and dtype alone.
    """

    model: torch.nn.Module
    embed_dim: int
    spec_changes: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Any] = field(default_factory=dict)
    placed: bool = False


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
        #: the forward pass on another runtime (:mod:`zoo.compiled`), or None for PyTorch
        self.compiled: CompiledEncoder | None = None

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
        if built.placed:  # inputs go where the model's first weights are
            device = str(getattr(built.model, "device", None) or next(built.model.parameters()).device)
        else:
            built.model.to(device=device, dtype=torch_dtype)
        built.model.eval()
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
    def runtime(self) -> str:
        """What runs the frozen forward pass: ``torch``, ``onnx`` or ``openvino``."""
        return self.compiled.runtime if self.compiled is not None else "torch"

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

    def input_decoder(self) -> Callable[[Any], Any]:
        """The decoder featurize runs on each input (in DataLoader workers when asked): :attr:`decode`,
        or one that leaves part of the work to :meth:`finish_batch` on the model's device (image
        adapters keep JPEGs encoded when they decode them on the GPU)."""
        return self.decode

    def finish_batch(self, batch: Any) -> tuple[Any, list[tuple[int, str]]]:
        """Finish, in the process that runs the model, what :meth:`collate` left for the model's
        device. Returns the batch for :meth:`encode_batch` and ``[(row, reason)]`` for rows that
        could not be finished, which the batch no longer holds; featurize raises or skips those
        inputs as it does any bad input. The default has nothing to finish."""
        return batch, []

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

    # -- embedding options ----------------------------------------------------------------------

    def embed_options(self, *, prompt: str | None = None, prompt_text: str | None = None,
                      truncate_dim: int | None = None, precision: Precision = "float32", layer: int | None = None,
                      layers: Sequence[int] | None = None, layer_merge: LayerMerge = "concat",
                      texts: bool | None = None) -> EmbedOptions:
        """Check the embedding options against this model, once: see :meth:`featurize` for each.
        ``texts`` says whether the inputs are texts (default: the model's modality is text)."""
        return build_options(self.spec, dim=self.embed_dim, layer_dims=self.layer_dims,
                             takes_text=self.modality == "text" if texts is None else texts, prompt=prompt,
                             prompt_text=prompt_text, truncate_dim=truncate_dim, precision=precision, layer=layer,
                             layers=layers, layer_merge=layer_merge)

    def layer_dims(self, layers: tuple[int, ...]) -> list[int]:
        """The width of each hidden layer in ``layers`` (negative indices count from the last).
        Backends with intermediate features (transformers, timm) override this and
        :meth:`encode_layers`."""
        raise UnsupportedOptionError(f"{self.name} ({self.backend or type(self).__name__} backend) does not "
                                     "give intermediate layers; layer= works with transformers and timm models")

    def encode_layers(self, batch: Any, *, pool: str | None, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """One forward pass: each layer in ``layers`` pooled to ``(B, d)``."""
        raise UnsupportedOptionError(f"{self.name} does not give intermediate layers")

    # -- other runtimes (zoo.compiled) ----------------------------------------------------------

    def export_examples(self) -> list[Any]:
        """Collated batches for exporting :meth:`encode_batch` to ONNX: the first is traced, the
        others (other batch sizes and, for tokens, other padded lengths, one with no padding) are
        where the export must give PyTorch's rows. Text transformers and image backbones give them."""
        raise UnsupportedOptionError(f"{self.name} ({self.backend or type(self).__name__} backend) runs on PyTorch "
                                     "only; runtime='onnx' and 'openvino' serve transformers text models and "
                                     "timm / torchvision image models")

    def export_context(self) -> Any:
        """A context manager around the ONNX trace (transformers switches to eager attention,
        the form ONNX Runtime's optimizer fuses)."""
        import contextlib

        return contextlib.nullcontext()

    def onnx_fusion(self) -> dict[str, Any] | None:
        """Arguments for ONNX Runtime's transformer optimizer (``model_type``, ``num_heads``,
        ``hidden_size``), or None to leave the graph to the session's own optimisations."""
        return None

    # -- featurize ------------------------------------------------------------------------------

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
        calibration: np.ndarray | None = None,
        **options: Any,
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
            calibration: float embeddings ``(M, D)`` whose per-dimension ranges bucket int8 /
                uint8 output (default: the output's own), as sentence-transformers'
                ``calibration_embeddings``.
            **options: the embedding options, checked by :meth:`embed_options`:
                ``prompt`` (a name the model declares in :attr:`ModelSpec.prompts`, e.g.
                ``"query"``) or ``prompt_text`` (the text itself), put before every text;
                ``truncate_dim`` keeps the first dimensions (Matryoshka), re-normalised when
                normalising; ``precision`` (``float32``, ``int8``, ``uint8``, ``binary``,
                ``ubinary``) as sentence-transformers' ``quantize_embeddings``; ``layer=-2`` or
                ``layers=[...]`` (with ``layer_merge="concat"`` or ``"mean"``) pools hidden
                layers instead of the final output; or ``options=`` an :class:`EmbedOptions`.

        Returns:
            ``(N, D)`` rows in input order (``N`` excludes skipped items; ``(0, D)`` for empty
            input): float32, or int8 / uint8 for a quantized ``precision`` (``ceil(D / 8)``
            packed columns for the binary ones).
        """
        rows, _ = self.featurize_with_report(inputs, batch_size=batch_size, normalize=normalize, pool=pool,
                                             return_tensors=return_tensors, progress=progress, on_error=on_error,
                                             num_workers=num_workers, calibration=calibration, **options)
        return rows

    def featurize_with_report(self, inputs: Iterable[Any], *, batch_size: int = 32, normalize: bool | None = None,
                              pool: str | None = None, return_tensors: Literal["np", "pt"] = "np",
                              progress: bool | None = None, on_error: OnError = "raise", num_workers: int = 0,
                              calibration: np.ndarray | None = None, options: EmbedOptions | None = None,
                              **option_args: Any) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """:meth:`featurize`, also returning which inputs were kept and which skipped (and why)."""
        options = self._options(options, option_args)
        pool = self.resolve_pool(pool)
        if options.layers and self.compiled is not None:
            raise UnsupportedOptionError(f"layer= runs on PyTorch; {self.name} was loaded with runtime="
                                         f"{self.runtime!r}: load it with runtime='torch' for intermediate layers")
        if self.compiled is not None:
            encode = self.compiled.encoder(pool)
        elif options.layers:
            if pool == "pooler":
                raise UnsupportedOptionError(f"pool='pooler' is the final layer's pooler; with layer= use "
                                             f"pool='mean' or 'cls' for {self.name}")

            def encode(batch: Any) -> torch.Tensor:
                return options.merge(self.encode_layers(batch, pool=pool, layers=options.layers))
        else:
            def encode(batch: Any) -> torch.Tensor:
                return self.encode_batch(batch, pool=pool)
        return self._embed(inputs, options, encode=encode, batch_size=batch_size,
                           normalize=self.resolve_normalize(normalize), return_tensors=return_tensors,
                           progress=progress, on_error=on_error, calibration=calibration,
                           num_workers=num_workers if self.parallel_decode else 0)

    def _options(self, options: EmbedOptions | None, option_args: dict[str, Any], *,
                 texts: bool | None = None) -> EmbedOptions:
        if options is None:
            return self.embed_options(texts=texts, **option_args)
        if option_args:
            raise TypeError(f"pass options= or the options themselves ({', '.join(option_args)}), not both")
        return options

    def _embed(self, inputs: Iterable[Any], options: EmbedOptions, *, return_tensors: Literal["np", "pt"],
               calibration: np.ndarray | None, **kwargs: Any) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """Run the model with ``options``: prompt before decoding, truncation in the engine,
        quantization of the whole output at the end."""
        decode = kwargs.pop("decode", None) or self.input_decoder()
        if options.prompt:
            decode = Prompted(decode, options.prompt)
        quantized = options.precision != "float32"
        rows, report = self._run(inputs, dim=options.dim, keep_dims=options.truncate_dim, decode=decode,
                                 return_tensors="np" if quantized else return_tensors, **kwargs)
        if quantized:
            ranges = calibration_ranges(calibration) if calibration is not None else None
            rows = quantize(rows, options.precision, ranges)
            if return_tensors == "pt":
                import torch

                rows = torch.from_numpy(rows)
        return rows, report

    def _run(self, inputs: Iterable[Any], **kwargs: Any) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """Every verb that runs the frozen model over inputs goes through here: the engine, then the
        :attr:`last_report` convenience, set in this one place."""
        kwargs.setdefault("decode", self.input_decoder())
        if type(self).windows is not Adapter.windows:
            kwargs.setdefault("windows", self.windows)
        rows, report = run_featurize(self, inputs, **kwargs)
        self.last_report = report
        return rows, report

    # -- classification -------------------------------------------------------------------------

    def classify(self, inputs: Iterable[Any], labels: Sequence[str],
                 template: Template | Sequence[Template] | None = None, *, scale: float | None = None,
                 batch_size: int = 32, progress: bool | None = None) -> np.ndarray:
        """Zero-shot: ``(N, len(labels))`` float32 probabilities of each input among ``labels``,
        with no training. Text and image-text models only (they embed the label names).

        Args:
            labels: the label names; column ``i`` is ``labels[i]``.
            template: ``"a photo of a {}."``, a function of the label, or several (their embeddings
                are averaged). Default: CLIP's 80 ImageNet prompts for image-text models, the bare
                label for text models; a short description per label helps a text model most.
            scale: multiplies the cosine similarities before the softmax. Default: the model's
                learned ``logit_scale`` (image-text), 20 (text).
        """
        return zero_shot_classify(self, inputs, labels, template, scale=scale, batch_size=batch_size,
                                  progress=progress)

    def predict_proba(self, inputs: Iterable[Any], **kwargs: Any) -> np.ndarray:
        """Probabilities from the model's own classifier head; models with one override this."""
        raise UnsupportedOptionError(f"{self.name} has no classifier head: pass labels= to predict or call "
                                     "classify(inputs, labels) for zero-shot, or finetune a head")

    def predict(self, inputs: Iterable[Any], labels: Sequence[str] | None = None, **kwargs: Any) -> list[Any]:
        """The most probable label of each input: among ``labels`` zero-shot when given (the
        options of :meth:`classify` apply), else from the model's own head (``self.labels``)."""
        if labels is not None:
            probs, names = self.classify(inputs, labels, **kwargs), list(labels)
        else:
            probs, names = self.predict_proba(inputs, **kwargs), getattr(self, "labels", None)
            if not names:
                names = list(range(probs.shape[1]))
        return [names[i] for i in probs.argmax(1)]

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
