"""Atomic file writes: a file at its final name is always complete.

Every writer in zoo (manifests, checkpoints, downloads, bundles, embedding outputs) writes to a
temporary file in the destination's folder and renames it into place, so a crash or a full disk
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@functools.cache
def current_umask() -> int:
    # os.umask can only be read by setting it; do it once per process.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it over ``dest`` when the block succeeds.

    The temporary file exists (empty) when the block starts; writers may replace it. If the block
    raises, the temporary file is deleted and ``dest`` is left as it was. The file gets the
    permissions a plain ``open()`` would give it (``mkstemp`` makes it private).
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
