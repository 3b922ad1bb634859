"""What ``ZOO_HOME`` holds, and keeping it healthy: ``zoo cache list | verify | remove``.

Four kinds of entries: models installed from bundles (``models/``), Hugging Face Hub snapshots
(``hub/``, managed through ``huggingface_hub.scan_cache_dir``), URL downloads (``url/``) and the
ONNX / OpenVINO exports of ``runtime=`` (``compiled/``, each recording the model it was made from).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import scan_cache_dir

from zoo.catalog._loader import resolve
from zoo.catalog._registry import get_registry
from zoo.errors import UnsafePathError, ZooError

from ._installed import FILES, entries, remove
from ._integrity import cached_sha256, evict_file, memo_matches
from ._safe_paths import file_in
from ._settings import zoo_home
from ._sources import hub_cache_dir, url_cache_dir, url_dest

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class CacheEntry:
    """One thing in the cache."""

    name: str
    kind: str  # "bundle", "hub", "url" or "export"
    path: Path
    size: int
    verified: bool
    models: list[str] = field(default_factory=list)  # catalogue names that use it


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _catalogue_users() -> dict[tuple[str, str | None], list[str]]:
    users: dict[tuple[str, str | None], list[str]] = {}
    for spec in get_registry().specs.values():
        for source in spec.sources:
            users.setdefault((source.location, source.revision), []).append(spec.name)
    return users


def _hub_snapshots() -> list[tuple[str, str, Path, int, list[Path]]]:
    """(repo id, commit, snapshot folder, size, blob paths) per cached revision."""
    folder = hub_cache_dir()
    if not folder.is_dir():
        return []
    out = []
    for repo in scan_cache_dir(folder).repos:
        for revision in repo.revisions:
            blobs = [f.blob_path for f in revision.files]
            out.append((repo.repo_id, revision.commit_hash, revision.snapshot_path, revision.size_on_disk, blobs))
    return out


def _exports() -> list[tuple[str, Path, int, bool]]:
    """(model, folder, size, every recorded sha256 memo still matches) per export in ``compiled/``;
    staging folders of an export in progress (``.digest.*``) are left out."""
    folder = zoo_home() / "compiled"
    out = []
    for sub in sorted(folder.iterdir()) if folder.is_dir() else ():
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        try:
            record = json.loads((sub / "export.json").read_text())
            model, digests = str(record["key"]["model"]), dict(record["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            model, digests = "?", {}
        size = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
        ok = bool(digests) and all(memo_matches(sub / name, digest) for name, digest in digests.items())
        out.append((model, sub, size, ok))
    return out


def list_cache() -> list[CacheEntry]:
    """Everything in ``ZOO_HOME``; ``verified`` means every file with a known hash was checked since
    it last changed."""
    users = _catalogue_users()
    out = []
    for folder, entry in entries():
        files = folder / FILES
        size = sum((files / f).stat().st_size for f in entry["files"] if (files / f).is_file())
        ok = all((files / f).is_file() and memo_matches(files / f, h) for f, h in entry["files"].items())
        out.append(CacheEntry(entry["name"], "bundle", folder, size, ok, [entry["name"]]))
    for repo, commit, path, size, blobs in _hub_snapshots():
        hashed = [b for b in blobs if _SHA256.match(b.name)]
        ok = all(memo_matches(b, b.name) for b in hashed)
        out.append(CacheEntry(f"{repo}@{commit[:12]}", "hub", path, size, ok,
                              users.get((repo, commit), [])))
    if url_cache_dir().is_dir():
        for file in sorted(url_cache_dir().glob("*/*")):
            if file.is_file() and not file.name.endswith((".lock", ".part")):
                out.append(CacheEntry(file.name, "url", file, file.stat().st_size, False, []))
    for model, folder, size, ok in _exports():
        out.append(CacheEntry(f"{model} export {folder.name[:12]}", "export", folder, size, ok, [model]))
    return out


@dataclass
class VerifyReport:
    checked: int = 0
    evicted: list[str] = field(default_factory=list)  # corrupt, and removed
    kept: list[str] = field(default_factory=list)  # corrupt, but not zoo's to remove
    refused: list[str] = field(default_factory=list)  # records naming files outside their folder

    @property
    def corrupt(self) -> int:
        return len(self.evicted) + len(self.kept)


def _check(path: Path, expected: str, what: str, report: VerifyReport) -> None:
    report.checked += 1
    if cached_sha256(path, use_memo=False) != expected:
        (report.evicted if evict_file(path) else report.kept).append(what)


def verify_cache() -> VerifyReport:
    """Re-hash every file whose hash is known (ignoring the memo); delete the ones that do not match.

    Only files inside ``ZOO_HOME`` are deleted; an installed entry that names a file outside its
    folder is reported in ``refused`` and nothing it names is read."""
    report = VerifyReport()
    for folder, entry in entries():
        where = f"installed model {entry.get('name')!r} ({folder})"
        try:
            paths = {name: file_in(folder / FILES, name, where=where) for name in entry["files"]}
        except UnsafePathError as exc:
            report.refused.append(f"{exc}; remove it with `zoo cache remove {entry.get('name')}`")
            continue
        for name, path in paths.items():
            if path.is_file():
                _check(path, entry["files"][name], f"{entry['name']}: {name}", report)
    for repo, commit, _, _, blobs in _hub_snapshots():
        for blob in blobs:
            if _SHA256.match(blob.name) and blob.is_file():  # LFS blobs are named by their sha256
                _check(blob, blob.name, f"{repo}@{commit[:12]}: {blob.name}", report)
    return report


def remove_model(name: str) -> list[str]:
    """Delete what the cache holds for model ``name``: its bundle entry, hub snapshots, URL files
    and runtime exports."""
    removed = []
    folder = remove(name)
    if folder is not None:
        removed.append(str(folder))
    try:
        spec = resolve(name)
    except (ZooError, FileNotFoundError):  # only installed, and its entry is gone already
        spec = None
    for model, export, _, _ in _exports():
        if model in (name, spec.name if spec else None):
            shutil.rmtree(export)
            removed.append(f"export {export}")
    if spec is None:
        return removed
    hub_repos = {(s.location, s.revision) for s in spec.sources if s.kind == "hub"}
    if hub_repos and hub_cache_dir().is_dir():
        info = scan_cache_dir(hub_cache_dir())
        hashes = [rev.commit_hash for repo in info.repos for rev in repo.revisions
                  if (repo.repo_id, rev.commit_hash) in hub_repos
                  or any(repo.repo_id == r and v is None for r, v in hub_repos)]
        if hashes:
            info.delete_revisions(*hashes).execute()
            removed += [f"hub {r}@{(v or 'main')[:12]}" for r, v in hub_repos]
    for source in spec.sources:
        if source.kind == "url" and url_dest(source).exists():
            shutil.rmtree(url_dest(source).parent)
            removed.append(source.location)
    return removed
