"""A tiny random-weight SPLADE model saved by sentence-transformers' own ``SparseEncoder.save``, and
the same model in the layout sentence-transformers 5.x wrote, for parity tests.

The tokenizer is a WordPiece trained here on the test texts, so nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TEXTS = [
    "A man is eating food.",
    "Someone is playing a guitar on the corner of the street while people walk past.",
    "The cat sleeps.",
    "Debian is a free operating system, developed and maintained by volunteers around the world. " * 6,
    "Rain.",
    "A quick brown fox jumps over the lazy dog, and the dog does not seem to mind at all.",
    "Two children build a castle of sand near the water.",
    "The free software of the world is built by people.",
]


def wordpiece(root: Path, texts: list[str] = TEXTS) -> Path:
    """A BERT WordPiece tokenizer trained on ``texts``, saved by transformers."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(texts * 5, trainers.WordPieceTrainer(vocab_size=220, special_tokens=specials,
                                                                 show_progress=False))
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))])
    tokenizer = BertTokenizerFast(tokenizer_object=raw, model_max_length=48)
    tokenizer.save_pretrained(root)
    return root


def sparse_encoder_folder(root: Path, *, max_active_dims: int | None = None) -> Path:
    """A SPLADE model (BERT's masked-LM head, then sentence-transformers' ``SpladePooling``: the max
    over tokens of ``log(1 + relu(logit))``) with a ``query`` prompt, saved by ``SparseEncoder.save``."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(wordpiece(root / "mlm"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(root / "mlm")
    transformer = Transformer(str(root / "mlm"), transformer_task="fill-mask", max_seq_length=48)
    model = SparseEncoder(modules=[transformer, SpladePooling("max")], prompts={"query": "query: "},
                          max_active_dims=max_active_dims)
    model.save(str(root / "sparse"), create_model_card=False)  # the card would look its base up online
    return root / "sparse"


def csr_folder(root: Path, *, k: int = 8) -> Path:
    """A CSR model (a sparse autoencoder over a mean-pooled dense embedding: its dimensions are
    learned features, not tokens), saved by ``SparseEncoder.save``."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from sentence_transformers.sparse_encoder.modules import SparseAutoEncoder
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(wordpiece(root / "bert"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(root / "bert")
    transformer = Transformer(str(root / "bert"), max_seq_length=48)
    model = SparseEncoder(modules=[transformer, Pooling(32, "mean"), SparseAutoEncoder(32, hidden_dim=96, k=k)])
    model.save(str(root / "csr"), create_model_card=False)
    return root / "csr"


def as_sparse_format(folder: Path, era: str) -> Path:
    """The same model in the layout sentence-transformers 5.x wrote (``era="v5"``): its
    ``MLMTransformer`` and ``SpladePooling`` under ``sentence_transformers.sparse_encoder.models``, and
    ``sentence_bert_config.json`` holding the settings MLMTransformer kept."""
    if era != "v5":
        raise ValueError(f"unknown era {era!r}")
    target = folder.with_name(f"{folder.name}-{era}")
    shutil.copytree(folder, target)
    modules = json.loads((target / "modules.json").read_text())
    for module in modules:
        name = module["type"].rsplit(".", 1)[-1]
        module["type"] = "sentence_transformers.sparse_encoder.models." + (
            "MLMTransformer" if name == "Transformer" else name)
    (target / "modules.json").write_text(json.dumps(modules, indent=2))
    settings = json.loads((target / "sentence_bert_config.json").read_text())
    (target / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": settings.get("max_seq_length", 48), "do_lower_case": False}, indent=2))
    return target


def inference_free_folder(root: Path) -> Path:
    """An inference-free SPLADE: a ``Router`` that weights a query's tokens with a static table
    (``SparseStaticEmbedding``) and runs documents through the masked-LM model and
    ``SpladePooling``, saved by ``SparseEncoder.save``."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(wordpiece(root / "mlm"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(root / "mlm")
    document = [Transformer(str(root / "mlm"), transformer_task="fill-mask", max_seq_length=48), SpladePooling("max")]
    query = [SparseStaticEmbedding(tokenizer, weight=torch.rand(len(tokenizer)) * 2)]
    model = SparseEncoder(modules=[Router.for_query_document(query_modules=query, document_modules=document)],
                          similarity_fn_name="dot")
    model.save(str(root / "inference-free"), create_model_card=False)
    return root / "inference-free"
