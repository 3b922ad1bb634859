"""A corpus of bad and odd inputs for every modality, generated here: each one gives a vector, or an
InputError that names its index and is skipped by ``on_error="skip"``. No raw exception of a
decoder or a backend (ZeroDivisionError, the tokenizer's TypeError, PIL's DecompressionBombError)
reaches the user."""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from bad_files import broken_png_chunk, dds_of_unknown_format
from PIL import Image

import zoo
from zoo.errors import InputWarning, Unreadable


def _png(array: np.ndarray, mode: str | None = None, **info) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", **info)
    return buf.getvalue()


def _wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _images() -> dict[str, object]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    grey16 = (rng.integers(0, 65536, (40, 48))).astype(np.uint16)
    rgba = np.dstack([rgb, np.full((40, 48), 128, np.uint8)])
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    return {
        "rgb png": _png(rgb), "16-bit grey png": _png(grey16), "rgba png": _png(rgba),
        "la image": Image.fromarray(rgb).convert("LA"), "palette with transparency": palette,
        "float32 F image": Image.fromarray(rng.random((40, 48), dtype=np.float32), "F"),
        "32-bit I image": Image.fromarray(grey16.astype(np.int32), "I"), "1-bit image": Image.fromarray(rgb).convert("1"),
        "cmyk image": Image.fromarray(rgb).convert("CMYK"), "1x1 image": Image.fromarray(rgb[:1, :1]),
        "0x0 array": np.zeros((0, 0, 3), np.uint8), "0-wide PIL image": Image.new("RGB", (0, 5)),
        "truncated jpeg": jpeg.getvalue()[:200], "empty bytes": b"", "text bytes": b"not an image",
        "nan float array": np.full((8, 8, 3), np.nan, np.float32), "float array out of range": np.full((8, 8, 3), 2.0),
        "5-channel array": np.zeros((8, 8, 5), np.uint8), "int64 array": np.zeros((8, 8, 3), np.int64),
        "missing file": "/nonexistent/image.png", "a number": 42, "unreadable line": Unreadable("images.txt line 3 is not UTF-8"),
        "broken png chunk": broken_png_chunk(), "dds of unknown format": dds_of_unknown_format(),
    }


def _sounds() -> dict[str, object]:
    rng = np.random.default_rng(1)
    tone = (0.3 * np.sin(np.linspace(0, 2000, 16000))).astype(np.float32)
    wav = _wav(tone)
    header_only = wav[:44]
    return {
        "wav": wav, "truncated wav": wav[: len(wav) // 2], "header-only wav": header_only,
        "float wav": _wav(tone, subtype="FLOAT"), "8 kHz stereo": _wav(np.stack([tone, tone], 1), rate=8000),
        "pair": (tone, 16000), "int16 pair": ((tone * 32767).astype(np.int16), 16000),
        "1e30 amplitude": (np.full(16000, 1e30, np.float32), 16000), "nan wave": (np.full(100, np.nan), 16000),
        "empty wave": (np.zeros(0, np.float32), 16000), "zero rate": (tone, 0), "bool rate": (tone, True),
        "3-D wave": (np.zeros((2, 2, 2)), 16000), "string wave": (np.array(["a", "b"]), 16000),
        "garbage bytes": rng.bytes(300), "missing file": "/nonexistent/a.wav", "a list": [1, 2, 3],
    }


def _texts() -> dict[str, object]:
    return {
        "plain": "a plain sentence", "empty": "", "whitespace": "   \t ", "emoji": "🦓 zoo 🐘",
        "lone surrogate": "broken \ud800 text", "nul": "a\x00b", "very long": "word " * 5000,
        "bytes": b"bytes are not text", "none": None, "number": 3.5, "rtl": "שלום עולם",
        "unreadable line": Unreadable("texts.txt line 7 is not valid UTF-8 (byte 0xff at column 3)"),
    }


def _outcomes(model, corpus: dict[str, object]) -> dict[str, str]:
    """Each case alone: 'vector', or the InputError's reason (skip mode agrees with raise mode)."""
    out = {}
    for name, item in corpus.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)
            try:
                rows = model.featurize([item])
            except zoo.InputError as exc:
                assert exc.index == 0 and exc.reason, name
                out[name] = exc.reason
                with pytest.warns(RuntimeWarning, match="featurize skipped 1 of 1"):
                    skipped = model.featurize([item], on_error="skip")
                assert skipped.shape == (0, model.embed_dim), name
                continue
        assert rows.shape == (1, model.embed_dim) and np.isfinite(rows).all(), name
        out[name] = "vector"
    return out


@pytest.fixture(scope="module")
def models(open_clip_dir):
    return {"vision": zoo.load("efficientnet-lite0"), "audio": zoo.load("ge2e-speaker"),
            "text": zoo.load("minilm-l6"), "image-text": zoo.load(str(open_clip_dir))}


CORPORA = {"vision": _images, "audio": _sounds, "text": _texts, "image-text": _images}

# What must be refused (by case), and a word the reason must contain; every other case embeds.
REFUSED = {
    "vision": {"0x0 array": "empty image", "0-wide PIL image": "empty image", "truncated jpeg": "OSError",
               "empty bytes": "cannot identify", "text bytes": "cannot identify", "nan float array": "NaN",
               "float array out of range": "[0, 1]", "5-channel array": "channels", "int64 array": "uint8",
               "missing file": "No such file", "a number": "expected an image", "unreadable line": "not UTF-8",
               "broken png chunk": "SyntaxError: broken PNG", "dds of unknown format": "an image zoo reads"},
    "audio": {"header-only wav": "empty waveform", "1e30 amplitude": "not finite", "nan wave": "NaN",
              "empty wave": "empty waveform", "zero rate": "sample rate", "bool rate": "sample rate",
              "3-D wave": "1-D waveform", "string wave": "numeric samples", "garbage bytes": "cannot decode",
              "missing file": "cannot decode", "a list": "expected an audio"},
    "text": {"lone surrogate": "not valid Unicode", "bytes": "expected str", "none": "expected str",
             "number": "expected str", "unreadable line": "line 7"},
}
REFUSED["image-text"] = REFUSED["vision"]


@pytest.mark.parametrize("modality", list(CORPORA))
def test_every_bad_input_is_a_vector_or_a_named_skippable_error(models, modality, capsys):
    corpus = CORPORA[modality]()
    outcomes = _outcomes(models[modality], corpus)
    refused = {name: why for name, why in outcomes.items() if why != "vector"}
    assert sorted(refused) == sorted(REFUSED[modality]), refused
    for name, word in REFUSED[modality].items():
        assert word in refused[name], (name, refused[name])
    with capsys.disabled():
        print(f"\n{modality}: {len(corpus)} cases, {len(corpus) - len(refused)} embedded, {len(refused)} refused")


def test_the_corpus_has_at_least_forty_cases():
    assert sum(len(make()) for make in CORPORA.values()) >= 40


def test_a_mixed_batch_in_skip_mode_keeps_the_good_ones_in_order(models):
    corpus = _images()
    items = list(corpus.values())
    with pytest.warns(RuntimeWarning, match="featurize skipped"):
        rows = models["vision"].featurize(items, on_error="skip", batch_size=4)
    report = models["vision"].last_report
    assert len(report.kept) + len(report.skipped) == len(items) == report.total
    assert [list(corpus)[i] for i, _ in report.skipped] == list(REFUSED["vision"])
    np.testing.assert_allclose(rows[0], models["vision"].featurize([items[0]])[0], atol=1e-5)


def test_a_sixteen_bit_png_embeds_like_the_same_picture_in_eight_bits(models):
    rng = np.random.default_rng(3)
    eight = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # the same picture at 16 bits per sample
    a, b = models["vision"].featurize([_png(eight), _png(sixteen)])
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9999


def test_transparency_is_composed_onto_white(models):
    rgb = np.zeros((32, 32, 3), np.uint8)
    clear = np.dstack([rgb, np.zeros((32, 32), np.uint8)])  # fully transparent black
    white = np.full((32, 32, 3), 255, np.uint8)
    np.testing.assert_allclose(*models["vision"].featurize([_png(clear), _png(white)]), atol=1e-5)


def test_a_decompression_bomb_is_a_named_skippable_error(models, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x48 is more than twice that
    item = _png(np.zeros((40, 48, 3), np.uint8))
    with pytest.raises(zoo.InputError, match=r"input 0: ValueError: Image size .* raise PIL.Image.MAX_IMAGE_PIXELS"):
        models["vision"].featurize([item])
    with pytest.warns(RuntimeWarning, match="skipped 1 of 1"):
        rows = models["vision"].featurize([item], on_error="skip")
    assert rows.shape == (0, 1280)


def test_a_truncated_wav_is_embedded_with_a_recorded_warning(models):
    tone = (0.3 * np.sin(np.linspace(0, 2000, 16000))).astype(np.float32)
    wav = _wav(tone)
    with pytest.warns(InputWarning, match="1 of 2 inputs were embedded with a warning"):
        rows = models["audio"].featurize([wav, wav[: len(wav) // 2]])
    assert rows.shape == (2, models["audio"].embed_dim)
    (index, why), = models["audio"].last_report.warned
    assert index == 1 and "header promises 16000 frames, the file holds 7989" in why


def test_declared_wav_length_reads_the_data_chunk():
    from zoo.plugins.audio import _declared_wav_frames

    wav = _wav(np.zeros(1000, np.float32))
    assert _declared_wav_frames(wav) == 1000
    for placeholder in (0xFFFFFFFF, 0x7FFFF000, 0):  # ffmpeg's, espeak-ng --stdout's, and none
        assert _declared_wav_frames(wav[:40] + struct.pack("<I", placeholder) + wav[44:]) is None
    assert _declared_wav_frames(b"fLaC....") is None


def test_an_image_over_the_pixel_limit_is_refused_before_decoding_even_where_pil_only_warns(monkeypatch):
    from PIL import Image

    from zoo.plugins.vision import decode_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    over = _png(np.zeros((40, 40, 3), np.uint8))  # 1600 pixels: PIL warns (it raises from 2000 on)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        decode_image(over)
    assert decode_image(_png(np.zeros((20, 20, 3), np.uint8))).size == (20, 20)
