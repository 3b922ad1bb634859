"""What a Hugging Face style model folder is, read from its files alone (no torch, no backend).

Each library that writes such folders marks them in its own way:

- sentence-transformers: ``modules.json`` (the module pipeline) and, since v2,
  ``config_sentence_transformers.json``, whose ``model_type`` says which of its model classes
  saved it (``SentenceTransformer``, ``CrossEncoder``, ``SparseEncoder``, ``MultiVectorEncoder``;
  PyLate wrote ``ColBERT``);
- timm: ``config.json`` with ``architecture`` (and, since timm 0.9, ``pretrained_cfg``);
- transformers: ``config.json`` with ``model_type``.

sentence-transformers' ``CrossEncoder`` (a reranker) has written three formats: since v6 its own
``modules.json`` with ``model_type: CrossEncoder``; in v4 and v5 a transformers folder whose
``config.json`` carries ``sentence_transformers: {activation_fn, version}``; before v4 a transformers
folder with ``sbert_ce_default_activation_function`` in ``config.json`` (or, with the default
activation, nothing at all: a plain sequence classifier).

:func:`read_folder` tells them apart and says why, so that ``zoo info`` can show it and the loader
picks the backend that runs the library's own code. A folder whose files do not say whether it is a
reranker (a plain sequence classifier) is one only when the caller says so (``kind="reranker"``). A
multi-vector folder (a ``MultiVectorEncoder``, PyLate's ColBERT, a Stanford-NLP ColBERT checkpoint, a
page-image retriever such as ColPali or ColQwen2, as transformers or sentence-transformers saved it)
is read as the ``multi-vector`` kind, run by ``MultiVectorEncoder``. A folder of a kind zoo does not
load (a sparse encoder without its plugin, a routed pipeline) is an
:class:`~zoo.errors.UnsupportedModelKindError`, never dense rows from the wrong head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.catalog._kinds import wrong_kind
from zoo.errors import ModelFormatError, UnsupportedModelKindError

# model_type (config.json) -> modality, for the transformers encoders zoo pools; text otherwise.
MODALITY_BY_MODEL_TYPE = {
    **dict.fromkeys(("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat",
                     "whisper", "audio-spectrogram-transformer"), "audio"),
    **dict.fromkeys(("clip", "siglip", "siglip2", "chinese_clip", "altclip"), "image-text"),
    "clap": "audio-text",
    **dict.fromkeys(("videomae", "vivit", "timesformer"), "video"),
    "xclip": "video-text",
    **dict.fromkeys(("vit", "dinov2", "dinov2_with_registers", "deit", "beit", "convnext", "convnextv2",
                     "swin", "swinv2", "resnet", "efficientnet", "regnet"), "vision"),
}

# Vision and video model_type -> what its classification head reads (transformers' modeling_*.py):
# the class token, the model's pooled output, or the mean of its tokens (VideoMAE's, with its
# default use_mean_pooling).
HEAD_POOLING = {
    **dict.fromkeys(("vit", "deit", "dinov2", "dinov2_with_registers", "vivit", "timesformer"), "cls"),
    **dict.fromkeys(("beit", "swin", "swinv2", "convnext", "convnextv2", "resnet", "efficientnet", "regnet"),
                    "pooler"),
    "videomae": "mean",
}
# Vision and video model types whose token sequence starts with a class token (BEiT's head pools the patches).
CLASS_TOKEN_TYPES = frozenset({"vit", "deit", "dinov2", "dinov2_with_registers", "beit", "vivit", "timesformer"})

# sentence-transformers' model classes other than the dense SentenceTransformer, by the
# model_type their config_sentence_transformers.json records, and what each is.
_OTHER_ST_KINDS = {
    "CrossEncoder": "a reranker (sentence-transformers CrossEncoder): it scores (query, document) pairs",
    "SparseEncoder": "a sparse encoder (sentence-transformers SparseEncoder, SPLADE-style): its rows are "
                     "vocabulary-sized term weights, which the zoo-sparse plugin loads, embeds and searches "
                     "(pip install ./examples/zoo-sparse from zoo's source tree)",
}
# Module classes that only those kinds use, by class name (the module path moved between versions).
_KIND_BY_MODULE = {
    **dict.fromkeys(("SpladePooling", "SparseStaticEmbedding", "MLMTransformer", "SparseAutoEncoder"),
                    "SparseEncoder"),
    **dict.fromkeys(("TokenPooling", "MultiVectorMask"), "MultiVectorEncoder"),
    "LogitScore": "CrossEncoder",
}
_ROUTERS = ("Router", "Asym")
#: the format of a multi-vector folder whose documents are page images (ColPali-style)
PAGES_FORMAT = "multi-vector-pages"
# The key of each pooling mode in sentence-transformers' older, boolean Pooling config, in the
# library's own order (Pooling's _LEGACY_POOLING_MODE_KWARGS).
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
}
# Files that make a transformers folder a text model whatever its model_type.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model", "vocab.json")
# How zoo pools a plain transformers folder of each modality, said by zoo info.
_POOLING_BY_MODALITY = {
    "text": "it declares no pooling, so zoo mean-pools over the attention mask (what sentence-transformers "
            "does for such a folder) and warns at load; pass pool= to choose",
    "vision": "pooled as the model type's own image-classification head reads it",
    "audio": "frames mean-pooled over the audio they hold (AST: its pooled output)",
    "image-text": "the model's own image and text projections",
    "audio-text": "the model's own audio and text projections",
    "video": "the frames it was built for (config num_frames), sampled uniformly, pooled as the model type's own "
             "video-classification head reads them",
    "video-text": "the frames it was built for, sampled uniformly; the model's own video and text projections",
}
# Heads that make a transformers folder something other than an embedder.
_HEAD_KINDS = {
    "ForSequenceClassification": "a sequence classifier or reranker ({arch}): its head scores inputs "
                                 "rather than embedding them",
}
# Architectures sentence-transformers' CrossEncoder runs as a reranker when asked to: a scoring head,
# or a causal language model whose "yes" / "no" logits score the pair (Qwen3-Reranker's way).
_RERANKER_HEADS = ("ForSequenceClassification", "ForCausalLM")


@dataclass(frozen=True)
class FolderFormat:
    """What :func:`read_folder` found.

    Attributes:
        format: ``sentence-transformers``, ``timm`` or ``transformers``.
        modality: the modality zoo loads it as.
        reason: the files and values that decided it, for ``zoo info``.
        pooling: the pooling the library itself will apply, where the files say (None: the adapter
            decides from the model, and says so).
        modules: a sentence-transformers pipeline's module class names, in order.
        kind: what the model gives (``embedder`` or ``reranker``; :mod:`zoo.catalog._kinds`).
    """

    format: str
    modality: str
    reason: str
    pooling: str | None = None
    modules: tuple[str, ...] = ()
    kind: str = "embedder"

    def describe(self) -> dict[str, Any]:
        """Plain data for ``zoo info``."""
        out: dict[str, Any] = {"format": self.format, "kind": self.kind, "why": self.reason}
        if self.modules:
            out["modules"] = list(self.modules)
        if self.pooling:
            out["pooling"] = self.pooling
        return out


def config_modality(config: dict[str, Any]) -> str:
    """The modality a ``config.json`` declares: timm's (``architecture``) are vision, transformers'
    by ``model_type`` (text where zoo's table has no other)."""
    if "architecture" in config:
        return "vision"
    return MODALITY_BY_MODEL_TYPE.get(str(config.get("model_type", "")), "text")


def read_json(path: Path) -> Any:
    """A JSON file of a model folder, with its name in the error when it does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: not readable JSON ({exc})") from None


def read_folder(root: Path, kind: str | None = None) -> FolderFormat | None:
    """The format of the model folder ``root``, or None when it has none of the marker files.

    Args:
        root: the folder.
        kind: the kind the caller asked for (``zoo.load(..., kind="reranker")``), which settles a
            folder whose files do not say (a plain sequence classifier); None: the files must say.

    Raises:
        UnsupportedModelKindError: a sparse or routed folder; a sequence classifier
            not asked for as a reranker; a folder of another kind than ``kind``.
        ModelFormatError: a marker file zoo cannot read exactly (it names the file and value).
    """
    found = _read_folder(root, kind)
    if found is not None and kind is not None and found.kind != kind:
        raise wrong_kind(str(root), found.kind, kind, found.reason)
    return found


def _read_folder(root: Path, kind: str | None) -> FolderFormat | None:
    if (root / "modules.json").is_file():
        return _sentence_transformers(root)
    config_file = root / "config.json"
    if not config_file.is_file():
        return None
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise ModelFormatError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    modality = config_modality(config)
    if "architecture" in config:
        cfg = "pretrained_cfg" if "pretrained_cfg" in config else "top-level (timm before 0.9)"
        return FolderFormat("timm", modality, f"config.json names a timm architecture "
                                              f"{config['architecture']!r} with a {cfg} pretrained config")
    late = _late_interaction_config(config, config_file)
    if late is not None:
        return late
    if "model_type" in config:
        reranker = _cross_encoder_config(config, config_file, asked=kind == "reranker")
        if reranker is not None:
            return reranker
        check_head(config, config_file)
        model_type = str(config["model_type"])
        if model_type not in MODALITY_BY_MODEL_TYPE and not any((root / f).is_file() for f in _TOKENIZER_FILES):
            raise ModelFormatError(
                f"{config_file}: model_type {model_type!r} is not one zoo knows as audio, vision, video or image-text "
                f"({', '.join(sorted(MODALITY_BY_MODEL_TYPE))}), and the folder has no tokenizer to make it a text "
                "model; zoo will not guess its modality")
        pooling = HEAD_POOLING.get(model_type) if modality in ("vision", "video") else \
            "mean" if modality == "text" else None
        return FolderFormat("transformers", modality,
                            f"config.json has transformers model_type {model_type!r} and no sentence-transformers "
                            f"modules.json; {_POOLING_BY_MODALITY[modality]}", pooling=pooling)
    raise ModelFormatError(
        f"{config_file} is neither a transformers config (it has no 'model_type') nor a timm config (no "
        "'architecture'), and the folder has no sentence-transformers modules.json; zoo cannot tell which "
        "library wrote it")


def check_head(config: dict[str, Any], config_file: Path) -> None:
    """A transformers folder saved with a scoring head is not an embedder."""
    for arch in config.get("architectures") or ():
        for suffix, kind in _HEAD_KINDS.items():
            if str(arch).endswith(suffix):
                raise UnsupportedModelKindError(
                    f"{config_file.parent} is {kind.format(arch=arch)} (config.json architectures: {arch!r}); "
                    "taking its base model's hidden states as embeddings would give numbers no one trained. "
                    "If it is a reranker, load it as one: zoo.load(..., kind='reranker'), zoo rerank, or zoo serve "
                    "--reranker")


def _late_interaction_config(config: dict[str, Any], config_file: Path) -> FolderFormat | None:
    """A Stanford-NLP ColBERT checkpoint (``HF_ColBERT``: a BERT with its projection at the root) or a
    transformers ``*ForRetrieval`` page retriever (ColPali, ColQwen2), both of which
    sentence-transformers' MultiVectorEncoder reads (pooling such a model's hidden states would be
    no embedding at all)."""
    archs = [str(a) for a in config.get("architectures") or ()]
    if "HF_ColBERT" in archs:
        if not (config_file.parent / "artifact.metadata").is_file():  # its lengths, markers and skiplist
            raise ModelFormatError(f"{config_file.parent} is a Stanford-NLP ColBERT checkpoint (HF_ColBERT) without "
                                   "its artifact.metadata, which says its query and document lengths, markers and "
                                   "skiplist; copy that file into the folder")
        return FolderFormat("multi-vector", "text", "config.json architectures 'HF_ColBERT' (a Stanford-NLP ColBERT "
                            "checkpoint), run by sentence-transformers' MultiVectorEncoder", kind="multi-vector")
    retriever = next((a for a in archs if a.endswith("ForRetrieval")), None)
    if retriever:
        return FolderFormat(PAGES_FORMAT, "image-text", f"config.json architectures {retriever!r} (a transformers "
                            "late-interaction page retriever, ColPali-style: one vector per image patch and query "
                            "token), run by sentence-transformers' MultiVectorEncoder", kind="multi-vector")
    return None


def _cross_encoder_config(config: dict[str, Any], config_file: Path, *, asked: bool) -> FolderFormat | None:
    """A transformers folder that sentence-transformers' CrossEncoder saved (v2-v5 mark it in
    ``config.json``), or that the caller asked to rerank with: sentence-transformers runs it."""
    archs = [str(a) for a in config.get("architectures") or ()]
    marked = config.get("sentence_transformers", {}).get("activation_fn") if isinstance(
        config.get("sentence_transformers"), dict) else None
    if marked:
        why = f"config.json's sentence_transformers.activation_fn {marked!r} (a CrossEncoder saved by v4-v5)"
    elif config.get("sbert_ce_default_activation_function"):
        why = ("config.json's sbert_ce_default_activation_function "
               f"{config['sbert_ce_default_activation_function']!r} (a CrossEncoder saved before v4)")
    elif asked and archs and archs[0].endswith(_RERANKER_HEADS):  # the one sentence-transformers reads
        head = "its yes / no logits" if archs[0].endswith("ForCausalLM") else "its scoring head"
        why = f"loaded as a reranker as asked: a {archs[0]} scored by {head}"
    else:
        return None
    return FolderFormat("cross-encoder", "text", f"{why}; run by sentence-transformers' CrossEncoder", kind="reranker")


def _sentence_transformers(root: Path) -> FolderFormat:
    modules = read_json(root / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ModelFormatError(f"{root / 'modules.json'}: expected a list of modules with a 'type' each")
    st_config_file = root / "config_sentence_transformers.json"
    st_config = read_json(st_config_file) if st_config_file.is_file() else {}
    if not isinstance(st_config, dict):
        raise ModelFormatError(f"{st_config_file}: expected a JSON object, got {type(st_config).__name__}")
    model_type = str(st_config.get("model_type") or "SentenceTransformer")
    names = tuple(str(m["type"]).rsplit(".", 1)[-1] for m in modules)
    if model_type == "SentenceTransformer" and any(_KIND_BY_MODULE.get(n) == "CrossEncoder" for n in names):
        model_type = "CrossEncoder"  # a LogitScore module is only ever a CrossEncoder's
    if model_type == "CrossEncoder":
        return FolderFormat("cross-encoder", "text",
                            f"{st_config_file.name}: model_type 'CrossEncoder' (modules: {', '.join(names)}), run by "
                            "sentence-transformers' CrossEncoder", modules=names, kind="reranker")
    multi_vector = _multi_vector_mark(model_type, modules, names)
    if multi_vector:
        pages = _takes_pages(root, modules)
        return FolderFormat(PAGES_FORMAT if pages else "multi-vector", "image-text" if pages else "text",
                            f"{multi_vector} (modules: {', '.join(names)}){pages}, run by sentence-transformers' "
                            "MultiVectorEncoder", modules=names, kind="multi-vector")
    if model_type != "SentenceTransformer":
        kind = _OTHER_ST_KINDS.get(model_type, f"a sentence-transformers {model_type!r} model")
        raise UnsupportedModelKindError(
            f"{root} is {kind} ({st_config_file.name}: model_type {model_type!r}); zoo's featurize gives one "
            "dense vector per input and does not load this kind yet")
    for module, name in zip(modules, names):
        if name in _KIND_BY_MODULE:
            kind = _OTHER_ST_KINDS[_KIND_BY_MODULE[name]]
            raise UnsupportedModelKindError(f"{root} is {kind} (modules.json has {module['type']!r}); zoo does not "
                                            "load this kind yet")
        if name in _ROUTERS:
            raise UnsupportedModelKindError(
                f"{root} is a sentence-transformers pipeline with {module['type']!r} (modules.json), which routes "
                "queries and documents through different modules; zoo does not load routed pipelines yet")
    inputs = _pipeline_inputs(root, modules)
    if inputs == {"text", "image"}:
        return FolderFormat("sentence-transformers-image-text", "image-text",
                            f"modules.json: a sentence-transformers pipeline ({', '.join(names)}) whose first module "
                            "takes texts and images (its modality_config, or the legacy CLIPModel), run by "
                            "sentence-transformers itself",
                            modules=names)
    if {"text", "image", "message"} <= inputs:
        return FolderFormat("sentence-transformers-multimodal", "image-text",
                            f"modules.json: a sentence-transformers pipeline ({', '.join(names)}) whose Transformer "
                            f"takes {', '.join(sorted(inputs))} (modality_config): texts, images and the two "
                            "combined, run by sentence-transformers itself", modules=names)
    pooling = _pipeline_pooling(root, modules)
    steps = ", ".join(f"{n}({pooling})" if n == "Pooling" and pooling else n for n in names)
    return FolderFormat("sentence-transformers", "text",
                        f"modules.json: a sentence-transformers pipeline ({steps}), run by sentence-transformers "
                        "itself", pooling=pooling, modules=names)


def _multi_vector_mark(model_type: str, modules: list[dict[str, Any]], names: tuple[str, ...]) -> str | None:
    """What marks a sentence-transformers folder as a multi-vector one (None: nothing): the model
    type a MultiVectorEncoder (or PyLate's ColBERT) records, its modules, or PyLate's module paths."""
    if model_type in ("MultiVectorEncoder", "ColBERT"):
        return f"config_sentence_transformers.json: model_type {model_type!r}"
    marked = next((n for n in names if _KIND_BY_MODULE.get(n) == "MultiVectorEncoder"), None)
    if marked:
        return f"modules.json has a {marked} module"
    pylate = next((str(m["type"]) for m in modules if str(m["type"]).startswith("pylate.")), None)
    return f"modules.json names PyLate's {pylate!r}" if pylate else None


def _transformer_config(root: Path, modules: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """The pipeline's Transformer module's config file and contents (empty where it has none)."""
    for module in modules:
        if str(module["type"]).rsplit(".", 1)[-1] == "Transformer":
            config_file = root / str(module.get("path", "")) / "sentence_bert_config.json"
            config = read_json(config_file) if config_file.is_file() else {}
            return config_file, config if isinstance(config, dict) else {}
    return root / "sentence_bert_config.json", {}


def _pipeline_inputs(root: Path, modules: list[dict[str, Any]]) -> set[str]:
    """The inputs the pipeline's Transformer takes, as its ``modality_config`` names them (texts
    where it names none, as before sentence-transformers 5.4); the library's legacy ``CLIPModel``
    module (before 5.4) takes texts and images, as the library reads it today."""
    if any(str(m["type"]).rsplit(".", 1)[-1] == "CLIPModel" for m in modules):
        return {"text", "image"}
    return {str(k) for k in _transformer_config(root, modules)[1].get("modality_config") or {"text": None}}


def _takes_pages(root: Path, modules: list[dict[str, Any]]) -> str:
    """Why a multi-vector pipeline is a page-image retriever (its Transformer takes images: ColPali
    saved by sentence-transformers), or "" for one over texts; inputs zoo does not read (audio, video,
    chat messages) are refused from the config, before any weight loads."""
    config_file, config = _transformer_config(root, modules)
    inputs = _pipeline_inputs(root, modules)
    if not inputs <= {"text", "image"}:
        raise UnsupportedModelKindError(
            f"{root} is a multi-vector pipeline for {', '.join(sorted(inputs))} inputs ({config_file.name}: "
            "modality_config); zoo runs multi-vector models over texts and page images")
    if "image" not in inputs:
        return ""
    return (f"; its Transformer takes {' and '.join(sorted(inputs))} ({config_file.name}: transformer_task "
            f"{config.get('transformer_task')!r}): a page-image retriever")


def _pipeline_pooling(root: Path, modules: list[dict[str, Any]]) -> str | None:
    """The pooling mode a Pooling module's config names, in either format sentence-transformers
    has written: ``pooling_mode`` (a name, v5.x on) or one boolean per mode (before)."""
    for module in modules:
        if str(module["type"]).rsplit(".", 1)[-1] != "Pooling":
            continue
        config_file = root / str(module.get("path", "")) / "config.json"
        config = read_json(config_file) if config_file.is_file() else {}
        mode = config.get("pooling_mode")
        if isinstance(mode, str):
            return mode
        if isinstance(mode, list):
            return "+".join(str(m) for m in mode)
        modes = [name for flag, name in _POOLING_FLAGS.items() if config.get(flag)]
        # With every flag false, sentence-transformers itself pools the mean.
        return "+".join(modes) or ("mean" if any(flag in config for flag in _POOLING_FLAGS) else None)
    return None
