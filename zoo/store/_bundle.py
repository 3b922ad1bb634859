"""Bundles for air-gapped machines: ``zoo pack`` writes a tar of models with a manifest of every
file's sha256; ``zoo unpack`` checks everything before it installs anything.

Layout of a bundle (an uncompressed tar: weights do not compress)::

    zoo-bundle.json                 format, zoo version, and per model: name, spec, files (sha256), sizes
    models/<key>/<relative path>    the files

Unpacking refuses, before writing a byte, a manifest naming a file outside its model's folder, any
entry that is not a regular file or folder (links, devices), any absolute path or ``..``, any file
the manifest does not list or whose size differs from the manifest's; it extracts into a
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
from typing import Any

from filelock import FileLock

from zoo import __version__
from zoo.catalog._loader import locate_files, resolve
from zoo.catalog._spec import ModelSpec
from zoo.errors import IntegrityError, ZooError

from ._atomic import atomic_path, write_json_atomic
from ._installed import ENTRY, FILES, entry_key, entry_path, read_entry, store_dir
from ._integrity import remember, sha256_file
from ._manifest import MANIFEST as MODEL_MANIFEST
from ._model_files import ModelFiles
from ._safe_paths import check_file_name

MANIFEST = "zoo-bundle.json"
FORMAT = "zoo-bundle/1"
_MAX_MANIFEST = 64 << 20  # a manifest lists hashes: anything larger is not one


class BundleError(ZooError):
    """A bundle is malformed or unsafe; nothing of it was installed."""


@dataclass
class PackedModel:
    name: str
    files: int
    size: int


def _collect(name: str) -> list[tuple[str, ModelSpec, Path, list[str]]]:
    """The model ``name`` and every model it requires, bases first: (name, spec, root, files)."""
    spec = resolve(name)
    files = locate_files(spec)
    out = [model for required in spec.requires for model in _collect(required)]
    if Path(name).exists():  # a model folder packs under its folder's name
        spec = spec.replace(name=Path(name).name)
    out.append((spec.name, spec, files.root, loaded_members(files)))
    return out


def loaded_members(files: ModelFiles) -> list[str]:
    """The files of ``files`` that loading reads, which a bundle carries.

    A folder zoo wrote (``model.save()``, ``finetune``) says so itself: its ``zoo.json`` pins, with
    their sha256, every file loading reads, and zoo loads nothing else from it. What else lies there
    belongs to training (``resume.json``, the optimizer and RNG state, ``curves.png``) and stays
    behind. Any other folder is read by its backend library, which may open any file in it, so all
    of them travel."""
    members = files.members()
    if MODEL_MANIFEST not in members or not files.spec.sha256:
        return members
    return [m for m in members if m == MODEL_MANIFEST or m in files.spec.sha256]


def pack(names: list[str], output: str | os.PathLike[str]) -> list[PackedModel]:
    """Write ``names`` (curated names, ``backend:id`` names or finetuned folders) and everything they
    need to load offline into one tar file, atomically. A file that is a link (the Hugging Face
    cache's layout) is stored as the file it points to."""
    output = Path(output)
    models: dict[str, tuple[ModelSpec, Path, list[str]]] = {}
    for name in names:
        for model_name, spec, root, members in _collect(name):
            models.setdefault(model_name, (spec, root, members))
    manifest: dict[str, Any] = {"format": FORMAT, "zoo_version": __version__, "created": time.time(), "models": []}
    packed = []
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp, tarfile.open(tmp, "w", dereference=True) as tar:
        for model_name, (spec, root, members) in models.items():
            key = entry_key(model_name)
            spec_data = {**spec.to_dict(), "name": model_name}
            spec_data.pop("plugin")
            manifest["models"].append({"name": model_name, "key": key, "spec": spec_data,
                                       "files": {m: sha256_file(root / m) for m in members},
                                       "sizes": {m: (root / m).stat().st_size for m in members}})
            for member in members:
                tar.add(root / member, arcname=f"models/{key}/{member}", recursive=False, filter=_plain)
            packed.append(PackedModel(model_name, len(members), sum(manifest["models"][-1]["sizes"].values())))
        data = json.dumps(manifest, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return packed


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Store files without owner names or modes of the packing machine."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def _check_member(member: tarfile.TarInfo, sizes: dict[str, int | None]) -> None:
    """Refuse an entry that is not a plain file or folder inside the bundle, that the manifest does
    not list, or whose size differs from the manifest's (before a byte of it is read)."""
    name = member.name
    path = PurePosixPath(name)
    if member.issym() or member.islnk():
        raise BundleError(f"refusing bundle entry {name!r}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"refusing bundle entry {name!r}: only regular files and folders are allowed")
    if path.is_absolute() or name.startswith(("/", "\\")) or ".." in path.parts or "\\" in name:
        raise BundleError(f"refusing bundle entry {name!r}: it would land outside the cache root")
    if member.isfile() and name != MANIFEST:
        if name not in sizes:
            raise BundleError(f"refusing bundle entry {name!r}: the bundle's manifest does not list it")
        if sizes[name] is not None and member.size != sizes[name]:
            raise BundleError(f"refusing bundle entry {name!r}: it holds {member.size} bytes, the manifest says "
                              f"{sizes[name]}")


def read_bundle_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise BundleError(f"not a zoo bundle: no {MANIFEST}") from None
    if not member.isfile() or member.size > _MAX_MANIFEST:
        raise BundleError(f"{MANIFEST} is not a regular file of a sensible size")
    try:
        file = tar.extractfile(member)
        assert file is not None  # a regular file, checked above
        manifest = json.loads(file.read())
    except ValueError as exc:
        raise BundleError(f"{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"unsupported bundle format {found!r} (expected {FORMAT!r})")
    if not isinstance(manifest.get("models"), list):
        raise BundleError(f"{MANIFEST} has no list of models")
    return manifest


def _declared_sizes(models: list[Any]) -> dict[str, int | None]:
    """Every file the manifest lists, as its tar entry name, with its declared size (None in a
    bundle written before sizes were recorded). Refuses a manifest naming a file outside its model's
    folder, or a model whose folder or spec does not check out."""
    sizes: dict[str, int | None] = {}
    for model in models:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            raise BundleError(f"{MANIFEST} lists a model without a name")
        where = f"{MANIFEST}, model {model['name']!r}"
        if model.get("key") != entry_key(model["name"]):
            raise BundleError(f"{where} has a wrong folder {model.get('key')!r}")
        files, declared = model.get("files"), model.get("sizes") or {}
        if not isinstance(files, dict) or not isinstance(declared, dict):
            raise BundleError(f"{where}: 'files' and 'sizes' must be mappings")
        try:
            ModelSpec.from_dict(model["spec"])
            for name in files:
                sizes[f"models/{model['key']}/{check_file_name(name, where=where)}"] = declared.get(name)
        except (ZooError, KeyError, TypeError) as exc:
            raise BundleError(f"{where} is not valid: {exc}") from None
    return sizes


def unpack(bundle: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Install a bundle's models into ``ZOO_HOME``; returns ``(name, "installed" | "unchanged")`` per model.

    Raises :class:`BundleError` (unsafe, malformed or truncated) or
    :class:`~zoo.errors.IntegrityError` (a file's hash) before anything is installed.
    """
    bundle = Path(bundle)
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(store)
    try:
        with tarfile.open(bundle, "r:*") as tar:
            manifest = read_bundle_manifest(tar)
            sizes = _declared_sizes(manifest["models"])
            members = tar.getmembers()  # reads every header: a truncated bundle fails here
            for member in members:
                _check_member(member, sizes)
            staging = Path(tempfile.mkdtemp(prefix=f".unpack-{os.getpid()}-", dir=store))
            try:
                tar.extractall(staging, members=[m for m in members if m.name != MANIFEST], filter="data")
                return _install_all(bundle, manifest["models"], staging, store)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{bundle} is truncated or not a tar file ({exc}); copy the bundle again") from None


def _install_all(bundle: Path, models: list[dict[str, Any]], staging: Path, store: Path) -> list[tuple[str, str]]:
    for model in models:  # every hash before anything is installed
        for name, expected in model["files"].items():
            path = staging / "models" / model["key"] / name  # names checked by _declared_sizes
            if not path.is_file():
                raise BundleError(f"bundle lacks {name!r} of model {model['name']!r}")
            actual = sha256_file(path)
            if actual != expected:
                raise IntegrityError(f"{name} of model {model['name']!r} in {bundle.name}", expected, actual)
    with FileLock(str(store / ".lock")):
        return [(model["name"], _install(model, staging / "models" / model["key"])) for model in models]


def _remove_stale_staging(store: Path) -> None:
    """Delete staging folders that an unpack killed on this machine left behind."""
    for folder in store.glob(".unpack-*"):
        pid = folder.name.split("-")[1] if folder.name.count("-") >= 2 else ""
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
