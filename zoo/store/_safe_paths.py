"""File names that records from outside (a bundle's manifest, an installed model's entry, a spec's
pinned hashes) give relative to a model folder: each must stay inside that folder.

Every such name is checked where a record is read and again where it is used, because a record on
disk may have been edited since it was written; zoo reads, hashes and deletes files only by names
that pass.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from zoo.errors import UnsafePathError


def check_file_name(name: object, *, where: str) -> str:
    """``name`` if it is a plain relative POSIX path in normal form (``a/b.bin``), else raise.

    Refused: absolute paths, drive letters, backslashes, ``..``, ``.``, empty parts and anything
    that is not a string. ``where`` says which record named it, for the message."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{where} names a file {name!r}: a file name must be a non-empty string")
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0]
            or any(part in ("", ".", "..") for part in parts)):
        raise UnsafePathError(f"{where} names a file {name!r} outside its model folder: only relative paths "
                              "in normal form (like 'weights/model.bin') are allowed; the record is not trusted")
    return str(PurePosixPath(name))


def file_in(root: Path, name: str, *, where: str) -> Path:
    """``root / name`` after :func:`check_file_name`, also refusing a name that a link inside
    ``root`` would lead out of ``root``."""
    path = root / check_file_name(name, where=where)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path.parent)]) != real_root:
        raise UnsafePathError(f"{where} names a file {name!r} whose folder links outside {root}; "
                              "the record is not trusted")
    return path


def is_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path``, links resolved, lies inside ``root``."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root
