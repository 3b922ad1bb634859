"""`zoo embed`: every input kind, parquet and .npy, provenance, worker decoding, skipping, and
resuming after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import zoo
from zoo.embeddings._embed import embed_to_file
from zoo.embeddings._inputs import open_inputs

TEXTS = [f"sentence number {i} about {'cats' if i % 3 else 'the weather'}" + " and more" * (i % 7)
         for i in range(60)]


def _embeddings(path):
    table = pq.read_table(path)
    return table.column("id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def test_text_file_to_parquet_with_provenance(minilm, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    summary = embed_to_file(minilm, open_inputs(str(src)), out, chunk_size=16, progress=False)
    assert summary.rows == 60 and summary.chunks == 4 and not (tmp_path / "out.parquet.partial").exists()
    ids, X = _embeddings(out)
    assert ids == list(range(60))
    np.testing.assert_allclose(X, minilm.featurize(TEXTS), atol=1e-6)
    schema = pq.read_schema(out)
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    meta = json.loads(schema.metadata[b"zoo"])
    assert meta["model"] == "minilm-l6" and meta["embed_dim"] == 384 and meta["normalize"] is True
    assert meta["sha256"]["model.safetensors"].startswith("53aa5117") and meta["zoo_version"] == zoo.__version__
    assert meta["revision"] == "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_table_column_inputs(minilm, tmp_path, kind):
    rows = [{"id": i, "body": t} for i, t in enumerate(TEXTS[:10])]
    src = tmp_path / f"in.{kind}"
    if kind == "csv":
        src.write_text("id,body\n" + "\n".join(f'{r["id"]},"{r["body"]}"' for r in rows) + "\n")
    elif kind == "jsonl":
        src.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "out.npy"
    summary = embed_to_file(minilm, open_inputs(str(src), column="body"), out, progress=False)
    assert summary.chunks == 1
    np.testing.assert_allclose(np.load(out), minilm.featurize(TEXTS[:10]), atol=1e-6)
    with pytest.raises(zoo.ZooError, match="no column 'nope'|no field 'nope'"):
        embed_to_file(minilm, open_inputs(str(src), column="nope"), tmp_path / "x.npy", progress=False)


@pytest.mark.slow  # the fast tier keeps under two minutes
def test_image_folder_with_worker_processes_and_a_corrupt_file(tmp_path):
    from PIL import Image

    from zoo.plugins.examples import images

    folder = tmp_path / "images"
    folder.mkdir()
    pictures = images(10)
    for i, array in enumerate(pictures):
        Image.fromarray(array).save(folder / f"{i:02d}.png")
    (folder / "05.png").write_bytes(b"not a png")
    model = zoo.load("efficientnet-lite0")
    out = tmp_path / "out.parquet"
    files = open_inputs(str(folder), modality=model.modality)
    with pytest.raises(zoo.InputError, match="05.png"):
        embed_to_file(model, files, tmp_path / "fail.parquet", progress=False, num_workers=2)
    summary = embed_to_file(model, files, out, progress=False, num_workers=2, on_error="skip", chunk_size=4)
    assert [str(i).endswith("05.png") for i, _ in summary.skipped] == [True]
    ids, X = _embeddings(out)
    assert [os.path.basename(i) for i in ids] == [f"{i:02d}.png" for i in range(10) if i != 5]
    expected = model.featurize([folder / f"{i:02d}.png" for i in range(10) if i != 5])
    np.testing.assert_allclose(X, expected, atol=1e-5)
    paced = embed_to_file(model, files, tmp_path / "out.npy", progress=False, on_error="skip", batch_size=2,
                          num_workers=1)
    assert paced.chunks > 1  # the first chunk is one batch per worker, then the pace sets the size
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)


@pytest.mark.slow
def test_resume_after_kill_9_computes_only_what_is_missing(minilm, tmp_path):
    src = tmp_path / "texts.txt"
    texts = [f"{t} (copy {k})" for k in range(10) for t in TEXTS]  # 600 items, 30 chunks of 20
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "zoo", "embed", "minilm-l6", str(src), "-o", str(out), "--chunk-size", "20", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.parquet.partial"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(partial.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(partial.glob("part-*.parquet")))
    assert 3 <= done < 30 and not out.exists()  # a partial run never looks complete
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    kept_chunks = int(again.stdout.split("inputs (")[1].split(" of")[0])  # "resumed: I of N inputs (C of M chunks)"
    assert kept_chunks >= done
    ids, X = _embeddings(out)
    assert ids == list(range(600))
    np.testing.assert_allclose(X, minilm.featurize(texts), atol=1e-5)
    assert not partial.exists()


def test_resume_refuses_other_settings(minilm, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"model": "some-other-model"}))
    with pytest.raises(zoo.ZooError, match="other settings"):
        embed_to_file(minilm, open_inputs(str(src)), out, progress=False)


def _interrupt_at_chunk(model, src, out, monkeypatch, *, at: int):
    """Run ``zoo embed`` in chunks of 16 and stop it (as Ctrl-C would) when chunk ``at`` starts."""
    featurize = type(model).featurize_with_report
    calls = []

    def fails_at_that_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return featurize(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(type(model), "featurize_with_report", fails_at_that_chunk)
        with pytest.raises(KeyboardInterrupt):
            embed_to_file(model, open_inputs(str(src)), out, chunk_size=16, progress=False)


def test_resume_without_chunk_size_keeps_the_interrupted_runs(minilm, tmp_path, monkeypatch):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    _interrupt_at_chunk(minilm, src, out, monkeypatch, at=2)
    summary = embed_to_file(minilm, open_inputs(str(src)), out, progress=False)  # chunks sized by pace now
    assert (summary.chunks_done_before, summary.inputs_done_before) == (1, 16)
    ids, X = _embeddings(out)
    assert ids == list(range(60))
    np.testing.assert_allclose(X, minilm.featurize(TEXTS), atol=1e-6)


def test_chunks_take_about_chunk_seconds_at_the_runs_pace():
    from zoo.embeddings._embed import _ChunkSizer

    sizer = _ChunkSizer(largest=4096, smallest=32, seconds=4.0)
    sizes = []
    for _ in range(6):  # a model that embeds 100 items a second
        sizes.append(sizer.size)
        sizer.record(sizer.size, sizer.size / 100)
    assert sizes == [32, 128, 400, 400, 400, 400]  # grows at most 4x a chunk, then 4 s of work
    sizer.record(400, 400 / 5000)  # far faster: capped by the largest chunk, after growing 4x
    assert sizer.size == 1600
    sizer.record(1600, 1600 / 0.5)  # far slower: never below the smallest
    assert sizer.size == 32
    sizer.record(5, 10.0)  # a short last chunk says little of the pace
    assert sizer.size == 32
    fixed = _ChunkSizer(largest=4096, smallest=32, seconds=4.0, fixed=7)
    fixed.record(7, 100.0)
    assert fixed.size == 7 and fixed.biggest == 7


def test_a_slow_model_commits_a_chunk_every_few_tenths_of_a_second(minilm, tmp_path, monkeypatch):
    """Chunk sizing on a clock the test owns: the model takes 20 ms an item of that clock, so the
    sizes do not depend on how loaded the machine is."""
    import types

    import zoo.embeddings._embed

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    featurize = type(minilm).featurize_with_report
    clock = types.SimpleNamespace(now=0.0)
    clock.perf_counter = lambda: clock.now

    def slow(self, items, **kwargs):  # 20 ms an item
        clock.now += 0.02 * len(items)
        return featurize(self, items, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(type(minilm), "featurize_with_report", slow)
        patched.setattr(zoo.embeddings._embed, "time", clock)
        summary = embed_to_file(minilm, open_inputs(str(src)), out, progress=False, batch_size=4, chunk_seconds=0.2)
    # 0.2 s at 50 items a second: chunks grow from the first batch of 4 to at most 10
    assert 4 < summary.chunk_size <= 10 and summary.chunks >= 6
    np.testing.assert_allclose(_embeddings(out)[1], minilm.featurize(TEXTS), atol=1e-6)


def test_resume_keeps_chunks_of_another_size_and_fills_the_gaps(minilm, tmp_path, monkeypatch):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    partial = tmp_path / "out.parquet.partial"
    _interrupt_at_chunk(minilm, src, out, monkeypatch, at=4)
    (partial / "part-000000000016.parquet").unlink()  # a gap between two kept chunks
    summary = embed_to_file(minilm, open_inputs(str(src)), out, chunk_size=10, progress=False)
    # [0, 16) and [32, 48) kept; [16, 26), [26, 32), [48, 58), [58, 60) embedded
    assert (summary.chunks_done_before, summary.inputs_done_before, summary.chunks) == (2, 32, 6)
    ids, X = _embeddings(out)
    assert ids == list(range(60))
    np.testing.assert_allclose(X, minilm.featurize(TEXTS), atol=1e-6)


@pytest.mark.parametrize(("cores", "cpu", "gpu"), [(1, 0, 0), (2, 1, 1), (8, 4, 7), (32, 4, 16)])
def test_default_decode_workers(monkeypatch, cores, cpu, gpu):
    from zoo.embeddings._embed import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert (default_workers("cpu"), default_workers("cuda:0")) == (cpu, gpu)


# -- hardening: what an adversarial run found --------------------------------------------------


def test_a_lone_carriage_return_stays_inside_its_line(minilm, tmp_path):
    src = tmp_path / "cr.txt"
    src.write_bytes(b"line zero\rstill line zero?\nline one\nline two\n")
    out = tmp_path / "out.parquet"
    summary = embed_to_file(minilm, open_inputs(str(src)), out, progress=False)
    ids, X = _embeddings(out)
    assert summary.rows == 3 and ids == [0, 1, 2]
    np.testing.assert_allclose(X, minilm.featurize(["line zero\rstill line zero?", "line one", "line two"]),
                               atol=1e-6)


def test_a_line_that_is_not_utf8_is_named_and_skippable(minilm, tmp_path, capsys):
    from zoo.cli import main

    src = tmp_path / "mixed.txt"
    src.write_bytes(b"good one\nbad \xff\xfe here\ngood two\n")
    out = tmp_path / "out.npy"
    assert main(["embed", "minilm-l6", str(src), "-o", str(out), "-q"]) == 1
    assert "mixed.txt line 2 is not UTF-8" in capsys.readouterr().err and not out.exists()
    assert main(["embed", "minilm-l6", str(src), "-o", str(out), "-q", "--skip-errors"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 input; all are listed with their reasons in" in err
    np.testing.assert_allclose(np.load(out), minilm.featurize(["good one", "good two"]), atol=1e-6)
    record, = [json.loads(line) for line in (tmp_path / "out.npy.skipped.jsonl").read_text().splitlines()]
    assert record["id"] == 1 and "line 2" in record["reason"]


def test_every_skipped_input_is_listed_beside_the_output(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(30):
        (folder / f"bad{i:02d}.jpg").write_bytes(b"not a jpeg")
    for i in range(5):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(folder / f"good{i}.jpg")
    model = zoo.load("efficientnet-lite0")
    out = tmp_path / "out.parquet"
    summary = embed_to_file(model, open_inputs(str(folder), modality="vision"), out, on_error="skip",
                            progress=False, chunk_size=8)
    assert summary.rows == 5 and len(summary.skipped) == 30
    listed = [json.loads(line) for line in summary.skipped_file.read_text().splitlines()]
    assert sorted(os.path.basename(r["id"]) for r in listed) == [f"bad{i:02d}.jpg" for i in range(30)]
    assert all("cannot identify image file" in r["reason"] for r in listed)


def test_skip_errors_goes_on_past_a_file_whatever_its_decoder_raises(tmp_path, capsys):
    from PIL import Image
    from bad_files import broken_png_chunk

    import pyarrow.parquet

    from zoo.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(folder / "a-good.png")
    (folder / "b-broken.png").write_bytes(broken_png_chunk())  # PIL: SyntaxError
    Image.new("RGB", (32, 32), (0, 200, 0)).save(folder / "c-good.png")
    out = tmp_path / "out.parquet"
    assert main(["embed", "efficientnet-lite0", str(folder), "-o", str(out), "--skip-errors", "-q",
                 "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 input;" in err and "b-broken.png: SyntaxError: broken PNG" in err
    assert len(pyarrow.parquet.read_table(out)) == 2


@pytest.mark.parametrize("case", ["image folder to a text model", "text file to a vision model",
                                  "single image to a text model"])
def test_inputs_of_another_modality_are_refused(tmp_path, case):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (tmp_path / "t.txt").write_text("hello\n")
    spec, modality, message = {
        "image folder to a text model": (folder, "text", "--files-as-text"),
        "text file to a vision model": (tmp_path / "t.txt", "vision", "is a text file, but the model is a vision"),
        "single image to a text model": (folder / "a.png", "text", "but the model is a text model"),
    }[case]
    with pytest.raises(zoo.ZooError, match=message):
        open_inputs(str(spec), modality=modality)


def test_files_read_as_text_when_asked(minilm, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("first note")
    (folder / "b.md").write_text("second note")
    out = tmp_path / "out.parquet"
    embed_to_file(minilm, open_inputs(str(folder), modality="text", files_as_text=True), out, progress=False)
    ids, X = _embeddings(out)
    assert [os.path.basename(i) for i in ids] == ["a.md", "b.md"]
    np.testing.assert_allclose(X, minilm.featurize(["first note", "second note"]), atol=1e-6)


def test_the_output_may_not_be_an_input(minilm, tmp_path):
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a", "b"]}), data)
    before = data.read_bytes()
    with pytest.raises(zoo.ZooError, match="is one of the inputs; writing there would replace your data"):
        embed_to_file(minilm, open_inputs(str(data), column="text"), data, progress=False)
    assert data.read_bytes() == before


def test_an_edit_that_keeps_size_and_mtime_is_recomputed_on_resume(minilm, tmp_path, monkeypatch):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    _interrupt_at_chunk(minilm, src, out, monkeypatch, at=2)
    stat = src.stat()
    edited = TEXTS.copy()
    edited[0] = edited[0].replace("cats", "dogs").replace("weather", "wezther")  # same length
    src.write_text("\n".join(edited) + "\n")
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `touch -r` would
    assert src.stat().st_size == stat.st_size
    summary = embed_to_file(minilm, open_inputs(str(src)), out, chunk_size=16, progress=False)
    assert summary.chunks_done_before == 0  # the first chunk's digest no longer matches
    np.testing.assert_allclose(_embeddings(out)[1], minilm.featurize(edited), atol=1e-6)


def test_a_second_run_to_the_same_output_is_told_another_run_holds_it(minilm, tmp_path, monkeypatch):
    from zoo.embeddings import _embed as embed

    src = tmp_path / "texts.txt"
    src.write_text("a\nb\n")
    out = tmp_path / "out.npy"
    with embed._exclusive(out):
        with pytest.raises(zoo.ZooError, match=r"another zoo embed run is writing .*out.npy"):
            embed_to_file(minilm, open_inputs(str(src)), out, progress=False)
    assert embed_to_file(minilm, open_inputs(str(src)), out, progress=False).rows == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "zoo-home") == ["out.npy", "texts.txt"]


def test_a_full_disk_keeps_the_chunks_and_the_same_command_finishes(minilm, tmp_path, monkeypatch):
    import errno

    from zoo.embeddings import _embed as embed

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.npy"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(embed, "_write_npy", full_disk)
        with pytest.raises(zoo.ZooError, match=r"No space left on device; the 60 of 60 inputs already embedded are kept"):
            embed_to_file(minilm, open_inputs(str(src)), out, chunk_size=16, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    summary = embed_to_file(minilm, open_inputs(str(src)), out, progress=False)
    assert summary.chunks_done_before == 4
    np.testing.assert_allclose(np.load(out), minilm.featurize(TEXTS), atol=1e-6)


def test_each_row_records_the_sha256_of_its_input(minilm, tmp_path):
    import hashlib

    from PIL import Image

    from zoo.embeddings._embedding_file import read_embeddings

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(["café", "hi", "café"]) + "\n", encoding="utf-8")
    embed_to_file(minilm, open_inputs(str(texts)), tmp_path / "t.parquet", progress=False)
    assert read_embeddings(tmp_path / "t.parquet").hashes == [
        hashlib.sha256(t.encode("utf-8")).hexdigest() for t in ["café", "hi", "café"]]

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    model = zoo.load("efficientnet-lite0", device="cpu")
    embed_to_file(model, open_inputs(str(folder), modality="vision"), tmp_path / "i.parquet", progress=False,
                  options=model.embed_options(precision="int8"))  # the hashes survive quantized assembly
    read = read_embeddings(tmp_path / "i.parquet")
    assert read.hashes == [hashlib.sha256((folder / f"{i}.png").read_bytes()).hexdigest() for i in range(2)]
