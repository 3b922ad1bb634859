"""The video modality (zoo.plugins.video): clips made here from synthetic frames with PyAV, sampled
uniformly, embedded by an image-text model's image tower frame by frame and averaged, through
featurize, zoo embed, zoo index, zoo search (by text) and zoo serve; and by transformers video
models (a tiny VideoMAE, ViViT, TimeSformer and X-CLIP) over the frame count each was built for,
equal to transformers called directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.errors import InputError, RegistryError

FRAMES, SIZE = 8, 32


def write_clip(path: Path, frames: np.ndarray, rate: int = 12, codec: str = "mpeg4", start: int = 0,
               options: dict[str, str] | None = None) -> Path:
    """``frames`` ((T, H, W, 3) uint8) encoded by PyAV into ``path``, the first at frame ``start``."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, frame in enumerate(frames):
            encoded = av.VideoFrame.from_ndarray(frame, format="rgb24")
            encoded.pts, encoded.time_base = start + i, Fraction(1, rate)
            container.mux(stream.encode(encoded))
        container.mux(stream.encode())
    return path


def synthetic_frames(seed: int, count: int = 30) -> np.ndarray:
    """A coloured square moving over a background of the seed's own colour."""
    rng = np.random.default_rng(seed)
    frames = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    for t in range(count):
        x = (2 * t) % (SIZE - 8)
        frames[t, 8:16, x:x + 8] = colour
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    made = [write_clip(folder / f"clip{i}.mp4", synthetic_frames(i, 24 + 6 * i), rate=12 + 4 * i) for i in range(3)]
    # timestamps from 3 s on (an excerpt); H.264 with B-frames in Matroska, whose length only the container says
    made.append(write_clip(folder / "clip3.mp4", synthetic_frames(3, 30), start=36))
    made.append(write_clip(folder / "clip4.mkv", synthetic_frames(4, 40), codec="libx264",
                           options={"bf": "2", "g": "12"}))
    return made


def frames_by_pyav(path: Path, count: int = FRAMES) -> np.ndarray:
    """The frames at the centres of ``count`` equal spans of the clip, read with PyAV directly: the
    frame shown at each time (the last whose presentation time is at or before it)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
        first = float(stream.start_time * stream.time_base)
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]  # every frame
    decoded.sort(key=lambda pair: pair[0])
    targets = [first + (i + 0.5) * duration / count for i in range(count)]
    return np.stack([next((img for t, img in reversed(decoded) if t <= target), decoded[0][1]) for target in targets])


def test_a_clip_decodes_to_the_frames_at_uniform_times(clips):
    from zoo.plugins.video import decode_video

    for path in clips:
        clip = decode_video(path)
        assert clip.frames.shape == (FRAMES, SIZE, SIZE, 3) and clip.frames.dtype == np.uint8
        assert np.array_equal(clip.frames, frames_by_pyav(path))
        assert list(clip.times) == sorted(clip.times)
    as_array = decode_video(synthetic_frames(7, 16))
    assert np.array_equal(as_array.frames, synthetic_frames(7, 16)[[1, 3, 5, 7, 9, 11, 13, 15]])


@pytest.fixture(scope="module")
def image_models(open_clip_dir, tmp_path_factory) -> dict[str, str]:
    from tiny_models import hf_clip_folder

    return {"open_clip": str(open_clip_dir), "timm": "efficientnet-lite0",
            "transformers": str(hf_clip_folder(tmp_path_factory.mktemp("hf-clip"), ["a square", "a clip"]))}


@pytest.mark.parametrize("backend", ["open_clip", pytest.param("timm", marks=pytest.mark.slow),
                                     pytest.param("transformers", marks=pytest.mark.slow)])
def test_every_image_model_gets_a_video_tower_averaging_its_frames(image_models, clips, backend):
    model = zoo.load(image_models[backend], device="cpu")
    assert list(model.towers)[-1] == "video" and "vision" in model.towers
    rows = model.featurize([str(p) for p in clips], tower="video", batch_size=2)
    frames = [model.featurize(list(frames_by_pyav(p)), tower="vision") for p in clips]
    mean = np.stack([f.mean(0) for f in frames])  # each frame's row as the image tower gives it, averaged
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True) if model.spec.normalize else mean
    assert rows.shape == (len(clips), model.embed_dim)
    cosines = (rows * expected).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.9999 and np.abs(rows - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    alone = np.concatenate([model.featurize([str(p)], tower="video") for p in clips])
    assert np.abs(alone - rows).max() <= 1e-5  # a row does not depend on its batch
    options = model.embed_options(tower="video").provenance()
    assert options["tower_settings"] == {"frames": 8, "sampling": "uniform", "pool": "mean"}
    assert "tower_settings" not in model.embed_options().provenance()


def test_bad_clips_are_named_before_decoding(open_clip_dir, clips, tmp_path, monkeypatch):
    model = zoo.load(str(open_clip_dir), device="cpu")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(InputError, match=r"broken\.mp4 is not a video PyAV reads") as caught:
        model.featurize([str(clips[0]), str(broken)], tower="video")
    assert caught.value.index == 1
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3"):
        kept = model.featurize([str(clips[0]), str(broken), str(clips[1])], tower="video", on_error="skip")
    assert kept.shape[0] == 2
    monkeypatch.setenv("ZOO_MAX_VIDEO_SECONDS", "1.5")  # clip0 is 2 s long: refused from its header
    with pytest.raises(InputError, match=r"is 2\.0 s long, more than the 1\.5 s"):
        model.featurize([str(clips[0])], tower="video")
    sound = tmp_path / "sound.mkv"  # a container with an audio stream only
    import av

    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    for bad, says in ((np.zeros((4, 8, 8), np.uint8), "is \\(frames, height, width, 3\\) uint8"), (3, "expected a video"),
                      (str(tmp_path / "missing.mp4"), "no such video file"), (str(sound), "holds no video stream")):
        with pytest.raises(InputError, match=says):
            model.featurize([bad], tower="video")


@pytest.mark.slow
def test_embed_index_and_search_clips_by_text(open_clip_dir, clips, tmp_path, capsys):
    from zoo.cli import main

    folder = clips[0].parent
    out = tmp_path / "clips.parquet"
    assert main(["embed", str(open_clip_dir), str(folder), "--tower", "video", "-o", str(out), "-q"]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    provenance = json.loads(table.schema.metadata[b"zoo"])
    assert provenance["tower"] == "video" and provenance["tower_settings"]["frames"] == 8
    model = zoo.load(str(open_clip_dir), device="cpu")
    paths = sorted(str(p) for p in table.column("id").to_pylist())
    rows = dict(zip(table.column("id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))))
    assert np.abs(np.stack([rows[p] for p in paths]) - model.featurize(paths, tower="video")).max() <= 1e-5
    assert main(["index", str(out), "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "a moving square", "-k", "3", "--json"]) == 0
    (found,) = json.loads(capsys.readouterr().out)
    query = model.featurize(["a moving square"], tower="text")[0]
    scores = {p: float(rows[p] @ query / np.linalg.norm(rows[p]) / np.linalg.norm(query)) for p in paths}
    best = sorted(paths, key=lambda p: -scores[p])[:3]
    assert [h["id"] for h in found["hits"]] == best
    with pytest.raises(zoo.ZooError, match="no video tower|has no video tower"):
        zoo.load("minilm-l6", device="cpu").featurize([str(clips[0])], tower="video")


def test_a_modality_over_another_needs_its_tower():
    from zoo.catalog._registry import Modality, Owner, Registry

    registry = Registry()
    with pytest.raises(RegistryError, match="over= .* and tower= .* go together"):
        registry.add_modality(Modality("clips", lambda x: x, "", Owner("test"), over="vision"))


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_zoo_serve_takes_video_data_urls(open_clip_dir, clips):
    import base64

    import httpx
    from test_serve import Server

    model = zoo.load(str(open_clip_dir), device="cpu")
    server = Server(str(open_clip_dir))
    try:
        data = "data:video/mp4;base64," + base64.b64encode(clips[1].read_bytes()).decode()
        answer = server.embed(str(open_clip_dir), [data, "a caption"])
        assert answer.status_code == 200, answer.text
        got = np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)
        assert np.abs(got[0] - model.featurize([str(clips[1])], tower="video")[0]).max() <= 1e-5
        assert np.abs(got[1] - model.featurize(["a caption"], tower="text")[0]).max() <= 1e-5
        bad = server.embed(str(open_clip_dir), ["data:video/mp4;base64," + base64.b64encode(b"nope").decode()])
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0]"
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    finally:
        server.stop()


@pytest.mark.slow
def test_the_conformance_kit_checks_the_video_tower(open_clip_dir):
    from zoo.testing import check_model, format_table

    results = check_model(str(open_clip_dir), strategies=())
    assert any(r.check == "video tower" and r.status == "pass" for r in results), format_table(results)
    assert all(r.status != "fail" for r in results), format_table(results)


@pytest.fixture(scope="module")
def video_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_models import timesformer_folder, videomae_folder, vivit_folder, xclip_folder

    root = tmp_path_factory.mktemp("video-models")
    return {"videomae": videomae_folder(root / "videomae"), "xclip": xclip_folder(root / "xclip"),
            "vivit": vivit_folder(root / "vivit"), "timesformer": timesformer_folder(root / "timesformer")}


def transformers_rows(folder: Path, videos: list[list[np.ndarray]]) -> np.ndarray:
    """The folder's processor and model called directly on the frames: what each video-classification
    head reads (VideoMAE's mean of tokens, ViViT's and TimeSformer's class token), X-CLIP's
    ``get_video_features`` at unit length."""
    import torch
    from transformers import AutoModel, AutoProcessor

    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        if model.config.model_type != "xclip":
            hidden = model(pixel_values=processor(videos, return_tensors="pt")["pixel_values"]).last_hidden_state
            return (hidden.mean(1) if model.config.model_type == "videomae" else hidden[:, 0]).numpy()
        rows = model.get_video_features(pixel_values=processor(videos=videos, return_tensors="pt")["pixel_values"])
        return torch.nn.functional.normalize(rows.pooler_output, dim=-1).numpy()


@pytest.mark.parametrize("name", ["videomae", "xclip", "vivit", "timesformer"])
def test_a_video_model_reads_the_frames_it_was_built_for_as_transformers_does(video_models, clips, name):
    folder = video_models[name]
    model = zoo.load(folder, device="cpu")
    assert model.modality == ("video-text" if name == "xclip" else "video") and model.tower()[0] == "video"
    paths = [str(p) for p in clips]
    rows = model.featurize(paths, batch_size=2)
    expected = transformers_rows(folder, [list(frames_by_pyav(p, 4)) for p in clips])  # its config's num_frames
    cosines = (rows * expected).sum(1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(expected, axis=1)
    assert rows.shape == expected.shape and cosines.min() >= 0.9999 and np.abs(rows - expected).max() <= 1e-5
    alone = np.concatenate([model.featurize([p]) for p in paths])
    assert np.abs(alone - rows).max() <= 1e-5  # a row does not depend on its batch
    assert model.embed_options().provenance()["tower_settings"] == {"frames": 4, "sampling": "uniform"}
    arrays = [synthetic_frames(9, 13), synthetic_frames(10, 3)]  # arrays: 4 frames of 13; of 3, one twice
    assert np.abs(model.featurize(arrays) - transformers_rows(folder, [list(a[[1, 4, 8, 11]]) for a in arrays[:1]]
                                                              + [list(arrays[1][[0, 1, 1, 2]])])).max() <= 1e-5


def test_x_clip_texts_equal_transformers_and_search_its_clips(video_models, clips, tmp_path, capsys):
    import torch
    from tiny_models import XCLIP_TEXTS
    from transformers import AutoModel, AutoProcessor

    from zoo.cli import main

    folder = video_models["xclip"]
    model = zoo.load(folder, device="cpu")
    hf, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        texts = hf.get_text_features(**processor(text=XCLIP_TEXTS, padding=True, return_tensors="pt")).pooler_output
    expected = torch.nn.functional.normalize(texts, dim=-1).numpy()
    assert np.abs(model.featurize_texts(XCLIP_TEXTS, batch_size=2) - expected).max() <= 1e-5
    out = tmp_path / "clips.parquet"
    assert main(["embed", str(folder), str(clips[0].parent), "-o", str(out), "-q"]) == 0
    assert main(["index", str(out), "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), XCLIP_TEXTS[0], "-k", "3", "--json"]) == 0
    (found,) = json.loads(capsys.readouterr().out)
    paths = sorted(str(p) for p in clips)
    scores = model.featurize(paths) @ expected[0]
    assert [h["id"] for h in found["hits"]] == [paths[i] for i in np.argsort(-scores, kind="stable")[:3]]


def test_a_video_model_names_a_bad_clip(video_models, clips, tmp_path):
    model = zoo.load(video_models["videomae"], device="cpu")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match=r"input 1 .*broken.mp4 is not a video PyAV reads"):
        model.featurize([str(clips[0]), str(broken)])
    with pytest.warns(RuntimeWarning, match="skipped 1 of 2 inputs"):
        rows = model.featurize([str(clips[0]), str(broken)], on_error="skip")
    assert rows.shape == (1, model.embed_dim) and model.last_report.skipped[0][0] == 1


def test_a_model_s_own_video_tower_must_say_how_it_reads_a_clip(video_models):
    model = zoo.load(video_models["videomae"], device="cpu")
    with pytest.raises(zoo.PluginError, match=r"its own video tower.*preprocessing\['video'\] \(its frames"):
        zoo.Model(model.encoder, spec=model.spec.replace(preprocessing={}))


@pytest.fixture(scope="module")
def vlm_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Qwen2-VL saved by sentence-transformers, whose pipeline takes videos: its video
    processor taking the frames it is given, and one choosing them itself (2 a second)."""
    from tiny_models import vlm_st_folder

    root = tmp_path_factory.mktemp("vlm-video")
    return {"given": vlm_st_folder(root / "given"), "sampled": vlm_st_folder(root / "sampled", samples_frames=True)}


def every_frame(path: Path) -> tuple[np.ndarray, dict[str, float]]:
    """Every frame of the clip in presentation order, with the metadata a decoder of the whole clip reports."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = sorted(((float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(stream)),
                         key=lambda pair: pair[0])
        rate = float(stream.average_rate)
    return np.stack([frame for _, frame in decoded]), {"fps": rate, "total_num_frames": len(decoded),
                                                       "duration": len(decoded) / rate}


def test_a_pipeline_that_takes_videos_reads_clips_as_sentence_transformers_does(vlm_folders, clips, tmp_path):
    from sentence_transformers import SentenceTransformer

    paths = [str(p) for p in clips]
    whole = [dict(zip(("array", "video_metadata"), every_frame(p))) for p in clips]  # as a decoder of the clip gives it
    # a processor that samples no frames: every frame of the clip, as encode takes a clip
    given = zoo.load(vlm_folders["given"], device="cpu")
    assert given.embed_options(tower="video").provenance()["tower_settings"] == {
        "sampling": "processor", "sampler": "Qwen2VLVideoProcessor", "do_sample_frames": False}
    st = SentenceTransformer(str(vlm_folders["given"]), device="cpu", local_files_only=True)
    rows = given.featurize(paths, tower="video", batch_size=2)
    assert np.abs(rows - st.encode(whole)).max() <= 1e-5
    assert np.abs(np.concatenate([given.featurize([p], tower="video") for p in paths]) - rows).max() <= 1e-5
    frames = synthetic_frames(1, 12)
    assert np.abs(given.featurize([frames], tower="video") - st.encode([frames])).max() <= 1e-5
    # a processor that chooses the frames: its own choice from the header, as from the whole clip with its metadata
    sampled = zoo.load(vlm_folders["sampled"], device="cpu")
    assert sampled.embed_options(tower="video").provenance()["tower_settings"] == {
        "sampling": "processor", "sampler": "Qwen2VLVideoProcessor", "do_sample_frames": True, "fps": 2.0,
        "min_frames": 2, "max_frames": 8, "temporal_patch_size": 2}
    st = SentenceTransformer(str(vlm_folders["sampled"]), device="cpu", local_files_only=True)
    assert np.abs(sampled.featurize(paths, tower="video", batch_size=2) - st.encode(whole)).max() <= 1e-5
    with pytest.raises(InputError, match="input 0: .*says no frame rate.* samples 2 frames a second"):
        sampled.featurize([frames], tower="video")
    # a clip the processor's own sampler refuses (one frame) is named, and skipped without the others
    single = write_clip(tmp_path / "single.mp4", synthetic_frames(3, 1))
    refused = r"input 1 .*single\.mp4: Qwen2VLVideoProcessor\.sample_frames chooses no frames from its 1"
    with pytest.raises(InputError, match=refused):
        sampled.featurize([paths[0], str(single)], tower="video")
    with pytest.warns(RuntimeWarning, match="skipped 1 of 2"):
        kept = sampled.featurize([paths[0], str(single)], tower="video", on_error="skip")
    assert np.abs(kept - st.encode(whole[:1])).max() <= 1e-5


def test_zoo_serve_reads_clips_under_its_media_roots_and_nowhere_else(open_clip_dir, clips, tmp_path):
    from starlette.testclient import TestClient

    from zoo.serve._app import create_app

    model = zoo.load(str(open_clip_dir), device="cpu")
    root, outside = tmp_path / "media", tmp_path / "media-not"  # a sibling that shares the root's prefix
    root.mkdir()
    outside.mkdir()
    clip = write_clip(root / "a clip é.mp4", synthetic_frames(2, 24))
    secret = write_clip(outside / "secret.mp4", synthetic_frames(5, 12))
    (root / "link.mp4").symlink_to(secret)
    (root / "notes.txt").write_text("not a clip")
    expected = model.featurize([str(clip)], tower="video")[0]
    with TestClient(create_app({"clip": model}, media_roots=[root])) as client:
        for named in (str(clip), clip.as_uri(), f"file://localhost{clip}"):
            answer = client.post("/v1/embeddings", json={"model": "clip", "input": [{"video": named}, "a caption"]})
            assert answer.status_code == 200, answer.text
            assert np.abs(np.array(answer.json()["data"][0]["embedding"]) - expected).max() <= 1e-5
        for bad, says in ((str(secret), "outside the folders this server reads"), (str(root / "link.mp4"), "outside"),
                          (str(root / ".." / "outside" / "secret.mp4"), "outside"), ("clip.mp4", "not an absolute"),
                          (str(root / "none.mp4"), "names no file"), (str(root / "notes.txt"), "does not read as video"),
                          (f"{root}/x\u0000.mp4", "not an absolute path"), (f"file://evil.example{clip}", "of this host"),
                          ("https://example.com/a.mp4", "not an absolute path"), (str(root / ("x" * 5000 + ".mp4")), "cannot be read")):
            answer = client.post("/v1/embeddings", json={"model": "clip", "input": ["a caption", {"video": bad}]})
            assert answer.status_code == 400 and says in answer.json()["error"]["message"], (bad, answer.text)
            assert answer.json()["error"]["param"] == "input[1]"
        lookalike = "data:image/png;base64,iVBORw0KGgo="  # a text part is taken as it is, never as an image
        answer = client.post("/v1/embeddings", json={"model": "clip", "input": [{"text": lookalike}]})
        assert np.abs(np.array(answer.json()["data"][0]["embedding"]) - model.featurize([lookalike], tower="text")[0]
                      ).max() <= 1e-5
        combined = client.post("/v1/embeddings", json={"model": "clip", "input": [{"text": "a", "image": str(clip)}]})
        assert combined.status_code == 400 and "always a data URL" in combined.json()["error"]["message"]
        assert client.get("/health").json()["status"] == "ok"
    with TestClient(create_app({"clip": model})) as client:
        answer = client.post("/v1/embeddings", json={"model": "clip", "input": [{"video": str(clip)}]})
        assert answer.status_code == 400 and "reads no files" in answer.json()["error"]["message"]


@pytest.mark.parametrize("name", ["videomae", "xclip"])
def test_the_conformance_kit_passes_on_a_video_model(video_models, name, tmp_path):
    from zoo.testing import check_model, format_table

    results = check_model(str(video_models[name]), workdir=tmp_path)
    assert all(r.status != "fail" for r in results), format_table(results)
    assert any(r.check == "bad item named" and r.status == "pass" for r in results), format_table(results)
