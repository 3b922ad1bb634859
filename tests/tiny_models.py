"""Tiny random-weight models saved by each library's own save function, for parity tests.

Every builder seeds torch, builds a model of a few KB to a few MB, and writes it with the library's
own writer (``SentenceTransformer.save``, ``save_pretrained``, ``timm.models.save_for_hf``). The
older on-disk formats of sentence-transformers and timm are written from a current save by
rewriting exactly the files those versions wrote differently (see :func:`as_st_format`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# Texts of varied length (one far over the tiny models' maximum length, so truncation is exercised).
TEXTS = [
    "A man is eating food.",
    "Someone is playing a guitar on the corner of the street while people walk past.",
    "The cat sleeps.",
    "Debian is a free operating system, developed and maintained by volunteers around the world. " * 12,
    "Rain.",
    "A quick brown fox jumps over the lazy dog, and the dog does not seem to mind at all.",
    "Two children build a castle of sand near the water.",
]


def _seed(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def bert_folder(root: Path, tokenizer_dir: Path, *, padding_side: str = "right") -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's real WordPiece tokenizer (save_pretrained)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    _seed()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.padding_side = padding_side
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def decoder_folder(root: Path, tokenizer_dir: Path, kind: str = "qwen3") -> Path:
    """A 2-layer decoder (Qwen3, or Gemma3's bidirectional text model) with a left-padding tokenizer,
    as decoder embedding models ship."""
    from transformers import AutoTokenizer

    _seed()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.padding_side = "left"
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                  pad_token_id=tokenizer.pad_token_id)
    if kind == "qwen3":
        from transformers import Qwen3Config, Qwen3Model

        model = Qwen3Model(Qwen3Config(**common))
    else:
        from transformers import Gemma3TextConfig, Gemma3TextModel

        model = Gemma3TextModel(Gemma3TextConfig(**common, use_bidirectional_attention=True, sliding_window=16))
    model.eval().save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def st_folder(root: Path, base: Path, *, pooling: str | tuple[str, ...] = "mean", dense: tuple[int, ...] = (), normalize: bool = True,
              layer_norm: bool = False, prompts: dict[str, str] | None = None, default_prompt: str | None = None,
              include_prompt: bool = True, max_seq_length: int = 48) -> Path:
    """A sentence-transformers pipeline over the transformers folder ``base``, saved by
    ``SentenceTransformer.save``: Transformer, Pooling, then Dense layers, LayerNorm, Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm, Pooling

    _seed(1)
    transformer = Transformer(str(base), max_seq_length=max_seq_length)
    pooler = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling, include_prompt=include_prompt)
    modules: list[Any] = [transformer, pooler]
    width = pooler.pooling_output_dimension
    for out in dense:
        modules.append(Dense(width, out))
        width = out
    if layer_norm:
        modules.append(LayerNorm(width))
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, prompts=prompts, default_prompt_name=default_prompt, device="cpu")
    model.save(str(root), create_model_card=False)
    return root


# The module paths sentence-transformers wrote before its 5.x reorganisation.
_OLD_MODULE_PATHS = {"Transformer": "sentence_transformers.models.Transformer",
                     "Pooling": "sentence_transformers.models.Pooling",
                     "Dense": "sentence_transformers.models.Dense",
                     "LayerNorm": "sentence_transformers.models.LayerNorm",
                     "Normalize": "sentence_transformers.models.Normalize"}
_OLD_POOLING_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                      "max": "pooling_mode_max_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                      "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def as_st_format(folder: Path, era: str) -> Path:
    """Rewrite a current sentence-transformers save into the files an older version wrote.

    - ``"v3"`` (2.3 to 5.x): modules under ``sentence_transformers.models``, Pooling as one boolean
      per mode with ``word_embedding_dimension`` and ``include_prompt``, ``sentence_bert_config.json``
      with ``max_seq_length`` / ``do_lower_case``, Dense weights in ``pytorch_model.bin``.
    - ``"v2"`` (2.0 to 2.2): the same with only the four modes 2.x knew, no ``include_prompt``, and a
      ``config_sentence_transformers.json`` with neither ``model_type`` nor prompts.
    """
    import torch
    from safetensors.torch import load_file

    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        name = module["type"].rsplit(".", 1)[-1]
        module["type"] = _OLD_MODULE_PATHS[name]
        sub = folder / module["path"]
        if name == "Pooling":
            config = json.loads((sub / "config.json").read_text())
            modes = ("cls", "mean", "max", "mean_sqrt_len_tokens")
            if era == "v3":
                modes += ("weightedmean", "lasttoken")
            mode = config["pooling_mode"]
            chosen = set(mode) if isinstance(mode, list) else {mode}
            old = {"word_embedding_dimension": config["embedding_dimension"],
                   **{_OLD_POOLING_FLAGS[m]: m in chosen for m in modes}}
            if era == "v3":
                old["include_prompt"] = config["include_prompt"]
            (sub / "config.json").write_text(json.dumps(old, indent=2))
        elif name == "Dense":
            state = load_file(sub / "model.safetensors")
            (sub / "model.safetensors").unlink()
            torch.save(state, sub / "pytorch_model.bin")
            config = json.loads((sub / "config.json").read_text())
            for key in ("module_input_name", "module_output_name"):
                config.pop(key, None)
            (sub / "config.json").write_text(json.dumps(config, indent=2))
        elif name == "Transformer":
            max_length = json.loads((folder / "tokenizer_config.json").read_text()).get("model_max_length")
            (folder / "sentence_bert_config.json").write_text(json.dumps(
                {"max_seq_length": min(int(max_length or 48), 48), "do_lower_case": False}, indent=2))
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    st_config_file = folder / "config_sentence_transformers.json"
    st_config = json.loads(st_config_file.read_text())
    st_config.pop("model_type", None)
    if era == "v2":
        st_config = {"__version__": {"sentence_transformers": "2.2.2", "transformers": "4.30.2",
                                     "pytorch": "2.0.1"}}
    st_config_file.write_text(json.dumps(st_config, indent=2))
    return folder


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def timm_folder(root: Path, arch: str, *, legacy: bool = False, safetensors: bool = True) -> Path:
    """A timm model saved by ``timm.models.save_for_hf`` (``config.json`` with ``pretrained_cfg``
    and ``model.safetensors`` or ``pytorch_model.bin``), with BatchNorm statistics far from their
    defaults; ``legacy=True`` rewrites the config as timm wrote it before 0.9 (one flat dict)."""
    import timm
    import torch

    _seed()
    model = timm.create_model(arch, pretrained=False, num_classes=7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    timm.models.save_for_hf(model.eval(), str(root), safe_serialization=safetensors)
    if legacy:
        config = json.loads((root / "config.json").read_text())
        flat = {"architecture": config["architecture"], "num_features": config.get("num_features"),
                **config["pretrained_cfg"], "num_classes": config.get("num_classes", 7)}
        flat.pop("architecture", None)
        (root / "config.json").write_text(json.dumps({"architecture": config["architecture"], **flat}, indent=2))
    return root


def siglip_folder(root: Path, texts: list[str]) -> tuple[Any, Any]:
    """A tiny SiglipModel and SiglipProcessor (a Unigram tokenizer trained on ``texts``) saved with
    ``save_pretrained``; returns the model (in eval mode) and the processor."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    torch.manual_seed(0)
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    unigram.train_from_iterator(texts * 10, trainer)
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=unigram, pad_token="<pad>", eos_token="</s>",
                                           unk_token="<unk>", model_max_length=16)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64)
    text = dict(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=16, pad_token_id=0, eos_token_id=1)
    model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision)).eval()
    model.save_pretrained(root)
    processor = tf.SiglipProcessor(image_processor=tf.SiglipImageProcessor(size={"height": 32, "width": 32}),
                                   tokenizer=tokenizer)
    processor.save_pretrained(root)
    return model, processor


def hf_clip_folder(root: Path, texts: list[str]) -> Path:
    """A tiny CLIPModel + CLIPProcessor saved with save_pretrained (a small BPE tokenizer trained on
    ``texts``)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts * 10, trainers.BpeTrainer(vocab_size=300,
                                                            special_tokens=["<|startoftext|>", "<|endoftext|>"]))
    tokenizer = CLIPTokenizerFast(tokenizer_object=bpe, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = CLIPConfig(
        text_config={"vocab_size": 300, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(root)
    return root


def cross_encoder_folder(root: Path, tokenizer_dir: Path, *, num_labels: int = 1, activation: Any = None,
                         arch: str = "bert") -> Path:
    """A sentence-transformers ``CrossEncoder`` over a 2-layer, 32-wide sequence classifier (BERT,
    or XLM-RoBERTa as BGE's rerankers), saved by ``CrossEncoder.save`` (v6's modular format).
    Initialised with a spread of 0.2 (BERT's 0.02 gives nearly the same class token for every
    input, so every pair the same score)."""
    import transformers
    from sentence_transformers import CrossEncoder

    _seed(2)
    base = root.parent / f"{root.name}-base"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    common = {"vocab_size": tokenizer.vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "initializer_range": 0.2, "num_labels": num_labels}
    if arch == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**common, max_position_embeddings=64))
    else:  # positions start after the padding index: 2 more than the tokens, as XLM-RoBERTa's 514 for 512
        tokenizer.model_max_length = 64
        model = transformers.XLMRobertaForSequenceClassification(transformers.XLMRobertaConfig(
            **common, max_position_embeddings=66 + tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id))
    model.eval().save_pretrained(base)
    tokenizer.save_pretrained(base)
    CrossEncoder(str(base), activation_fn=activation, device="cpu").save(str(root), create_model_card=False)
    shutil.rmtree(base)
    return root


def causal_reranker_folder(root: Path, decoder: Path, *, chat: bool = False) -> Path:
    """A Qwen3-Reranker-style reranker: a 2-layer causal Qwen3 whose "yes" / "no" logits score the
    pair (sentence-transformers' Transformer with ``text-generation`` and a ``LogitScore``), saved by
    ``CrossEncoder.save``. ``chat`` gives its tokenizer a chat template, so that the prompt becomes a
    system message and the pair query / document turns, as Qwen3-Reranker's format does."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoTokenizer, Qwen3ForCausalLM

    _seed(3)
    lm = root.parent / f"{root.name}-lm"
    model = Qwen3ForCausalLM(AutoConfig.from_pretrained(decoder))
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.eval().save_pretrained(lm)
    tokenizer = AutoTokenizer.from_pretrained(decoder)
    if chat:
        tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] if m['content'] is "
                                   "string else m['content'] | map(attribute='text') | join(' ') }}\n{% endfor %}"
                                   "{% if add_generation_prompt %}<|assistant|> {% endif %}")
    tokenizer.save_pretrained(lm)
    CrossEncoder(str(lm), device="cpu").save(str(root), create_model_card=False)
    shutil.rmtree(lm)
    return root


def as_cross_encoder_format(folder: Path, era: str) -> Path:
    """Rewrite a current ``CrossEncoder`` save into what an older sentence-transformers wrote: a
    transformers folder (no ``modules.json``), whose ``config.json`` records the activation as
    ``sentence_transformers: {activation_fn, version}`` (``"v4"``: 4.0 to 5.x), as
    ``sbert_ce_default_activation_function`` (``"v2"``: before 4.0, when one was set), or not at
    all (``"plain"``: before 4.0 with the default, the same files as any sequence classifier)."""
    st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
    limit = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
    if limit:  # before v6 the tokenizer's model_max_length carried the CrossEncoder's max_length
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "model_max_length": limit}))
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    if era == "v4":
        config["sentence_transformers"] = {"activation_fn": st_config["activation_fn"], "version": "4.1.0"}
    elif era == "v2":
        config["sbert_ce_default_activation_function"] = st_config["activation_fn"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def clap_folder(root: Path, *, fusion: bool = False) -> Path:
    """A tiny random ``ClapModel`` (a 2-layer RoBERTa text tower, a 2-stage HTSAT audio tower) with
    its ``ClapProcessor``, saved by ``save_pretrained``: a byte-level BPE trained on :data:`TEXTS`,
    and a feature extractor of 16 mel bands over at most 2 s, so the tiny audio tower's input fits.
    ``fusion`` gives the fused variant (``laion/clap-htsat-fused``'s), whose extractor truncates by
    ``"fusion"``."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    _seed(4)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(TEXTS * 3, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = tf.RobertaTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                        model_max_length=64)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 37, "max_position_embeddings": 66, "pad_token_id": 1, "bos_token_id": 0,
            "eos_token_id": 2}
    audio = {"window_size": 4, "num_mel_bins": 16, "spec_size": 64, "patch_size": 4, "patch_stride": 4,
             "depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16, "hidden_size": 32,
             "num_hidden_layers": 2, "enable_fusion": fusion, "fusion_type": "aff_2d" if fusion else None}
    tf.ClapModel(tf.ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).eval().save_pretrained(root)
    extractor = tf.ClapFeatureExtractor(feature_size=16, sampling_rate=48000, max_length_s=2,
                                        truncation="fusion" if fusion else "rand_trunc")
    tf.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(root)
    return root



# -- multi-vector (ColBERT-style) models, in each format sentence-transformers' MultiVectorEncoder reads --

COLBERT_PROMPTS = {"query": "[Q] ", "document": "[D] "}


def colbert_folder(root: Path, base: Path, *, query_length: int = 16, document_length: int = 40) -> Path:
    """A ColBERT over the transformers folder ``base`` saved by ``MultiVectorEncoder.save``: queries
    ``[MASK]``-expanded to ``query_length`` tokens, documents cut at ``document_length``, a 16-wide
    token projection, a punctuation skiplist for documents, token vectors at unit length."""
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    _seed(2)
    transformer = Transformer(str(base), query_length=query_length, document_length=document_length,
                              query_expansion={"strategy": "fixed", "attend": True, "length": query_length,
                                               "token": "[MASK]"})
    modules = [transformer, Dense(transformer.get_embedding_dimension(), 16, bias=False,
                                  activation_function=torch.nn.Identity(), module_input_name="token_embeddings"),
               MultiVectorMask(skiplist_words=[".", ",", "!", "?"]), Normalize(module_input_name="token_embeddings")]
    model = MultiVectorEncoder(modules=modules, prompts=COLBERT_PROMPTS, device="cpu")
    model.save(str(root), create_model_card=False)
    return root


def as_pylate_v3(folder: Path, target: Path) -> Path:
    """A :func:`colbert_folder` as PyLate 3 saved a ColBERT: only the Transformer and PyLate's
    ``Dense`` in ``modules.json`` (masking and normalising were PyLate's own code), the prefixes,
    lengths, expansion flag and skiplist at the top of ``config_sentence_transformers.json``, and
    the Dense config without the module input names of sentence-transformers 5.4."""
    out = copy_folder(folder, target)
    for name in ("2_MultiVectorMask", "3_Normalize"):
        shutil.rmtree(out / name)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}], indent=2))
    dense = json.loads((out / "1_Dense" / "config.json").read_text())
    (out / "1_Dense" / "config.json").write_text(json.dumps({k: dense[k] for k in (
        "in_features", "out_features", "bias", "activation_function")}))
    transformer = json.loads((out / "sentence_bert_config.json").read_text())
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": transformer["document_length"],
                                                               "do_lower_case": False}))
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "__version__": {"sentence_transformers": "3.4.1", "pylate": "1.1.7"}, "model_type": "ColBERT",
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim",
        "query_prefix": COLBERT_PROMPTS["query"], "document_prefix": COLBERT_PROMPTS["document"],
        "query_length": transformer["query_length"], "document_length": transformer["document_length"],
        "attend_to_expansion_tokens": True, "skiplist_words": [".", ",", "!", "?"]}, indent=2))
    return out


def stanford_colbert_folder(root: Path, base: Path, *, query_length: int = 16, document_length: int = 40) -> Path:
    """A Stanford-NLP ColBERT checkpoint as ``colbert-ir`` ships them: ``HF_ColBERT`` in
    ``config.json``, the BERT's weights under ``bert.`` with the projection ``linear.weight`` beside
    them in one file, the query / document markers and lengths in ``artifact.metadata``."""
    import torch
    from safetensors.torch import load_file, save_file

    out = copy_folder(base, root)
    _seed(3)
    weights = {f"bert.{k}": v for k, v in load_file(str(out / "model.safetensors")).items()}
    hidden = json.loads((out / "config.json").read_text())["hidden_size"]
    weights["linear.weight"] = torch.randn(16, hidden) / hidden ** 0.5
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "architectures": ["HF_ColBERT"]}, indent=2))
    (out / "artifact.metadata").write_text(json.dumps({
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": query_length,
        "doc_maxlen": document_length, "mask_punctuation": True, "attend_to_mask_tokens": False,
        "similarity": "cosine", "dim": 16}, indent=2))
    return out


# -- a vision-language embedder (texts, images and the two combined), as sentence-transformers runs one --

VLM_TEXTS = ["a cat on a mat", "a photo of a dog", "system user assistant", "describe this image"]


_QWEN2_VL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                      "<|image_pad|>", "<|video_pad|>"]


def _tiny_qwen2_vl() -> tuple[Any, Any]:
    """A BPE tokenizer trained here with Qwen2-VL's vision tokens, and a 2-layer Qwen2-VL config for it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(VLM_TEXTS * 20, trainers.BpeTrainer(vocab_size=400, special_tokens=_QWEN2_VL_SPECIALS,
                                                               show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN2_VL_SPECIALS}
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"],
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "in_chans": 3,
                       "spatial_merge_size": 2, "patch_size": 14, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    return tokenizer, config


def _small_pages_processor() -> Any:
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def vlm_st_folder(root: Path, *, samples_frames: bool = False, prompts: dict[str, str] | None = None) -> Path:
    """A 2-layer Qwen2-VL (a BPE tokenizer trained here, with the model's vision tokens and a chat
    template), wrapped by sentence-transformers (texts, images, videos, messages; last-token pooling)
    and saved by ``SentenceTransformer.save``. ``samples_frames``: its video processor chooses a
    clip's frames itself, 2 per second (between 2 and 8), as Qwen3-VL's does. ``prompts``: the
    prompts it declares (which the library puts in as a system message)."""
    from sentence_transformers import SentenceTransformer
    from transformers import Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    chat = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
            "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
            "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'video' %}"
            "<|vision_start|><|video_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
            "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
            "{% endif %}")
    tokenizer, config = _tiny_qwen2_vl()
    tokenizer.chat_template = chat
    processor = Qwen2VLProcessor(image_processor=_small_pages_processor(), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(
                                     size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16},
                                     **({"do_sample_frames": True, "fps": 2.0, "min_frames": 2, "max_frames": 8}
                                        if samples_frames else {})),
                                 chat_template=chat)
    _seed(4)
    Qwen2VLForConditionalGeneration(config).save_pretrained(root / "qwen2-vl")
    processor.save_pretrained(root / "qwen2-vl")
    SentenceTransformer(str(root / "qwen2-vl"), device="cpu", prompts=prompts).save(str(root / "st"),
                                                                                   create_model_card=False)
    return root / "st"


def colqwen2_folder(root: Path, *, embedding_dim: int = 16) -> Path:
    """A ColPali-style page retriever: a ``ColQwen2ForRetrieval`` over a 2-layer Qwen2-VL, saved by
    transformers' ``save_pretrained`` with its ``ColQwen2Processor``."""
    from transformers import ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor

    tokenizer, config = _tiny_qwen2_vl()
    _seed(5)
    ColQwen2ForRetrieval(ColQwen2Config(vlm_config=config, embedding_dim=embedding_dim)).save_pretrained(root)
    ColQwen2Processor(image_processor=_small_pages_processor(), tokenizer=tokenizer).save_pretrained(root)
    return root


def videomae_folder(root: Path, *, frames: int = 4) -> Path:
    """A 2-layer VideoMAE over 32x32 frames (``frames`` per clip, tubelets of 2) with its image
    processor, saved by ``save_pretrained`` as the hub's VideoMAE folders are."""
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    _seed(6)
    config = VideoMAEConfig(image_size=32, patch_size=8, num_frames=frames, tubelet_size=2, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    VideoMAEModel(config).save_pretrained(root)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root)
    return root


XCLIP_TEXTS = ["a cat on a mat", "a dog running", "waves on a beach", "a red car", "a photo of a sunset"]


def xclip_folder(root: Path, *, frames: int = 4) -> Path:
    """A tiny ``XCLIPModel`` (``frames`` per clip) with its ``XCLIPProcessor`` (a BPE tokenizer
    trained here, VideoMAE's image processor), saved by ``save_pretrained``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizerFast, VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPProcessor

    bpe = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(XCLIP_TEXTS * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|startoftext|>", "<|endoftext|>"], show_progress=False))
    tokenizer = CLIPTokenizerFast(tokenizer_object=bpe, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    layers = {"intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = XCLIPConfig(
        text_config={"vocab_size": 300, "hidden_size": 32, "max_position_embeddings": 32, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1, **layers},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_frames": frames,
                       "mit_hidden_size": 16, "mit_intermediate_size": 37, "mit_num_hidden_layers": 1,
                       "mit_num_attention_heads": 2, **layers},
        projection_dim=16, prompt_layers=1, prompt_attention_heads=2)
    _seed(7)
    XCLIPModel(config).save_pretrained(root)
    XCLIPProcessor(image_processor=VideoMAEImageProcessor(size={"shortest_edge": 32},
                                                          crop_size={"height": 32, "width": 32}),
                   tokenizer=tokenizer).save_pretrained(root)
    return root


def as_legacy_st_clip(clip: Path, target: Path) -> Path:
    """A transformers CLIP folder in sentence-transformers' layout from before 5.4, as the hub's
    ``sentence-transformers/clip-ViT-B-32`` has it: one ``CLIPModel`` module (``0_CLIPModel``, the
    model and processor as transformers saved them) and a 2.x version record."""
    shutil.copytree(clip, target / "0_CLIPModel")
    (target / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_CLIPModel",
                                                      "type": "sentence_transformers.models.CLIPModel"}]))
    (target / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.7.0", "pytorch": "1.9.0"}}))
    return target


def vivit_folder(root: Path, *, frames: int = 4) -> Path:
    """A 2-layer ViViT over 32x32 frames (tubelets of 2 frames, 8x8 pixels) with its image
    processor, saved by ``save_pretrained``."""
    from transformers import VivitConfig, VivitImageProcessor, VivitModel

    _seed(8)
    VivitModel(VivitConfig(image_size=32, num_frames=frames, tubelet_size=[2, 8, 8], hidden_size=32,
                           num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)).save_pretrained(root)
    VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root)
    return root


def timesformer_folder(root: Path, *, frames: int = 4) -> Path:
    """A 2-layer TimeSformer over 32x32 frames with VideoMAE's image processor (as the hub's
    TimeSformer folders have), saved by ``save_pretrained``."""
    from transformers import TimesformerConfig, TimesformerModel, VideoMAEImageProcessor

    _seed(9)
    TimesformerModel(TimesformerConfig(image_size=32, patch_size=8, num_frames=frames, hidden_size=32,
                                       num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64)).save_pretrained(root)
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(root)
    return root
