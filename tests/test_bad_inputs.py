"""A corpus of bad and odd inputs for every modality, generated here: each one gives a vector, or an
InputError that names its index and is skipped by ``on_error="skip"``. No raw exception of a
decoder or a backend (ZeroDivisionError, the tokenizer's TypeError, PIL's DecompressionBombError)
reaches the user. The same corpus served (the cases a client can send, and what only a server
sees): each bad item, sent beside good requests, gets its own request a 4xx naming ``input[1]``
while the others get their rows."""

from __future__ import annotations

import base64
import io
import json
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

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


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds none: what a decompression
    bomb's header says, in 60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


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
        "144-megapixel png header": _png_header(12_000, 12_000), "eps": EPS,
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
        "500 Hz wav": _wav(tone[:500], rate=500), "400 kHz wav": _wav(tone, rate=400_000),
        "999 Hz pair": (tone[:999], 999),
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
               "broken png chunk": "SyntaxError: broken PNG", "dds of unknown format": "an image zoo reads",
               "144-megapixel png header": "MAX_IMAGE_PIXELS", "eps": "an image zoo reads"},
    "audio": {"header-only wav": "empty waveform", "1e30 amplitude": "not finite", "nan wave": "NaN",
              "empty wave": "empty waveform", "zero rate": "sample rate", "bool rate": "sample rate",
              "3-D wave": "1-D waveform", "string wave": "numeric samples", "garbage bytes": "cannot decode",
              "missing file": "cannot decode", "a list": "expected an audio",
              "500 Hz wav": "sample rate 500 Hz is outside 1000-384000 Hz",
              "400 kHz wav": "sample rate 400000 Hz is outside", "999 Hz pair": "sample rate 999 Hz is outside"},
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


def test_audio_over_the_bound_is_refused_by_its_header_before_a_sample_is_decoded(monkeypatch):
    import soundfile

    from zoo.plugins.audio import audio_seconds_limit, decode_audio

    hour = _flac_declaring(3600)  # a one-second file whose header says an hour

    def no_samples(*args, **kwargs):
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_samples)
    with audio_seconds_limit(600), pytest.raises(ValueError, match=r"audio of 3600\.0 s is longer than the 600 s "
                                                                     r"allowed \(zoo serve --max-audio-seconds"):
        decode_audio(hour)
    monkeypatch.undo()
    assert decode_audio(_silence(601))[0].shape == (601 * 8000,)  # no bound unless one is set


def test_audio_whose_header_does_not_give_its_length_is_bounded_while_reading(monkeypatch):
    """A header that does not say (libsndfile's SF_COUNT_MAX) sets aside one block, not the count,
    and the bound holds as blocks arrive."""
    import soundfile

    from zoo.plugins.audio import audio_seconds_limit, decode_audio

    class Endless:
        samplerate, frames = 8000, (1 << 63) - 1

        def __init__(self, source):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, frames, **kwargs):
            return np.zeros((frames, 1), np.float32)

    monkeypatch.setattr(soundfile, "SoundFile", Endless)
    with audio_seconds_limit(60), pytest.raises(ValueError, match="audio whose header does not give its length is "
                                                                   "longer than the 60 s allowed"):
        decode_audio(b"endless")


def test_zoo_max_audio_seconds_bounds_featurize_and_a_bad_value_is_named(models, monkeypatch):
    monkeypatch.setenv("ZOO_MAX_AUDIO_SECONDS", "600")
    with pytest.warns(RuntimeWarning, match="skipped 1 of 2"):
        rows = models["audio"].featurize([_sounds()["wav"], _flac_declaring(3600)], on_error="skip")
    assert rows.shape == (1, 256)
    (index, why), = models["audio"].last_report.skipped
    assert index == 1 and "audio of 3600.0 s is longer than the 600 s allowed" in why
    monkeypatch.setenv("ZOO_MAX_AUDIO_SECONDS", "ten minutes")
    with pytest.raises(zoo.InputError, match="ZOO_MAX_AUDIO_SECONDS='ten minutes': give the longest audio"):
        models["audio"].featurize([_sounds()["wav"]])


def test_an_image_over_the_pixel_limit_is_refused_before_decoding_even_where_pil_only_warns(monkeypatch):
    from PIL import Image

    from zoo.plugins.vision import decode_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    over = _png(np.zeros((40, 40, 3), np.uint8))  # 1600 pixels: PIL warns (it raises from 2000 on)
    with pytest.raises(ValueError, match="MAX_IMAGE_PIXELS"):
        decode_image(over)
    assert decode_image(_png(np.zeros((20, 20, 3), np.uint8))).size == (20, 20)


# Served: the corpus as a client sends it, through the app zoo serve runs (in-process).

MEDIA = {"vision": "image/png", "image-text": "image/png", "audio": "audio/wav"}
GOOD = {"vision": "rgb png", "image-text": "rgb png", "audio": "wav", "text": "plain"}


def _data_url(media: str, payload: bytes) -> str:
    return f"data:{media};base64," + base64.b64encode(payload).decode()


# What a careful client declares for each payload: its own type where the bytes say, else the
# modality's usual one (the server then refuses bytes that are not what they are declared as).
_MAGIC = [(b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"),
          (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg")]
# Bytes that are no image at all, declared image/png: refused as not being one.
_NOT_PNG = {"empty bytes", "text bytes", "dds of unknown format", "eps"}


def _declared(modality: str, payload: bytes) -> str:
    if payload[8:12] == b"WEBP":
        return "image/webp"
    return next((media for magic, media in _MAGIC if payload.startswith(magic)), MEDIA[modality])


def _silence(seconds: float, rate: int = 8000) -> bytes:
    """A FLAC of silence: 14 KB for ten minutes, which the decoder would spend seconds on."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(int(seconds * rate), np.int16), rate, format="FLAC")
    return buf.getvalue()


def _flac_declaring(seconds: float) -> bytes:
    """A one-second FLAC whose STREAMINFO says it lasts ``seconds``: refused by its header alone."""
    data = bytearray(_silence(1, rate=16000))
    fields = int.from_bytes(data[18:26], "big")  # rate, channels, bits, then 36 bits of total samples
    data[18:26] = ((fields >> 36 << 36) | int(seconds * 16000)).to_bytes(8, "big")
    return bytes(data)


def _served_only(modality: str) -> tuple[dict[str, object], dict[str, str]]:
    """What only a server sees, for ``modality``: (cases as sent, the word each refusal says)."""
    if modality == "text":
        return ({"over --max-text-chars": "x" * 100_001, "a boolean": True, "an object": {"text": "hi", "audio": "x"},
                 "token ids": [101, 2023, 102], "pdf data url": "data:application/pdf;base64,AAAA"},
                {"over --max-text-chars": "--max-text-chars", "a boolean": "is a boolean", "an object": "is an object; it holds one of text, image, video, audio",
                 "token ids": "token ids", "pdf data url": "no modality of this server takes"})
    if modality == "audio":
        return ({"601 s of silence": _data_url("audio/flac", _silence(601)),
                 "an hour by its header": _data_url("audio/flac", _flac_declaring(3600)),
                 "bad base64": "data:audio/wav;base64,@@@@", "an image": _data_url("image/png", _images()["rgb png"])},
                {"601 s of silence": "audio of 601.0 s is longer than the 600 s allowed (zoo serve "
                                     "--max-audio-seconds", "an hour by its header": "audio of 3600.0 s",
                 "bad base64": "does not decode", "an image": "input[1] is an image"})
    cases = {"bad base64": "data:image/png;base64,@@@@", "gif declared as png": _data_url("image/png", _gif())}
    words = {"bad base64": "does not decode", "gif declared as png": "declared as image/png is not a PNG file"}
    if modality == "vision":
        cases["a text"], words["a text"] = "a photo of a cat", "input[1] is a text"
    return cases, words


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="GIF")
    return buf.getvalue()


def _served_corpus(modality: str) -> tuple[dict[str, object], dict[str, str]]:
    """(every case a client can send, as sent; the word each refused one's message holds): bytes
    as data URLs, JSON values as texts, and what only a server sees."""
    corpus = CORPORA[modality]()
    if modality == "text":
        sent = {name: item for name, item in corpus.items() if item is None or isinstance(item, (str, float))}
        refused = {name: REFUSED["text"][name] for name in sent if name in REFUSED["text"]}
        refused.update({"none": "input[1] is null", "number": "input[1] is a number"})  # refused as JSON, by kind
    else:
        sent = {name: _data_url(_declared(modality, item), item) for name, item in corpus.items()
                if isinstance(item, bytes)}
        refused = {name: "not a PNG file" if name in _NOT_PNG and modality != "audio" else REFUSED[modality][name]
                   for name in sent if name in REFUSED[modality]}
    only, words = _served_only(modality)
    return {**sent, **only}, {**refused, **words}


@pytest.mark.slow  # a server per modality; featurize's corpus above stays in the fast tier
@pytest.mark.parametrize("modality", list(CORPORA))
def test_every_bad_item_served_beside_good_requests_fails_only_its_own(models, modality, capsys):
    pytest.importorskip("starlette")
    pytest.importorskip("prometheus_client")
    from starlette.testclient import TestClient

    from zoo.serve._app import create_app

    model, name = models[modality], f"served-{modality}"
    cases, refused = _served_corpus(modality)
    good = cases[GOOD[modality]]
    expected = model.featurize([CORPORA[modality]()[GOOD[modality]]])
    # A gathering waits up to 200 ms for a forward pass's worth: the three requests share a pass.
    with TestClient(create_app({name: model}, max_wait_ms=200)) as client, ThreadPoolExecutor(3) as pool:
        def post(inputs: list[object]) -> object:
            body = json.dumps({"model": name, "input": inputs})  # ASCII: it carries a lone surrogate too
            return client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})

        for case, item in cases.items():
            before, bad, after = pool.map(post, [[good], [good, item], [good]])
            for reply in (before, after):
                assert reply.status_code == 200, (case, reply.text)
                rows = np.array([d["embedding"] for d in reply.json()["data"]], np.float32)
                np.testing.assert_allclose(rows, expected, atol=1e-4, err_msg=case)
            if case in refused:
                error = bad.json()["error"]
                assert 400 <= bad.status_code < 500 and error["param"] == "input[1]", (case, bad.text)
                assert "input[1]" in error["message"] and refused[case] in error["message"], (case, error["message"])
                assert "object at 0x" not in error["message"], error["message"]  # no BytesIO's address
            else:
                assert bad.status_code == 200 and len(bad.json()["data"]) == 2, (case, bad.text)
        assert client.get("/health").json()["status"] == "ok"
    with capsys.disabled():
        print(f"\nserved {modality}: {len(cases)} cases, {len(cases) - len(refused)} embedded, {len(refused)} "
              "refused, each with a 4xx naming input[1] while the requests beside it got their rows")


def test_declared_media_types_hold_their_bytes_and_survive_pickling(minilm_dir):
    import pickle

    from zoo.core._media import MediaBytes

    png = _png(np.zeros((8, 8, 3), np.uint8))
    declared = MediaBytes(png, "IMAGE/PNG")
    again = pickle.loads(pickle.dumps(declared))
    assert type(again) is MediaBytes and again.media_type == "image/png" and bytes(again) == png
    model = zoo.load("efficientnet-lite0", device="cpu")
    np.testing.assert_allclose(model.featurize([declared]), model.featurize([png]), atol=1e-6)
    with pytest.raises(zoo.InputError, match="declared as image/jpeg is not a JPEG file"):
        model.featurize([MediaBytes(png, "image/jpeg")])
