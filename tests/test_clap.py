"""CLAP (transformers' ``ClapModel``): audio and texts in one space, equal to transformers called
directly on tiny random models saved by ``save_pretrained``, and zero-shot classification of real
speech equal to transformers' zero-shot-audio-classification pipeline."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest
from required_tools import require_tool
from tiny_models import TEXTS, clap_folder

import zoo

RATE = 48_000
LABELS = ["a dog barking", "a person speaking", "music playing", "rain falling"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("clap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"unfused": clap_folder(root / "unfused"), "fused": clap_folder(root / "fused", fusion=True)}


def _clips() -> list[np.ndarray]:
    """Clips at the model's own rate, of several lengths up to its 2 s (so nothing is resampled
    or windowed: the numbers compared are the model's)."""
    rng = np.random.default_rng(0)
    t = np.arange(2 * RATE) / RATE
    return [(0.3 * np.sin(2 * np.pi * f * t[: int(s * RATE)]) + 0.05 * rng.standard_normal(int(s * RATE)))
            .astype(np.float32) for f, s in ((220, 0.5), (440, 2.0), (880, 1.2), (1760, 0.8))]


def _theirs(folder):
    import transformers as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.ClapModel.from_pretrained(folder).eval(), tf.ClapProcessor.from_pretrained(folder)


def _cosine_min(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.mark.parametrize("name", ["unfused", pytest.param("fused", marks=pytest.mark.slow)])
def test_clips_and_texts_equal_get_features_alone_and_in_batches(folders, name):
    import torch

    model = zoo.load(folders[name], device="cpu")
    assert model.modality == "audio-text" and list(model.towers) == ["audio", "text"]
    clap, processor = _theirs(folders[name])
    clips = _clips()
    with torch.inference_mode():  # each clip alone, as transformers' pipeline embeds it
        audio = np.vstack([clap.get_audio_features(**processor.feature_extractor(
            clip, sampling_rate=RATE, return_tensors="pt")).pooler_output.numpy() for clip in clips])
        texts = clap.get_text_features(**processor.tokenizer(TEXTS, padding=True, truncation=True,
                                                             return_tensors="pt")).pooler_output.numpy()
    ours = model.featurize([(clip, RATE) for clip in clips], batch_size=3)
    assert ours.shape == (len(clips), 16) and _cosine_min(ours, audio) >= 0.9999
    assert _cosine_min(model.featurize([(clips[1], RATE)]), audio[1:2]) >= 0.9999
    assert _cosine_min(model.featurize_texts(TEXTS, batch_size=2), texts) >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Real speech from espeak-ng, decoded and resampled to 48 kHz as zoo does."""
    require_tool("espeak-ng")
    import soundfile

    from zoo.plugins.audio import decode_audio

    root = tmp_path_factory.mktemp("speech")
    waves = []
    for i, (voice, words) in enumerate([("en", "The dog barks."), ("en+f3", "Rain is falling."),
                                        ("de", "Musik"), ("en-us", "Hello there.")]):
        path = root / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), words], check=True)
        waves.append(decode_audio(str(path)))
    assert all(rate == soundfile.info(str(root / "0.wav")).samplerate for _, rate in waves)
    return waves


@pytest.mark.parametrize("name", ["unfused", pytest.param("fused", marks=pytest.mark.slow)])
def test_classify_speech_equals_the_zero_shot_audio_pipeline(folders, speech, name):
    import transformers as tf

    model = zoo.load(folders[name], device="cpu")
    at_48k = [model.encoder.resample(item).numpy() for item in speech]
    assert all(len(wave) <= 2 * RATE for wave in at_48k)  # one window each: the pipeline's whole clip
    clap, processor = _theirs(folders[name])
    pipe = tf.pipeline("zero-shot-audio-classification", model=clap, feature_extractor=processor.feature_extractor,
                       tokenizer=processor.tokenizer, device="cpu")
    theirs = np.array([[next(r["score"] for r in pipe(wave, candidate_labels=LABELS) if r["label"] == label)
                        for label in LABELS] for wave in at_48k])
    ours = model.classify(speech, LABELS)
    assert ours.shape == (len(speech), len(LABELS))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_an_audio_index_is_searched_by_text_and_a_text_index_by_audio(folders, speech, tmp_path):
    import soundfile

    model = zoo.load(folders["unfused"], device="cpu")
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, (wave, rate) in enumerate(speech):
        soundfile.write(clips / f"{i}.wav", wave, rate)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(LABELS) + "\n")
    from zoo.cli import main

    assert main(["embed", str(folders["unfused"]), str(clips), "-o", str(tmp_path / "a.parquet"), "-q"]) == 0
    from zoo.embeddings._embed import embed_to_file
    from zoo.embeddings._inputs import open_inputs

    embed_to_file(model, open_inputs(str(texts)), tmp_path / "t.parquet", progress=False,
                  options=model.embed_options(tower="text"))
    audio_index = zoo.search.build(tmp_path / "a.parquet", tmp_path / "a.idx")
    hits = audio_index.search(["a dog barking"], k=4)[0]
    expected = model.featurize(sorted(str(p) for p in clips.iterdir())) @ model.featurize_texts(["a dog barking"]).T
    assert [h.score for h in hits] == pytest.approx(sorted(expected[:, 0], reverse=True), abs=1e-5)
    text_index = zoo.search.build(tmp_path / "t.parquet", tmp_path / "t.idx")
    best = int((model.featurize([str(clips / "0.wav")]) @ model.featurize_texts(LABELS).T).argmax())
    assert text_index.search([str(clips / "0.wav")], k=1)[0][0].id == str(best)  # the clip's label, by cosine


def test_served_audio_and_texts_answer_in_one_space(folders, speech):
    import base64
    import io

    import soundfile
    from starlette.testclient import TestClient

    from zoo.serve._app import create_app

    model = zoo.load(folders["unfused"], device="cpu")
    buf = io.BytesIO()
    soundfile.write(buf, *speech[0], format="WAV")
    clip = "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()
    with TestClient(create_app({"clap": model})) as client:
        answer = client.post("/v1/embeddings", json={"model": "clap", "input": [clip, "a dog barking"]})
    assert answer.status_code == 200, answer.text
    rows = np.array([d["embedding"] for d in answer.json()["data"]])
    assert _cosine_min(rows[:1], model.featurize([speech[0]])) >= 0.9999
    assert _cosine_min(rows[1:], model.featurize_texts(["a dog barking"])) >= 0.9999


@pytest.mark.slow
def test_the_conformance_kit_passes_on_a_clap_model(folders):
    from zoo.testing import check_model, format_table

    results = check_model(str(folders["unfused"]))
    assert all(r.status == "pass" for r in results), format_table(results)
    assert any(r.check == "finetune lora + zoo.load" for r in results)
