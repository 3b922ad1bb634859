"""Hugging Face transformers encoders behind the zoo adapter interface.

Text encoders load with ``AutoModel`` / ``AutoTokenizer`` from a verified local folder, never with
remote code unless the caller asks. Pooling is mask-aware (``mean``, ``cls``, ``max``,
``lasttoken`` for decoders whatever their padding side, ``pooler``).

The ``transformers`` backend (prefix ``hf:``) serves every Hugging Face style folder:
:func:`~zoo.adapters.hf_folders.read_folder` tells which library wrote it, once, in
:meth:`TransformersAdapter.resolve_files`, and the folder goes to the adapter that runs that
library's own code: a sentence-transformers pipeline to
:class:`~zoo.adapters.sentence_transformers.SentenceTransformerAdapter`, a timm folder to timm,
audio / vision / image-text model types to their adapters.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._registry import import_ref
from zoo.catalog._spec import ModelSpec, Source, split_revision
from zoo.core._encoder import Built, Encoder, ExportPlan, longest_first
from zoo.errors import ModelFormatError, PluginError, RegistryError
from zoo.store._manifest import write_manifest
from zoo.store._sources import hub_file

from .hf_folders import PAGES_FORMAT, FolderFormat, config_modality, read_folder

if TYPE_CHECKING:
    import torch

    from zoo.store._model_files import ModelFiles


# The adapter class serving each format and modality, imported when first needed.
_ADAPTER_BY_FORMAT = {
    "sentence-transformers": "zoo.adapters.sentence_transformers:SentenceTransformerAdapter",
    "cross-encoder": "zoo.adapters.cross_encoder:CrossEncoderAdapter",
    "multi-vector": "zoo.adapters.multi_vector:MultiVectorAdapter",
    PAGES_FORMAT: "zoo.adapters.multi_vector:PageRetrieverAdapter",
    "sentence-transformers-image-text": "zoo.adapters.st_image_text:STImageTextAdapter",
    "sentence-transformers-multimodal": "zoo.adapters.st_multimodal:STMultimodalAdapter",
    "timm": "zoo.adapters.timm:TimmAdapter",
}
_ADAPTER_BY_MODALITY = {
    "audio": "zoo.adapters.hf_audio:HFAudioAdapter",
    "image-text": "zoo.adapters.hf_image_text:HFImageTextAdapter",
    "audio-text": "zoo.adapters.hf_clap:HFClapAdapter",
    "video": "zoo.adapters.hf_video:HFVideoAdapter",
    "video-text": "zoo.adapters.hf_video:HFVideoTextAdapter",
    "vision": "zoo.adapters.hf_vision:HFVisionAdapter",
}


# Encoders whose graphs ONNX Runtime's optimizer fuses as BERT's (zoo.core._compiled).
_BERT_LIKE = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra", "mpnet"})
_EXPORT_TEXTS = (
    ("a short text", "a longer text, with a few more words in it than the first one has"),
    ("three texts", "of other lengths than the traced pair, padded to the longest", "of the three"),
    ("one text alone, with no padding at all",),
    ("short", " ".join(["a long text that pads the short one by far"] * 12)),
    tuple(" ".join(["seven texts of growing length"] * n) for n in range(1, 8)),
    tuple(f"text {n} of thirty-three, " + "with words " * (n % 9) for n in range(33)),
)


# A pass-through name whose config.json is neither cached nor reachable: load decides.
UNKNOWN_MODALITY = "unknown"


def folder_format(root: Path, kind: str | None = None) -> FolderFormat:
    """:func:`read_folder` for a folder that must be a Hugging Face style one."""
    found = read_folder(root, kind)
    if found is None:
        raise ModelFormatError(f"{root} has neither modules.json (sentence-transformers) nor config.json "
                               "(transformers, timm): zoo cannot tell which library wrote it")
    return found


class TransformersAdapter(Encoder):
    """A transformers text encoder with mean / cls / max / lasttoken / pooler pooling.

    A folder of another format or modality is served by the matching adapter, chosen once in
    :meth:`resolve_files`, all under the ``transformers`` backend and the ``hf:`` prefix.
    """

    backend = "transformers"
    pooling_modes: tuple[str, ...] = ("mean", "cls", "max", "lasttoken", "pooler")
    parallel_decode = False  # texts are tokenised in length-sorted batches here, fast enough in-process
    #: ``device_map`` (``"auto"``, a dict...) spreads a model too big for one device, as transformers does
    #: a transformers ``PreTrainedModel``: its members (``config``, ``save_pretrained``) are the architecture's
    model: Any

    def __init__(self, spec: ModelSpec, model: Any, *, tokenizer: Any, max_length: int, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.tokenizer = tokenizer
        self.max_length = max_length

    # -- specs ----------------------------------------------------------------------------------

    @classmethod
    def spec_for_id(cls, backend: str, backend_id: str) -> ModelSpec:
        repo, revision = split_revision(backend_id)
        if repo.count("/") != 1:
            raise RegistryError(f"'hf:{backend_id}' is not a hub repository id; expected 'hf:org/name[@revision]'")
        # The modality is the repository's config.json's (a small file); loading reads it again
        # from the downloaded folder (resolve_files), so an unreachable one only leaves it unknown.
        config = hub_file(repo, "config.json", revision)
        return ModelSpec(
            name=f"hf:{backend_id}",
            modality=config_modality(json.loads(config.read_text())) if config else UNKNOWN_MODALITY,
            backend=backend,
            backend_id=repo,
            sources=(Source("hub", repo, revision=revision),),
        )

    @classmethod
    def spec_for_path(cls, path: Path, kind: str | None = None) -> ModelSpec:
        """A spec for a Hugging Face model folder on disk (read as ``kind`` where its files do not
        say); ``config["folder"]`` says what :func:`read_folder` found and why (``zoo info`` shows it)."""
        found = folder_format(path, kind)
        return ModelSpec(
            name=str(path),
            modality=found.modality,
            backend=cls.backend,
            backend_id=str(path),
            sources=(Source("path", str(path)),),
            config={"folder": found.describe()},
            kind=found.kind,
        )

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def resolve_files(cls, spec: ModelSpec, files: ModelFiles) -> tuple[ModelSpec, type[Encoder]]:
        """Which library wrote the files, read once from them: a pass-through hub name learns its
        format and modality only now, and a folder whose files do not say its kind is read as the
        spec's (a registry entry's ``kind: reranker``). A sparse folder (without its plugin) is refused here."""
        found = folder_format(files.root, spec.kind)
        spec = spec.replace(modality=found.modality, config={**spec.config, "folder": found.describe()},
                            kind=found.kind)
        if found.format == "timm":
            spec = spec.replace(backend="timm")
        ref = _ADAPTER_BY_FORMAT.get(found.format) or _ADAPTER_BY_MODALITY.get(found.modality)
        chosen = import_ref(ref) if ref else TransformersAdapter
        if issubclass(cls, chosen):
            return spec, cls  # a plugin's own subclass of the adapter this format needs
        if cls is not TransformersAdapter:
            raise PluginError(f"{spec.name} is a {found.format} {found.modality} folder, which "
                              f"{chosen.__name__} runs; backend {spec.backend!r} ({cls.__name__}) does not subclass "
                              f"it, so it would run other code than the library's: subclass {chosen.__name__}")
        return spec, chosen

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False, device_map: Any = None) -> Built:
        from transformers import AutoModel, AutoTokenizer

        model, tokenizer = load_model_and_processor(files.root, AutoModel, AutoTokenizer, dtype=dtype,
                                                    trust_remote_code=trust_remote_code, device_map=device_map)
        max_length = int(spec.preprocessing.get("max_length") or _model_max_length(tokenizer, model))
        changes = {"pooling": spec.pooling or _plain_folder_pooling(spec, files.root),
                   "normalize": bool(spec.normalize),
                   "preprocessing": {**spec.preprocessing, "max_length": max_length}}
        return Built(model, int(model.config.hidden_size), changes,
                     {"tokenizer": tokenizer, "max_length": max_length}, placed=device_map is not None)

    # -- featurize ------------------------------------------------------------------------------

    @property
    def preprocess(self) -> Any:
        """The tokenizer these weights were trained with."""
        return self.tokenizer

    @property
    def transformer(self) -> Any:
        """The transformers model that computes the token states (here the model itself)."""
        return self.model

    def plan_batches(self, items: Sequence[str], batch_size: int) -> Iterator[tuple[list[int], Any]]:
        """Each text tokenised once (truncated as :meth:`collate` truncates), batched longest first
        by token count, and each batch padded by the tokenizer as :meth:`collate` pads it. By token
        count, batches of real text are 96% tokens against 69% sorted by characters (Debian's
        fortunes), which is a third more texts a second."""
        encoded = self.tokenizer(list(items), truncation=True, max_length=self.max_length)
        ids = encoded["input_ids"]

        def pad(rows: list[int]) -> Any:
            chosen = {key: [values[i] for i in rows] for key, values in encoded.items()}
            return self.tokenizer.pad(chosen, padding=True, return_tensors="pt", verbose=False)

        return longest_first(range(len(ids)), batch_size, lambda i: len(ids[i]), pad)

    def lengths(self, items: Sequence[Any]) -> list[int]:
        """Token counts, truncated as :meth:`collate` truncates."""
        encoded = self.tokenizer(list(items), truncation=True, max_length=self.max_length, return_length=True,
                                 return_attention_mask=False, return_token_type_ids=False)
        return list(encoded["length"])

    def collate(self, items: list[str]) -> Any:
        """Token ids padded to the longest text of the batch."""
        return self.tokenizer(items, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def encode_batch(self, batch: Any, *, pool: str | None = None) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self.model(**batch)
        if pool == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"{self.name} has no pooler layer; use pool='mean' or 'cls'")
            return pooled.float()
        return pool_tokens(out.last_hidden_state, batch["attention_mask"], pool)

    def layer_dims(self, layers: tuple[int, ...]) -> list[int]:
        """Every hidden state is ``hidden_size`` wide; index 0 is the embedding layer's output and
        -1 the last layer's (what :meth:`encode_batch` pools)."""
        return self._hidden_state_dims(self.transformer.config, layers)

    def _hidden_state_dims(self, config: Any, layers: tuple[int, ...]) -> list[int]:
        count = int(config.num_hidden_layers) + 1
        for index in layers:
            if not -count <= index < count:
                raise ValueError(f"{self.name} has {count} hidden states (the embeddings and "
                                 f"{count - 1} layers): layer must be from {-count} to {count - 1}, not {index}")
        return [int(config.hidden_size)] * len(layers)

    def encode_layers(self, batch: Any, *, pool: str | None, layers: tuple[int, ...]) -> list[torch.Tensor]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch, output_hidden_states=True).hidden_states
        return [pool_tokens(hidden[i], batch["attention_mask"], pool) for i in layers]

    # -- other runtimes -------------------------------------------------------------------------

    def export_plan(self) -> ExportPlan:
        """Traced on two texts of different lengths (so the mask is a real input); checked on three
        others, on one text alone (no padding at all), on a long one padded against a short, and on
        batches of 7 and 33 (every row compared).
        BERT-like graphs go through ONNX Runtime's transformer fusions."""
        return ExportPlan([self.collate(list(texts)) for texts in _EXPORT_TEXTS], self._eager_attention,
                          self._onnx_fusion())

    @contextlib.contextmanager
    def _eager_attention(self) -> Iterator[None]:
        """Eager attention while tracing: the pattern ONNX Runtime fuses into one Attention node."""
        before = self.transformer.config._attn_implementation
        _set_attention(self.transformer, "eager")
        try:
            yield
        finally:
            _set_attention(self.transformer, before)

    def _onnx_fusion(self) -> dict[str, Any] | None:
        config = self.transformer.config
        if config.model_type not in _BERT_LIKE:
            return None
        return {"model_type": "bert", "num_heads": int(config.num_attention_heads),
                "hidden_size": int(config.hidden_size)}

    # -- saving ---------------------------------------------------------------------------------

    def save(self, directory: Any) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with quiet_progress():
            self.model.save_pretrained(directory, safe_serialization=True)
            self.tokenizer.save_pretrained(directory)
        write_manifest(directory, self.spec, self.files)
        return directory


def _set_attention(model: Any, implementation: str) -> None:
    """``model.set_attn_implementation`` where transformers has it (mid-2025 on), else the config
    field that older versions read at each forward pass."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(implementation)
    else:
        model.config._attn_implementation = implementation


def _plain_folder_pooling(spec: ModelSpec, root: Path) -> str:
    """A transformers folder with no sentence-transformers pipeline declares no pooling: zoo
    mean-pools, as sentence-transformers does for such a folder, and says so once."""
    import warnings

    where = str(root) if spec.name == str(root) else f"{spec.name} ({root})"
    warnings.warn(f"{where} has no sentence-transformers modules.json, so nothing declares how to "
                  "pool its tokens; zoo mean-pools over the attention mask, as sentence-transformers does for a "
                  "plain transformers folder. Pass pool= ('cls', 'max', 'lasttoken', 'pooler') if the model was "
                  "trained otherwise", UserWarning, stacklevel=2)
    return "mean"


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pool: str | None) -> torch.Tensor:
    """``(B, T, H)`` token states to ``(B, H)``, ignoring padding: ``mean``, ``cls``, ``max`` or
    ``lasttoken`` (the last token the mask keeps, on either padding side)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    hidden = hidden.float()
    if pool == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pool == "cls":
        return hidden[:, 0]
    if pool == "lasttoken":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * positions).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pool == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(1).values
    raise ValueError(f"unknown pool {pool!r}")


def load_model_and_processor(root: Path, model_cls: Any, processor_cls: Any, *, dtype: torch.dtype,
                             trust_remote_code: bool, device_map: Any = None) -> tuple[Any, Any]:
    """``model_cls.from_pretrained`` and ``processor_cls.from_pretrained`` from a verified local folder:
    no network, no remote code unless asked, safetensors when the folder has them (otherwise
    transformers reads the pickle with ``torch.load(weights_only=True)``), placed by transformers
    when a ``device_map`` is given."""
    placement = {} if device_map is None else {"device_map": device_map}
    with quiet_progress():
        processor = processor_cls.from_pretrained(root, local_files_only=True, trust_remote_code=trust_remote_code)
        model = model_cls.from_pretrained(
            root,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            use_safetensors=True if any(root.glob("*.safetensors")) else None,
            dtype=dtype,
            **placement,
        )
    return model, processor


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-tensor load and save bars: local files are quick and the bars are noise."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _model_max_length(tokenizer: Any, model: Any) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    sane = [int(x) for x in limits if isinstance(x, int) and 0 < x < 100_000]
    return min(sane) if sane else 512


class TransformersFamily:
    """What the transformers adapters of other modalities share: the backend name and options.
    :meth:`TransformersAdapter.resolve_files` picks which one serves a folder."""

    backend = "transformers"
    #: a transformers ``PreTrainedModel``: its members (``config``, ``vision_model``...) are the architecture's
    model: Any
