"""Finetuning on real data and tiny slices: every modality, every strategy, checkpoints, resume, DDP."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zoo
from required_tools import FORTUNES, needs_tool
from zoo.training._config import STRATEGIES

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def lite0():
    return zoo.load("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="module")
def faces():
    """scikit-image's lfw_subset: 100 faces, 100 non-faces, as uint8 images."""
    images = [(x * 255).astype(np.uint8) for x in skimage_data.lfw_subset()]
    return images, ["face"] * 100 + ["not-face"] * 100


def _split(n, test_share, seed=0):
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * (1 - test_share))
    return order[:cut].tolist(), order[cut:].tolist()


def _take(items, indices):
    return [items[i] for i in indices]


# -- quality on real data ----------------------------------------------------------------------


@pytest.mark.slow
def test_vision_linear_probe_on_lfw_faces(lite0, faces, tmp_path):
    images, labels = faces
    train, test = _split(len(images), 0.3)
    result = lite0.finetune((_take(images, train), _take(labels, train)), (_take(images, test), _take(labels, test)),
                            strategy="linear-probe", epochs=10, output_dir=tmp_path / "lfw")
    predicted = result.model.predict(_take(images, test))
    accuracy = np.mean([p == t for p, t in zip(predicted, _take(labels, test))])
    assert accuracy >= 0.95
    assert result.history[-1]["val_accuracy"] >= 0.95 and (tmp_path / "lfw" / "curves.png").stat().st_size > 1000


@pytest.mark.slow
@needs_tool("fortunes")
def test_text_linear_probe_on_fortunes(minilm, tmp_path):
    texts, labels = [], []
    for category in ("computers", "science", "food", "love", "sports", "politics"):
        quotes = [q.strip() for q in (FORTUNES / category).read_text(errors="replace").split("\n%\n")]
        quotes = [q for q in quotes if 20 < len(q) < 400][:120]
        texts += quotes
        labels += [category] * len(quotes)
    train, test = _split(len(texts), 0.3)
    result = minilm.finetune((_take(texts, train), _take(labels, train)), (_take(texts, test), _take(labels, test)),
                             epochs=20, output_dir=tmp_path / "fortunes")
    predicted = result.model.predict(_take(texts, test))
    assert np.mean([p == t for p, t in zip(predicted, _take(labels, test))]) >= 0.75


@pytest.mark.slow
@needs_tool("espeak-ng")
def test_audio_spoken_words_on_unseen_voices(tmp_path):
    words = ["yes", "no", "stop", "go", "left", "right"]
    voices = ["en-us", "en-gb", "en-us+f3", "en-gb-scotland+m7", "en-us+m3", "en-gb+f2", "en-us+f4", "en-gb-x-rp+m1"]
    clips, labels, speakers = [], [], []
    for word, voice, speed in itertools.product(words, voices, (140, 180)):
        wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", word],
                             capture_output=True, check=True).stdout
        clips.append(wav), labels.append(word), speakers.append(voice)
    held_out = set(voices[-2:])
    train = [i for i, s in enumerate(speakers) if s not in held_out]
    test = [i for i, s in enumerate(speakers) if s in held_out]
    model = zoo.load("ge2e-speaker")
    result = model.finetune((_take(clips, train), _take(labels, train)), (_take(clips, test), _take(labels, test)),
                            epochs=20, output_dir=tmp_path / "words")
    assert result.history[-1]["val_accuracy"] >= 0.5  # six words: chance is 0.17


# -- every modality, every strategy --------------------------------------------------------------


def _tones(n, rng):
    """Two classes of one-second clips: a low and a high tone in noise."""
    t = np.arange(16000) / 16000
    out, labels = [], []
    for i in range(n):
        freq = 220 if i % 2 else 1760
        wave = 0.3 * np.sin(2 * np.pi * freq * t * rng.uniform(0.9, 1.1)) + 0.05 * rng.standard_normal(16000)
        out.append((wave.astype(np.float32), 16000))
        labels.append("low" if i % 2 else "high")
    return out, labels


@pytest.fixture(scope="module")
def tiny_sets(faces, open_clip_dir):
    rng = np.random.default_rng(0)
    images, labels = faces
    picks = list(range(0, 200, 12))  # 17 images of both classes
    texts = ["I love this film", "what a wonderful day", "great food and friends", "a lovely warm evening",
             "this is terrible", "an awful, boring wait", "I hate the rain", "the worst service ever"] * 2
    sentiment = (["pos"] * 4 + ["neg"] * 4) * 2
    tones, tone_labels = _tones(12, rng)
    return {
        "text": ("minilm-l6", texts, sentiment),
        "vision": ("efficientnet-lite0", _take(images, picks), _take(labels, picks)),
        "audio": ("ge2e-speaker", tones, tone_labels),
        "image-text": (str(open_clip_dir), _take(images, picks), _take(labels, picks)),
    }


def _matrix():
    """Every modality with every strategy. The fast tier keeps the linear probe of every modality
    and one strategy that trains the backbone (partial) on the two smallest; the rest, end-to-end
    training of whole backbones, runs in the full suite."""
    for modality in ("text", "vision", "audio", "image-text"):
        for strategy in STRATEGIES:
            costly = strategy != "linear-probe" and not (strategy == "partial" and modality in ("audio", "image-text"))
            yield pytest.param(modality, strategy, marks=[pytest.mark.slow] if costly else [])


@pytest.mark.parametrize(("modality", "strategy"), list(_matrix()))
def test_every_modality_finetunes_with_every_strategy(modality, strategy, tiny_sets, tmp_path):
    name, inputs, labels = tiny_sets[modality]
    model = zoo.load(name, device="cpu")
    before = model.featurize(inputs[:2])
    result = model.finetune((inputs, labels), strategy=strategy, epochs=3, batch_size=8, lr=1e-3,
                            output_dir=tmp_path / "run", unfreeze_blocks=1, freeze_epochs=1)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0], losses
    np.testing.assert_array_equal(model.featurize(inputs[:2]), before)  # the pretrained model is untouched
    again = zoo.load(tmp_path / "run")
    assert again.labels == sorted(set(labels)) and again.modality == model.modality
    np.testing.assert_allclose(again.predict_proba(inputs[:4]), result.model.predict_proba(inputs[:4]), atol=1e-5)
    probs = again.predict_proba(inputs[:4])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert again.predict(inputs[:4]) == [again.labels[i] for i in probs.argmax(1)]
    if strategy == "linear-probe":  # the backbone stayed frozen: the finetuned model embeds as the base does
        np.testing.assert_allclose(again.featurize(inputs[:2]), before, atol=1e-5)
    else:
        assert again.featurize(inputs[:2]).shape == (2, model.embed_dim)
    manifest = json.loads((tmp_path / "run" / "zoo.json").read_text())
    assert manifest["base"]["model"] == model.spec.name and manifest["settings"]["strategy"] == strategy
    assert (manifest["backbone"] is None) == (strategy == "linear-probe")


# -- strategies -------------------------------------------------------------------------------


def test_partial_trains_only_the_last_blocks_and_frozen_batchnorm_stays_in_eval(lite0):
    from zoo.training._strategies import Plan, apply_plan, set_train_mode

    blocks = lite0.encoder.blocks()
    assert len(blocks) >= 5
    backbone = lite0.model
    apply_plan(backbone, Plan("last-blocks", 1), blocks)
    set_train_mode(backbone, Plan("last-blocks", 1))
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(any(n.startswith(m + ".") for m in blocks[-1]) for n in trainable)
    assert not backbone.conv_stem.weight.requires_grad and not backbone.bn1.training
    assert backbone.bn2.training  # in the last block: trains
    apply_plan(backbone, Plan("all"), blocks)
    backbone.eval()


def test_text_blocks_are_the_transformer_layers(minilm):
    blocks = minilm.encoder.blocks()  # module paths inside the sentence-transformers pipeline (module 0)
    assert [b[0] for b in blocks] == [f"0.model.encoder.layer.{i}" for i in range(6)]
    assert "0.model.pooler.dense.weight" in blocks[-1]  # what follows the stack trains with the last block


def test_bad_settings_are_clear(minilm, tmp_path):
    data = (["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="unknown strategy 'ful'; did you mean 'full'"):
        minilm.finetune(data, strategy="ful", output_dir=tmp_path)
    with pytest.raises(zoo.ZooError, match=r"validation labels not in the training data: \['z'\]"):
        minilm.finetune(data, (["c"], ["z"]), output_dir=tmp_path)
    with pytest.raises(zoo.ZooError, match="example 1 is not an"):
        minilm.finetune([("a", "x"), "b"], output_dir=tmp_path)
    minilm.finetune(data, epochs=1, output_dir=tmp_path / "run")
    with pytest.raises(zoo.ZooError, match="other settings \\(epochs\\)"):
        minilm.finetune(data, epochs=2, output_dir=tmp_path / "run", resume=True)


# -- checkpoints, resume, data-parallel -----------------------------------------------------------

RUN = textwrap.dedent("""
    import os, sys, json, zoo
    texts = ["I love this film", "what a wonderful day", "great food and friends", "a lovely warm evening",
             "this is terrible", "an awful, boring wait", "I hate the rain", "the worst service ever"] * 2
    labels = (["pos"] * 4 + ["neg"] * 4) * 2
    out, kill_after, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
    def stop(record):
        if record["epoch"] == kill_after:
            os.kill(os.getpid(), 9)
    model = zoo.load("minilm-l6", device="cpu")
    result = model.finetune((texts, labels), (texts[:6], labels[:6]), strategy="partial", epochs=4, batch_size=4,
                            unfreeze_blocks=1, seed=7, output_dir=out, resume=resume, on_epoch_end=stop,
                            progress=False)
    print(json.dumps(result.history))
""")


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.mark.slow
def test_kill_9_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    whole = _run(tmp_path / "whole", 0, "fresh")
    assert whole.returncode == 0, whole.stderr
    killed = _run(tmp_path / "killed", 2, "fresh")
    assert killed.returncode == -9
    saved = json.loads((tmp_path / "killed" / "resume.json").read_text())
    assert saved["epoch"] == 2
    resumed = _run(tmp_path / "killed", 0, "resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = json.loads(whole.stdout.splitlines()[-1]), json.loads(resumed.stdout.splitlines()[-1])
    for a, b in zip(expected, got, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a, b)
    # No orphaned weights: every file on disk is named by a manifest.
    names = set(json.loads((tmp_path / "killed" / "zoo.json").read_text())["files"])
    names |= set(json.loads((tmp_path / "killed" / "resume.json").read_text())["files"])
    on_disk = {p.name for p in (tmp_path / "killed").iterdir() if p.suffix in (".safetensors", ".pt")}
    assert on_disk == names


DDP = textwrap.dedent("""
    import hashlib, os, sys, zoo
    texts = ["I love this film", "what a wonderful day", "great food and friends", "a lovely warm evening",
             "this is terrible", "an awful, boring wait", "I hate the rain", "the worst service ever"] * 2
    labels = (["pos"] * 4 + ["neg"] * 4) * 2
    model = zoo.load("minilm-l6", device="cpu")
    result = model.finetune((texts, labels), strategy="partial", epochs=2, batch_size=4, unfreeze_blocks=1,
                            output_dir=sys.argv[1], progress=False)
    digest = hashlib.sha256()
    for name, tensor in sorted({**result.model.model.state_dict(), **result.model.head.module.state_dict()}.items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    rank = os.environ["RANK"]
    open(os.path.join(sys.argv[2], f"rank{rank}.sha"), "w").write(digest.hexdigest())
""")


@pytest.mark.slow
def test_data_parallel_two_processes_end_with_the_same_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "run"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (tmp_path / "rank0.sha").read_text(), (tmp_path / "rank1.sha").read_text()
    assert rank0 == rank1
    manifest = json.loads((tmp_path / "run" / "zoo.json").read_text())
    assert manifest["settings"]["world_size"] == 2
    saved = zoo.load(tmp_path / "run")  # what rank 0 saved is what both ranks trained
    digest = hashlib.sha256()
    for name, tensor in sorted({**saved.model.state_dict(), **saved.head.module.state_dict()}.items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    assert digest.hexdigest() == rank0


@pytest.mark.slow
def test_cli_finetune_from_a_class_folder_and_from_jsonl(tmp_path, faces):
    from PIL import Image

    images, labels = faces
    for i in range(0, 200, 10):
        folder = tmp_path / "images" / labels[i]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i}.png")
    proc = subprocess.run([sys.executable, "-m", "zoo", "finetune", "efficientnet-lite0", str(tmp_path / "images"),
                           "--strategy", "linear-probe", "--epochs", "3", "--val-fraction", "0.25",
                           "-o", str(tmp_path / "run-images"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "best epoch" in proc.stdout and "val_accuracy" in proc.stdout
    assert (tmp_path / "run-images" / "curves.png").exists()
    assert zoo.load(tmp_path / "run-images").labels == ["face", "not-face"]

    rows = [{"text": t, "label": l} for t, l in [("I love it", "pos"), ("great", "pos"), ("awful", "neg"),
                                                  ("I hate it", "neg")] * 3]
    (tmp_path / "texts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    csv = "review,stars\n" + "\n".join(f"{r['text']},{r['label']}" for r in rows)
    (tmp_path / "texts.csv").write_text(csv)
    for data, extra in ((tmp_path / "texts.jsonl", []), (tmp_path / "texts.csv", ["--text-column", "review",
                                                                                   "--label-column", "stars"])):
        proc = subprocess.run([sys.executable, "-m", "zoo", "finetune", "minilm-l6", str(data), "-e", "2",
                               "-o", str(tmp_path / f"run-{data.suffix[1:]}"), "-q", *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    for run in ("run-jsonl", "run-csv"):  # the label column was read (by its own name in the CSV)
        trained = zoo.load(tmp_path / run)
        assert trained.labels == ["neg", "pos"]
        assert trained.predict(["I love it", "awful"]) == [trained.labels[i] for i in
                                                            trained.predict_proba(["I love it", "awful"]).argmax(1)]


def test_a_finetuned_model_names_its_own_folder_and_runs_on_pytorch(minilm, tmp_path):
    from zoo.errors import UnsupportedOptionError

    minilm.finetune((["tea", "coffee", "rain", "snow"], ["drink", "drink", "sky", "sky"]), strategy="linear-probe",
                    epochs=1, output_dir=tmp_path / "run", progress=False)
    tuned = zoo.load(tmp_path / "run", device="cpu")
    assert tuned.files.root.resolve() == (tmp_path / "run").resolve() != minilm.files.root.resolve()
    with pytest.raises(UnsupportedOptionError, match="is finetuned: runtime='onnx' serves pretrained models"):
        zoo.load(tmp_path / "run", device="cpu", runtime="onnx")


def test_the_curves_leave_the_callers_matplotlib_alone(tmp_path):
    """curves.png is drawn on a Figure of its own: the caller's backend stays what it was, and
    pyplot (its global figures, a GUI toolkit) is not imported."""
    script = textwrap.dedent(f"""
        import sys, matplotlib
        matplotlib.use("svg")
        from pathlib import Path
        from zoo.training._plot import plot_history
        history = [{{"epoch": e, "train_loss": 1 / e, "val_loss": 2 / e, "val_accuracy": e / 4}} for e in (1, 2, 3)]
        plot_history(history, Path({str(tmp_path / "curves.png")!r}), title="t")
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "False"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
