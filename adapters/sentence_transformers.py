"""A sentence-transformers folder, run by sentence-transformers' own module pipeline.

``SentenceTransformer(folder)`` reads ``modules.json`` and every module's config in each format the
library has written (Pooling's booleans and its ``pooling_mode``, Dense, LayerNorm, Normalize, the
old ``sentence_transformers.models.*`` paths), and zoo drives its modules inside the featurize
engine: texts sorted by token count, progress, provenance, runtimes and options stay zoo's, the
numbers are the library's. Prompts come from the folder's ``config_sentence_transformers.json``
(``prompts``, ``default_prompt_name``); a Pooling module with ``include_prompt: false`` leaves the
prompt's tokens out of the pool, as ``encode`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Built, Encoder
from zoo.errors import ModelFormatError, RegistryError, UnsupportedOptionError
from zoo.store._manifest import write_manifest

from .hf_folders import read_json
from .transformers import TransformersAdapter, quiet_progress

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles

# sentence-transformers' Pooling modes (``Pooling.POOLING_MODES``), for pool= overrides.
ST_POOLING_MODES = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens", "weightedmean")


class SentenceTransformerAdapter(TransformersAdapter):
    """A ``SentenceTransformer`` pipeline; ``model`` is the ``SentenceTransformer`` itself.

    ``pool=None`` runs the pipeline as saved. Another mode replaces its Pooling module with
    sentence-transformers' own ``Pooling`` of that mode; the modules after it still run. A trailing
    ``Normalize`` is zoo's ``normalize`` (on by default, as saved), so ``normalize=False`` gives the
    rows before it.
    """

    pooling_modes: tuple[str, ...] = ST_POOLING_MODES
    model: SentenceTransformer

    def __init__(self, spec: ModelSpec, model: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        modules = list(model)
        self._pooling_index = _pooling_position(model)
        if self._pooling_index is None or "+" in (self.spec.pooling or ""):
            # No Pooling module to swap, or several modes side by side whose width the modules
            # after it read: the files fix the pooling.
            self.pooling_modes = ()
        self._steps = modules[:-1] if ends_with_normalize(model) else modules
        self._poolers: dict[str, Any] = {}

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False, device_map: Any = None) -> Built:
        root = files.root
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code, device_map=device_map)
        _check_text_pipeline(root, model)
        position = _pooling_position(model)
        mode = model[position].pooling_mode if position is not None else None
        pooling = "+".join(mode) if isinstance(mode, tuple) else mode
        if spec.pooling and pooling and spec.pooling != pooling:
            raise RegistryError(f"{spec.name} declares pooling {spec.pooling!r} but its sentence-transformers "
                                f"pipeline pools {pooling!r} ({root / 'modules.json'}); fix the registry entry")
        max_length = settled["preprocessing"].get("max_length")
        changes = {"pooling": pooling, "normalize": ends_with_normalize(model), **settled}
        return Built(model, output_width(model, root), changes,
                     {"tokenizer": model.tokenizer, "max_length": max_length}, placed=device_map is not None)

    # -- featurize ------------------------------------------------------------------------------

    # Longest first by token count (Encoder's batching by lengths()), each batch through
    # sentence-transformers' own preprocessing (collate), which TransformersAdapter's single
    # tokenising pass cannot share: the length pass costs about 1% of a run on real text and fills
    # batches with 96% tokens against 69% in sentence-transformers' own order by characters.
    plan_batches = Encoder.plan_batches

    def lengths(self, items: Sequence[Any]) -> list[int]:
        """Token counts as the pipeline's tokenizer truncates them (characters for a pipeline
        without a transformers tokenizer: static embeddings)."""
        if self.model.transformers_model is None:
            return [len(x) for x in items]
        return list(self.tokenizer(list(items), truncation=True, max_length=self.max_length, return_length=True,
                                   return_attention_mask=False, return_token_type_ids=False)["length"])

    def collate(self, items: list[str]) -> dict[str, torch.Tensor]:
        """sentence-transformers' own preprocessing of the (already prompted) texts: its tokenizer
        settings, maximum length and padding side. Tensors only, so the batch exports to ONNX."""
        import torch

        features = self.model.preprocess(items)
        return {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        features = {**{k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()},
                    "modality": "text"}
        for index, module in enumerate(self._steps):
            if index == self._pooling_index and pool not in (None, self.spec.pooling):
                module = self._pooler(pool)
            features = module(features)
        return features["sentence_embedding"].float()

    def _pooler(self, mode: str) -> Any:
        """sentence-transformers' Pooling of another mode, built once per mode."""
        if mode not in self._poolers:
            from sentence_transformers.sentence_transformer.modules import Pooling

            assert self._pooling_index is not None  # resolve_pool refuses another mode without a Pooling
            saved = self.model[self._pooling_index]
            self._poolers[mode] = Pooling(saved.embedding_dimension, pooling_mode=mode,
                                          include_prompt=saved.include_prompt)
        return self._poolers[mode]

    def prompt_features(self, prompt: str) -> dict[str, Any] | None:
        """A Pooling module with ``include_prompt: false`` pools without the prompt's tokens: each
        batch carries the prompt's length, measured by sentence-transformers as ``encode`` does."""
        pooling = self.model[self._pooling_index] if self._pooling_index is not None else None
        if pooling is None or pooling.include_prompt:
            return None
        return {"prompt_length": self.model.preprocess([""], prompt=prompt).get("prompt_length")}

    # -- layers ---------------------------------------------------------------------------------

    @property
    def transformer(self) -> Any:
        """The transformers model inside the pipeline's first module."""
        if self.model.transformers_model is None:
            raise UnsupportedOptionError(f"{self.name}'s sentence-transformers pipeline starts with "
                                         f"{type(self.model[0]).__name__}, not a transformers model")
        return self.model.transformers_model

    def layer_dims(self, layers: tuple[int, ...]) -> list[int]:
        if self._pooling_index is None or "+" in (self.spec.pooling or ""):
            raise UnsupportedOptionError(f"{self.name}'s sentence-transformers pipeline has no single-mode Pooling "
                                         "module to pool hidden layers with; layer= needs one")
        return super().layer_dims(layers)

    def encode_layers(self, batch: Any, *, pool: str | None, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Hidden states pooled by the pipeline's Pooling (or ``pool``'s), prompt tokens left out as
        the pipeline does; the modules after the pool (Dense, ...) belong to the final layer and are
        not applied."""
        inputs = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                           "token_type_ids")}
        hidden = self.transformer(**inputs, output_hidden_states=True).hidden_states
        assert self._pooling_index is not None  # layer_dims refuses a pipeline without a Pooling
        pooler = self._pooler(pool) if pool not in (None, self.spec.pooling) else self.model[self._pooling_index]
        extra = {"prompt_length": batch["prompt_length"]} if "prompt_length" in batch else {}
        return [pooler({"token_embeddings": hidden[i], "attention_mask": inputs["attention_mask"], **extra})
                ["sentence_embedding"].float() for i in layers]

    # -- saving ---------------------------------------------------------------------------------

    def save(self, directory: Any) -> Path:
        """The pipeline as sentence-transformers saves it, with zoo's manifest beside it."""
        return save_st(self, directory)


def save_st(encoder: Any, directory: Any) -> Path:
    """``encoder.model`` (any of sentence-transformers' model classes) as the library saves it,
    with zoo's manifest beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with quiet_progress():
        encoder.model.save(str(directory), create_model_card=False)
    write_manifest(directory, encoder.spec, encoder.files)
    return directory


def _pooling_position(model: Any) -> int | None:
    """Where the pipeline's Pooling module is, if it has one."""
    return next((i for i, m in enumerate(model) if type(m).__name__ == "Pooling"), None)


def run_pipeline(model: Any, features: dict[str, Any]) -> torch.Tensor:
    """A preprocessed batch through the pipeline's modules, but a trailing ``Normalize``: zoo's
    ``normalize`` (on by default where the pipeline ends with one) applies it, so ``normalize=False``
    gives the rows before it."""
    steps = list(model)[:-1] if ends_with_normalize(model) else list(model)
    for module in steps:
        features = module(features)
    return features["sentence_embedding"].float()


def preprocess_each(preprocess: Callable[[list[Any]], Any], items: list[Any]
                    ) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """The library's preprocessing of a batch, and the rows it refused: where it refuses the batch,
    each item is tried alone to name the ones it refuses, and the others are preprocessed together
    (as a batch of them alone would be)."""
    try:
        return dict(preprocess(items)), []
    except Exception:  # the library's own errors, of any type: find the inputs behind them
        failed = []
        for row, item in enumerate(items):
            try:
                preprocess([item])
            except Exception as exc:
                failed.append((row, f"{type(exc).__name__}: {exc}"))
        if not failed:
            raise  # the batch fails, and no input alone does: not an input's fault
    gone = {row for row, _ in failed}
    kept = [item for row, item in enumerate(items) if row not in gone]
    return (dict(preprocess(kept)) if kept else {}), failed


def as_texts(texts: list[str]) -> list[dict[str, str]]:
    """Texts as sentence-transformers' explicit text inputs: a bare string that looks like an image
    URL or path would be read as an image (fetched or opened) by a pipeline that takes images."""
    return [{"text": text} for text in texts]


def output_width(model: Any, root: Path) -> int:
    """The width of the pipeline's rows, as the library says it (an error naming the folder where
    it cannot)."""
    dim = model.get_embedding_dimension()
    if not dim:
        raise ModelFormatError(f"{root}: sentence-transformers cannot say this pipeline's output width")
    return int(dim)


def ends_with_normalize(model: Any) -> bool:
    """Whether the pipeline's last module is a ``Normalize`` (its rows at unit length)."""
    return type(list(model)[-1]).__name__ == "Normalize"


def declared_prompts(root: Path, model: Any) -> dict[str, str]:
    """The prompts the folder declares. sentence-transformers also fills ``query`` and
    ``document`` with ``""`` placeholders; those are not declared prompts, unless the file names them."""
    config_file = root / "config_sentence_transformers.json"
    config = read_json(config_file) if config_file.is_file() else {}
    declared = config.get("prompts") or {} if isinstance(config, dict) else {}
    return {str(k): str(v) for k, v in (model.prompts or {}).items() if v is not None and (v or k in declared)}


def _check_text_pipeline(root: Path, model: Any) -> None:
    """zoo drives pipelines that take plain texts into a feature-extraction model here; those of
    images (and chat messages) have adapters of their own."""
    modalities = getattr(model[0], "modality_config", None) or {"text": None}
    if "text" not in model.modalities or set(modalities) - {"text"}:
        raise ModelFormatError(
            f"{root}: a sentence-transformers pipeline for {', '.join(map(str, modalities))} inputs; zoo runs those "
            "of texts, of texts and images (modality_config names text and image), and of a vision-language model "
            "(text, image and message)")
    check_feature_extraction(root, model)


def check_feature_extraction(root: Path, model: Any) -> None:
    """A pipeline of a generation task or of packed (flattened) sequences would run other code than
    ``encode()`` runs in zoo's batches: refused by name."""
    task = getattr(model[0], "transformer_task", "feature-extraction")
    flattens = bool(getattr(model, "_can_flatten_inputs", lambda: False)())
    if task != "feature-extraction" or flattens:
        raise ModelFormatError(f"{root}: a sentence-transformers pipeline of task {task!r}"
                               f"{' and packed (flattened) sequences' if flattens else ''}; zoo runs pipelines of "
                               "task 'feature-extraction'")


def check_module_sources(root: Path, trust_remote_code: bool) -> None:
    """A module class from outside sentence-transformers is code the folder brings: run only when
    asked, as transformers' ``trust_remote_code``."""
    if not (root / "modules.json").is_file():
        return  # a transformers folder: sentence-transformers builds its own modules
    aliased = _aliased_by_library()
    for module in read_json(root / "modules.json"):
        ref = str(module["type"])
        if not ref.startswith("sentence_transformers.") and ref not in aliased and not trust_remote_code:
            raise ModelFormatError(
                f"{root / 'modules.json'} names module {ref!r}, code from outside sentence-transformers; zoo runs "
                "it only with zoo.load(..., trust_remote_code=True)")


def _aliased_by_library() -> frozenset[str]:
    """Other libraries' module paths that sentence-transformers runs as its own classes without
    importing them (PyLate's ``Dense`` in a ColBERT folder): its ``MultiVectorEncoder``'s table."""
    from sentence_transformers.multi_vector_encoder import model

    return frozenset(getattr(model, "_CLASS_REF_ALIASES", {}))


def load_st(root: Path, *, device: str, dtype: torch.dtype, trust_remote_code: bool, device_map: Any = None,
            model_class: str = "SentenceTransformer") -> Any:
    """``SentenceTransformer(root)`` (or another of its model classes: ``CrossEncoder``) from local
    files only; its own errors say what is wrong, with the folder named."""
    import sentence_transformers

    model_kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    try:
        with quiet_progress():
            return getattr(sentence_transformers, model_class)(
                str(root), device=None if device_map is not None else device, local_files_only=True,
                trust_remote_code=trust_remote_code, model_kwargs=model_kwargs)
    except (ValueError, TypeError, KeyError, ImportError, AttributeError, OSError) as exc:
        raise ModelFormatError(f"sentence-transformers cannot load {root}: {type(exc).__name__}: {exc}") from exc


def load_sentence_transformers(spec: ModelSpec, root: Path, *, device: str, dtype: torch.dtype,
                               model_class: str = "SentenceTransformer", trust_remote_code: bool = False,
                               device_map: Any = None) -> tuple[Any, dict[str, Any]]:
    """sentence-transformers' ``model_class`` (``SentenceTransformer``, ``CrossEncoder``,
    ``SparseEncoder``...) over the folder ``root``, read by the library itself from local files,
    and the spec fields its files settle: ``preprocessing["max_length"]`` (the spec's own wins),
    the ``prompts`` it declares and its ``default_prompt``.

    A module class from outside sentence-transformers is code the folder brings: it runs only with
    ``trust_remote_code``. For a plugin that runs another of the library's model classes."""
    check_module_sources(root, trust_remote_code)
    model = load_st(root, device=device, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map,
                    model_class=model_class)
    if spec.preprocessing.get("max_length"):
        model.max_seq_length = int(spec.preprocessing["max_length"])
    max_length = max_seq_length(model)
    return model, {"preprocessing": {**spec.preprocessing, **({"max_length": max_length} if max_length else {})},
                   "prompts": {**declared_prompts(root, model), **spec.prompts},
                   "default_prompt": spec.default_prompt or model.default_prompt_name or None}


def max_seq_length(model: Any) -> int | None:
    """The tokens the pipeline keeps per text: its ``max_seq_length``; None where it keeps all
    (static embeddings say infinity; a tokenizer without a limit, transformers' stand-in for one)."""
    import math

    from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

    limit = model.max_seq_length
    if isinstance(limit, (int, float)) and math.isfinite(limit) and 0 < limit < VERY_LARGE_INTEGER:
        return int(limit)
    return None
