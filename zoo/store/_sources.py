"""Turn a :class:`~zoo.catalog._spec.ModelSpec`'s sources into a verified folder of files on this machine.

Sources are tried in two passes: first every source that needs no network (an installed package,
a local path, a hub snapshot or URL already in a cache), then, unless offline, the network sources
in the spec's order. So a model that is on this machine loads without a socket being opened,
whatever order the catalogue lists its sources in. A spec that pins nothing (an ``hf:org/name@commit``
name) is also served, before any socket, from the files of a catalogue or installed model that names
the same repository at the same commit and pins their sha256 (:func:`same_commit_files`).

When the hub does not answer, huggingface_hub's line per retry is held back and the retries are
reported in one warning per call (:func:`hub_retries_in_one_line`).

Every file the spec pins a sha256 for is verified before the folder is returned. Files zoo
downloaded are evicted on mismatch; files it does not own (a package's, a user's) are reported and
left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from zoo.catalog._registry import get_registry
from zoo.catalog._spec import ModelSpec, Source
from zoo.errors import IntegrityError, OfflineError, SourceError, ZooError

from ._atomic import atomic_path
from ._installed import entries, installed_files
from ._integrity import verify_file
from ._model_files import ModelFiles
from ._safe_paths import file_in
from ._settings import offline, offline_reason, zoo_home

# What a transformers-style repo needs to load, when the spec does not list its files.
DEFAULT_HUB_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
    "*merges*",
    "artifact.metadata",  # a Stanford-NLP ColBERT's lengths, markers and skiplist
)
# Older repos ship only pickle weights; transformers reads them with torch.load(weights_only=True).
_PICKLE_WEIGHTS = ("pytorch_model*.bin", "open_clip_pytorch_model.bin")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Where huggingface_hub logs a line per retry of an HTTP call (its backoff loops).
_HUB_RETRY_LOGGERS = ("huggingface_hub.utils._http", "huggingface_hub.hf_api")


def hub_cache_dir(home: Path | None = None) -> Path:
    """Where zoo's own Hugging Face Hub downloads live (the HF cache layout, under ``ZOO_HOME``)."""
    return (home or zoo_home()) / "hub"


def url_cache_dir(home: Path | None = None) -> Path:
    return (home or zoo_home()) / "url"


def provide_files(spec: ModelSpec, *, cache_dir: Path | None = None, network: bool | None = None,
                  use_memo: bool = True) -> ModelFiles:
    """zoo's own source resolution: find or download ``spec``'s files and verify them.

    ``cache_dir`` is the cache root (default ``ZOO_HOME``) that installed bundles, hub snapshots and
    URL downloads live under. Raises :class:`SourceError` naming every source tried when none works
    (:class:`OfflineError` when offline mode stopped a download).
    """
    if not spec.sources:
        raise SourceError(f"model {spec.name!r} has no sources to load its files from")
    home = cache_dir or zoo_home()
    allow_network = (not offline()) if network is None else network
    tried: list[str] = []
    unpacked = installed_files(spec, home=home, use_memo=use_memo)  # a bundle unpacked into the cache
    if unpacked is not None:
        return unpacked
    for source in spec.sources:
        root = _local_root(spec, source, tried, home)
        if root is None:
            continue
        try:
            return verify_files(spec, source, root, use_memo=use_memo)
        except SourceError as exc:  # incomplete copy: another source may have it all
            tried.append(str(exc))
    twin = _same_commit_copy(spec, home, tried)
    if twin is not None:
        return twin
    network_sources = [s for s in spec.sources if s.needs_network]
    if network_sources and not allow_network:
        needed = ", ".join(s.describe() for s in network_sources)
        raise OfflineError(
            f"{offline_reason()} and model {spec.name!r} is not on this machine; it would need {needed}. "
            + _tried_text(tried)
            + f" Run `zoo pull {spec.name}` where there is network, or unpack a bundle into ZOO_HOME."
        )
    for source in network_sources:
        try:
            root = _download(spec, source, home)
        except IntegrityError:
            raise
        except Exception as exc:  # network and server errors: try the next source
            tried.append(f"{source.describe()}: {type(exc).__name__}: {_first_line(exc)}")
            continue
        return verify_files(spec, source, root, use_memo=use_memo)
    raise SourceError(f"no source could provide model {spec.name!r}. {_tried_text(tried)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _tried_text(tried: list[str]) -> str:
    if not tried:
        return ""
    return "Tried: " + "; ".join(tried) + "."


def _owned(root: Path) -> bool:
    try:
        root.resolve().relative_to(zoo_home().resolve())
    except ValueError:
        return False
    return True


def verify_files(spec: ModelSpec, source: Source, root: Path, *, use_memo: bool = True) -> ModelFiles:
    """Check every file ``spec`` pins a sha256 for under ``root``.

    A missing file raises :class:`SourceError` (this copy is incomplete); a wrong hash raises
    :class:`~zoo.errors.IntegrityError`, after deleting the file when it lies in zoo's cache.
    """
    owned = _owned(root)
    checked = []
    for name, expected in spec.sha256.items():
        path = file_in(root, name, where=f"model {spec.name!r}")
        if not path.exists():
            raise SourceError(f"{source.describe()} has no file {name!r} that model {spec.name!r} pins")
        verify_file(path, expected, evict=owned, use_memo=use_memo, label=f"{path} (model {spec.name!r})")
        checked.append(name)
    return ModelFiles(spec=spec, root=root, source=source, verified=tuple(checked), single=_single_file(source))


def _single_file(source: Source) -> str | None:
    """The file name when ``source`` names one file rather than a folder."""
    if source.kind == "url":
        return url_dest(source).name
    if source.kind == "pkg":
        path = _package_path(source)
    elif source.kind == "path":
        path = Path(source.location).expanduser()
    else:
        return None
    return path.name if path is not None and path.is_file() else None


# --- sources on this machine -------------------------------------------------------------------


def _local_root(spec: ModelSpec, source: Source, tried: list[str], home: Path) -> Path | None:
    if source.kind == "pkg":
        return _package_root(spec, source, tried)
    if source.kind == "path":
        path = Path(source.location).expanduser()
        if path.exists():
            return path if path.is_dir() else path.parent
        tried.append(f"{source.describe()}: no such file or folder")
        return None
    if source.kind == "hub":
        return _hub_cached(spec, source, home)
    if source.kind == "url":
        dest = url_dest(source, home)
        return dest.parent if dest.exists() else None
    return None


def _package_path(source: Source) -> Path | None:
    """Where a ``pkg`` source points inside its installed distribution (None if not installed)."""
    import_name, _, rel = source.location.rstrip("/").partition("/")
    try:
        # find_spec locates the package without running its __init__.
        found = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        return None
    base = Path(next(iter(found.submodule_search_locations)))
    return base / rel if rel else base


def _package_root(spec: ModelSpec, source: Source, tried: list[str]) -> Path | None:
    path = _package_path(source)
    if path is None:
        import_name = source.location.partition("/")[0]
        dist = source.dist or import_name.replace("_", "-")
        tried.append(f"{source.describe()}: package not installed (pip install {dist})")
        return None
    if not path.exists():
        tried.append(f"{source.describe()}: {path} does not exist")
        return None
    return path if path.is_dir() else path.parent


def _hub_patterns(spec: ModelSpec) -> list[str]:
    files = spec.config.get("files")
    if files:
        return list(files)
    if spec.sha256:
        return list(spec.sha256)
    return list(DEFAULT_HUB_PATTERNS)


def _hub_cached(spec: ModelSpec, source: Source, home: Path) -> Path | None:
    """The snapshot folder if zoo's or the user's Hugging Face cache holds every needed file."""
    from huggingface_hub import constants, snapshot_download

    for cache_dir in (hub_cache_dir(home), Path(constants.HF_HUB_CACHE)):
        if not cache_dir.exists():
            continue
        try:
            folder = snapshot_download(
                source.location,
                revision=source.revision,
                cache_dir=cache_dir,
                allow_patterns=_hub_patterns(spec),
                local_files_only=True,
            )
        except Exception:  # not cached (huggingface_hub raises several kinds here)
            continue
        if _complete(spec, Path(folder)):
            return Path(folder)
    return None


def _complete(spec: ModelSpec, folder: Path) -> bool:
    """Whether a cached snapshot holds every pinned file; with no pins, at least some weights
    (a snapshot may hold only the config.json that ``zoo info`` fetched)."""
    if spec.sha256:
        return all((folder / name).exists() for name in spec.sha256)
    weights = ("*.safetensors", *_PICKLE_WEIGHTS, "*.pt", "*.pth")
    return any(next(folder.glob(pattern), None) is not None for pattern in weights)


def hub_file(repo: str, filename: str, revision: str | None, *, network: bool | None = None) -> Path | None:
    """One small file of a hub repository (a ``config.json``): from zoo's or the user's Hugging
    Face cache, else downloaded into zoo's when the network is allowed; None when neither can."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    for cache_dir in (hub_cache_dir(), Path(constants.HF_HUB_CACHE)):
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(found, str):
            return Path(found)
    twin = same_commit_files(repo, revision)
    if twin is not None and filename in twin.verified:
        return twin.path(filename)
    if not ((not offline()) if network is None else network):
        return None
    try:
        with hub_retries_in_one_line(f"{filename} of {repo}@{revision or 'main'}"):
            return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hub_cache_dir(),
                                        endpoint=os.environ.get("HF_ENDPOINT") or None))
    except Exception:  # no such repo or file, no network: the caller says what is unknown
        return None


# --- the same hub commit, already on this machine ----------------------------------------------


def _same_commit_copy(spec: ModelSpec, home: Path, tried: list[str]) -> ModelFiles | None:
    """For a spec that pins no sha256 (an ``hf:`` name), the verified files of another model that
    is the same hub repository at the same commit and is on this machine already."""
    if spec.sha256:  # a spec with pins is checked against them, not against another model's
        return None
    for source in spec.sources:
        if source.kind != "hub":
            continue
        twin = same_commit_files(source.location, source.revision, home=home, tried=tried)
        if twin is not None:  # with the pins it was verified against, so `zoo verify` checks them again
            return ModelFiles(spec=spec.replace(sha256=dict(twin.spec.sha256)), root=twin.root, source=twin.source,
                              verified=twin.verified, single=twin.single)
    return None


def same_commit_files(repo: str, revision: str | None, *, home: Path | None = None,
                      tried: list[str] | None = None) -> ModelFiles | None:
    """Files already on this machine that are hub ``repo`` at commit ``revision``, found and
    verified without the network; None when there are none.

    A catalogue model, or a model installed from a bundle, that lists ``repo`` at this commit among
    its sources and pins its files' sha256 says which files that commit holds; its other sources
    (an installed package, a folder, the installed-models store, a cache) are tried, offline, and
    every pinned file is checked. Only a full 40-character commit counts: a branch or tag may have
    moved since the catalogue was written, and offline there is no telling."""
    if not revision or not _COMMIT.fullmatch(revision.lower()):
        return None
    for twin in _specs_at_commit(repo, revision.lower()):
        try:
            return provide_files(twin, cache_dir=home, network=False)
        except OfflineError:  # not on this machine either: the name's own sources say what is needed
            continue
        except ZooError as exc:  # a copy that does not check out, or a package that is not installed
            if tried is not None:
                tried.append(f"{twin.name}, the same commit: {_first_line(exc)}")
    return None


def _specs_at_commit(repo: str, commit: str) -> list[ModelSpec]:
    """Catalogue and installed models that pin their files and list hub ``repo`` at ``commit``."""
    specs = list(get_registry().specs.values())
    for _, entry in entries():
        try:
            specs.append(ModelSpec.from_dict(entry["spec"]))
        except (ZooError, KeyError, TypeError, ValueError):  # an entry unpack would refuse: not a witness
            continue
    return [spec for spec in specs if spec.sha256 and any(
        s.kind == "hub" and s.location == repo and (s.revision or "").lower() == commit for s in spec.sources)]


# --- huggingface_hub's retries, in one line ----------------------------------------------------


class _RetryCounter(logging.Filter):
    """Holds back the per-attempt lines huggingface_hub logs while it retries (about 20 for one
    unreachable file), counting them, for one thread's hub call."""

    def __init__(self) -> None:
        super().__init__()
        self.thread, self.retries, self.last = threading.get_ident(), 0, ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        message = record.getMessage()
        if message.startswith(("Retrying in", "Rate limited.")):
            self.retries += 1
            return False
        if "thrown while requesting" in message:
            self.last = message.split(" thrown while", 1)[0].strip("'")
            return False
        return True


@contextlib.contextmanager
def hub_retries_in_one_line(what: str) -> Iterator[None]:
    """Run a hub call with huggingface_hub's retry lines held back; when it retried, say so in one
    warning: what was asked, from where, how many retries over how long, and the last error."""
    counter = _RetryCounter()
    loggers = [logging.getLogger(name) for name in _HUB_RETRY_LOGGERS]
    began, answered = time.monotonic(), False
    for logger in loggers:
        logger.addFilter(counter)
    try:
        yield
        answered = True
    finally:
        for logger in loggers:
            logger.removeFilter(counter)
        if counter.retries:
            endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
            outcome = "answered only after" if answered else "did not answer; huggingface_hub gave up after"
            warnings.warn(f"{what}: the hub at {endpoint} {outcome} {counter.retries} "
                          f"retr{'y' if counter.retries == 1 else 'ies'} over {time.monotonic() - began:.0f} s"
                          f"{f' (last: {counter.last})' if counter.last else ''}", RuntimeWarning, stacklevel=3)


# --- sources over the network ------------------------------------------------------------------


def _download(spec: ModelSpec, source: Source, home: Path) -> Path:
    if source.kind == "hub":
        return _hub_download(spec, source, home)
    if source.kind == "url":
        return _url_download(spec, source, home)
    raise SourceError(f"{source.describe()} is not a network source")


def _hub_download(spec: ModelSpec, source: Source, home: Path) -> Path:
    from huggingface_hub import snapshot_download

    def snapshot(patterns: list[str]) -> Path:
        return Path(snapshot_download(source.location, revision=source.revision, cache_dir=hub_cache_dir(home),
                                      allow_patterns=patterns, endpoint=os.environ.get("HF_ENDPOINT") or None))

    patterns = _hub_patterns(spec)
    with hub_retries_in_one_line(f"model {spec.name!r} ({source.describe()})"):
        folder = snapshot(patterns)
        if patterns == list(DEFAULT_HUB_PATTERNS) and not any(folder.rglob("*.safetensors")):
            folder = snapshot([*patterns, *_PICKLE_WEIGHTS])  # an older repository with pickle weights only
    return folder


def url_dest(source: Source, home: Path | None = None) -> Path:
    name = source.filename or Path(urllib.parse.urlparse(source.location).path).name or "download"
    key = hashlib.sha256(source.location.encode()).hexdigest()[:16]
    return url_cache_dir(home) / key / name


def _url_download(spec: ModelSpec, source: Source, home: Path) -> Path:
    dest = url_dest(source, home)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = spec.sha256.get(dest.name)
    with FileLock(str(dest) + ".lock"):
        if dest.exists():  # another process finished it while we waited
            return dest.parent
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(source.location, timeout=60) as response, open(tmp, "wb") as out:
                _copy_with_progress(response, out, total=response.headers.get("Content-Length"), name=dest.name)
            if expected:
                # Verify before the rename, so a bad download never appears under its real name.
                verify_file(tmp, expected, evict=True, use_memo=False, label=f"{source.location} ({dest.name})")
    return dest.parent


def _copy_with_progress(src, dst, *, total: str | None, name: str) -> None:
    from tqdm.auto import tqdm

    size = int(total) if total and total.isdigit() else None
    with tqdm(total=size, unit="B", unit_scale=True, desc=name, disable=None, leave=False) as bar:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            bar.update(len(chunk))
