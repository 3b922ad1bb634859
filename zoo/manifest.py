"""``zoo.json``: the manifest written next to a saved model so that ``zoo.load(folder)`` reads it back
exactly (same backend, pooling, normalisation, preprocessing) and verifies every file it wrote."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RegistryError
from .integrity import sha256_file
from .spec import ModelSpec, Source

MANIFEST = "zoo.json"
FORMAT = "zoo-model/1"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(directory: Path, spec: ModelSpec, **extra: Any) -> Path:
    """Record ``spec`` and the sha256 of every file in ``directory`` (written last, so a folder with
    a manifest is complete)."""
    files = {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    saved = spec.to_dict()
    for key in ("sources", "sha256", "plugin", "aliases"):
        saved.pop(key)
    # Provenance: which pretrained weights this folder came from, pinned.
    base = {"name": spec.name, "revision": spec.revision, "sha256": dict(spec.sha256)}
    data = {"format": FORMAT, "zoo_version": __version__, "base": base, "spec": saved, "files": files, **extra}
    path = directory / MANIFEST
    write_json_atomic(path, data)
    return path


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
