"""The parity matrix: folders saved by each library's own save function, in each on-disk format it
has written, give through zoo what the library gives when called directly.

For every case: the same width, a minimum cosine of 0.9999, row norms within 0.1% (a per-row
rescaling passes a cosine test), and every row the same whether its input is featurized alone or
in a batch with others of other lengths.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from tiny_models import TEXTS, as_st_format, bert_folder, decoder_folder, st_folder, timm_folder

import zoo
from zoo.errors import ModelFormatError, UnsupportedModelKindError

MIN_COSINE = 0.9999


def assert_same_rows(ours: np.ndarray, theirs: np.ndarray) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    norms_ours, norms_theirs = np.linalg.norm(ours, axis=1), np.linalg.norm(theirs, axis=1)
    cosine = (ours * theirs).sum(1) / (norms_ours * norms_theirs)
    assert cosine.min() >= MIN_COSINE, cosine
    np.testing.assert_allclose(norms_ours, norms_theirs, rtol=1e-3)


def assert_batch_independent(model, items, **options) -> np.ndarray:
    """Each row alone equals its row in one batch of all, and in batches of three."""
    alone = np.vstack([model.featurize([item], **options) for item in items])
    assert_same_rows(model.featurize(items, batch_size=len(items), **options), alone)
    assert_same_rows(model.featurize(items, batch_size=3, **options), alone)
    return alone


# -- sentence-transformers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def bases(tmp_path_factory, minilm_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {"bert": bert_folder(root / "bert", minilm_dir),
            "qwen3": decoder_folder(root / "qwen3", minilm_dir, "qwen3"),
            "gemma3": decoder_folder(root / "gemma3", minilm_dir, "gemma3")}


# name: (base, pipeline options, the on-disk eras to write it in)
PIPELINES = {
    "mean": ("bert", {"pooling": "mean"}, ("current", "v3", "v2")),
    "cls": ("bert", {"pooling": "cls"}, ("current", "v3", "v2")),
    "max": ("bert", {"pooling": "max"}, ("current", "v3", "v2")),
    "mean_sqrt_len_tokens": ("bert", {"pooling": "mean_sqrt_len_tokens", "normalize": False}, ("current", "v2")),
    "weightedmean": ("bert", {"pooling": "weightedmean"}, ("current", "v3")),
    "dense-then-normalize": ("bert", {"pooling": "mean", "dense": (24,)}, ("current", "v3", "v2")),
    "dense-keeps-width": ("bert", {"pooling": "cls", "dense": (32,), "normalize": False}, ("current", "v3")),
    "layernorm": ("bert", {"pooling": "mean", "layer_norm": True, "normalize": False}, ("current", "v3")),
    "qwen3-lasttoken": ("qwen3", {"pooling": "lasttoken", "prompts": {"query": "Instruct: find the passage\nQuery:"}},
                        ("current", "v3")),
    "gemma3-two-dense": ("gemma3", {"pooling": "mean", "dense": (64, 32),
                                    "prompts": {"query": "task: search result | query: ", "document": "title: none | "
                                                "text: "}, "default_prompt": "document"}, ("current", "v3")),
    "cls-and-mean": ("bert", {"pooling": ("cls", "mean"), "dense": (16,)}, ("current", "v3")),
    "include-prompt-false": ("bert", {"pooling": "mean", "include_prompt": False, "prompts": {"query": "query: "}},
                             ("current", "v3")),
}
# The fast tier reads each pipeline in its current format; the full tier in every era too.
CASES = [pytest.param(name, era, id=f"{name}-{era}", marks=() if era == "current" else pytest.mark.slow)
         for name, (_, _, eras) in PIPELINES.items() for era in eras]


@pytest.fixture(scope="module")
def st_folders(tmp_path_factory, bases) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("st")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, era: str) -> Path:
        if (name, era) not in cache:
            base, options, _ = PIPELINES[name]
            folder = st_folder(root / f"{name}-{era}", bases[base], **options)
            cache[(name, era)] = folder if era == "current" else as_st_format(folder, era)
        return cache[(name, era)]

    return get


def _encode(folder: Path, texts, **kwargs) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        list(texts), batch_size=4, convert_to_numpy=True, **kwargs)


@pytest.mark.parametrize(("name", "era"), CASES)
def test_sentence_transformers_folder_equals_encode(st_folders, name, era):
    folder = st_folders(name, era)
    model = zoo.load(folder, device="cpu")
    assert model.backend == "transformers" and type(model.encoder).__name__ == "SentenceTransformerAdapter"
    ours = assert_batch_independent(model, TEXTS)
    assert_same_rows(ours, _encode(folder, TEXTS))  # encode() applies the default prompt too
    prompts = PIPELINES[name][1].get("prompts") or {}
    for prompt in prompts:
        assert_same_rows(model.featurize(TEXTS, prompt=prompt), _encode(folder, TEXTS, prompt_name=prompt))
    if prompts:
        assert_same_rows(model.featurize(TEXTS, prompt_text=""), _encode(folder, TEXTS, prompt=""))


def test_a_static_embedding_pipeline_equals_encode(tmp_path, minilm_dir):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    static = StaticEmbedding(Tokenizer.from_file(str(minilm_dir / "tokenizer.json")), embedding_dim=16)
    SentenceTransformer(modules=[static], device="cpu").save(str(tmp_path), create_model_card=False)
    model = zoo.load(tmp_path, device="cpu")
    assert model.embed_dim == 16 and "max_length" not in model.spec.preprocessing
    assert_same_rows(assert_batch_independent(model, TEXTS), _encode(tmp_path, TEXTS))


def test_the_pipeline_is_what_info_and_the_spec_say(st_folders):
    folder = st_folders("gemma3-two-dense", "v3")
    info = zoo.info(str(folder))
    assert info["backend"] == "transformers" and info["config"]["folder"]["format"] == "sentence-transformers"
    assert info["config"]["folder"]["pooling"] == "mean"
    assert info["config"]["folder"]["modules"] == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    model = zoo.load(folder, device="cpu")
    assert model.embed_dim == 32 and model.spec.normalize is True
    assert model.spec.default_prompt == "document" and model.spec.prompts["query"].startswith("task: search")


def test_normalize_false_gives_the_rows_before_the_trailing_normalize(st_folders):
    from sentence_transformers import SentenceTransformer

    folder = st_folders("dense-then-normalize", "current")
    modules = list(SentenceTransformer(str(folder), device="cpu"))
    before_norm = SentenceTransformer(modules=modules[:-1], device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert_same_rows(zoo.load(folder, device="cpu").featurize(TEXTS, normalize=False), before_norm)


def test_placeholder_prompts_are_not_declared_prompts(st_folders):
    model = zoo.load(st_folders("mean", "v2"), device="cpu")  # a 2.x folder declares no prompts
    assert dict(model.spec.prompts) == {}
    with pytest.raises(ValueError, match="unknown prompt 'document'"):
        model.featurize(TEXTS, prompt="document")


def test_a_multi_mode_pooling_keeps_its_width_for_the_modules_after_it(st_folders):
    model = zoo.load(st_folders("cls-and-mean", "v3"), device="cpu")
    assert model.spec.pooling == "cls+mean" and model.embed_dim == 16
    with pytest.raises(zoo.UnsupportedOptionError, match="pools 'cls.mean', as its files say, and has no other mode"):
        model.featurize(TEXTS, pool="max")
    with pytest.raises(zoo.UnsupportedOptionError, match="single-mode Pooling"):
        model.featurize(TEXTS, layer=-2)


def test_another_pool_replaces_the_pooling_module_and_keeps_the_rest(st_folders):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    folder = st_folders("dense-then-normalize", "current")
    reference = SentenceTransformer(str(folder), device="cpu")
    reference[1] = Pooling(32, pooling_mode="cls")
    model = zoo.load(folder, device="cpu")
    assert_same_rows(model.featurize(TEXTS, pool="cls"), reference.encode(TEXTS, convert_to_numpy=True))
    with pytest.raises(ValueError, match="unknown pool 'median'"):
        model.featurize(TEXTS, pool="median")


@pytest.mark.parametrize("runtime", ["onnx", pytest.param("openvino", marks=pytest.mark.slow)])
def test_the_export_holds_the_whole_pipeline(st_folders, runtime):
    folder = st_folders("dense-then-normalize", "v3")
    model = zoo.load(folder, device="cpu", runtime=runtime)
    assert model.runtime == runtime and model.embed_dim == 24
    assert_same_rows(model.featurize(TEXTS), _encode(folder, TEXTS))


def test_include_prompt_false_is_a_torch_only_option(st_folders):
    model = zoo.load(st_folders("include-prompt-false", "current"), device="cpu", runtime="onnx")
    model.featurize(TEXTS[:2])  # no prompt: the export serves it
    with pytest.raises(zoo.UnsupportedOptionError, match="include_prompt: false"):
        model.featurize(TEXTS[:2], prompt="query")


def test_plain_decoder_folder_pools_the_last_token_whatever_the_padding_side(bases):
    import torch
    from transformers import AutoModel, AutoTokenizer

    with pytest.warns(UserWarning, match="no sentence-transformers modules.json"):
        model = zoo.load(bases["qwen3"], device="cpu")
    ours = assert_batch_independent(model, TEXTS, pool="lasttoken")
    tokenizer = AutoTokenizer.from_pretrained(bases["qwen3"])
    reference = AutoModel.from_pretrained(bases["qwen3"]).eval()
    with torch.inference_mode():
        rows = [reference(**tokenizer([t], truncation=True, max_length=model.encoder.max_length, return_tensors="pt"))
                .last_hidden_state[0, -1].numpy() for t in TEXTS]
    assert_same_rows(ours, np.vstack(rows))


@pytest.mark.parametrize("pool", ["mean", "cls", "max"])
def test_plain_encoder_folder_pools_over_the_mask(bases, pool):
    import torch
    from transformers import AutoModel, AutoTokenizer

    with pytest.warns(UserWarning, match="zoo mean-pools over the attention mask"):
        model = zoo.load(bases["bert"], device="cpu")
    assert model.spec.pooling == "mean"
    ours = assert_batch_independent(model, TEXTS, pool=pool)
    tokenizer = AutoTokenizer.from_pretrained(bases["bert"])
    reference = AutoModel.from_pretrained(bases["bert"]).eval()
    with torch.inference_mode():
        states = [reference(**tokenizer([t], truncation=True, max_length=model.encoder.max_length, return_tensors="pt"))
                  .last_hidden_state[0] for t in TEXTS]
    rows = {"mean": [h.mean(0) for h in states], "cls": [h[0] for h in states],
            "max": [h.max(0).values for h in states]}[pool]
    assert_same_rows(ours, torch.stack(rows).numpy())


def test_a_plugin_adapter_must_subclass_the_one_the_format_needs(st_folders):
    from zoo.adapters.sentence_transformers import SentenceTransformerAdapter
    from zoo.adapters.transformers import TransformersAdapter
    from zoo.catalog._plugin_manager import get_plugin_manager

    class Plain(TransformersAdapter):
        pass

    class Pipeline(SentenceTransformerAdapter):
        pass

    class Plugin:
        @zoo.hookimpl
        def zoo_register_adapters(self, register):
            register("plain-subclass", Plain)
            register("pipeline-subclass", Pipeline)

        @zoo.hookimpl
        def zoo_register_models(self, register):
            for backend in ("plain-subclass", "pipeline-subclass"):
                register({"name": f"tiny-{backend}", "modality": "text", "backend": backend,
                          "sources": [{"path": str(st_folders("mean", "current"))}]})

    get_plugin_manager().register(Plugin())
    with pytest.raises(zoo.PluginError, match="subclass SentenceTransformerAdapter"):
        zoo.load("tiny-plain-subclass", device="cpu")
    assert type(zoo.load("tiny-pipeline-subclass", device="cpu").encoder) is Pipeline


# -- what must not load as a dense embedder ---------------------------------------------------

def _kind_folders(root: Path, bert: Path) -> dict[str, Path]:
    from sentence_transformers import MultiVectorEncoder, SentenceTransformer, SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    folders = {}
    BertForSequenceClassification(BertConfig.from_pretrained(bert, num_labels=1)).save_pretrained(root / "seq-cls")
    folders["seq-cls"] = root / "seq-cls"
    mlm = root / "mlm"
    BertForMaskedLM(BertConfig.from_pretrained(bert)).save_pretrained(mlm)
    for file in bert.glob("*token*"):
        shutil.copy(file, mlm)
    SparseEncoder(str(mlm)).save(str(root / "sparse"))
    folders["sparse"] = root / "sparse"
    MultiVectorEncoder(str(bert)).save(str(root / "multi-vector"))
    folders["multi-vector"] = root / "multi-vector"
    router = Router.for_query_document(query_modules=[Transformer(str(bert)), Pooling(32)],
                                       document_modules=[Transformer(str(bert)), Pooling(32)])
    SentenceTransformer(modules=[router]).save(str(root / "router"))
    folders["router"] = root / "router"
    colbert = shutil.copytree(folders["multi-vector"], root / "pylate-v3")
    config = json.loads((colbert / "config_sentence_transformers.json").read_text())
    (colbert / "config_sentence_transformers.json").write_text(json.dumps({**config, "model_type": "ColBERT"}))
    folders["pylate-v3"] = colbert
    return folders


@pytest.fixture(scope="module")
def kind_folders(tmp_path_factory, bases) -> dict[str, Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _kind_folders(tmp_path_factory.mktemp("kinds"), bases["bert"])


@pytest.mark.parametrize(("kind", "says"), [
    ("seq-cls", "sequence classifier or reranker"), ("sparse", "sparse encoder"),
    ("router", "routes queries and documents"),
])
def test_other_kinds_are_refused_by_name(kind_folders, kind, says):
    with pytest.raises(UnsupportedModelKindError, match=says):
        zoo.load(kind_folders[kind], device="cpu")
    with pytest.raises(UnsupportedModelKindError, match=says):
        zoo.info(str(kind_folders[kind]))


@pytest.mark.parametrize("folder", ["multi-vector", "pylate-v3"])
def test_multi_vector_folders_load_as_their_kind_never_as_embedders(kind_folders, folder):
    """A multi-vector folder gives token matrices (tests/test_multi_vector.py), and asked for as
    an embedder it is refused by name."""
    assert zoo.load(kind_folders[folder], device="cpu").kind == "multi-vector"
    assert zoo.info(str(kind_folders[folder]))["config"]["folder"]["kind"] == "multi-vector"
    with pytest.raises(UnsupportedModelKindError, match="is a multi-vector"):
        zoo.load(kind_folders[folder], device="cpu", kind="embedder")


def test_what_zoo_cannot_read_is_named_with_its_file(st_folders, tmp_path):
    unknown_mode = shutil.copytree(st_folders("mean", "current"), tmp_path / "median")
    (unknown_mode / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32,
                                                                       "pooling_mode": "median"}))
    with pytest.raises(ModelFormatError, match=r"median.*|.*median"):
        zoo.load(unknown_mode, device="cpu")
    custom = shutil.copytree(st_folders("mean", "current"), tmp_path / "custom")
    modules = json.loads((custom / "modules.json").read_text())
    modules[1]["type"] = "my_package.pooling.FancyPooling"
    (custom / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFormatError, match=r"modules.json names module 'my_package.pooling.FancyPooling'"):
        zoo.load(custom, device="cpu")
    unknown_type = tmp_path / "unknown-type"
    unknown_type.mkdir()
    (unknown_type / "config.json").write_text(json.dumps({"model_type": "made_up_vision_net"}))
    with pytest.raises(ModelFormatError, match="model_type 'made_up_vision_net' is not one zoo knows"):
        zoo.load(unknown_type, device="cpu")
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelFormatError, match="neither a transformers config .* nor a timm config"):
        zoo.load(neither, device="cpu")


# -- timm -------------------------------------------------------------------------------------

TIMM_FAMILIES = ["test_resnet", "test_convnext", "test_vit", "test_efficientnet"]


@pytest.fixture(scope="module")
def pictures():
    from PIL import Image
    from skimage import data

    return [Image.fromarray(f()) for f in (data.astronaut, data.coffee, data.chelsea, data.rocket)] + [
        Image.fromarray(data.camera()).convert("RGB").resize((97, 131))]


def _timm_reference(folder: Path, pictures) -> np.ndarray:
    import timm
    import torch
    from timm.data import create_transform, resolve_model_data_config

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    with torch.inference_mode():
        x = torch.stack([transform(p) for p in pictures])
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


# Every family in timm's current layout, with safetensors and with a pickle; the pre-0.9 config once.
TIMM_CASES = [(arch, layout) for layout in ("safetensors", "pytorch_model.bin") for arch in TIMM_FAMILIES] + [
    ("test_resnet", "before-0.9")]


@pytest.mark.parametrize(("arch", "layout"), [
    pytest.param(a, lay, id=f"{a}-{lay}", marks=pytest.mark.slow if lay == "pytorch_model.bin" else ())
    for a, lay in TIMM_CASES])
def test_timm_folder_equals_timm(tmp_path, pictures, arch, layout):
    folder = timm_folder(tmp_path / arch, arch, legacy=layout == "before-0.9", safetensors=layout != "pytorch_model.bin")
    info = zoo.info(str(folder))
    assert info["backend"] == "timm" and info["config"]["folder"]["format"] == "timm"
    model = zoo.load(folder, device="cpu")
    ours = assert_batch_independent(model, pictures)
    assert_same_rows(ours, _timm_reference(folder, pictures))
    assert model.spec.preprocessing["input_size"] == tuple(model.model.pretrained_cfg["input_size"]) or \
        list(model.spec.preprocessing["input_size"]) == list(model.model.pretrained_cfg["input_size"])


def test_a_timm_folder_exports_to_onnx(tmp_path, pictures):
    folder = timm_folder(tmp_path / "convnext", "test_convnext")
    model = zoo.load(folder, device="cpu", runtime="onnx")
    assert model.runtime == "onnx"
    assert_same_rows(model.featurize(pictures), _timm_reference(folder, pictures))


def test_a_timm_field_timm_does_not_know_is_named(tmp_path):
    folder = timm_folder(tmp_path / "odd", "test_resnet")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["crop_weird"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.ZooError, match=r"config.json.*crop_weird"):
        zoo.load(folder, device="cpu")


# -- transformers audio -----------------------------------------------------------------------

def _audio_folder(root: Path, kind: str) -> Path:
    """A tiny audio encoder and its feature extractor, saved by save_pretrained."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=4)
    if kind in ("wav2vec2-group", "hubert-group"):
        cls = tf.Wav2Vec2Model if kind.startswith("wav2vec2") else tf.HubertModel
        config = (tf.Wav2Vec2Config if cls is tf.Wav2Vec2Model else tf.HubertConfig)(feat_extract_norm="group", **small)
        extractor = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    elif kind == "wav2vec2-layer":
        cls, config = tf.Wav2Vec2Model, tf.Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **small)
        extractor = tf.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    elif kind == "whisper":
        cls = tf.WhisperModel
        config = tf.WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                  decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                                  vocab_size=64, max_target_positions=32, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
        extractor = tf.WhisperFeatureExtractor(feature_size=80)
    else:  # audio-spectrogram-transformer
        cls = tf.ASTModel
        config = tf.ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              num_mel_bins=16, max_length=100)
        extractor = tf.ASTFeatureExtractor(num_mel_bins=16, max_length=100)
    cls(config).eval().save_pretrained(root)
    extractor.save_pretrained(root)
    return root


def _audio_reference(folder: Path, kind: str, clips: list) -> np.ndarray:
    """The model called directly on each clip alone: the extractor's features, then the frames'
    mean (Whisper: the frames that hold audio; AST: the pooled output zoo uses by default)."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModel

    extractor = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    rows = []
    with torch.inference_mode():
        for wave in clips:
            inputs = extractor(wave, sampling_rate=16000, return_tensors="pt")
            if kind == "whisper":
                hidden = model.get_encoder()(inputs["input_features"]).last_hidden_state[0]
                rows.append(hidden[: -(-len(wave) // 320)].mean(0).numpy())
            elif kind == "ast":  # longer than its extractor's window: windows averaged by length, as zoo documents
                window = int(extractor.max_length * 0.01 * 16000)
                count = -(-len(wave) // window)
                size = -(-len(wave) // count)
                parts = [wave[i:i + size] for i in range(0, len(wave), size)]
                pooled = [model(**extractor(p, sampling_rate=16000, return_tensors="pt")).pooler_output[0].numpy()
                          for p in parts]
                rows.append(np.average(pooled, axis=0, weights=[len(p) for p in parts]))
            else:
                rows.append(model(**inputs).last_hidden_state[0].mean(0).numpy())
    return np.vstack(rows)


@pytest.mark.parametrize("kind", ["wav2vec2-group", "hubert-group", "wav2vec2-layer", "whisper", "ast"])
@pytest.mark.parametrize("rate", [16000, pytest.param(44100, marks=pytest.mark.slow)])
def test_audio_encoder_equals_the_model_and_rows_do_not_depend_on_their_batch(tmp_path, kind, rate):
    import torch
    import torchaudio

    folder = _audio_folder(tmp_path / kind, kind)
    rng = np.random.default_rng(0)
    seconds = (0.35, 1.2, 0.6, 0.6, 2.0)
    clips = [(0.1 * rng.standard_normal(int(s * rate))).astype(np.float32) for s in seconds]
    model = zoo.load(folder, device="cpu")
    ours = assert_batch_independent(model, [(c, rate) for c in clips])
    at_16k = clips if rate == 16000 else [torchaudio.functional.resample(torch.from_numpy(c), rate, 16000).numpy()
                                         for c in clips]
    assert_same_rows(ours, _audio_reference(folder, kind, at_16k))


# -- transformers vision ----------------------------------------------------------------------

def _vision_folder(root: Path, kind: str):
    """A tiny ``*ForImageClassification`` model saved by save_pretrained (zoo loads its base model),
    and the same model with its classifier replaced by the identity: what its head reads."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    small = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, num_labels=3)
    if kind == "vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(**small))
    elif kind == "dinov2":
        model = tf.Dinov2ForImageClassification(tf.Dinov2Config(**small))
    elif kind == "dinov2-registers":
        model = tf.Dinov2WithRegistersForImageClassification(tf.Dinov2WithRegistersConfig(**small,
                                                                                           num_register_tokens=2))
    elif kind == "efficientnet":  # hidden_dim is the width its classifier reads
        model = tf.EfficientNetForImageClassification(tf.EfficientNetConfig(
            image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, num_labels=3))
        with torch.no_grad():  # default BatchNorm statistics leave this tiny net's features at zero
            for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.bias.uniform_(0.1, 0.5)
    elif kind == "swin":
        model = tf.SwinForImageClassification(tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=(1, 1),
                                                            num_heads=(2, 2), window_size=4, num_labels=3))
    else:
        model = tf.ConvNextForImageClassification(tf.ConvNextConfig(num_stages=2, hidden_sizes=(8, 16), depths=(1, 1),
                                                                    num_labels=3))
    model.eval().save_pretrained(root)
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    model.classifier = torch.nn.Identity()
    return root, model


@pytest.mark.parametrize("kind", ["vit", "dinov2", "dinov2-registers", "swin", "convnext", "efficientnet"])
def test_hf_vision_pools_what_its_own_head_reads(tmp_path, pictures, kind):
    import torch
    from transformers import ViTImageProcessor

    folder, headless = _vision_folder(tmp_path / kind, kind)
    said = zoo.info(str(folder))["config"]["folder"]["pooling"]
    model = zoo.load(folder, device="cpu")
    assert said == model.spec.pooling == ("cls" if kind.startswith(("vit", "dinov2")) else "pooler")
    ours = assert_batch_independent(model, pictures)
    pixels = ViTImageProcessor.from_pretrained(folder)(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        if kind.startswith("dinov2"):  # its head reads [class token, mean of patches]; the class token is the embedding
            base = headless.dinov2 if kind == "dinov2" else headless.dinov2_with_registers
            reference = base(pixel_values=pixels).pooler_output
        else:
            reference = headless(pixel_values=pixels).logits
    assert_same_rows(ours, reference.numpy())
    if kind == "dinov2-registers":  # the patches' mean leaves out the class and the two register tokens
        with torch.inference_mode():
            tokens = headless.dinov2_with_registers(pixel_values=pixels).last_hidden_state
        assert_same_rows(model.featurize(pictures, pool="mean"), tokens[:, 3:].mean(1).numpy())
    if kind == "convnext":  # a feature map: mean over its positions; no class token to take
        with torch.inference_mode():
            grid = headless.convnext(pixel_values=pixels).last_hidden_state
        assert_same_rows(model.featurize(pictures, pool="mean"), grid.mean(dim=(2, 3)).numpy())
        with pytest.raises(ValueError, match="no class token"):
            model.featurize(pictures, pool="cls")


# -- through the hub, on the command line, across devices -------------------------------------

@pytest.mark.allow_hosts(["127.0.0.1"])
def test_hf_names_of_timm_and_sentence_transformers_repositories(fake_hub, tmp_path, pictures, st_folders):
    timm_repo = timm_folder(tmp_path / "timm-repo", "test_convnext")
    commit = fake_hub.add_repo("someone/tiny-convnext", timm_repo)
    model = zoo.load(f"hf:someone/tiny-convnext@{commit}", device="cpu")
    assert model.backend == "timm" and model.spec.backend == "timm" and model.modality == "vision"
    assert_same_rows(model.featurize(pictures), _timm_reference(timm_repo, pictures))

    folder = st_folders("qwen3-lasttoken", "current")
    commit = fake_hub.add_repo("someone/tiny-qwen3-embedding", folder)
    model = zoo.load(f"hf:someone/tiny-qwen3-embedding@{commit}", device="cpu")
    assert type(model.encoder).__name__ == "SentenceTransformerAdapter" and model.spec.pooling == "lasttoken"
    assert_same_rows(model.featurize(TEXTS, prompt="query"), _encode(folder, TEXTS, prompt_name="query"))


def test_zoo_info_says_the_format_pooling_and_why(st_folders, tmp_path, capsys):
    from zoo.cli import main

    assert main(["info", str(st_folders("qwen3-lasttoken", "v3"))]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["folder"]["pooling"] == "lasttoken"
    assert "Pooling(lasttoken)" in shown["config"]["folder"]["why"]
    assert main(["info", str(timm_folder(tmp_path / "t", "test_vit"))]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["backend"] == "timm" and "timm architecture 'test_vit'" in shown["config"]["folder"]["why"]


@pytest.mark.parametrize("kind", ["sentence-transformers", "transformers"])
def test_device_map_places_the_model_through_transformers(st_folders, bases, kind):
    folder = st_folders("mean", "current") if kind == "sentence-transformers" else bases["bert"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the plain folder's undeclared pooling
        placed = zoo.load(folder, device_map="cpu")
        plain = zoo.load(folder, device="cpu")
    assert_same_rows(placed.featurize(TEXTS), plain.featurize(TEXTS))


# -- one tiny model of every architecture the catalogue names ---------------------------------

def test_siglip_equals_get_image_and_text_features(tmp_path, pictures):
    import torch

    from tiny_models import siglip_folder

    reference, processor = siglip_folder(tmp_path, TEXTS)
    model = zoo.load(tmp_path, device="cpu")
    with torch.inference_mode():
        images = reference.get_image_features(**processor(images=pictures, return_tensors="pt"))
        texts = reference.get_text_features(**processor(text=TEXTS, padding="max_length", truncation=True,
                                                        max_length=16, return_tensors="pt"))
    ours = assert_batch_independent(model, pictures, normalize=False)
    assert_same_rows(ours, getattr(images, "pooler_output", images).numpy())
    assert_same_rows(model.featurize_texts(TEXTS, normalize=False), getattr(texts, "pooler_output", texts).numpy())


# Each transformers-backed catalogue entry, and the test here (or elsewhere) that runs a tiny model
# of its architecture against the library.
CATALOGUE_CASES = {
    "minilm-l6": "test_sentence_transformers_folder_equals_encode[mean-*]",
    "bge-small-en-v1.5": "test_sentence_transformers_folder_equals_encode[cls-*]",
    "e5-small-v2": "test_sentence_transformers_folder_equals_encode[mean-*]",
    "bert-base-uncased": "test_plain_encoder_folder_pools_over_the_mask",
    "qwen3-embedding-0.6b": "test_sentence_transformers_folder_equals_encode[qwen3-lasttoken-*]",
    "embeddinggemma-300m": "test_sentence_transformers_folder_equals_encode[gemma3-two-dense-*]",
    "wav2vec2-base": "test_audio_encoder_equals_the_model_...[*-wav2vec2-group]",
    "hubert-base": "test_audio_encoder_equals_the_model_...[*-hubert-group]",
    "whisper-base-encoder": "test_audio_encoder_equals_the_model_...[*-whisper]",
    "clip-vit-b-32-openai": "tests/test_image_text.py::test_hf_clip_equals_get_image_and_text_features",
    "siglip-base-patch16-224": "test_siglip_equals_get_image_and_text_features",
    "clap-htsat-unfused": "tests/test_clap.py::test_clips_and_texts_equal_get_features_alone_and_in_batches[unfused]",
    "larger-clap-general": "tests/test_clap.py::test_clips_and_texts_equal_get_features_alone_and_in_batches[unfused]",
    # rerankers (kind: reranker): BERT and XLM-RoBERTa sequence classifiers against CrossEncoder.predict
    "ms-marco-minilm-l6": "tests/test_rerank.py::test_scores_equal_cross_encoder_predict_whatever_the_batch[v4]",
    "bge-reranker-base": "tests/test_rerank.py::test_scores_equal_cross_encoder_predict_whatever_the_batch[xlm-roberta]",
    "bge-reranker-v2-m3": "tests/test_rerank.py::test_scores_equal_cross_encoder_predict_whatever_the_batch[xlm-roberta]",
}


def test_every_transformers_entry_of_the_catalogue_has_a_tiny_parity_case():
    from zoo.catalog._registry import REGISTRY_FILE
    from zoo.catalog._registry_file import read_registry

    names = {s.name for s in read_registry(REGISTRY_FILE) if s.backend == "transformers"}
    assert names == set(CATALOGUE_CASES), "add a tiny model of the new entry's architecture to this file"
