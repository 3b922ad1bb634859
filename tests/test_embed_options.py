"""Embedding options: prompts, Matryoshka truncation, quantized outputs, intermediate layers, each
checked against the backend (sentence-transformers, transformers, timm) called directly."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

import zoo
from zoo.cli import main
from zoo.errors import UnsupportedOptionError

TEXTS = ["A man is playing a guitar.", "hi", "The new movie is awesome, the best film I have seen this year.",
         "A woman is slicing an onion in the kitchen while the radio plays", "cats", "Stocks fell sharply."]
PRECISIONS = ("int8", "uint8", "binary", "ubinary")


@pytest.fixture(scope="module")
def st_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture
def e5_like():
    """MiniLM with E5's two prompts declared, as the e5-small-v2 entry declares them."""
    model = zoo.load("minilm-l6", device="cpu")
    model.spec = model.spec.replace(prompts=dict(zoo.info("e5-small-v2")["prompts"]))
    return model


# -- prompts ------------------------------------------------------------------------------------


def test_catalogue_declares_e5_and_bge_prompts():
    assert zoo.info("e5-small-v2")["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert zoo.info("bge-small-en-v1.5")["prompts"] == {
        "query": "Represent this sentence for searching relevant passages: "}


@pytest.mark.parametrize("name", ["query", "passage"])
def test_a_named_prompt_equals_the_prefix_typed_by_hand(e5_like, st_minilm, name):
    prefix = {"query": "query: ", "passage": "passage: "}[name]
    ours = e5_like.featurize(TEXTS, prompt=name)
    theirs = st_minilm.encode([prefix + t for t in TEXTS], convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    assert np.abs(ours - e5_like.featurize(TEXTS)).max() > 1e-3  # the prompt changed something


def test_prompt_text_is_a_literal_prefix(minilm, st_minilm):
    ours = minilm.featurize(TEXTS, prompt_text="search_query: ")
    np.testing.assert_allclose(ours, st_minilm.encode(["search_query: " + t for t in TEXTS]), atol=2e-6)


def test_an_unknown_prompt_lists_the_declared_ones(e5_like):
    with pytest.raises(ValueError, match=r"unknown prompt 'qurey'.*did you mean 'query'.*'query', 'passage'"):
        e5_like.featurize(TEXTS, prompt="qurey")
    with pytest.raises(ValueError, match="either prompt= .* or prompt_text="):
        e5_like.featurize(TEXTS, prompt="query", prompt_text="query: ")


def test_a_prompt_for_images_is_refused_by_name():
    model = zoo.load("efficientnet-lite0", device="cpu")
    with pytest.raises(UnsupportedOptionError, match="efficientnet-lite0 embeds vision inputs, not texts"):
        model.featurize([np.zeros((8, 8, 3), np.uint8)], prompt_text="a photo of ")


def test_a_sentence_transformers_folder_brings_its_own_prompts(tmp_path, minilm_dir):
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "minilm-with-prompts"
    shutil.copytree(minilm_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": None}))
    model = zoo.load(folder, device="cpu")
    assert dict(model.spec.prompts) == {"query": "query: ", "document": ""}
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(model.featurize(TEXTS, prompt="query"), theirs, atol=2e-6)


# -- Matryoshka truncation --------------------------------------------------------------------


@pytest.mark.parametrize("dim", [128, 256])
def test_truncation_equals_sentence_transformers_truncate_dim(minilm, minilm_dir, dim):
    from sentence_transformers import SentenceTransformer

    theirs = SentenceTransformer(str(minilm_dir), device="cpu", truncate_dim=dim).encode(
        TEXTS, normalize_embeddings=True)
    with pytest.warns(UserWarning, match="declares no Matryoshka dimensions"):
        ours = minilm.featurize(TEXTS, truncate_dim=dim)
    assert ours.shape == (len(TEXTS), dim)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-6)


def test_truncation_without_normalising_keeps_the_first_dimensions(minilm):
    full = minilm.featurize(TEXTS, normalize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut = minilm.featurize(TEXTS, normalize=False, truncate_dim=100)
    np.testing.assert_array_equal(cut, full[:, :100])


def test_declared_matryoshka_dims_warn_only_outside_them():
    model = zoo.load("minilm-l6", device="cpu")
    model.spec = model.spec.replace(matryoshka_dims=(128, 256))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.featurize(TEXTS[:2], truncate_dim=128)
    with pytest.warns(UserWarning, match="trained for truncation to 128, 256 dimensions, not 100"):
        model.featurize(TEXTS[:2], truncate_dim=100)
    with pytest.raises(ValueError, match="truncate_dim must be an integer from 1 to 384"):
        model.featurize(TEXTS[:2], truncate_dim=500)


# -- quantized outputs --------------------------------------------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_equals_quantize_embeddings(minilm, precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    floats = minilm.featurize(TEXTS)
    ours = minilm.featurize(TEXTS, precision=precision)
    theirs = quantize_embeddings(floats, precision=precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[1] == (48 if precision.endswith("binary") else 384)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_calibration_embeddings_set_the_buckets(minilm, precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    corpus = minilm.featurize(TEXTS)
    ours = minilm.featurize(TEXTS[:1], precision=precision, calibration=corpus, return_tensors="pt")
    theirs = quantize_embeddings(minilm.featurize(TEXTS[:1]), precision=precision, calibration_embeddings=corpus)
    np.testing.assert_array_equal(ours.numpy(), theirs)
    with pytest.raises(ValueError, match="at least two embeddings"):
        minilm.featurize(TEXTS[:1], precision=precision)


def test_an_unknown_precision_is_named(minilm):
    with pytest.raises(ValueError, match=r"unknown precision 'int4'.*choices: float32, int8, uint8, binary, ubinary"):
        minilm.featurize(TEXTS, precision="int4")


# -- intermediate layers ------------------------------------------------------------------------


def _mean_pool_hidden_states(folder, texts, layers):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return [((hidden[i] * mask).sum(1) / mask.sum(1)).numpy() for i in layers]


def test_transformers_layer_equals_the_pooled_hidden_state(minilm, minilm_dir):
    (second_last,) = _mean_pool_hidden_states(minilm_dir, TEXTS, [-2])
    ours = minilm.featurize(TEXTS, layer=-2, normalize=False, batch_size=2)  # other padding than the reference
    np.testing.assert_allclose(ours, second_last, atol=2e-5)
    assert np.abs(ours - minilm.featurize(TEXTS, normalize=False)).max() > 1e-2


def test_several_layers_concatenate_or_average(minilm, minilm_dir):
    first, last = _mean_pool_hidden_states(minilm_dir, TEXTS, [1, -1])
    both = minilm.featurize(TEXTS, layers=[1, -1], normalize=False)
    np.testing.assert_allclose(both, np.hstack([first, last]), atol=2e-5)
    mean = minilm.featurize(TEXTS, layers=[1, -1], layer_merge="mean", normalize=False)
    np.testing.assert_allclose(mean, (first + last) / 2, atol=2e-5)


def test_layer_errors_name_the_range_and_the_model(minilm, tiny_bert_dir):
    with pytest.raises(ValueError, match="7 hidden states .* from -7 to 6, not 9"):
        minilm.featurize(TEXTS, layer=9)
    with pytest.raises(ValueError, match="unknown pool 'pooler' for minilm-l6"):  # a sentence-transformers pipeline
        minilm.featurize(TEXTS, layer=-2, pool="pooler")
    with pytest.warns(UserWarning, match="no sentence-transformers modules.json"):
        plain = zoo.load(tiny_bert_dir, device="cpu")
    with pytest.raises(UnsupportedOptionError, match="pool='pooler'"):
        plain.featurize(TEXTS, layer=-2, pool="pooler")
    with pytest.raises(UnsupportedOptionError, match=r"ge2e-speaker \(ge2e backend\) does not give intermediate"):
        zoo.load("ge2e-speaker", device="cpu").featurize([np.zeros(16000, np.float32)], layer=-2)


def test_timm_layer_equals_forward_intermediates():
    import torch
    from PIL import Image

    model = zoo.load("efficientnet-lite0", device="cpu")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)) for _ in range(3)]
    x = torch.stack([model.preprocess(img) for img in images])
    with torch.no_grad():  # timm's own intermediates of the five feature levels, averaged over positions
        maps = model.model.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)
    level2, second_last, last = (m.mean(dim=(2, 3)).numpy() for m in maps)
    np.testing.assert_allclose(model.featurize(images, layer=-2, normalize=False), second_last, atol=1e-4)
    ours = model.featurize(images, layers=[2, -1], normalize=False)
    assert ours.shape == (3, 40 + 320)
    np.testing.assert_allclose(ours, np.hstack([level2, last]), atol=1e-4)


# -- through zoo embed and scikit-learn ------------------------------------------------------------


def test_zoo_embed_writes_quantized_truncated_prompted_rows(tmp_path, minilm):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sentence_transformers.util.quantization import quantize_embeddings

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["embed", "minilm-l6", str(src), "-o", str(out), "--prompt-text", "query: ",
                     "--truncate-dim", "128", "--precision", "int8", "--chunk-size", "4", "-q"]) == 0
        # the same chunks of four as the run, so the float rows are the same to the bit
        floats = np.vstack([minilm.featurize(TEXTS[i:i + 4], prompt_text="query: ", truncate_dim=128)
                            for i in (0, 4)])
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 128)
    rows = np.array(table.column("embedding").to_pylist(), dtype=np.int8)
    # The buckets come from every row of the output, as quantize_embeddings over the whole matrix.
    np.testing.assert_array_equal(rows, quantize_embeddings(floats, precision="int8"))
    meta = json.loads(table.schema.metadata[b"zoo"])
    assert (meta["prompt"], meta["truncate_dim"], meta["precision"], meta["embed_dim"]) == ("query: ", 128, "int8", 128)
    np.testing.assert_allclose(meta["calibration"]["ranges"], [floats.min(0), floats.max(0)], atol=0)


def test_zoo_embed_binary_npy_and_a_layer(tmp_path, minilm):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.npy"
    assert main(["embed", "minilm-l6", str(src), "-o", str(out), "--precision", "ubinary", "--layer", "-2",
                 "-q"]) == 0
    rows = np.load(out)
    assert rows.dtype == np.uint8 and rows.shape == (len(TEXTS), 48)
    np.testing.assert_array_equal(rows, np.packbits(minilm.featurize(TEXTS, layer=-2) > 0, axis=-1))


def test_zoo_embed_buckets_with_a_calibration_file(tmp_path, minilm):
    from sentence_transformers.util.quantization import quantize_embeddings

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    calib = tmp_path / "calib.npy"
    corpus = minilm.featurize(TEXTS + ["another sentence entirely", "and one more"])
    np.save(calib, corpus)
    out = tmp_path / "out.npy"
    assert main(["embed", "minilm-l6", str(src), "-o", str(out), "--precision", "uint8", "--calibration",
                 str(calib), "-q"]) == 0
    expected = quantize_embeddings(minilm.featurize(TEXTS), precision="uint8", calibration_embeddings=corpus)
    np.testing.assert_array_equal(np.load(out), expected)


def test_an_interrupted_run_resumes_only_with_the_same_options(tmp_path, capsys):
    src = tmp_path / "texts.txt"
    src.write_bytes(b"one\ntwo\nthree\nfour\n\xff\xfe not utf-8\nsix\n")
    out = tmp_path / "out.parquet"
    command = ["embed", "minilm-l6", str(src), "-o", str(out), "--truncate-dim", "64", "--chunk-size", "2", "-q"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(command) != 0  # stops at line 4, two chunks kept
        assert len(list((tmp_path / "out.parquet.partial").glob("part-*.parquet"))) == 2
        capsys.readouterr()
        assert main([*command[:-5], "--chunk-size", "2", "--layer", "-2", "-q"]) != 0
        assert "holds an interrupted run with other settings (embed_dim, options)" in capsys.readouterr().err
        assert main([*command, "--skip-errors"]) == 0
    assert "resumed: 4 of 6 inputs (2 of 3 chunks) were already done" in capsys.readouterr().out


def test_sklearn_learns_int8_buckets_on_fit(minilm):
    from sentence_transformers.util.quantization import quantize_embeddings
    from sklearn.exceptions import NotFittedError

    from zoo.sklearn import Featurizer

    train, test = TEXTS[:4], TEXTS[4:]
    featurizer = Featurizer("minilm-l6", precision="int8", device="cpu")
    with pytest.raises(NotFittedError):
        featurizer.transform(test)
    got = featurizer.fit(train).transform(test)
    expected = quantize_embeddings(minilm.featurize(test), precision="int8",
                                   calibration_embeddings=minilm.featurize(train))
    np.testing.assert_array_equal(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut = Featurizer("minilm-l6", prompt_text="query: ", truncate_dim=128, device="cpu").fit(train)
        np.testing.assert_allclose(cut.transform(test), minilm.featurize(test, prompt_text="query: ", truncate_dim=128),
                                   atol=1e-6)
        assert cut.n_features_out_ == 128 and len(cut.get_feature_names_out()) == 128


def test_settings_left_at_their_default_go_with_resolved_options(minilm):
    """zoo.ray and other callers pass normalize=None / pool=None beside options=: None is the
    default, not a second setting; a real value beside options= is refused."""
    options = minilm.embed_options(truncate_dim=128)
    rows, _ = minilm.featurize_with_report(TEXTS[:2], options=options, normalize=None, pool=None)
    np.testing.assert_array_equal(rows, minilm.featurize(TEXTS[:2], truncate_dim=128))
    with pytest.raises(TypeError, match="pass options= or the settings themselves"):
        minilm.featurize_with_report(TEXTS[:2], options=options, pool="cls")
