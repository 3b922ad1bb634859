"""The user's model: :class:`Model`, what ``zoo.load`` returns, and every verb it answers.

A model holds one :class:`~zoo.core._encoder.Encoder` per tower (the modality of inputs it takes), each
with its modality's decoder, the spec it was loaded from, an optional classification head and an
optional compiled runtime. Every verb runs through the one featurize engine (:mod:`zoo.core._featurize`)
with settings resolved once per call (:class:`~zoo.core._embed_options.EmbedOptions`), so a backend
never sees a verb and a verb never checks a modality string to find a tower.

``Model`` is final: a finetuned model is a ``Model`` with a head, not a subclass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, final

from zoo.catalog._kinds import refuse_verb
from zoo.catalog._plugin_manager import get_plugin_manager
from zoo.catalog._registry import Modality, get_registry
from zoo.catalog._spec import a_kind
from zoo.errors import PluginError, UnsupportedModelKindError, UnsupportedOptionError
from zoo.training._config import FinetuneConfig

from ._embed_options import EmbedOptions, LayerMerge, build_options, resolve_prompt
from ._featurize import FeaturizeReport, OnError, run_featurize
from ._quantize import Precision, calibration_ranges, quantize
from ._rerank import PairDecode, Ranked, check_top_k, ranking
from ._rows import DenseBuffer, DenseRows
from ._zero_shot import Template
from ._zero_shot import classify as zero_shot_classify

if TYPE_CHECKING:
    import numpy as np
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles

    from ._compiled import CompiledEncoder
    from ._encoder import Encoder, FinishBatch
    from ._rows import RowFormat


def _with_entries(extra: dict[str, Any], finish: FinishBatch | None, batch: Any) -> tuple[Any, list[tuple[int, str]]]:
    """A batch with the prompt's entries in it, finished by the encoder's device stage if it has one."""
    batch = {**batch, **extra}
    return finish(batch) if finish is not None else (batch, [])


def places_prompt(features: Mapping[str, Any] | None) -> bool:
    """Whether an encoder whose :meth:`~zoo.Encoder.prompt_features` are ``features`` places the
    prompt itself (they carry it to its own preprocessing: a reranker's, a vision-language
    pipeline's system message), for every input it reads; else a prompt goes before each text."""
    return "prompt" in (features or {})


class Prompted:
    """A decoder that puts a prompt before each decoded text (a class, so it pickles to workers)."""

    def __init__(self, decode: Callable[[Any], Any], prompt: str) -> None:
        self.decode, self.prompt = decode, prompt

    def __call__(self, item: Any) -> Any:
        return self.prompt + self.decode(item)


@dataclass
class Head:
    """A trained classifier on a model's pooled rows: ``module`` maps ``(B, D)`` to ``(B, classes)``
    logits; column ``i`` is ``labels[i]``; ``pool`` is the pooling it was trained on."""

    module: torch.nn.Module
    labels: list[Any]
    pool: str | None


@final
class Model:
    """A loaded model: one call per verb, whatever its modality and backend.

    Attributes:
        spec: the :class:`~zoo.catalog._spec.ModelSpec` it was loaded from (a finetuned folder's own spec).
        encoder: the primary tower's :class:`~zoo.core._encoder.Encoder` (the backend model).
        head: the classifier a finetune trained, or None.
        compiled: the primary tower's forward pass on ONNX Runtime or OpenVINO, or None for PyTorch.
        last_report: what the last verb run over inputs kept and skipped (and why).
    """

    def __init__(self, encoder: Encoder, *, spec: ModelSpec | None = None, head: Head | None = None,
                 files: ModelFiles | None = None) -> None:
        """Hold ``encoder`` (and the other towers it names), each bound once to its modality's
        decoder from the registry."""
        self.encoder = encoder
        self.spec = spec or encoder.spec
        self.head = head
        self._files = files  # a finetuned checkpoint's own folder; else the encoder's
        self.compiled: CompiledEncoder | None = None
        self.last_report = FeaturizeReport()
        self._kind = get_registry().kind(self.kind)  # its verbs and row format, resolved once
        self._towers = dict(encoder.towers())
        registry = get_registry()
        # whether its rows are dense vectors (what a tower over another, a clip's frames averaged, gives)
        self._dense = self._kind.rows_ref is not None and isinstance(self._kind.row_format(), DenseRows)
        derived = [modality for modality in registry.modalities.values()  # video over vision: towers over another
                   if self._dense and modality.over in self._towers and modality.name not in self._towers]
        self._settings = {modality.name: dict(modality.settings) for modality in derived}
        for modality in derived:
            self._towers[modality.name] = modality.tower(self._towers[cast(str, modality.over)])
        for kind, tower in self._towers.items():
            modality = registry.modality(kind)
            if kind not in self._settings:
                self._settings[kind] = self._own_reading(modality)
            tower.decode = modality.decoder(self._settings[kind])
        if head is not None:
            head.module.to(encoder.device).eval()

    def _own_reading(self, modality: Modality) -> dict[str, Any]:
        """How the model's own tower of ``modality`` reads an input, for a modality that has
        settings (a clip's frames): as its adapter declared them in the spec's
        ``preprocessing[modality]`` (an HF video model's frame count)."""
        if not modality.settings:
            return {}
        declared = self.spec.preprocessing.get(modality.name)
        if not isinstance(declared, Mapping):
            raise PluginError(f"{self.name} has its own {modality.name} tower, and its adapter does not say how it "
                              f"reads an input: set preprocessing[{modality.name!r}] (its "
                              f"{', '.join(modality.settings)}) in the spec its _build settles")
        return dict(declared)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("zoo.Model is final: implement a zoo.Encoder for a backend, or add a verb with a plugin")

    # -- what it is -----------------------------------------------------------------------------

    @property
    def towers(self) -> Mapping[str, Encoder]:
        """The encoders by the modality of the inputs they take, the primary one first (an
        image-text model: ``{"vision": ..., "text": ...}``)."""
        return self._towers

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def modality(self) -> str:
        return self.spec.modality

    @property
    def kind(self) -> str:
        """What the model gives: ``"embedder"`` (:meth:`featurize` rows), ``"reranker"``
        (:meth:`score` / :meth:`rerank` scores of pairs) or a kind a plugin registers (``"sparse-encoder"``).
        A verb its kind does not answer is refused by name."""
        return self.spec.kind or "embedder"

    @property
    def row_format(self) -> RowFormat:
        """What :meth:`featurize` gives and how ``zoo embed`` / ``zoo index`` store it: the
        :class:`~zoo.core._rows.RowFormat` of the model's kind (dense rows for an embedder)."""
        self._serves("featurize")
        return self._kind.row_format()

    def _serves(self, verb: str, asked: str | None = None) -> None:
        if verb not in self._kind.verbs:
            raise refuse_verb(self.name, self._kind, asked or verb)

    def require_dense(self, what: str) -> None:
        """Refuse by name, where ``what`` (``"zoo evaluate"``) needs dense vectors, a model whose
        kind gives other rows (a sparse encoder) or none (a reranker)."""
        if not self._dense:
            raise UnsupportedModelKindError(f"{self.name} is {a_kind(self.kind)}: it {self._kind.description}; "
                                            f"{what} needs an embedder's dense vectors")

    @property
    def backend(self) -> str:
        return self.spec.backend

    @property
    def embed_dim(self) -> int:
        """Width ``D`` of :meth:`featurize`'s rows."""
        return self.encoder.embed_dim

    @property
    def model(self) -> torch.nn.Module:
        """The backend's ``torch.nn.Module`` (all towers of a multi-tower model)."""
        return self.encoder.model

    @property
    def device(self) -> str:
        return self.encoder.device

    @property
    def dtype(self) -> Any:
        return self.encoder.dtype

    @property
    def files(self) -> ModelFiles | None:
        """Where the model's verified files are: a finetuned checkpoint's folder, or the encoder's."""
        return self._files if self._files is not None else self.encoder.files

    @property
    def preprocess(self) -> Any:
        """The tokenizer / transform / feature extractor bound to these weights."""
        return self.encoder.preprocess

    @property
    def pooling_modes(self) -> tuple[str, ...]:
        return self.encoder.pooling_modes

    @property
    def runtime(self) -> str:
        """What runs the frozen forward pass: ``torch``, ``onnx`` or ``openvino``."""
        return self.compiled.runtime if self.compiled is not None else "torch"

    @property
    def labels(self) -> list[Any] | None:
        """The classes of :meth:`predict_proba`'s columns (the finetuned head's, else those of the
        head the weights ship with), or None for a model with no classifier."""
        classifier = self._classifier()
        return classifier[1] if classifier is not None else None

    def tower(self, kind: str | None = None) -> tuple[str, Encoder]:
        """``(name, encoder)`` of the tower for inputs of modality ``kind`` (None: the primary)."""
        if kind is None:
            return next(iter(self._towers.items()))
        if kind not in self._towers:
            raise UnsupportedOptionError(f"{self.name} has no {kind} tower: it embeds "
                                         f"{' and '.join(self._towers)} inputs")
        return kind, self._towers[kind]

    # -- settings, resolved once ----------------------------------------------------------------

    def embed_options(self, *, tower: str | None = None, pool: str | None = None, normalize: bool | None = None,
                      prompt: str | None = None, prompt_text: str | None = None, truncate_dim: int | None = None,
                      precision: Precision = "float32", layer: int | None = None,
                      layers: Sequence[int] | None = None, layer_merge: LayerMerge = "concat",
                      role: str | None = None) -> EmbedOptions:
        """Every setting of a row, checked against this model once: see :meth:`featurize`."""
        self.row_format.check_settings(self.name, {  # those that ask for other rows than the model's own
            "pool": None if pool == self.spec.pooling else pool, "truncate_dim": truncate_dim, "layer": layer,
            "normalize": None if normalize in (None, bool(self.spec.normalize)) else normalize, "layers": layers,
            "precision": None if precision == "float32" else precision,
            "layer_merge": None if layer_merge == "concat" else layer_merge})
        kind, encoder = self.tower(tower)
        primary = kind == self.tower()[0]
        if pool is None and primary and self.head is not None:
            pool = self.head.pool  # what the head was trained on
        chosen_pool = encoder.resolve_pool(pool)
        options = build_options(self.spec, dim=self.embed_dim, layer_dims=encoder.layer_dims,
                                takes_text=kind == "text" or places_prompt(encoder.prompt_features("")), prompt=prompt,
                                prompt_text=prompt_text,
                                truncate_dim=truncate_dim, precision=precision, layer=layer, layers=layers,
                                layer_merge=layer_merge, tower=kind, pool=chosen_pool,
                                normalize=bool(self.spec.normalize) if normalize is None else normalize,
                                role=role, tower_settings=self._settings[kind])
        if options.layers and (self.compiled is not None and primary):
            raise UnsupportedOptionError(f"layer= runs on PyTorch; {self.name} was loaded with runtime="
                                         f"{self.runtime!r}: load it with runtime='torch' for intermediate layers")
        if options.layers and chosen_pool == "pooler":
            raise UnsupportedOptionError(f"pool='pooler' is the final layer's pooler; with layer= use "
                                         f"pool='mean' or 'cls' for {self.name}")
        return options

    def search_role(self, side: str) -> str | None:
        """The role the inputs of one side of a search (``"query"`` or ``"document"``) take by
        default: that side, for a model whose encoder runs the roles differently (a ColBERT's
        query expansion), else None (a prompt is chosen as for any input)."""
        return side if self.encoder.for_role(side) is not self.encoder else None

    # -- featurize ------------------------------------------------------------------------------

    def featurize(self, inputs: Iterable[Any], *, batch_size: int = 32, return_tensors: Literal["np", "pt"] = "np",
                  progress: bool | None = None, on_error: OnError = "raise", num_workers: int = 0,
                  calibration: np.ndarray | None = None, **options: Any) -> np.ndarray | torch.Tensor:
        """Embed ``inputs`` with the frozen model.

        Args:
            inputs: a sequence of items of the tower's modality (``str`` for text).
            batch_size: items per forward pass.
            return_tensors: ``"np"`` (default) or ``"pt"``.
            progress: show a progress bar; ``None`` shows one for long inputs.
            on_error: ``"raise"`` stops at the first bad item with an error naming its index;
                ``"skip"`` leaves it out, warns, and records it in :attr:`last_report`.
            num_workers: decode and preprocess in this many worker processes, overlapping the
                model (images and audio; text is tokenised in batches here).
            calibration: float embeddings ``(M, D)`` whose per-dimension ranges bucket int8 /
                uint8 output (default: the output's own), as sentence-transformers'
                ``calibration_embeddings``.
            **options: the settings of a row, checked by :meth:`embed_options`: ``tower`` (the
                modality of the inputs, for a model with several towers: ``"text"`` embeds texts
                with an image-text model), ``pool`` (a mode in :attr:`pooling_modes`),
                ``normalize`` (L2; ``None``: the model's default), ``prompt`` (a name the model
                declares in :attr:`ModelSpec.prompts`, e.g. ``"query"``) or ``prompt_text`` (the
                text itself), put before every text; ``truncate_dim`` keeps the first dimensions
                (Matryoshka), re-normalised when normalising; ``precision`` (``float32``,
                ``int8``, ``uint8``, ``binary``, ``ubinary``) as sentence-transformers'
                ``quantize_embeddings``; ``layer=-2`` or ``layers=[...]`` (with
                ``layer_merge="concat"`` or ``"mean"``) pools hidden layers instead of the final
                output; ``role`` (``"query"`` or ``"document"``, as sentence-transformers'
                ``encode_query`` / ``encode_document``: the role's declared prompt, and the
                role's own path where the model runs them differently); or ``options=`` an
                :class:`EmbedOptions` from :meth:`embed_options`.

        Returns:
            ``(N, D)`` rows in input order (``N`` excludes skipped items; ``(0, D)`` for empty
            input): float32, or int8 / uint8 for a quantized ``precision`` (``ceil(D / 8)``
            packed columns for the binary ones). A model of another kind gives its kind's rows
            (:attr:`row_format`), in input order too, and refuses by name the settings they do
            not take: a multi-vector model's :class:`zoo.TokenMatrices` (one ``(tokens, D)``
            float32 matrix per input; ``return_tensors="pt"``: a list of tensors, as
            ``MultiVectorEncoder.encode``), a sparse encoder's SciPy CSR matrix.
        """
        rows, _ = self.featurize_with_report(inputs, batch_size=batch_size, return_tensors=return_tensors,
                                             progress=progress, on_error=on_error, num_workers=num_workers,
                                             calibration=calibration, **options)
        return rows

    def featurize_texts(self, texts: Iterable[str], **kwargs: Any) -> np.ndarray | torch.Tensor:
        """:meth:`featurize` through the text tower (an image-text model's texts, in its image space)."""
        return self.featurize(texts, tower="text", **kwargs)

    def featurize_images(self, images: Iterable[Any], **kwargs: Any) -> np.ndarray | torch.Tensor:
        """:meth:`featurize` through the image tower."""
        return self.featurize(images, tower="vision", **kwargs)

    def featurize_with_report(self, inputs: Iterable[Any], *, batch_size: int = 32,
                              return_tensors: Literal["np", "pt"] = "np", progress: bool | None = None,
                              on_error: OnError = "raise", num_workers: int = 0, calibration: np.ndarray | None = None,
                              options: EmbedOptions | None = None,
                              **settings: Any) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """:meth:`featurize`, also returning which inputs were kept and which skipped (and why)."""
        settings = {name: value for name, value in settings.items() if value is not None}  # None: the default
        if options is None:
            options = self.embed_options(**settings)
        elif settings:
            raise TypeError(f"pass options= or the settings themselves ({', '.join(settings)}), not both")
        tower = self._towers[options.tower or self.tower()[0]]
        encoder = tower.for_role(options.role)
        quantized = options.precision != "float32"
        extra = encoder.prompt_features(options.prompt) if options.prompt else None
        rows, report = self._run(encoder, inputs, encode=self._forward(encoder, options, extra),
                                 prompt=options.prompt, extra=extra,
                                 buffer=partial(self.row_format.buffer, options=options), batch_size=batch_size,
                                 return_tensors="np" if quantized else return_tensors,
                                 progress=progress, on_error=on_error,
                                 num_workers=num_workers if encoder.parallel_decode else 0,
                                 desc="featurize" if tower is self.encoder else f"featurize {options.tower}s")
        if quantized:  # the rows came back as numpy
            rows = quantize(cast("np.ndarray", rows), options.precision,
                            calibration_ranges(calibration) if calibration is not None else None)
            if return_tensors == "pt":
                import torch

                rows = torch.from_numpy(rows)
        return rows, report

    def _forward(self, encoder: Encoder, options: EmbedOptions, extra: Mapping[str, Any] | None
                 ) -> Callable[[Any], torch.Tensor]:
        """One batch to rows, as ``options`` say: the compiled runtime, hidden layers, or the output."""
        if self.compiled is not None and encoder is self.encoder:
            if extra:
                raise UnsupportedOptionError(
                    f"{self.name} pools without its prompt's tokens (include_prompt: false), which the "
                    f"{self.runtime} export does not take as an input; load it with runtime='torch'")
            return self.compiled.forward(options.pool)
        if options.layers:
            def forward(batch: Any) -> torch.Tensor:
                return options.merge(encoder.encode_layers(batch, pool=options.pool, layers=options.layers))
        else:
            def forward(batch: Any) -> torch.Tensor:
                return encoder.encode_batch(batch, pool=options.pool)
        return forward

    def _run(self, encoder: Encoder, inputs: Iterable[Any], *, prompt: str | None = None, pairs: bool = False,
             extra: Mapping[str, Any] | None = None, **kwargs: Any
             ) -> tuple[np.ndarray | torch.Tensor, FeaturizeReport]:
        """Every verb that runs the frozen model over inputs goes through here: the decoding the
        encoder asks for (its device stage, the prompt before each text unless the encoder places it,
        each side of a pair), the prompt's entries (``extra``: :meth:`Encoder.prompt_features`) in
        every batch before the stage finishes it, the engine, then the :attr:`last_report`
        convenience, set in this one place."""
        stage = encoder.device_stage()
        decode = stage.decode if stage is not None else encoder.decode
        decode = Prompted(decode, prompt) if prompt and not places_prompt(extra) else decode
        finish = stage.finish if stage is not None else None
        if extra:
            finish = partial(_with_entries, dict(extra), finish)
        rows, report = run_featurize(encoder, inputs, decode=PairDecode(decode) if pairs else decode,
                                     finish=finish, **kwargs)
        self.last_report = report
        return rows, report

    # -- classification -------------------------------------------------------------------------

    def classify(self, inputs: Iterable[Any], labels: Sequence[str],
                 template: Template | Sequence[Template] | None = None, *, scale: float | None = None,
                 batch_size: int = 32, progress: bool | None = None) -> np.ndarray:
        """Zero-shot: ``(N, len(labels))`` float32 probabilities of each input among ``labels``,
        with no training. Models with a text tower only (they embed the label names).

        Args:
            labels: the label names; column ``i`` is ``labels[i]``.
            template: ``"a photo of a {}."``, a function of the label, or several (their embeddings
                are averaged). Default: CLIP's 80 ImageNet prompts for image-text models, the bare
                label for text models; a short description per label helps a text model most.
            scale: multiplies the cosine similarities before the softmax. Default: the model's
                learned ``logit_scale`` (image-text), 20 (text).
        """
        self._serves("classify")
        return zero_shot_classify(self, inputs, labels, template, scale=scale, batch_size=batch_size,
                                  progress=progress)

    def predict_proba(self, inputs: Iterable[Any], *, batch_size: int = 32, progress: bool | None = None,
                      on_error: OnError = "raise", return_tensors: Literal["np", "pt"] = "np"
                      ) -> np.ndarray | torch.Tensor:
        """Class probabilities ``(N, len(self.labels))`` from the finetuned head, or from the
        classifier the weights ship with (an ImageNet head); column ``i`` is ``self.labels[i]``."""
        self._serves("classify", "predict_proba")
        classifier = self._classifier()
        if classifier is None:
            raise UnsupportedOptionError(f"{self.name} has no classifier head: pass labels= to predict or call "
                                         "classify(inputs, labels) for zero-shot, or finetune a head")
        logits, labels = classifier
        return self._run(self.encoder, inputs, encode=lambda batch: logits(batch).float().softmax(-1),
                         buffer=partial(DenseBuffer, dim=len(labels)), batch_size=batch_size,
                         return_tensors=return_tensors, progress=progress, on_error=on_error, desc="predict")[0]

    def _classifier(self) -> tuple[Callable[[Any], torch.Tensor], list[Any]] | None:
        """``(logits of a batch, class names)``: the finetuned head's, else the weights' own, else None."""
        head, encoder = self.head, self.encoder
        if head is None:
            return encoder.classifier()
        normalize = bool(encoder.spec.normalize)
        return (lambda batch: head.module(features(encoder, batch, head.pool, normalize))), head.labels

    def predict(self, inputs: Iterable[Any], labels: Sequence[str] | None = None, **kwargs: Any) -> list[Any]:
        """The most probable label of each input: among ``labels`` zero-shot when given (the
        options of :meth:`classify` apply), else from the trained head (:attr:`labels`)."""
        if labels is not None:
            return [labels[i] for i in self.classify(inputs, labels, **kwargs).argmax(1)]
        probs = self.predict_proba(inputs, **kwargs)
        names = cast("list[Any]", self.labels)  # predict_proba has raised where there is no classifier
        return [names[i] for i in probs.argmax(1)]

    # -- reranking ------------------------------------------------------------------------------

    def score(self, pairs: Iterable[Sequence[Any]], *, batch_size: int = 32, progress: bool | None = None,
              on_error: OnError = "raise", prompt: str | None = None, prompt_text: str | None = None
              ) -> np.ndarray:
        """A reranker's scores of ``(query, document)`` pairs, as ``CrossEncoder.predict`` gives them
        (through the model's own activation: a sigmoid for a one-label reranker saved with the default).

        Args:
            pairs: ``(query, document)`` pairs; each side is an input of the model's modality.
            batch_size: pairs per forward pass (batched longest first by token count).
            progress: show a progress bar; ``None`` shows one for long inputs.
            on_error: ``"raise"`` stops at the first bad pair with an error naming its index;
                ``"skip"`` leaves it out and records it in :attr:`last_report`.
            prompt: a prompt name the model declares (its default prompt applies when None), or
                ``prompt_text`` the text itself: sentence-transformers' preprocessing puts it in.

        Returns:
            ``(N,)`` float32 scores for a one-label reranker, ``(N, labels)`` otherwise.
        """
        if isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
            raise TypeError("score takes a list of (query, document) pairs; wrap one pair in a list: [(query, doc)]")
        rows, _ = self._scores(pairs, batch_size=batch_size, progress=progress, on_error=on_error, prompt=prompt,
                               prompt_text=prompt_text, verb="score")
        return rows[:, 0] if rows.shape[1] == 1 else rows

    def rerank(self, query: Any, documents: Sequence[Any], *, top_k: int | None = None,
               return_documents: bool = False, batch_size: int = 32, progress: bool | None = None,
               on_error: OnError = "raise", prompt: str | None = None, prompt_text: str | None = None
               ) -> list[Ranked]:
        """``documents`` ordered by a reranker's score against ``query``, best first, as
        ``CrossEncoder.rank`` orders them (ties keep their given order).

        Args:
            query: one input of the model's modality.
            documents: the candidates.
            top_k: keep the best ``top_k`` (None: all).
            return_documents: put each document in its :class:`~zoo.core._rerank.Ranked` too.
            batch_size, progress, on_error, prompt, prompt_text: as :meth:`score`; a skipped
                document is left out of the ranking.

        Returns:
            :class:`~zoo.core._rerank.Ranked` ``(index, score, document)`` tuples, ``index`` the
            document's position in ``documents``.
        """
        check_top_k(top_k)
        self._serves("rerank")
        if self.embed_dim != 1:
            raise UnsupportedOptionError(f"{self.name} gives {self.embed_dim} scores per pair (a classifier of "
                                         "pairs): rerank orders by one relevance score; use score(pairs)")
        if isinstance(documents, (str, bytes)):
            raise TypeError("documents must be a list of candidates; wrap a single one in a list: [document]")
        documents = list(documents)
        rows, report = self._scores([(query, d) for d in documents], batch_size=batch_size, progress=progress,
                                    on_error=on_error, prompt=prompt, prompt_text=prompt_text, verb="rerank")
        return ranking(rows[:, 0], report.kept, documents if return_documents else None, top_k)

    def _scores(self, pairs: Iterable[Sequence[Any]], *, verb: str, prompt: str | None, prompt_text: str | None,
                **kwargs: Any) -> tuple[np.ndarray, FeaturizeReport]:
        self._serves(verb)
        _, text = resolve_prompt(self.spec, prompt, prompt_text, takes_text=self.modality == "text")
        encoder = self.encoder
        extra = encoder.prompt_features(text) if text else {}
        if extra is None:
            raise UnsupportedOptionError(f"{self.name} takes no prompt")
        rows, report = self._run(encoder, pairs, pairs=True, extra=extra, encode=encoder.encode_batch,
                                 buffer=partial(DenseBuffer, dim=self.embed_dim), return_tensors="np", desc=verb,
                                 **kwargs)
        return cast("np.ndarray", rows), report

    # -- finetuning and saving ------------------------------------------------------------------

    def finetune(self, train: Any, val: Any = None, config: FinetuneConfig | None = None, **options: Any) -> Any:
        """Train a classifier on this model, or (``objective="contrastive"``) the embedding itself,
        and save it so that ``zoo.load(output_dir)`` reads it back.

        Args:
            train: ``(inputs, labels)``, a sequence of ``(input, label)`` pairs, a folder with one
                subfolder per class, or a CSV / JSONL / parquet file (``text_column``, ``label_column``).
                Contrastive: ``(anchor, positive)`` pairs or ``(anchor, positive, negative)``
                triplets, or a table with those columns (``anchor_column``...).
            val: validation data in the same forms (or ``val_fraction=0.2`` to hold out a split).
            config: a :class:`~zoo.training._config.FinetuneConfig`; ``options`` override its fields.
            **options: the config's fields as keywords: ``output_dir`` (required), ``objective``
                (``classification``, ``contrastive``: with ``symmetric``, ``scale``,
                ``matryoshka_dims``), ``strategy``
                (``linear-probe``, ``full``, ``partial``, ``freeze-unfreeze``), ``epochs``, ``lr``,
                ``backbone_lr``, ``batch_size``, ``head``, ``seed``, ``resume``, ``on_epoch_end``...

        Returns:
            A :class:`~zoo.training.FinetuneResult` with per-epoch metrics, the best epoch, the
            checkpoint folder and the trained model (``predict``, ``predict_proba``).
        """
        self._serves("finetune")
        if self.head is not None:
            raise UnsupportedOptionError(f"{self.name} is already finetuned: finetune its base model "
                                         f"{self.spec.backend_id!r} instead")
        config = config.replace(**options) if config is not None else FinetuneConfig.from_options(options)
        result = get_plugin_manager().hook.zoo_finetune(model=self, train=train, val=val, config=config)
        if result is None:
            raise PluginError("no plugin implements finetuning (zoo_finetune); the built-in zoo.training "
                              "plugin provides it unless it was blocked")
        return result

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model so that ``zoo.load(directory)`` reads it back."""
        if self.head is not None:
            raise UnsupportedOptionError(f"{self.name} is a finetuned checkpoint folder already: copy "
                                         f"{self.files.root if self.files else 'it'} to keep it")
        return self.encoder.save(directory)

    def __repr__(self) -> str:
        return f"<zoo.Model {self.name!r} modality={self.modality} dim={self.embed_dim} device={self.device}>"


def features(encoder: Encoder, batch: Any, pool: str | None, normalize: bool) -> torch.Tensor:
    """Pooled rows of a collated batch exactly as :meth:`Model.featurize` computes them, with
    gradients where parameters train: what a head sees in training and in prediction."""
    import torch

    out = encoder.encode_batch(batch, pool=pool).float()
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out
