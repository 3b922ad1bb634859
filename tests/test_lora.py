"""LoRA finetuning (``strategy="lora"``, with peft) on transformers text models, timm backbones and
open_clip towers: only the adapters train, the folder saves the adapter alone (small, sha256
checked), and ``zoo.load`` merges it into the base's weights, giving the numbers peft's own
forward gives with the adapter kept apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from test_contrastive import assert_text_side_left_alone

peft = pytest.importorskip("peft")
# the tiny BERT is a plain transformers folder: zoo says it mean-pools it, as sentence-transformers would
pytestmark = pytest.mark.filterwarnings("ignore:.*has no sentence-transformers modules.json")

TEXTS = ["red cat", "blue dog", "green bird", "sun and moon", "a river of stone", "cloud over the tree"]
PAIRS = [(t, " and ".join(reversed(t.split()))) for t in TEXTS] * 4


def _tiny_bert_copy(tiny_bert_dir):
    return zoo.load(str(tiny_bert_dir), device="cpu")


def test_a_lora_run_saves_the_adapter_alone_and_loads_as_peft_computes_it(tiny_bert_dir, tmp_path):
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    base = _tiny_bert_copy(tiny_bert_dir)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    run = base.finetune(PAIRS, objective="contrastive", strategy="lora", output_dir=tmp_path / "run", epochs=2,
                        lr=5e-3, batch_size=8, lora_r=4, progress=False)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in before.items())  # the caller's model
    manifest = json.loads((tmp_path / "run" / "zoo.json").read_text())
    entry = manifest["backbone"]
    assert entry["lora"]["r"] == 4 and entry["file"].endswith(".adapter.safetensors")
    adapter = tmp_path / "run" / entry["file"]
    assert entry["file"] in manifest["files"]  # verified by sha256 on load, like every file
    full = sum(v.numel() for v in before.values())
    assert 0 < sum(v.numel() for v in load_file(str(adapter)).values()) < full / 5
    loaded = zoo.load(str(tmp_path / "run"), device="cpu")
    ours = loaded.featurize(TEXTS)
    np.testing.assert_allclose(ours, run.model.featurize(TEXTS), atol=1e-6)
    assert not np.allclose(ours, base.featurize(TEXTS), atol=1e-4)
    # peft itself, the adapter kept apart from the weights (not merged), on a fresh copy of the base
    reference = get_peft_model(AutoModel.from_pretrained(tiny_bert_dir),
                               LoraConfig(r=4, lora_alpha=16, target_modules=entry["lora"]["targets"])).eval()
    set_peft_model_state_dict(reference, load_file(str(adapter)))
    batch = AutoTokenizer.from_pretrained(tiny_bert_dir)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    theirs = ((hidden * mask).sum(1) / mask.sum(1)).numpy()  # a plain folder: mean-pooled, not normalised
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.slow
def test_a_tampered_adapter_is_refused_and_a_resumed_lora_run_matches_a_straight_one(tiny_bert_dir, tmp_path):
    base = _tiny_bert_copy(tiny_bert_dir)
    options = {"objective": "contrastive", "strategy": "lora", "lr": 5e-3, "batch_size": 8, "progress": False}
    straight = base.finetune(PAIRS, output_dir=tmp_path / "a", epochs=2, **options)

    def killed(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        base.finetune(PAIRS, output_dir=tmp_path / "b", epochs=2, on_epoch_end=killed, **options)
    resumed = base.finetune(PAIRS, output_dir=tmp_path / "b", epochs=2, resume=True, **options)
    np.testing.assert_allclose(resumed.model.featurize(TEXTS), straight.model.featurize(TEXTS), atol=1e-6)
    adapter = tmp_path / "a" / json.loads((tmp_path / "a" / "zoo.json").read_text())["backbone"]["file"]
    data = bytearray(adapter.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of the weights
    adapter.write_bytes(bytes(data))
    with pytest.raises(zoo.IntegrityError, match="adapter"):
        zoo.load(str(tmp_path / "a"), device="cpu")


@pytest.mark.slow
def test_merging_a_lora_finetune_at_0_and_1_gives_the_base_and_the_finetune(tiny_bert_dir, tmp_path):
    base = _tiny_bert_copy(tiny_bert_dir)
    base.finetune(PAIRS, objective="contrastive", strategy="lora", output_dir=tmp_path / "run", epochs=1, lr=5e-3,
                  batch_size=8, progress=False)
    tuned = zoo.load(str(tmp_path / "run"), device="cpu")
    for alpha, expected in ((0.0, base), (1.0, tuned)):
        merged = zoo.load(str(zoo.merge(str(tiny_bert_dir), tmp_path / "run", alpha, tmp_path / f"m{alpha}")),
                          device="cpu")
        np.testing.assert_array_equal(merged.featurize(TEXTS), expected.featurize(TEXTS))
    between = zoo.load(str(zoo.merge(str(tiny_bert_dir), tmp_path / "run", 0.5, tmp_path / "half")),
                       device="cpu").featurize(TEXTS)
    assert not np.allclose(between, base.featurize(TEXTS), atol=1e-5)
    assert not np.allclose(between, tuned.featurize(TEXTS), atol=1e-5)


@pytest.mark.slow
def test_a_timm_classifier_trains_lora_on_linear_layers_and_a_convnet_on_its_convolutions(tmp_path):
    from tiny_models import timm_folder

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(12)]
    labels = ["a", "b", "c"] * 4
    for arch, layer in (("test_vit", "Linear"), ("test_efficientnet", "Conv2d")):
        base = zoo.load(str(timm_folder(tmp_path / arch, arch)), device="cpu")
        run = base.finetune((images, labels), strategy="lora", output_dir=tmp_path / f"{arch}-run", epochs=2,
                            batch_size=4, lr=1e-2, progress=False)
        record = json.loads((tmp_path / f"{arch}-run" / "zoo.json").read_text())["backbone"]["lora"]
        kinds = {type(base.model.get_submodule(name)).__name__ for name in record["targets"]}
        assert kinds == {layer}, f"{arch}: {kinds}"
        loaded = zoo.load(str(tmp_path / f"{arch}-run"), device="cpu")
        np.testing.assert_allclose(loaded.predict_proba(images), run.model.predict_proba(images), atol=1e-5)
        assert not np.allclose(loaded.featurize(images), base.featurize(images), atol=1e-5)


@pytest.mark.slow
def test_open_clip_lora_adapts_its_attention_whole_and_leaves_a_locked_tower_alone(open_clip_dir, tmp_path):
    from PIL import Image
    from skimage import data

    photos = [Image.fromarray(f()) for f in (data.coffee, data.chelsea, data.rocket)]
    captions = ["a cup of coffee", "a cat", "a rocket"]
    base = zoo.load(str(open_clip_dir), device="cpu")
    run = base.finetune(list(zip(photos, captions)) * 4, objective="contrastive", strategy="lora",
                        output_dir=tmp_path / "run", epochs=2, batch_size=6, lr=1e-2, lock=("text",), progress=False)
    record = json.loads((tmp_path / "run" / "zoo.json").read_text())["backbone"]["lora"]
    kinds = {type(base.model.get_submodule(name)).__name__ for name in record["targets"]}
    assert "MultiheadAttention" in kinds and all(t.startswith("visual.") for t in record["targets"])
    assert not any(t.endswith("out_proj") for t in record["targets"])  # adapted with its attention, never alone
    loaded = zoo.load(str(tmp_path / "run"), device="cpu")
    assert_text_side_left_alone(loaded, base, captions)
    np.testing.assert_allclose(loaded.featurize(photos), run.model.featurize(photos), atol=1e-5)
    assert not np.allclose(loaded.featurize(photos), base.featurize(photos), atol=1e-4)


@pytest.mark.slow
def test_the_cli_trains_lora_with_its_flags(tiny_bert_dir, tmp_path, capsys):
    from zoo.cli import main

    table = tmp_path / "pairs.csv"
    table.write_text("anchor,positive\n" + "".join(f"{a},{p}\n" for a, p in PAIRS))
    assert main(["finetune", str(tiny_bert_dir), str(table), "-o", str(tmp_path / "out"), "--objective",
                 "contrastive", "--strategy", "lora", "--lora-r", "2", "--lora-targets", "query,value", "--epochs",
                 "1", "-q"]) == 0
    record = json.loads((tmp_path / "out" / "zoo.json").read_text())["backbone"]["lora"]
    assert record["r"] == 2 and {t.rsplit(".", 1)[-1] for t in record["targets"]} == {"query", "value"}


def test_lora_settings_are_checked_by_name(tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="options of strategy='lora'"):
        zoo.FinetuneConfig(output_dir=tmp_path, strategy="full", lora_r=4)
    with pytest.raises(ValueError, match="lora_r is the adapters' rank"):
        zoo.FinetuneConfig(output_dir=tmp_path, strategy="lora", lora_r=0)
    with pytest.raises(zoo.ZooError, match="LoRA cannot adapt"):
        _tiny_bert_copy(tiny_bert_dir).finetune(PAIRS, objective="contrastive", strategy="lora",
                                                output_dir=tmp_path / "x", lora_targets=("no_such_layer",))


@pytest.mark.slow
def test_a_lora_finetune_packs_its_adapter_and_loads_from_the_bundle(tiny_bert_dir, tmp_path, monkeypatch):
    import tarfile

    from zoo.store._bundle import pack, unpack

    folder = tmp_path / "lora-run"
    _tiny_bert_copy(tiny_bert_dir).finetune(PAIRS, objective="contrastive", strategy="lora", output_dir=folder,
                                            epochs=1, lr=5e-3, batch_size=8, progress=False)
    expected = zoo.load(str(folder), device="cpu").featurize(TEXTS)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    pack([str(folder)], tmp_path / "lora.tar")
    with tarfile.open(tmp_path / "lora.tar") as tar:
        carried = {n.rsplit("/", 1)[-1] for n in tar.getnames()}
    adapter = json.loads((folder / "zoo.json").read_text())["backbone"]["file"]
    assert adapter in carried and not any(n.endswith((".state.pt", ".backbone.safetensors")) for n in carried)
    unpack(tmp_path / "lora.tar")
    np.testing.assert_allclose(zoo.load("lora-run", device="cpu").featurize(TEXTS), expected, atol=1e-6)
