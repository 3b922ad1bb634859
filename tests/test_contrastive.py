"""Contrastive finetuning of the embedding itself (``objective="contrastive"``): the loss and its
gradients equal sentence-transformers' own on the same batch and weights; a run trains, resumes
to the same weights, saves a folder ``zoo.load`` reads back with its provenance, and its rows do
not mix with the base model's in an index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from zoo.core._model import features
from zoo.training._config import FinetuneConfig
from zoo.training._contrastive import contrastive_loss

ANCHORS = ["how do I bake bread", "cheap flights to Rome", "fix a flat bicycle tyre", "learn the violin",
           "best hiking boots", "python list comprehension"]
POSITIVES = ["A simple bread recipe: flour, water, yeast and salt.", "Budget airlines fly to Rome every day.",
             "Patch the inner tube and pump the tyre.", "Violin lessons for adult beginners.",
             "We tested twelve boots on rocky trails.", "Build a list from an iterable in one expression."]
NEGATIVES = ["Sourdough starters need feeding.", "Rome has many museums.", "Cars need oil changes.",
             "The cello is larger than the violin.", "Running shoes for the road.", "Java streams map values."]


def assert_text_side_left_alone(tuned: zoo.Model, base: zoo.Model, captions: list[str]) -> None:
    """A locked text tower: every weight of the text side as it was, bit for bit, and so its rows
    (to float rounding: a model whose other tower trains runs attention through another kernel)."""
    prefixes, tuned_weights = base.encoder.image_prefixes(), tuned.model.state_dict()
    text_side = [k for k in base.model.state_dict() if not k.startswith(prefixes) and k != "logit_scale"]
    assert text_side and all(torch.equal(base.model.state_dict()[k], tuned_weights[k]) for k in text_side)
    np.testing.assert_allclose(tuned.featurize_texts(captions), base.featurize_texts(captions), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def st_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)
    model.eval()  # no dropout: both sides compute the same numbers
    return model


def _ours(minilm, columns, config):
    model = zoo.load("minilm-l6", device="cpu")
    model.model.eval()
    encoder = model.encoder
    embeddings = [features(encoder, encoder.collate(column), None, normalize=False) for column in columns]
    loss = contrastive_loss(config)(embeddings)
    loss.backward()
    return loss.item(), model.model


def _theirs(st_model, columns, loss_of):
    st_model.zero_grad(set_to_none=True)
    loss = loss_of(st_model)([st_model.tokenize(column) for column in columns], None)
    loss.backward()
    return loss.item(), st_model


@pytest.mark.parametrize("case", ["pairs", *(pytest.param(c, marks=pytest.mark.slow)
                                             for c in ("triplets", "symmetric", "matryoshka"))])
def test_the_loss_and_its_gradients_equal_sentence_transformers_own(minilm, st_minilm, tmp_path, case):
    from sentence_transformers.sentence_transformer import losses

    columns = [ANCHORS, POSITIVES, *([NEGATIVES] if case == "triplets" else [])]
    options = {"symmetric": case == "symmetric", "matryoshka_dims": (384, 128, 32) if case == "matryoshka" else ()}
    config = FinetuneConfig(output_dir=tmp_path, objective="contrastive", **options)

    def loss_of(st):
        if case == "symmetric":
            return losses.MultipleNegativesSymmetricRankingLoss(st)
        if case == "matryoshka":
            return losses.MatryoshkaLoss(st, losses.MultipleNegativesRankingLoss(st), [384, 128, 32])
        return losses.MultipleNegativesRankingLoss(st)

    ours, our_model = _ours(minilm, columns, config)
    theirs, st_model = _theirs(st_minilm, columns, loss_of)
    assert ours == pytest.approx(theirs, abs=1e-5)
    our_grads = {n.removeprefix("0.auto_model."): p.grad for n, p in our_model.named_parameters()}
    compared = 0
    for name, param in st_model.named_parameters():
        key = name.removeprefix("0.auto_model.")
        if param.grad is not None and key in our_grads:
            torch.testing.assert_close(our_grads[key], param.grad, atol=1e-5, rtol=1e-3)
            compared += 1
    assert compared > 50  # every layer's weights, not a few


@pytest.mark.parametrize("mini", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_cached_gradients_equal_sentence_transformers_cached_loss(minilm, st_minilm, mini):
    """GradCache: the loss and the gradients of a batch embedded ``mini`` rows at a time equal
    sentence-transformers' ``CachedMultipleNegativesRankingLoss`` on the same triplets and weights."""
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from zoo.training._contrastive import cached_backward

    model = zoo.load("minilm-l6", device="cpu")
    model.model.eval()
    encoder = model.encoder
    columns = [ANCHORS, POSITIVES, NEGATIVES]
    config = FinetuneConfig(output_dir="unused", objective="contrastive", mini_batch_size=mini)
    seen = []

    def embed(rows, column):
        seen.append(len(rows))
        return features(encoder, encoder.collate(rows), None, normalize=False)

    ours = cached_backward(contrastive_loss(config), columns, embed, mini, "cpu")
    assert max(seen) == mini and sum(seen) == 2 * 3 * len(ANCHORS)  # each chunk twice: without and with a graph
    theirs, st_model = _theirs(st_minilm, columns,
                               lambda st: CachedMultipleNegativesRankingLoss(st, mini_batch_size=mini))
    assert ours.item() == pytest.approx(theirs, abs=1e-5)
    our_grads = {n.removeprefix("0.auto_model."): p.grad for n, p in model.model.named_parameters()}
    compared = 0
    for name, param in st_model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(our_grads[name.removeprefix("0.auto_model.")], param.grad, atol=1e-5, rtol=1e-3)
            compared += 1
    assert compared > 50


def test_a_cached_chunk_is_embedded_again_with_the_dropout_of_its_first_pass(tiny_bert_dir):
    from zoo.training._contrastive import cached_backward

    model = zoo.load(str(tiny_bert_dir), device="cpu")
    model.model.train()  # dropout on: each pass would draw new masks if the random state were not replayed
    encoder = model.encoder
    passes: dict[tuple[int, str], list[torch.Tensor]] = {}

    def embed(rows, column):
        out = features(encoder, encoder.collate(rows), "mean", normalize=False)
        passes.setdefault((column, rows[0]), []).append(out.detach().clone())
        return out

    torch.manual_seed(0)
    config = FinetuneConfig(output_dir="unused", objective="contrastive")
    cached_backward(contrastive_loss(config), [ANCHORS, POSITIVES], embed, 2, "cpu")
    after = torch.rand(3)
    assert len(passes) == 6 and all(len(p) == 2 for p in passes.values())
    for first, second in passes.values():
        torch.testing.assert_close(first, second, atol=0, rtol=0)
    torch.manual_seed(0)
    first_pass_only = [embed(ANCHORS[i:i + 2], 9) for i in range(0, 6, 2)] + [embed(POSITIVES[i:i + 2], 9)
                                                                          for i in range(0, 6, 2)]
    assert first_pass_only and torch.equal(torch.rand(3), after)  # the replays leave the generator as they found it


@pytest.mark.slow
def test_a_run_with_cached_gradients_ends_where_one_without_does(open_clip_dir, photos, tmp_path):
    """Image-caption pairs under open_clip's CLIP loss, batch 6 embedded 2 rows at a time: the same
    weights as the batch at once (the tiny model has no dropout), its tower never given more than 2;
    the same with accumulated batches; and a locked tower is left alone."""
    import zoo.training._contrastive as contrastive

    base = zoo.load(str(open_clip_dir), device="cpu")
    pairs = [(photo, caption) for photo, caption in zip(photos, CAPTIONS)] * 4
    options = {"objective": "contrastive", "epochs": 1, "lr": 1e-3, "batch_size": 6, "progress": False}
    whole = base.finetune(pairs, output_dir=tmp_path / "whole", **options)
    sizes = []

    def counted(encoder, batch, pool, normalize):
        out = features(encoder, batch, pool, normalize)
        sizes.append(len(out))
        return out

    contrastive.features, saved = counted, contrastive.features
    try:
        cached = base.finetune(pairs, output_dir=tmp_path / "cached", mini_batch_size=2, **options)
    finally:
        contrastive.features = saved
    assert set(sizes) == {2}
    assert cached.history[0]["train_loss"] == pytest.approx(whole.history[0]["train_loss"], abs=1e-5)
    for a, b in ((cached.model.featurize(photos), whole.model.featurize(photos)),
                 (cached.model.featurize_texts(CAPTIONS), whole.model.featurize_texts(CAPTIONS))):
        np.testing.assert_allclose(a, b, atol=1e-5)
    both = base.finetune(pairs, output_dir=tmp_path / "both", mini_batch_size=2, **{**options, "batch_size": 3,
                                                                                  "accumulate": 2})
    plain = base.finetune(pairs, output_dir=tmp_path / "plain", **{**options, "batch_size": 3, "accumulate": 2})
    np.testing.assert_allclose(both.model.featurize(photos), plain.model.featurize(photos), atol=1e-5)
    locked = base.finetune(pairs, output_dir=tmp_path / "locked", mini_batch_size=2, lock=("text",), **options)
    assert_text_side_left_alone(locked.model, base, CAPTIONS)
    with pytest.raises(ValueError, match="mini_batch_size must be >= 1"):
        FinetuneConfig(output_dir=tmp_path, objective="contrastive", mini_batch_size=0)


def _pairs(n: int = 48) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    words = ["red", "green", "blue", "cat", "dog", "bird", "sun", "moon", "tree", "river", "stone", "cloud"]
    out = []
    for _ in range(n):
        picked = [words[i] for i in rng.choice(len(words), 3, replace=False)]
        out.append((" ".join(picked), " and ".join(reversed(picked))))
    return out


def test_a_run_trains_saves_and_loads_back_with_its_lineage(tiny_bert_dir, tmp_path):
    pytest.importorskip("faiss")
    from zoo import search
    from zoo.embeddings._embed import embed_to_file
    from zoo.embeddings._inputs import open_inputs

    base = zoo.load(str(tiny_bert_dir), device="cpu")
    pairs = _pairs()
    out = tmp_path / "tuned"
    result = base.finetune(pairs[:40], pairs[40:], objective="contrastive", output_dir=out, epochs=3, lr=1e-3,
                           batch_size=8, progress=False, matryoshka_dims=(32, 16))
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_recall@10"] >= history[0]["val_recall@10"]
    texts = [a for a, _ in pairs[40:]]
    loaded = zoo.load(str(out), device="cpu")
    np.testing.assert_allclose(loaded.featurize(texts), result.model.featurize(texts), atol=1e-6)
    assert not np.allclose(loaded.featurize(texts), base.featurize(texts), atol=1e-3)  # the embedding moved
    assert loaded.head is None and loaded.spec.matryoshka_dims == (32, 16)
    loaded.featurize(texts, truncate_dim=16)  # a declared width: no warning to give
    manifest = json.loads((out / "zoo.json").read_text())
    assert manifest["objective"] == "contrastive" and manifest["base"]["model"] == str(tiny_bert_dir)
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(texts) + "\n")
    embed_to_file(loaded, open_inputs(str(lines)), tmp_path / "tuned.parquet", progress=False)
    embed_to_file(base, open_inputs(str(lines)), tmp_path / "base.parquet", progress=False)
    provenance = json.loads(__import__("pyarrow.parquet").parquet.read_schema(tmp_path / "tuned.parquet")
                            .metadata[b"zoo"])
    assert provenance["built_on"] == {"models": [str(tiny_bert_dir)], "objective": "contrastive",
                                      "data": manifest["settings"]["train"]}
    index = search.build(tmp_path / "tuned.parquet", tmp_path / "idx")
    with pytest.raises(zoo.ProvenanceMismatchError):
        index.add(tmp_path / "base.parquet")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:precision=.* this CPU has no")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tiny_bert_dir, tmp_path, monkeypatch,
                                                                      precision):
    """Under fp16 the loss scaler's state resumes too. Its scale starts high here: the first
    steps overflow, are skipped and halve it (twice on this machine), and the next is taken; a
    resumed run that started again from the initial scale would skip steps the uninterrupted run
    took."""

    class Overflowing(torch.amp.GradScaler):
        def __init__(self, device: str) -> None:
            super().__init__(device, init_scale=2.0 ** 20)

    monkeypatch.setattr(torch.amp, "GradScaler", Overflowing)
    base = zoo.load(str(tiny_bert_dir), device="cpu")
    pairs = _pairs(24)
    options = {"objective": "contrastive", "lr": 1e-3, "batch_size": 8, "progress": False, "seed": 3,
               "precision": precision}
    straight = base.finetune(pairs, output_dir=tmp_path / "a", epochs=2, **options)

    def killed(record):
        raise KeyboardInterrupt  # as a kill after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        base.finetune(pairs, output_dir=tmp_path / "b", epochs=2, on_epoch_end=killed, **options)
    if precision == "fp16":
        saved = json.loads((tmp_path / "b" / "resume.json").read_text())["state"]
        assert torch.load(tmp_path / "b" / saved)["stepper"]["scaler"]["scale"] < 2.0 ** 20
    resumed = base.finetune(pairs, output_dir=tmp_path / "b", epochs=2, resume=True, **options)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in straight.history])
    np.testing.assert_allclose(resumed.model.featurize(["red cat"]), straight.model.featurize(["red cat"]), atol=1e-6)
    with pytest.raises(zoo.ZooError, match="other settings"):
        base.finetune(pairs, output_dir=tmp_path / "b", epochs=2, resume=True, **{**options, "seed": 4})


def test_the_cli_trains_on_a_table_of_pairs_and_bad_settings_are_refused(tiny_bert_dir, tmp_path, capsys):
    from zoo.cli import main

    table = tmp_path / "pairs.csv"
    table.write_text("query,passage\n" + "".join(f"{a},{p}\n" for a, p in _pairs(16)))
    out = tmp_path / "out"
    assert main(["finetune", str(tiny_bert_dir), str(table), "-o", str(out), "--objective", "contrastive",
                 "--anchor-column", "query", "--positive-column", "passage", "--epochs", "1", "--batch-size", "8",
                 "--matryoshka-dims", "16,8", "--symmetric", "-q"]) == 0
    assert "train_loss" in capsys.readouterr().out
    assert zoo.load(str(out), device="cpu").spec.matryoshka_dims == (16, 8)
    with pytest.raises(ValueError, match="trains a head on a frozen backbone"):
        FinetuneConfig(output_dir=out, objective="contrastive", strategy="linear-probe")
    with pytest.raises(ValueError, match="options of objective='contrastive'"):
        FinetuneConfig(output_dir=out, symmetric=True)
    with pytest.raises(zoo.ZooError, match=r"example 1 has 3 parts and example 0 has 2"):
        zoo.load(str(tiny_bert_dir), device="cpu").finetune([("a", "b"), ("a", "b", "c")], output_dir=out / "x",
                                                             objective="contrastive")
    with pytest.raises(zoo.ZooError, match=r"matryoshka_dims \[64\] are wider than"):
        zoo.load(str(tiny_bert_dir), device="cpu").finetune(_pairs(4), output_dir=out / "y", objective="contrastive",
                                                             matryoshka_dims=(64,))


@pytest.mark.slow
def test_a_single_tower_vision_model_trains_on_two_views_of_its_images(tmp_path):
    from tiny_models import timm_folder

    folder = timm_folder(tmp_path / "vit", "test_vit")
    base = zoo.load(str(folder), device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(12)]
    pairs = [(image, np.ascontiguousarray(image[:, ::-1])) for image in images]  # a view and its mirror
    run = base.finetune(pairs, objective="contrastive", output_dir=tmp_path / "out", epochs=2, lr=1e-3,
                        batch_size=4, progress=False)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    loaded = zoo.load(str(tmp_path / "out"), device="cpu")
    np.testing.assert_allclose(loaded.featurize(images[:3]), run.model.featurize(images[:3]), atol=1e-6)
    assert not np.allclose(loaded.featurize(images[:3]), base.featurize(images[:3]), atol=1e-4)


@pytest.mark.slow
def test_merging_at_alpha_0_and_1_gives_the_two_models_exactly(tiny_bert_dir, tmp_path, capsys):
    from zoo.cli import main

    base = zoo.load(str(tiny_bert_dir), device="cpu")
    tuned = base.finetune(_pairs(24), objective="contrastive", output_dir=tmp_path / "tuned", epochs=1, lr=1e-3,
                          batch_size=8, progress=False).model
    texts = ["red cat", "blue river stone"]
    ends = {alpha: zoo.load(str(zoo.merge(str(tiny_bert_dir), tmp_path / "tuned", alpha, tmp_path / f"m{alpha}")),
                            device="cpu").featurize(texts) for alpha in (0, 1)}
    np.testing.assert_array_equal(ends[0], base.featurize(texts))
    np.testing.assert_array_equal(ends[1], tuned.featurize(texts))
    assert main(["merge", str(tiny_bert_dir), str(tmp_path / "tuned"), "--alpha", "0.5", "-o",
                 str(tmp_path / "half")]) == 0
    assert "0.5 of the way" in capsys.readouterr().out
    half = zoo.load(str(tmp_path / "half"), device="cpu")
    middle = half.featurize(texts)
    assert not np.allclose(middle, ends[0], atol=1e-4) and not np.allclose(middle, ends[1], atol=1e-4)
    from zoo.store._provenance import weights_provenance

    assert weights_provenance(half.spec, half.files)["built_on"]["merged_alpha"] == 0.5
    with pytest.raises(ValueError, match="from 0 .the base. to 1"):
        zoo.merge(str(tiny_bert_dir), tmp_path / "tuned", 1.5, tmp_path / "x")
    with pytest.raises(zoo.ZooError, match="was finetuned from .* not from minilm-l6"):
        zoo.merge("minilm-l6", tmp_path / "tuned", 0.5, tmp_path / "y")
    with pytest.raises(zoo.ZooError, match="is not a folder that finetune wrote"):
        zoo.merge(str(tiny_bert_dir), tiny_bert_dir, 0.5, tmp_path / "z")


@pytest.mark.slow
def test_a_merged_classifier_keeps_its_head(tiny_bert_dir, tmp_path):
    base = zoo.load(str(tiny_bert_dir), device="cpu")
    texts = [a for a, _ in _pairs(16)]
    labels = ["warm" if "sun" in t or "red" in t else "cool" for t in texts]
    run = base.finetune((texts, labels), strategy="full", output_dir=tmp_path / "clf", epochs=1, progress=False)
    merged = zoo.load(str(zoo.merge(str(tiny_bert_dir), tmp_path / "clf", 1.0, tmp_path / "m")), device="cpu")
    np.testing.assert_array_equal(merged.predict_proba(texts), run.model.predict_proba(texts))
    probe = base.finetune((texts, labels), output_dir=tmp_path / "probe", epochs=1, progress=False)
    assert probe.best_checkpoint.is_dir()
    with pytest.raises(zoo.ZooError, match="nothing to merge"):
        zoo.merge(str(tiny_bert_dir), tmp_path / "probe", 0.5, tmp_path / "n")


CAPTIONS = ["a cup of coffee on a saucer", "a cat looking at the camera", "a rocket on its launch pad"]


@pytest.fixture(scope="module")
def photos():
    from PIL import Image
    from skimage import data

    return [Image.fromarray(f()) for f in (data.coffee, data.chelsea, data.rocket)]


def _tower_embeddings(model, images, captions):
    vision, text = model.towers["vision"], model.towers["text"]
    return [features(vision, vision.collate([vision.decode(x) for x in images]), None, normalize=False),
            features(text, text.collate(captions), None, normalize=False)]


def _assert_same_gradients(ours, theirs, prefix=""):
    mine = dict(ours.named_parameters())
    compared = 0
    for name, param in theirs.named_parameters():
        if param.grad is not None and mine[prefix + name].grad is not None:
            torch.testing.assert_close(mine[prefix + name].grad, param.grad, atol=1e-5, rtol=1e-3)
            compared += 1
    assert compared > 20


def test_image_caption_pairs_take_open_clips_clip_loss_with_its_gradients(open_clip_dir, photos, tmp_path):
    import open_clip
    from open_clip.loss import ClipLoss

    from zoo.training._contrastive import column_towers, loss_kind
    from zoo.training._data import Pairs

    model = zoo.load(str(open_clip_dir), device="cpu")
    model.model.eval()
    config = FinetuneConfig(output_dir=tmp_path, objective="contrastive")
    pairs = Pairs(photos, CAPTIONS)
    assert column_towers(model, pairs) == ["vision", "text"] and loss_kind(config, model, ["vision", "text"]) == "clip"
    ours = contrastive_loss(config, kind="clip", model=model.model)(_tower_embeddings(model, photos, CAPTIONS))
    ours.backward()
    ident = f"local-dir:{open_clip_dir}"
    reference, _, preprocess = open_clip.create_model_and_transforms(ident)
    reference.eval()
    image_features, text_features, scale = reference(torch.stack([preprocess(p) for p in photos]),
                                                     open_clip.get_tokenizer(ident)(CAPTIONS))
    theirs = ClipLoss()(image_features, text_features, scale)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    _assert_same_gradients(model.model, reference)


def test_siglip_pairs_take_open_clips_siglip_loss_with_the_models_own_bias(tmp_path, photos):
    from open_clip.loss import SigLipLoss

    from tiny_models import siglip_folder

    reference, processor = siglip_folder(tmp_path / "siglip", CAPTIONS)
    model = zoo.load(str(tmp_path / "siglip"), device="cpu")
    model.model.eval()
    config = FinetuneConfig(output_dir=tmp_path / "out", objective="contrastive")
    from zoo.training._contrastive import loss_kind

    assert loss_kind(config, model, ["vision", "text"]) == "siglip"
    ours = contrastive_loss(config, kind="siglip", model=model.model)(_tower_embeddings(model, photos, CAPTIONS))
    ours.backward()
    images = reference.get_image_features(**processor(images=photos, return_tensors="pt"))
    texts = reference.get_text_features(**processor(text=CAPTIONS, padding="max_length", truncation=True,
                                                    max_length=16, return_tensors="pt"))
    images, texts = (getattr(x, "pooler_output", x) for x in (images, texts))
    unit = torch.nn.functional.normalize
    theirs = SigLipLoss()(unit(images, dim=-1), unit(texts, dim=-1), reference.logit_scale.exp(), reference.logit_bias)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    _assert_same_gradients(model.model, reference)


def test_hf_clip_pairs_take_the_clip_loss_transformers_computes_itself(tmp_path, photos):
    """A Hugging Face CLIPModel: zoo's loss (open_clip's ClipLoss at the model's learned
    temperature) equals the loss ``CLIPModel(..., return_loss=True)`` computes, gradients too; and
    a run with the image tower locked leaves every image weight as it was."""
    from transformers import CLIPModel, CLIPProcessor

    from tiny_models import hf_clip_folder
    from zoo.training._contrastive import loss_kind

    folder = hf_clip_folder(tmp_path / "clip", CAPTIONS)
    model = zoo.load(str(folder), device="cpu")
    model.model.eval()
    config = FinetuneConfig(output_dir=tmp_path / "out", objective="contrastive")
    assert loss_kind(config, model, ["vision", "text"]) == "clip"
    ours = contrastive_loss(config, kind="clip", model=model.model)(_tower_embeddings(model, photos, CAPTIONS))
    ours.backward()
    reference = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    theirs = reference(**processor(text=CAPTIONS, images=photos, return_tensors="pt", padding=True),
                       return_loss=True).loss
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    _assert_same_gradients(model.model, reference)
    base = zoo.load(str(folder), device="cpu")
    run = base.finetune([(p, c) for p, c in zip(photos, CAPTIONS)] * 4, objective="contrastive",
                        output_dir=tmp_path / "locked", epochs=1, lr=1e-3, batch_size=6, progress=False,
                        lock=("vision",))
    np.testing.assert_array_equal(run.model.featurize(photos), base.featurize(photos))
    assert not np.allclose(run.model.featurize_texts(CAPTIONS), base.featurize_texts(CAPTIONS), atol=1e-4)


@pytest.mark.slow
def test_an_image_text_run_with_its_text_tower_locked_moves_only_the_images(open_clip_dir, photos, tmp_path):
    base = zoo.load(str(open_clip_dir), device="cpu")
    pairs = [(photo, caption) for photo, caption in zip(photos, CAPTIONS)] * 4
    run = base.finetune(pairs, objective="contrastive", output_dir=tmp_path / "out", epochs=2, lr=1e-3,
                        batch_size=6, progress=False, lock=("text",))
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    loaded = zoo.load(str(tmp_path / "out"), device="cpu")
    assert_text_side_left_alone(loaded, base, CAPTIONS)
    assert not np.allclose(loaded.featurize(photos), base.featurize(photos), atol=1e-4)
    np.testing.assert_allclose(loaded.featurize(photos), run.model.featurize(photos), atol=1e-6)
    with pytest.raises(zoo.ZooError, match="the anchor column mixes texts and vision inputs"):
        base.finetune([(photos[0], "a"), ("b", "c")], objective="contrastive", output_dir=tmp_path / "x")
    with pytest.raises(zoo.ZooError, match="only the 'vision' and 'text' towers"):
        base.finetune(pairs, objective="contrastive", output_dir=tmp_path / "y", lock=("audio",))


def test_pairs_are_read_as_given_and_their_fingerprint_is_their_content(open_clip_dir, tmp_path):
    from zoo.training._contrastive import column_towers
    from zoo.training._data import Pairs, fingerprint, read_pairs

    assert read_pairs({"anchor": ["q1", "q2"], "positive": ["p1", "p2"]}).anchors == ["q1", "q2"]
    with pytest.raises(zoo.ZooError, match="a tuple of columns would be read as examples"):
        read_pairs((["q1", "q2"], ["p1", "p2"]))
    zeros, ones = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)
    assert fingerprint([(zeros, "a")]) != fingerprint([(ones, "a")])
    assert fingerprint([(b"\x01", "a")]) != fingerprint([(b"\x02", "a")])
    clip = zoo.load(str(open_clip_dir), device="cpu")
    with pytest.raises(zoo.ZooError, match="names 'photos/cat.jpg', which is no file"):
        column_towers(clip, Pairs(["photos/cat.jpg", "photos/dog.jpg"], ["a cat", "a dog"]))
    run = tmp_path / "run"
    base = zoo.load(str(open_clip_dir), device="cpu")
    with pytest.raises(zoo.ZooError, match="symmetric and scale are options of the ranking loss"):
        base.finetune([(np.zeros((32, 32, 3), np.uint8), "x")] * 2, objective="contrastive", output_dir=run,
                      symmetric=True)


def test_device_decoding_keeps_only_bytes_declared_as_jpeg_encoded():
    import io

    from PIL import Image

    from zoo.adapters.device_images import EncodedJpeg, KeepJpegsEncoded
    from zoo.core._media import MediaBytes

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    keep = KeepJpegsEncoded(lambda item: "decoded by the modality's decoder")
    assert isinstance(keep(jpeg), EncodedJpeg) and isinstance(keep(MediaBytes(jpeg, "image/jpeg")), EncodedJpeg)
    assert keep(MediaBytes(jpeg, "image/png")) == "decoded by the modality's decoder"  # which refuses it


GATHERED = """
import hashlib, os, sys, zoo
pairs = [(f"query {i} about {w}", f"a passage on {w} number {i}") for i, w in enumerate(
    ["red", "green", "blue", "cat", "dog", "bird", "sun", "moon", "tree", "river", "stone", "cloud"] * 2)]
model = zoo.load(sys.argv[1], device="cpu")
batch = int(sys.argv[4])
result = model.finetune(pairs, objective="contrastive", epochs=2, batch_size=batch, lr=1e-3, seed=1,
                        output_dir=sys.argv[2], progress=False)
rows = result.model.featurize(["query 3 about cat", "a passage on sun number 6"])
rank = os.environ.get("RANK", "0")
open(os.path.join(sys.argv[3], f"rank{rank}.npy"), "wb").write(rows.tobytes())
"""


@pytest.mark.slow
def test_two_processes_gathering_negatives_train_as_one_process_on_their_combined_batches(tmp_path):
    # Under torchrun each rank ranks its anchors against every rank's positives (gathered with
    # gradients) and the gradients are averaged: the same step as one process on both halves.
    import os
    import subprocess
    import sys

    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # no dropout: both runs draw no randomness
    BertModel(config).save_pretrained(folder)
    source = zoo.load("minilm-l6", device="cpu").files.root
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (folder / name).write_bytes((source / name).read_bytes())
    script = tmp_path / "gathered.py"
    script.write_text(GATHERED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(folder), str(tmp_path / "run2"), str(tmp_path / "two"), "4"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "run1"), str(tmp_path / "one"), "8"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    rank0, rank1, single = (np.frombuffer(p.read_bytes(), np.float32) for p in
                            (tmp_path / "two" / "rank0.npy", tmp_path / "two" / "rank1.npy",
                             tmp_path / "one" / "rank0.npy"))
    np.testing.assert_array_equal(rank0, rank1)  # every rank ends with the same weights
    np.testing.assert_allclose(rank0, single, atol=2e-5)  # and with one process's on the combined batches
    assert json.loads((tmp_path / "run2" / "zoo.json").read_text())["settings"]["world_size"] == 2


def test_texts_in_pieces_of_similar_length_train_as_the_whole_batch_would(minilm_dir, tmp_path, monkeypatch):
    """A batch's texts go through in length-sorted pieces (less padding); with dropout off, the run
    ends with the weights of one that embeds each column whole."""
    import shutil

    from transformers import BertConfig, BertModel

    from zoo.training import _contrastive

    folder = tmp_path / "no-dropout-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
              ).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, folder / name)
    rng = np.random.default_rng(0)
    pairs = [(" ".join(["word"] * int(n)) + f" {i}", f"answer {i} " * int(m))
             for i, (n, m) in enumerate(rng.integers(1, 30, (24, 2)))]
    seen: list[int] = []
    real = _contrastive._ContrastiveRun._embed_piece
    monkeypatch.setattr(_contrastive._ContrastiveRun, "_embed_piece",
                        lambda self, rows, tower: (seen.append(len(rows)), real(self, rows, tower))[1])
    weights = []
    for piece in (_contrastive.TEXT_PIECE, 1000):
        monkeypatch.setattr(_contrastive, "TEXT_PIECE", piece)
        seen.clear()
        run = zoo.load(str(folder), device="cpu").finetune(
            pairs, objective="contrastive", output_dir=tmp_path / str(piece), epochs=1, batch_size=24, lr=1e-3,
            progress=False)
        weights.append({n: p.detach().clone() for n, p in run.model.model.named_parameters()})
        assert max(seen) == min(piece, 24)
    for name, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][name], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_a_sentence_transformers_clip_trains_with_its_model_s_temperature(photos, tmp_path):
    """The same CLIP inside a sentence-transformers pipeline: the loss reads the temperature of the
    CLIPModel the pipeline wraps (equal to CLIPModel's own loss), and a run with the images locked
    keeps every image weight and the temperature trains with the text side."""
    from sentence_transformers import SentenceTransformer
    from transformers import CLIPModel, CLIPProcessor

    from tiny_models import hf_clip_folder
    from zoo.training._contrastive import loss_kind

    folder = hf_clip_folder(tmp_path / "clip", CAPTIONS)
    SentenceTransformer(str(folder), device="cpu").save(str(tmp_path / "st-clip"), create_model_card=False)
    model = zoo.load(str(tmp_path / "st-clip"), device="cpu")
    model.model.eval()
    config = FinetuneConfig(output_dir=tmp_path / "out", objective="contrastive")
    assert loss_kind(config, model, ["vision", "text"]) == "clip"
    ours = contrastive_loss(config, kind="clip", model=model.model)(_tower_embeddings(model, photos, CAPTIONS))
    reference = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    theirs = reference(**processor(text=CAPTIONS, images=photos, return_tensors="pt", padding=True),
                       return_loss=True).loss
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    run = model.finetune([(p, c) for p, c in zip(photos, CAPTIONS)] * 4, objective="contrastive",
                         output_dir=tmp_path / "locked", epochs=1, lr=1e-3, batch_size=6, progress=False,
                         lock=("vision",))
    np.testing.assert_array_equal(run.model.featurize(photos), zoo.load(str(tmp_path / "st-clip")).featurize(photos))
