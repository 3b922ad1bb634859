"""``zoo.json``: the manifest written next to a saved model so that ``zoo.load(folder)`` reads it back
exactly (same backend, pooling, normalisation, preprocessing) and verifies every file it wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import __version__
from zoo.catalog._spec import ModelSpec, Source
from zoo.errors import RegistryError

from ._atomic import write_json_atomic
from ._integrity import sha256_file
from ._provenance import weights_provenance

if TYPE_CHECKING:
    from ._model_files import ModelFiles

MANIFEST = "zoo.json"
FORMAT = "zoo-model/1"


def write_manifest(directory: Path, spec: ModelSpec, files: ModelFiles | None = None, **extra: Any) -> Path:
    """Record ``spec``, where its weights came from, and the sha256 of every file in ``directory``
    (written last, so a folder with a manifest is complete)."""
    hashes = {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    saved = spec.to_dict()
    for key in ("sources", "sha256", "plugin", "aliases"):
        saved.pop(key)
    data = {"format": FORMAT, "zoo_version": __version__, "base": weights_provenance(spec, files), "spec": saved,
            "files": hashes, **extra}
    path = directory / MANIFEST
    write_json_atomic(path, data)
    return path


def is_manifest_of(path: Path, fmt: str) -> bool:
    """Whether ``path`` is a folder whose ``zoo.json`` declares format ``fmt``."""
    manifest = path / MANIFEST
    return path.is_dir() and manifest.is_file() and read_json(manifest).get("format") == fmt


def read_json(path: Path) -> dict[str, Any]:
    """A JSON manifest; invalid JSON is an error naming the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RegistryError(f"invalid JSON: {exc}", file=str(path), line=exc.lineno) from None


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    data = read_json(path)
    if data.get("format") != FORMAT:
        raise RegistryError(f"unsupported manifest format {data.get('format')!r} (expected {FORMAT!r})", file=str(path))
    return data


def spec_from_manifest(directory: Path) -> ModelSpec:
    """The spec of a saved model: its own files, pinned by the hashes recorded at save time."""
    data = read_manifest(directory)
    fields = dict(data["spec"])
    fields.update(name=str(directory), sources=[Source("path", str(directory))], sha256=data.get("files", {}))
    return ModelSpec.from_dict(fields)
