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
from zoo.embed import embed_to_file
from zoo.inputs import open_inputs

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
    assert summary.chunk_size == 4096  # the default for text models
    np.testing.assert_allclose(np.load(out), minilm.featurize(TEXTS[:10]), atol=1e-6)
    with pytest.raises(zoo.ZooError, match="no column 'nope'|no field 'nope'"):
        embed_to_file(minilm, open_inputs(str(src), column="nope"), tmp_path / "x.npy", progress=False)


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
    with pytest.raises(zoo.InputError, match="05.png"):
        embed_to_file(model, open_inputs(str(folder)), tmp_path / "fail.parquet", progress=False, num_workers=2)
    summary = embed_to_file(model, open_inputs(str(folder)), out, progress=False, num_workers=2, on_error="skip",
                            chunk_size=4)
    assert [str(i).endswith("05.png") for i, _ in summary.skipped] == [True]
    ids, X = _embeddings(out)
    assert [os.path.basename(i) for i in ids] == [f"{i:02d}.png" for i in range(10) if i != 5]
    expected = model.featurize([folder / f"{i:02d}.png" for i in range(10) if i != 5])
    np.testing.assert_allclose(X, expected, atol=1e-5)
    default = embed_to_file(model, open_inputs(str(folder)), tmp_path / "out.npy", progress=False, on_error="skip")
    assert default.chunk_size == 512  # images cost more per item: smaller parts, less lost to a kill
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)
    wide = embed_to_file(model, open_inputs(str(folder)), tmp_path / "wide.npy", progress=False, on_error="skip",
                         batch_size=64, num_workers=2)
    assert wide.chunk_size == 8 * 64 * 2  # each worker, started afresh per chunk, gets several batches
    np.testing.assert_allclose(np.load(tmp_path / "wide.npy"), expected, atol=1e-5)


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
    resumed = int(again.stdout.split("resumed: ")[1].split(" of")[0])
    assert resumed >= done
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


def test_resume_without_chunk_size_keeps_the_interrupted_runs(minilm, tmp_path, monkeypatch):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    featurize = type(minilm).featurize
    calls = []

    def fails_on_the_second_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return featurize(self, *args, **kwargs)

    monkeypatch.setattr(type(minilm), "featurize", fails_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        embed_to_file(minilm, open_inputs(str(src)), out, chunk_size=16, progress=False)
    monkeypatch.undo()
    summary = embed_to_file(minilm, open_inputs(str(src)), out, progress=False)  # as after an upgrade
    assert (summary.chunk_size, summary.chunks, summary.chunks_done_before) == (16, 4, 1)
    ids, X = _embeddings(out)
    assert ids == list(range(60))
    np.testing.assert_allclose(X, minilm.featurize(TEXTS), atol=1e-6)


@pytest.mark.parametrize(("cores", "cpu", "gpu"), [(1, 0, 0), (2, 1, 1), (8, 4, 7), (32, 4, 16)])
def test_default_decode_workers(monkeypatch, cores, cpu, gpu):
    from zoo.embed import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert (default_workers("cpu"), default_workers("cuda:0")) == (cpu, gpu)
