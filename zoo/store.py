"""Models installed from bundles: ``ZOO_HOME/models/<key>/`` holds a model's files and ``entry.json``
(its spec and the sha256 of every file). :func:`zoo.sources.fetch` looks here before any source, so
an unpacked model loads with no network; every file is verified against the recorded hashes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import IntegrityError
from .integrity import verify_file
from .settings import zoo_home
from .spec import ModelSpec, Source

ENTRY = "entry.json"
FILES = "files"


def store_dir() -> Path:
    return zoo_home() / "models"


def entry_key(name: str) -> str:
    """A folder name for a model name (readable, and unique through a short hash)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "model"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def entry_path(name: str) -> Path:
    return store_dir() / entry_key(name)


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


def installed_spec(name: str) -> ModelSpec | None:
    """The spec recorded for an installed model named ``name``, its source being the store folder."""
    folder = entry_path(name)
    entry = read_entry(folder)
    if entry is None or entry.get("name") != name:
        return None
    spec = ModelSpec.from_dict(entry["spec"])
    return spec.replace(sources=(Source("path", str(folder / FILES)),), sha256=entry["files"])


def installed_files(spec: ModelSpec, *, use_memo: bool = True) -> Any:
    """The verified files of ``spec`` if a bundle installed them, else None."""
    from .sources import ModelFiles

    folder = entry_path(spec.name)
    entry = read_entry(folder)
    if entry is None or entry.get("name") != spec.name:
        return None
    root = folder / FILES
    for name, expected in {**entry["files"], **spec.sha256}.items():
        if name in entry["files"] and entry["files"][name] != expected:
            raise IntegrityError(f"{name} of installed model {spec.name!r} (its bundle and the registry disagree)",
                                 expected, entry["files"][name])
        path = root / name
        if not path.is_file():
            return None  # incomplete: let the other sources try
        verify_file(path, expected, evict=True, use_memo=use_memo, label=f"{path} (model {spec.name!r})")
    return ModelFiles(spec=spec, root=root, source=Source("path", str(root)), verified=tuple(entry["files"]))


def remove(name: str) -> Path | None:
    folder = entry_path(name)
    if read_entry(folder) is None:
        return None
    shutil.rmtree(folder)
    return folder
