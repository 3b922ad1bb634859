"""Exceptions raised by zoo.

Every error names the thing that went wrong and, where one exists, the fix. All derive from
:class:`ZooError` so callers can catch the whole family at once.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class ZooError(Exception):
    """Base class of every error zoo raises on purpose."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``word`` (case-insensitive), best first."""
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    hits = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[h] for h in hits]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix, or ``""`` when nothing is close."""
    return _suggestion_text(close_matches(word, candidates))


def _suggestion_text(hits: list[str]) -> str:
    if not hits:
        return ""
    if len(hits) == 1:
        return f"; did you mean {hits[0]!r}?"
    return "; did you mean " + ", ".join(repr(h) for h in hits[:-1]) + f" or {hits[-1]!r}?"


class UnknownModelError(ZooError, KeyError):
    """A model name that is neither a curated name, an alias, a ``backend:id`` nor a path."""

    def __init__(self, name: str, suggestions: Iterable[str] = (), hint: str = "") -> None:
        self.name = name
        self.suggestions = list(suggestions)
        message = f"unknown model {name!r}{_suggestion_text(self.suggestions)}"
        if hint:
            message += f" {hint}"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class RegistryError(ZooError, ValueError):
    """A registry file or a registered spec is malformed; says where (file and line)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(where + message)


class DuplicateModelError(RegistryError):
    """The same model name (or alias) was registered by two plugins."""


class PluginError(ZooError):
    """A plugin failed to import, register or validate."""


class SourceError(ZooError):
    """No source of a model could provide its files."""


class OfflineError(SourceError):
    """Offline mode is on and the files are not on this machine; says which source would be needed."""


class IntegrityError(ZooError):
    """A file's sha256 does not match the one its spec pins. ``removed`` says whether zoo deleted
    the bad copy (only ever a file in its own cache)."""

    def __init__(self, file: str, expected: str, actual: str, *, removed: bool = False) -> None:
        self.file = file
        self.expected = expected
        self.actual = actual
        self.removed = removed
        advice = ("the bad copy was removed from zoo's cache: run again to fetch a fresh one, or fix the pinned hash"
                  if removed else "the file was left in place: replace it with the right file, or fix the pinned hash")
        super().__init__(f"sha256 mismatch for {file}: expected {expected}, got {actual}; {advice}")


class UnsafePathError(ZooError, ValueError):
    """A record (bundle manifest, installed entry, spec) names a file outside its model folder."""


class ModelFormatError(ZooError, ValueError):
    """A model folder whose files zoo cannot read exactly: an unknown config value, module type or
    layout. Names the file and the value, and what zoo supports; never replaced by a default."""


class UnsupportedModelKindError(ModelFormatError):
    """A folder saved as a kind of model zoo does not embed with yet (a reranker, a sparse or a
    multi-vector encoder, a routed pipeline): loading it as a dense embedder would give wrong rows."""


class UnsupportedOptionError(ZooError, ValueError):
    """An option this model cannot honour (intermediate layers of a backend without them, a
    prompt for a model that takes no text); the message names the model."""


class InputError(ZooError, ValueError):
    """One input item cannot be used; names its index (and path, when it has one)."""

    def __init__(self, index: int, reason: str, item: object = None) -> None:
        self.index = index
        self.reason = reason
        self.item = item
        where = f"input {index}"
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if isinstance(item, str) and len(item) < 300:  # a path (or a short text): say which
            where += f" ({item!r})"
        super().__init__(f"{where}: {reason}")


def is_item_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised while decoding or tokenising one input, is that input's fault.

    Decoders raise what their libraries raise for bad data: PIL a ``SyntaxError`` for a broken PNG
    chunk and ``NotImplementedError`` for an unknown DDS pixel format, tokenizers a ``TypeError``,
    soundfile its own errors. Any ``Exception`` is the item's, except running out of memory, which
    says nothing about the item and must stop the run.
    """
    return isinstance(exc, Exception) and not isinstance(exc, MemoryError)


class InputWarning(UserWarning):
    """A decoder's note that an input was used but is suspect (a truncated audio file: what
    survives is embedded). featurize records it in its report with the item's index."""


class Unreadable:
    """An input that could not be read (an undecodable line, a file that vanished): it takes its
    item's place so ids stay aligned, and featurize reports it as that item's error, skippable."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unreadable({self.reason!r})"


class ProvenanceMismatchError(ZooError, ValueError):
    """Embeddings from another model (or revision, weights, pooling, normalisation, layers) than
    the ones an index holds: comparing them would give meaningless neighbours."""
