"""Audio: the GE2E speaker encoder on speech that espeak-ng synthesises, against resemblyzer."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import zoo
from required_tools import require_tool
from zoo.errors import InputError

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things from the store.",
    "We also need a small plastic snake and a big toy frog for the kids.",
]
VOICES = ["en-us", "en-us+f3", "en-gb-scotland+m7"]


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """{(voice, sentence index): wav path}, synthesised deterministically by espeak-ng."""
    require_tool("espeak-ng")
    folder = tmp_path_factory.mktemp("speech")
    clips = {}
    for v, voice in enumerate(VOICES):
        for s, sentence in enumerate(SENTENCES):
            path = folder / f"v{v}-s{s}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), sentence], check=True)
            clips[v, s] = path
    return clips


@pytest.fixture(scope="session")
def ge2e():
    return zoo.load("ge2e-speaker", device="cpu")


def test_same_voice_is_closer_than_other_voices(ge2e, speech):
    keys = sorted(speech)
    X = ge2e.featurize([speech[k] for k in keys])
    assert X.shape == (len(keys), 256) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)
    sim = X @ X.T
    for i, (vi, si) in enumerate(keys):
        same = [sim[i, j] for j, (vj, sj) in enumerate(keys) if vj == vi and sj != si]
        other = [sim[i, j] for j, (vj, sj) in enumerate(keys) if vj != vi and sj == si]
        assert min(same) > max(other), (keys[i], same, other)


@pytest.mark.slow  # the fast tier keeps under two minutes
def test_matches_the_original_resemblyzer(ge2e, speech):
    pytest.importorskip("librosa")
    pytest.importorskip("webrtcvad")
    resemblyzer = pytest.importorskip("resemblyzer")
    import soundfile

    encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
    for path in speech.values():
        wave, rate = soundfile.read(path, dtype="float32")
        theirs = encoder.embed_utterance(resemblyzer.preprocess_wav(wave, rate))  # with its VAD trimming
        ours = ge2e.featurize([path])[0]
        assert float(theirs @ ours) >= 0.98
        # Without resemblyzer's silence trimming the two are the same computation.
        at_16k = resemblyzer.audio.librosa.resample(wave, orig_sr=rate, target_sr=16000)
        plain = encoder.embed_utterance(resemblyzer.audio.normalize_volume(at_16k, -30, increase_only=True))
        assert float(plain @ ge2e.featurize([(at_16k, 16000)])[0]) >= 0.9999


def test_stereo_48k_file_is_mixed_down_and_resampled(ge2e, speech, tmp_path):
    import soundfile
    import torch
    import torchaudio

    wave, rate = soundfile.read(speech[0, 0], dtype="float32")
    at_48k = torchaudio.functional.resample(torch.from_numpy(wave), rate, 48000).numpy()
    stereo = np.stack([at_48k, 0.5 * at_48k], axis=1)
    path = tmp_path / "stereo48k.wav"
    soundfile.write(path, stereo, 48000, subtype="FLOAT")
    from_file, from_pair = ge2e.featurize([path, (stereo.T, 48000)])
    np.testing.assert_allclose(from_file, from_pair, atol=1e-4)
    assert float(from_file @ ge2e.featurize([speech[0, 0]])[0]) > 0.99


def test_bad_audio_is_named_or_skipped(ge2e, speech, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    batch = [speech[0, 0], empty, (np.full(16000, np.nan, dtype=np.float32), 16000), (np.zeros(0), 16000),
             (np.zeros(100), 0), "nope.wav"]
    with pytest.raises(InputError, match=r"input 1 \(.*empty.wav'\): OSError: cannot decode audio"):
        ge2e.featurize(batch)
    with pytest.warns(RuntimeWarning, match="skipped 5 of 6"):
        out = ge2e.featurize(batch, on_error="skip")
    assert out.shape == (1, 256)
    reasons = dict(ge2e.last_report.skipped)
    assert "NaN" in reasons[2] and "empty waveform" in reasons[3] and "sample rate" in reasons[4]


def test_a_file_is_mixed_to_mono_block_by_block(tmp_path, monkeypatch):
    import soundfile

    from zoo.plugins import audio

    rng = np.random.default_rng(4)
    stereo = (0.2 * rng.standard_normal((50000, 2))).astype(np.float32)
    soundfile.write(tmp_path / "s.wav", stereo, 44100, subtype="FLOAT")
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 4096)  # many blocks, one partial
    wave, rate = audio.decode_audio(tmp_path / "s.wav")
    assert rate == 44100 and wave.dtype == np.float32
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-7)


def test_short_and_int16_inputs(ge2e):
    rng = np.random.default_rng(0)
    short = (rng.standard_normal(4000).astype(np.float32) * 0.1, 16000)  # 0.25 s: one padded partial
    pcm = ((rng.standard_normal(16000) * 3000).astype(np.int16), 16000)
    out = ge2e.featurize([short, pcm])
    floats = ge2e.featurize([short, (pcm[0].astype(np.float32) / 32767, 16000)])
    np.testing.assert_allclose(out, floats, atol=1e-6)  # int16 samples are scaled to [-1, 1]
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "resemblyzer" else real(name, *a))
    with pytest.raises(zoo.SourceError, match=r"pip install --no-deps resemblyzer==0.1.4"):
        zoo.load("ge2e-speaker")


@pytest.fixture(scope="module")
def tiny_wav2vec2_dir(tmp_path_factory):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("wav2vec2-tiny")
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def test_hf_audio_encoder_equals_the_model_called_directly(tiny_wav2vec2_dir):
    import torch
    import torchaudio
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    model = zoo.load(str(tiny_wav2vec2_dir), device="cpu")
    assert (model.modality, model.embed_dim, model.encoder.sample_rate) == ("audio", 32, 16000)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (9000, 16000, 12000)]
    at_8k = rng.standard_normal(12000).astype(np.float32)
    ours = model.featurize([(w, 16000) for w in waves] + [(at_8k, 8000)], batch_size=4)

    ref = Wav2Vec2Model.from_pretrained(tiny_wav2vec2_dir).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(tiny_wav2vec2_dir)
    resampled = torchaudio.functional.resample(torch.from_numpy(at_8k), 8000, 16000).numpy()
    with torch.no_grad():
        expected = [ref(**extractor(w, sampling_rate=16000, return_tensors="pt")).last_hidden_state.mean(1)[0]
                    for w in [*waves, resampled]]
    np.testing.assert_allclose(ours, torch.stack(expected).numpy(), atol=1e-5)


TINY_WAV2VEC2 = dict(extractor_mode="layer_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 4, 4)],
                     extractor_conv_bias=True, encoder_embed_dim=32, encoder_projection_dropout=0.0,
                     encoder_pos_conv_kernel=16, encoder_pos_conv_groups=2, encoder_num_layers=2,
                     encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=37,
                     encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=True,
                     encoder_layer_drop=0.0, aux_num_out=None)


def _torchaudio_reference(model, waves, normalize):
    import torch

    out = []
    with torch.no_grad():
        for w in waves:
            x = torch.from_numpy(w)[None]
            if normalize:
                x = torch.nn.functional.layer_norm(x, x.shape)
            out.append(model.extract_features(x)[0][-1].mean(1)[0])
    return torch.stack(out).numpy()


@pytest.mark.parametrize("extractor_mode", ["layer_norm", "group_norm"])
def test_torchaudio_architecture_equals_extract_features(tmp_path, extractor_mode):
    import torch
    import torchaudio

    from zoo.catalog._plugin_manager import get_plugin_manager

    torch.manual_seed(0)
    params = {**TINY_WAV2VEC2, "extractor_mode": extractor_mode,
              "encoder_layer_norm_first": extractor_mode == "layer_norm"}  # as the large and base models
    reference = torchaudio.models.wav2vec2_model(**params).eval()
    torch.save(reference.state_dict(), tmp_path / "tiny.pth")

    class Register:
        @zoo.hookimpl
        def zoo_register_models(self, register):
            register({"name": "tiny-torchaudio", "modality": "audio", "backend": "torchaudio",
                      "backend_id": "wav2vec2_model", "embed_dim": 32, "sources": [{"path": str(tmp_path)}],
                      "config": {"weights": "tiny.pth", "architecture": "wav2vec2_model",
                                 "params": params}})

    get_plugin_manager().register(Register())
    model = zoo.load("tiny-torchaudio", device="cpu")
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (8000, 16000, 11000)]
    np.testing.assert_allclose(model.featurize([(w, 16000) for w in waves], batch_size=3),
                               _torchaudio_reference(reference, waves, normalize=False), atol=1e-5)
    _check_long_audio_runs_in_windows(model, reference)


def _check_long_audio_runs_in_windows(model, reference):
    """Audio longer than the window runs as near-equal windows, averaged by duration, and the model
    never sees more than a window at a time, whatever the length."""
    seen = []
    encode = model.encoder.encode_batch

    def spy(batch, **kwargs):
        seen.append(tuple(batch[0].shape))
        return encode(batch, **kwargs)

    wave = np.random.default_rng(5).standard_normal(40000).astype(np.float32)  # 2.5 s
    type(model.encoder).window_seconds = 1.0
    model.encoder.encode_batch = spy
    try:
        got = model.featurize([(wave, 16000), (wave[:8000], 16000)], batch_size=2)
    finally:
        del type(model.encoder).window_seconds, model.encoder.encode_batch
    windows = [wave[0:13334], wave[13334:26668], wave[26668:]]
    per_window = _torchaudio_reference(reference, windows, normalize=False)
    expected = np.average(per_window, axis=0, weights=[len(w) for w in windows])
    np.testing.assert_allclose(got[0], expected, atol=1e-5)
    np.testing.assert_allclose(got[1], _torchaudio_reference(reference, [wave[:8000]], normalize=False)[0],
                               atol=1e-5)
    assert max(shape[1] for shape in seen) <= 16000 and max(shape[0] for shape in seen) <= 2


def test_torchaudio_bundle_builds_itself_from_the_verified_file(tmp_path, monkeypatch):
    """A bundle's own get_model runs, reading zoo's verified file: no download, no socket."""
    import torch
    import torchaudio
    from torchaudio.pipelines import Wav2Vec2Bundle

    torch.manual_seed(0)
    reference = torchaudio.models.wav2vec2_model(**TINY_WAV2VEC2).eval()
    torch.save(reference.state_dict(), tmp_path / "zoo_tiny_bundle.pth")
    bundle = Wav2Vec2Bundle(_path="zoo_tiny_bundle.pth", _params=TINY_WAV2VEC2, _sample_rate=16000,
                            _normalize_waveform=True, _model_type="Wav2Vec2")
    monkeypatch.setattr(torchaudio.pipelines, "ZOO_TINY_BUNDLE", bundle, raising=False)
    spec = zoo.resolve("torchaudio:ZOO_TINY_BUNDLE")
    assert spec.sources[0].location == "https://download.pytorch.org/torchaudio/models/zoo_tiny_bundle.pth"
    local = spec.replace(sources=(zoo.Source("path", str(tmp_path)),))
    from adapters.torchaudio import TorchaudioAdapter
    from zoo.catalog._loader import locate_files
    from zoo.catalog._plugin_manager import get_plugin_manager

    encoder = get_plugin_manager().hook.zoo_load_pretrained(spec=local, files=locate_files(local),
                                                            adapter_class=TorchaudioAdapter, requires={},
                                                            device="cpu", dtype=None, options={})
    assert encoder.normalize_waveform and encoder.embed_dim == 32
    model = zoo.Model(encoder)
    waves = [np.random.default_rng(2).standard_normal(n).astype(np.float32) for n in (9000, 16000)]
    np.testing.assert_allclose(model.featurize([(w, 16000) for w in waves]),
                               _torchaudio_reference(reference, waves, normalize=True), atol=1e-5)
    with pytest.raises(zoo.UnknownModelError, match="did you mean 'torchaudio:WAV2VEC2_BASE'"):
        zoo.resolve("torchaudio:WAV2VEC2_BASEE")


def test_a_rate_that_does_not_reduce_resamples_in_bounded_memory():
    """16001 Hz or 48001 Hz against a 16 kHz model reduce to no common factor: torchaudio's sinc
    kernel would take gigabytes; the polyphase filter takes milliseconds and gives the same row
    as the clip at the standard rate."""
    import time

    model = zoo.load("ge2e-speaker", device="cpu")
    t = np.arange(2 * 48000) / 48000
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    began = time.perf_counter()
    odd = model.encoder.resample((clip, 48001))
    assert time.perf_counter() - began < 5 and abs(len(odd) - round(len(clip) * 16000 / 48001)) <= 1
    standard, shifted = model.featurize([(clip, 48000), (clip, 48001)])
    assert float(standard @ shifted) > 0.99
    assert model.featurize([(np.zeros(100, np.float32), 16001)], on_error="skip").shape[1] == 256
