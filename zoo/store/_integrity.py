"""sha256 checks for model files, with a stat-keyed memo so a verified file is not re-hashed on
every load (the same trade-off as git's index: size, mtime and inode must all match).

``zoo verify`` bypasses the memo and re-hashes everything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from zoo.errors import IntegrityError

from ._safe_paths import is_inside
from ._settings import zoo_home

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _memo_path(real: str) -> Path:
    key = hashlib.sha1(real.encode("utf-8", "surrogateescape")).hexdigest()
    return zoo_home() / "hashes" / key[:2] / key


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


def remember(path: str | os.PathLike[str], digest: str, st: os.stat_result | None = None) -> None:
    """Record that ``path`` hashes to ``digest`` (it was just verified, or moved after verification:
    a rename keeps size, mtime and inode). ``st`` is its stat from before hashing, if known."""
    real = os.path.realpath(path)
    memo = _memo_path(real)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{_stat_key(st or os.stat(real))}|{digest}")
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only cache only costs re-hashing next time


def cached_sha256(path: str | os.PathLike[str], *, use_memo: bool = True) -> str:
    """sha256 of ``path``, reusing the memo when the file's size, mtime and inode are unchanged."""
    real = os.path.realpath(path)
    st = os.stat(real)
    memo = _memo_path(real)
    if use_memo:
        try:
            stat_key, digest = memo.read_text().split("|")
            if stat_key == _stat_key(st):
                return digest
        except (OSError, ValueError):
            pass
    digest = sha256_file(real)
    remember(real, digest, st)  # the stat from before hashing: a file changed meanwhile is re-hashed
    return digest


def memo_matches(path: str | os.PathLike[str], expected: str) -> bool:
    """True if ``path`` was hashed to ``expected`` and has not changed since (no hashing here)."""
    real = os.path.realpath(path)
    try:
        stat_key, digest = _memo_path(real).read_text().split("|")
        return digest == expected and stat_key == _stat_key(os.stat(real))
    except (OSError, ValueError):
        return False


def verify_file(
    path: str | os.PathLike[str],
    expected: str,
    *,
    evict: bool = False,
    use_memo: bool = True,
    label: str | None = None,
) -> None:
    """Raise :class:`IntegrityError` unless ``path`` hashes to ``expected``.

    With ``evict=True`` (files zoo downloaded into its cache) the bad file is deleted first, so a
    corrupt download never stays behind. Files zoo does not own (a package's, a user's, anything
    outside ``ZOO_HOME``) are left, and the error says so.
    """
    actual = cached_sha256(path, use_memo=use_memo)
    if actual == expected:
        return
    removed = evict and evict_file(path)
    raise IntegrityError(label or str(path), expected, actual, removed=removed)


def evict_file(path: str | os.PathLike[str]) -> bool:
    """Delete a cached file and, when it is a link (the Hugging Face cache's layout), its target.

    Only files inside ``ZOO_HOME`` are ever deleted, whatever a record on disk says. Returns
    whether the file is gone: False for a path (or link target) outside ``ZOO_HOME``, or one that
    cannot be deleted (a read-only cache)."""
    path = Path(path)
    target = Path(os.path.realpath(path))
    home = zoo_home()
    if not (is_inside(path.parent, home) and is_inside(target, home)):
        return False
    try:
        for p in {target, path}:
            p.unlink(missing_ok=True)
        _memo_path(str(target)).unlink(missing_ok=True)
    except OSError:  # a read-only cache: the caller says the file was left in place
        return False
    return True
