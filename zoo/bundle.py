"""Bundles for air-gapped machines: ``zoo pack`` writes a tar of models with a manifest of every
file's sha256; ``zoo unpack`` checks everything before it installs anything.

Layout of a bundle (an uncompressed tar: weights do not compress)::

    zoo-bundle.json                 format, zoo version, and per model: name, spec, files (sha256)
    models/<key>/<relative path>    the files

Unpacking refuses, before writing a byte, any entry that is not a regular file or folder (links,
devices), any absolute path or ``..``, and any file the manifest does not list; it extracts into a
temporary folder inside ``ZOO_HOME``, checks every sha256, then moves each model into place under a
file lock. A model already installed with the same hashes is left as it is, so unpacking twice (or
twice at once) changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import IntegrityError, ZooError
from .integrity import remember, sha256_file
from .manifest import write_json_atomic
from .store import ENTRY, FILES, entry_key, entry_path, read_entry, store_dir

if TYPE_CHECKING:
    from .spec import ModelSpec

MANIFEST = "zoo-bundle.json"
FORMAT = "zoo-bundle/1"


class BundleError(ZooError):
    """A bundle is malformed or unsafe; nothing of it was installed."""


@dataclass
class PackedModel:
    name: str
    files: int
    size: int


def _collect(name: str) -> list[tuple[str, ModelSpec, Path, list[str]]]:
    """The model ``name`` and, for a finetuned checkpoint, its base: (name, spec, root, files)."""
    from .loader import fetch_files, resolve

    spec = resolve(name)
    files = fetch_files(spec)
    out = []
    if spec.backend == "finetuned":
        from .manifest import read_json

        base_name = read_json(files.root / "zoo.json")["base"]["name"]
        out += _collect(base_name)
        spec = spec.replace(name=Path(name).name if Path(name).exists() else name)
    out.append((spec.name, spec, files.root, files.members()))
    return out


def pack(names: list[str], output: str | os.PathLike[str]) -> list[PackedModel]:
    """Write ``names`` (curated names, ``backend:id`` names or finetuned folders) and everything they
    need to load offline into one tar file, atomically."""
    output = Path(output)
    models: dict[str, tuple[ModelSpec, Path, list[str]]] = {}
    for name in names:
        for model_name, spec, root, members in _collect(name):
            models.setdefault(model_name, (spec, root, members))
    manifest: dict[str, Any] = {"format": FORMAT, "zoo_version": __version__, "created": time.time(), "models": []}
    packed = []
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            for model_name, (spec, root, members) in models.items():
                key = entry_key(model_name)
                hashes = {m: sha256_file(root / m) for m in members}
                spec_data = {**spec.to_dict(), "name": model_name}
                spec_data.pop("plugin")
                manifest["models"].append({"name": model_name, "key": key, "spec": spec_data, "files": hashes})
                for member in members:
                    tar.add(root / member, arcname=f"models/{key}/{member}", recursive=False, filter=_plain)
                packed.append(PackedModel(model_name, len(members), sum((root / m).stat().st_size for m in members)))
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a bundle is meant to be copied
        os.replace(tmp, output)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return packed


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Store files without owner names or modes of the packing machine."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def _check_member(member: tarfile.TarInfo, listed: set[str]) -> None:
    name = member.name
    path = PurePosixPath(name)
    if member.issym() or member.islnk():
        raise BundleError(f"refusing bundle entry {name!r}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"refusing bundle entry {name!r}: only regular files and folders are allowed")
    if path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name:
        raise BundleError(f"refusing bundle entry {name!r}: it would land outside the cache root")
    if member.isfile() and name != MANIFEST and name not in listed:
        raise BundleError(f"refusing bundle entry {name!r}: the bundle's manifest does not list it")


def read_bundle_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise BundleError(f"not a zoo bundle: no {MANIFEST}") from None
    if not member.isfile():
        raise BundleError(f"{MANIFEST} is not a regular file")
    manifest = json.loads(tar.extractfile(member).read())
    if manifest.get("format") != FORMAT:
        raise BundleError(f"unsupported bundle format {manifest.get('format')!r} (expected {FORMAT!r})")
    return manifest


def unpack(bundle: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Install a bundle's models into ``ZOO_HOME``; returns ``(name, "installed" | "unchanged")`` per model.

    Raises :class:`BundleError` (unsafe or malformed) or :class:`~zoo.errors.IntegrityError` (a
    file's hash) before anything is installed.
    """
    from filelock import FileLock

    bundle = Path(bundle)
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle, "r:*") as tar:
        manifest = read_bundle_manifest(tar)
        models = manifest["models"]
        listed = {f"models/{m['key']}/{f}" for m in models for f in m["files"]}
        members = tar.getmembers()
        for member in members:
            _check_member(member, listed)
        for model in models:
            if model["key"] != entry_key(model["name"]):
                raise BundleError(f"bundle entry for {model['name']!r} has a wrong folder {model['key']!r}")
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=store))
        try:
            tar.extractall(staging, members=[m for m in members if m.name != MANIFEST], filter="data")
            for model in models:  # every hash before anything is installed
                for name, expected in model["files"].items():
                    path = staging / "models" / model["key"] / name
                    if not path.is_file():
                        raise BundleError(f"bundle lacks {name!r} of model {model['name']!r}")
                    actual = sha256_file(path)
                    if actual != expected:
                        raise IntegrityError(f"{name} of model {model['name']!r} in {bundle.name}", expected, actual)
            results = []
            with FileLock(str(store / ".lock")):
                for model in models:
                    results.append((model["name"], _install(model, staging / "models" / model["key"])))
            return results
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _install(model: dict[str, Any], files: Path) -> str:
    """Move one verified model into the store (the caller holds the store lock)."""
    final = entry_path(model["name"])
    existing = read_entry(final)
    if existing is not None and existing.get("files") == model["files"] and all(
            (final / FILES / f).is_file() for f in model["files"]):
        return "unchanged"
    staged = files.parent / f".{model['key']}.entry"
    staged.mkdir()
    os.replace(files, staged / FILES)
    write_json_atomic(staged / ENTRY, {"name": model["name"], "spec": model["spec"], "files": model["files"],
                                       "installed": time.time(), "origin": "bundle"})
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    for name, digest in model["files"].items():  # verified in staging; a rename keeps the file as it was
        remember(final / FILES / name, digest)
    return "installed"
