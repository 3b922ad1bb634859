"""runtime="onnx" / "openvino": the frozen forward pass exported from zoo's verified weights,
cached under ZOO_HOME and checked against the backends called directly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.core import _compiled as compiled

pytest.importorskip("onnxruntime")


def _bench_datasets():
    """bench/bench_inputs.py (Debian's fortunes, the real corpus here), under a name of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_bench_datasets",
                                                  Path(__file__).parent.parent / "bench" / "bench_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """Real text of every length: fortunes when installed, else sentences of 1 to 120 words."""
    texts = _bench_datasets().fortunes(600) if Path("/usr/share/games/fortunes").is_dir() else []
    return texts or [" ".join(f"word{j}" for j in range(1 + (i * 37) % 120)) for i in range(600)]


@pytest.fixture(scope="module")
def sentence_transformers_rows(minilm_dir, corpus):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu")
    return reference.encode(corpus, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def _count_exports(monkeypatch) -> list[int]:
    """A list that grows by one for each ONNX export zoo makes from now on."""
    exported: list[int] = []
    real_export = compiled._onnx_export
    monkeypatch.setattr(compiled, "_onnx_export", lambda *a, **k: exported.append(1) or real_export(*a, **k))
    return exported


@pytest.mark.slow  # 600 texts, three batch sizes, two runtimes
@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_text_rows_equal_sentence_transformers_on_every_item(runtime, corpus, sentence_transformers_rows):
    pytest.importorskip("onnxruntime" if runtime == "onnx" else "openvino")
    model = zoo.load("minilm-l6", device="cpu", runtime=runtime)
    assert model.runtime == runtime
    for batch_size in (1, 7, 32):  # no padding, a little, and the bench's batches of mixed lengths
        rows = model.featurize(corpus, batch_size=batch_size, progress=False)
        assert rows.dtype == np.float32 and rows.shape == (len(corpus), 384)
        assert _cosines(rows, sentence_transformers_rows).min() >= 0.9999


@pytest.mark.slow
def test_image_rows_equal_timm_called_directly():
    import torch
    from PIL import Image
    from skimage import data as skimage_data
    from test_vision import _timm_direct_lite0

    model, transform = _timm_direct_lite0()
    pictures = [Image.fromarray(a) for a in (skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket(),
                                             skimage_data.astronaut())]
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(torch.stack([transform(p) for p in pictures])),
                                      pre_logits=True).numpy()
    ours = zoo.load("efficientnet-lite0", device="cpu", runtime="onnx")
    for batch_size in (1, 3):
        rows = ours.featurize(pictures, batch_size=batch_size)
        assert _cosines(rows, expected).min() >= 0.9999
        assert np.abs(rows - expected).max() < 1e-3


def _exports(home: Path) -> list[Path]:
    return sorted(p for p in (home / "compiled").iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_an_export_is_reused_and_a_corrupt_or_stale_one_rebuilt(isolated_zoo, monkeypatch, tiny_bert_dir):
    first = zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    folder, = _exports(isolated_zoo)
    record = json.loads((folder / "export.json").read_text())
    assert record["key"]["opset"] == compiled.OPSET and record["key"]["zoo"] == zoo.__version__
    assert set(record["sha256"]) == {"model.onnx", "model.fused.onnx"}
    rows = first.featurize(["a text", "another, longer text"])

    exported = _count_exports(monkeypatch)
    zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    assert exported == []  # the cached export, its sha256 checked
    fused = folder / "model.fused.onnx"
    data = bytearray(fused.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    fused.write_bytes(bytes(data))
    again = zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    assert exported == [1]  # rebuilt, not trusted
    np.testing.assert_allclose(again.featurize(["a text", "another, longer text"]), rows, atol=1e-6)
    monkeypatch.setattr(zoo, "__version__", "99.0")
    monkeypatch.setattr(compiled, "__version__", "99.0")
    zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    assert exported == [1, 1] and len(_exports(isolated_zoo)) == 2  # another zoo: another export


@pytest.mark.slow
def test_a_trace_that_bakes_in_the_mask_is_refused(tiny_bert_dir, monkeypatch):
    """An export that ignores the attention mask (as a trace of an all-ones mask could) gives the
    traced batch right but padded batches wrong: the parity check must stop it."""
    import torch

    class IgnoresTheMask(compiled._Forward):
        def module(self):
            inner, names = super().module(), self.names

            class Traced(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.inner = inner

                def forward(self, *tensors):
                    return self.inner(*(torch.ones_like(t) if name == "attention_mask" else t
                                        for name, t in zip(names, tensors)))

            return Traced()

    monkeypatch.setattr(compiled, "_Forward", IgnoresTheMask)
    with pytest.raises(zoo.ZooError, match=r"does not give PyTorch's rows: lowest cosine .*runtime='torch'"):
        zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")


def test_runtime_choices_and_what_they_do_not_run(monkeypatch, tiny_bert_dir):
    with pytest.raises(ValueError, match="unknown runtime 'onxx'.*did you mean 'onnx'"):
        zoo.load(tiny_bert_dir, runtime="onxx")
    monkeypatch.setenv("ZOO_RUNTIME", "onnx")
    model = zoo.load(tiny_bert_dir, device="cpu")
    assert model.runtime == "onnx"
    with pytest.raises(zoo.UnsupportedOptionError, match="layer= runs on PyTorch.*runtime='torch'"):
        model.featurize(["a text"], layer=-2)
    assert zoo.load(tiny_bert_dir, device="cpu", runtime="torch").runtime == "torch"


def test_a_backend_without_an_export_says_which_ones_have_one(monkeypatch):
    with pytest.raises(zoo.UnsupportedOptionError, match="ge2e-speaker .*runs on PyTorch only; runtime='onnx'"):
        zoo.load("ge2e-speaker", device="cpu", runtime="onnx")
    monkeypatch.setenv("ZOO_RUNTIME", "onnx")  # a default for every load: this one still loads, on PyTorch
    with pytest.warns(RuntimeWarning, match="ZOO_RUNTIME=onnx does not apply here.*ge2e-speaker runs on PyTorch"):
        assert zoo.load("ge2e-speaker").runtime == "torch"


@pytest.mark.slow
def test_zoo_embed_on_onnx_writes_the_same_rows(tmp_path, minilm, corpus):
    from zoo.cli import main

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(t.replace("\n", " ") for t in corpus[:64]) + "\n")
    out = tmp_path / "out.npy"
    assert main(["embed", "minilm-l6", str(src), "-o", str(out), "--runtime", "onnx", "-q"]) == 0
    expected = minilm.featurize([t.replace("\n", " ") for t in corpus[:64]])
    assert _cosines(np.load(out), expected).min() >= 0.9999


def test_zoo_cache_lists_and_removes_exports(isolated_zoo, tiny_bert_dir, capsys):
    from zoo.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the plain folder's undeclared pooling
        model = zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    folder, = _exports(isolated_zoo)
    assert main(["cache", "list"]) == 0
    listed = capsys.readouterr().out
    assert "export" in listed and model.name in listed and "the cache is empty" not in listed
    assert main(["cache", "remove", str(tiny_bert_dir)]) == 0
    assert f"removed export {folder}" in capsys.readouterr().out and not folder.exists()


def _rewrite_row_in_place(path: Path, tensor_suffix: str, row: int, values: np.ndarray) -> None:
    """Overwrite one row of a safetensors tensor inside the file, keeping its size, inode and
    mtime (as `cp -p` of same-sized weights over it would): the stat-keyed hash memo cannot tell."""
    import os
    import struct

    st = path.stat()
    with open(path, "r+b") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
        name = next(n for n in header if n.endswith(tensor_suffix))
        begin, _ = header[name]["data_offsets"]
        width = header[name]["shape"][1]
        fh.seek(8 + length + begin + row * width * 4)
        fh.write(values.astype("<f4").tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (st.st_size, st.st_ino, st.st_mtime_ns)


@pytest.mark.slow
def test_an_export_of_other_weights_under_the_same_name_is_rebuilt(isolated_zoo, tiny_bert_dir, tmp_path,
                                                                   monkeypatch, capsys):
    """The weights change under the same folder name and the same file stat, in the row of a token
    the parity batches never use: only the record of the weights the export was traced from can
    tell the cached export is of other weights."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, folder)
    zoo.load(folder, device="cpu", runtime="onnx")
    assert f"exporting {folder} for runtime='onnx' (once; cached after)" in capsys.readouterr().err
    token = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("zebra")
    plan = zoo.load(folder, device="cpu").encoder.export_plan()
    assert all(token not in batch["input_ids"] for batch in plan.examples)
    assert "exporting" not in capsys.readouterr().err  # the cached export: nothing to say

    _rewrite_row_in_place(folder / "model.safetensors", "word_embeddings.weight", token,
                          np.random.default_rng(0).normal(0, 3, size=32))
    exported = _count_exports(monkeypatch)
    again = zoo.load(folder, device="cpu", runtime="onnx")
    assert exported == [1]
    texts = ["a zebra", "no stripes here"]
    np.testing.assert_allclose(again.featurize(texts), zoo.load(folder, device="cpu").featurize(texts), atol=1e-5)


def _temporary_exports() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("zoo-export-*")}


@pytest.mark.slow
def test_a_compiled_folder_that_cannot_be_written_exports_to_a_temporary_one(isolated_zoo, tiny_bert_dir, capsys):
    """``compiled`` is a file, so nothing can be made under it (a real ENOTDIR / EEXIST from the
    kernel, as a read-only folder gives EROFS): the export is made elsewhere, with a warning
    naming the folder, and runs; no raw OSError."""
    isolated_zoo.mkdir(parents=True, exist_ok=True)
    (isolated_zoo / "compiled").write_text("not a folder")
    before = _temporary_exports()
    with pytest.warns(RuntimeWarning, match=rf"{isolated_zoo / 'compiled'} cannot be written .*for this process "
                                            r"only, in a temporary folder.*set ZOO_HOME"):
        model = zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    assert model.runtime == "onnx" and (isolated_zoo / "compiled").read_text() == "not a folder"
    assert "(for this process only)" in capsys.readouterr().err
    assert _temporary_exports() == before  # the session holds the graph; the folder is gone
    texts = ["a text", "another, longer text"]
    np.testing.assert_allclose(model.featurize(texts), zoo.load(tiny_bert_dir, device="cpu").featurize(texts),
                               atol=1e-5)


def test_a_valid_export_is_used_where_its_lock_cannot_be_written(isolated_zoo, tiny_bert_dir, monkeypatch):
    """``locks`` replaced by a file: no lock can be taken in this ZOO_HOME; the export already there
    still checks out and is used, without a warning and without exporting again."""
    import shutil

    zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    shutil.rmtree(isolated_zoo / "locks")
    (isolated_zoo / "locks").write_text("not a folder")
    exported = _count_exports(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    assert exported == [] and model.runtime == "onnx"


@pytest.fixture
def read_only():
    """Make a folder read-only as a read-only filesystem is: chmod for a user, a read-only bind
    mount for root (whom chmod does not stop). Skips where neither can be done."""
    import os
    import subprocess

    mounted, changed = [], []

    def make(folder: Path) -> None:
        if os.geteuid() != 0:
            for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
                changed.append((path, path.stat().st_mode))
                path.chmod(0o555)
            return
        done = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
        if done:
            mounted.append(folder)
            done = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0
        if not done:
            pytest.skip("root without the right to mount: no way to make a folder read-only here")

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)
    for path, mode in reversed(changed):
        path.chmod(mode)


@pytest.mark.slow
def test_on_a_read_only_zoo_home_a_valid_export_is_used_and_a_missing_one_made_elsewhere(
        isolated_zoo, tiny_bert_dir, tmp_path, read_only, monkeypatch):
    import shutil

    zoo.load(tiny_bert_dir, device="cpu", runtime="onnx")
    read_only(isolated_zoo)
    with pytest.raises(OSError):  # truly read-only
        (isolated_zoo / "probe").write_text("")
    exported = _count_exports(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert zoo.load(tiny_bert_dir, device="cpu", runtime="onnx").runtime == "onnx"
    assert exported == []
    other = tmp_path / "other-model"
    shutil.copytree(tiny_bert_dir, other)
    with pytest.warns(RuntimeWarning, match=rf"{isolated_zoo} cannot be written .*Read-only file system|"
                                            rf"{isolated_zoo} cannot be written .*Permission denied"):
        model = zoo.load(other, device="cpu", runtime="onnx")
    assert exported == [1]
    texts = ["a text", "another, longer text"]
    np.testing.assert_allclose(model.featurize(texts), zoo.load(other, device="cpu").featurize(texts), atol=1e-5)
