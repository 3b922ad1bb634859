"""Models installed from bundles: ``ZOO_HOME/models/<key>/`` holds a model's files and ``entry.json``
(its spec and the sha256 of every file). :func:`zoo.store._sources.provide_files` looks here before any
source, so an unpacked model loads with no network; every file is verified against the recorded
hashes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from zoo.catalog._spec import ModelSpec, Source
from zoo.errors import IntegrityError

from ._integrity import verify_file
from ._model_files import ModelFiles
from ._safe_paths import file_in
from ._settings import zoo_home

ENTRY = "entry.json"
FILES = "files"


def store_dir(home: Path | None = None) -> Path:
    """Where installed models live: ``models/`` under ``home`` (default ``ZOO_HOME``)."""
    return (home or zoo_home()) / "models"


def entry_key(name: str) -> str:
    """A folder name for a model name (readable, and unique through a short hash)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "model"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def entry_path(name: str, home: Path | None = None) -> Path:
    return store_dir(home) / entry_key(name)


def read_entry(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / ENTRY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def entries() -> list[tuple[Path, dict[str, Any]]]:
    """Every installed model: ``(folder, entry)``."""
    root = store_dir()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        entry = read_entry(folder) if folder.is_dir() and not folder.name.startswith(".") else None
        if entry is not None:
            out.append((folder, entry))
    return out


def _installed(name: str, home: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The store folder and entry of the model installed as ``name``, if any."""
    folder = entry_path(name, home)
    entry = read_entry(folder)
    return (folder, entry) if entry is not None and entry.get("name") == name else None


def installed_spec(name: str) -> ModelSpec | None:
    """The spec recorded for an installed model named ``name``, its source being the store folder."""
    found = _installed(name)
    if found is None:
        return None
    folder, entry = found
    spec = ModelSpec.from_dict(entry["spec"])
    return spec.replace(sources=(Source("path", str(folder / FILES)),), sha256=entry["files"])


def installed_files(spec: ModelSpec, *, home: Path | None = None, use_memo: bool = True) -> ModelFiles | None:
    """The verified files of ``spec`` if a bundle installed them under ``home``, else None."""
    found = _installed(spec.name, home)
    if found is None:
        return None
    folder, entry = found
    recorded = entry["files"]
    for name, pinned in spec.sha256.items():
        if name in recorded and recorded[name] != pinned:
            raise IntegrityError(f"{name} of installed model {spec.name!r} (its bundle and the registry disagree)",
                                 pinned, recorded[name])
    root = folder / FILES
    for name, expected in {**recorded, **spec.sha256}.items():
        path = file_in(root, name, where=f"installed model {spec.name!r} ({folder / ENTRY})")
        if not path.is_file():
            return None  # incomplete: let the other sources try
        verify_file(path, expected, evict=True, use_memo=use_memo, label=f"{path} (model {spec.name!r})")
    return ModelFiles(spec=spec, root=root, source=Source("path", str(root)), verified=tuple(entry["files"]))


def remove(name: str) -> Path | None:
    """Delete the installed model ``name``; returns its folder, or None if it was not installed."""
    found = _installed(name)
    if found is None:
        return None
    shutil.rmtree(found[0])
    return found[0]
