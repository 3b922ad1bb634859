"""The runtime catalogue: models, kinds, modalities and adapters from ``registry.yaml`` and every plugin.

Built once per process from the plugin manager. Each registration is attributed to the plugin that
made it, so a clash names both sides; a third-party plugin whose registration hook raises is
reported and skipped without breaking the rest of the zoo.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core._rows import DenseRows, RowFormat
from zoo.errors import (
    DuplicateModelError,
    PluginError,
    RegistryError,
    UnsupportedModelKindError,
    close_matches,
    did_you_mean,
)

from ._plugin_manager import PluginFailure, ZooPluginManager, get_plugin_manager
from ._registry_file import read_registry
from ._scores import sort_key
from ._spec import KIND_NAME, ModelSpec

if TYPE_CHECKING:
    from zoo.adapter import Adapter

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]*$")
REGISTRY_FILE = Path(__file__).parents[1] / "registry.yaml"
CATALOGUE = "registry.yaml"


def import_ref(ref: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise PluginError(f"{ref!r} is not a 'module:attribute' reference")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Owner:
    """Who registered a model, adapter or modality: a plugin (its pluggy name and, for a third-party
    plugin, its distribution) or zoo's own catalogue."""

    plugin: str
    dist: str | None = None

    def __str__(self) -> str:
        return f"{self.dist} ({self.plugin})" if self.dist and self.dist != self.plugin else self.plugin

    @property
    def is_catalogue(self) -> bool:
        return self == CATALOGUE_OWNER

    def matches(self, query: str) -> bool:
        """Whether ``query`` names this owner (its plugin name or distribution, any case)."""
        return query.lower() in {self.plugin.lower(), (self.dist or "").lower()}


CATALOGUE_OWNER = Owner(CATALOGUE, "zoo")


@dataclass
class Modality:
    """An input modality, how one input item of it decodes, and example inputs for conformance checks."""

    name: str
    decode_ref: Callable[[Any], Any] | str
    description: str
    owner: Owner
    examples_ref: Callable[[], list[Any]] | str | None = None
    suffixes: tuple[str, ...] = ()  # file suffixes of this modality's media, lower case with the dot
    media_types: tuple[str, ...] = ()  # MIME types of its data URLs, fnmatch patterns ("image/*")
    over: str | None = None  # the modality whose tower embeds this one's inputs ("vision" for video)
    tower_ref: Callable[..., Any] | str | None = None  # builds that tower: (encoder of `over`, **settings)
    settings: dict[str, Any] = field(default_factory=dict)  # how the tower reads an input (recorded)

    @property
    def decode(self) -> Callable[[Any], Any]:
        decode = self.decode_ref
        if isinstance(decode, str):
            decode = self.decode_ref = import_ref(decode)
        return decode

    def decoder(self, settings: Mapping[str, Any]) -> Callable[[Any], Any]:
        """The decoder with those of ``settings`` it takes as keyword arguments bound (a clip's
        ``frames``); the others are its tower's (how a clip's frame rows pool)."""
        decode = self.decode
        takes = inspect.signature(decode).parameters
        bound = {name: value for name, value in settings.items() if name in takes}
        return functools.partial(decode, **bound) if bound else decode

    def tower(self, inner: Any) -> Any:
        """This modality's tower over ``inner``, the encoder of the modality :attr:`over` names."""
        build = self.tower_ref
        if isinstance(build, str):
            build = self.tower_ref = import_ref(build)
        assert build is not None  # add_modality requires one with `over`
        return build(inner, **self.settings)

    def examples(self) -> list[Any]:
        """A few valid inputs of this modality (empty if its plugin gives none)."""
        examples = self.examples_ref
        if examples is None:
            return []
        if isinstance(examples, str):
            examples = self.examples_ref = import_ref(examples)
        return list(examples())


#: The verbs a kind may answer: ``featurize`` (rows: zoo embed, zoo index, zoo search),
#: ``classify`` (zero-shot, predict_proba), ``finetune``, and ``score`` / ``rerank`` (pairs).
VERBS = ("featurize", "classify", "finetune", "score", "rerank")
DENSE_ROWS = "zoo.core._rows:DenseRows"


@dataclass
class Kind:
    """One model kind.

    Attributes:
        name: as a spec's ``kind`` names it (``"sparse-encoder"``).
        description: what such a model does, as the words after "it": ``"embeds texts as sparse
            term weights"``; the error refusing another kind's verb says it.
        verbs: the verbs of :data:`VERBS` it answers.
        rows_ref: its :class:`~zoo.core._rows.RowFormat` (an instance, or a ``"module:Class"``
            string imported on first use), for kinds that featurize; None otherwise.
        owner: who registered it.
    """

    name: str
    description: str
    verbs: tuple[str, ...]
    rows_ref: RowFormat | str | None
    owner: Owner

    def row_format(self) -> RowFormat:
        """The format of its rows (imported on first use)."""
        if self.rows_ref is None:
            raise UnsupportedModelKindError(f"a model of kind {self.name!r} gives no rows: it {self.description}")
        if isinstance(self.rows_ref, str):
            try:
                made = import_ref(self.rows_ref)()
            except (ImportError, AttributeError, TypeError) as exc:
                raise PluginError(f"kind {self.name!r} from {self.owner}: its rows {self.rows_ref!r} cannot be made "
                                  f"({type(exc).__name__}: {exc})") from exc
            if not isinstance(made, RowFormat):
                raise PluginError(f"kind {self.name!r} from {self.owner}: its rows {self.rows_ref!r} name a "
                                  f"{type(made).__name__}, not a zoo.RowFormat subclass")
            self.rows_ref = made
        return self.rows_ref

    def check(self) -> None:
        """Refuse a registration zoo could not use, naming its plugin."""
        if not isinstance(self.name, str) or not KIND_NAME.match(self.name):
            raise RegistryError(f"kind {self.name!r} from {self.owner}: a kind is named with lower-case letters, "
                                "digits and -, starting with a letter")
        unknown = sorted(set(self.verbs) - set(VERBS))
        if unknown:
            raise RegistryError(f"kind {self.name!r} from {self.owner} names verb {unknown[0]!r}; verbs are "
                                f"{', '.join(VERBS)}")
        if ("featurize" in self.verbs) != (self.rows_ref is not None):
            raise RegistryError(f"kind {self.name!r} from {self.owner}: a kind that featurizes names its rows "
                                "(rows=RowFormat), and only such a kind does")
        if self.rows_ref is not None and not isinstance(self.rows_ref, RowFormat) \
                and not (isinstance(self.rows_ref, str) and ":" in self.rows_ref):
            raise RegistryError(f"kind {self.name!r} from {self.owner}: rows= takes a zoo.RowFormat instance or a "
                                f"'module:Class' string, not {self.rows_ref!r}")
        dense = self.rows_ref == DENSE_ROWS or isinstance(self.rows_ref, DenseRows)
        if {"classify", "finetune"} & set(self.verbs) and not dense:
            raise RegistryError(f"kind {self.name!r} from {self.owner}: classify and finetune train on dense "
                                f"vectors; a kind that answers them has zoo's dense rows ({DENSE_ROWS!r})")


@dataclass
class AdapterEntry:
    """A backend and the adapter class that serves it (imported on first use)."""

    backend: str
    ref: type[Adapter] | str
    schemes: tuple[str, ...]
    owner: Owner

    def load_class(self) -> type[Adapter]:
        ref = self.ref
        if isinstance(ref, str):
            ref = self.ref = import_ref(ref)
        return ref


@dataclass
class Registry:
    """Everything registered: look-ups by name, alias, backend and scheme."""

    specs: dict[str, ModelSpec] = field(default_factory=dict)  # canonical name -> spec
    owners: dict[str, Owner] = field(default_factory=dict)  # canonical name -> who registered it
    names: dict[str, str] = field(default_factory=dict)  # lower-case name or alias -> canonical name
    modalities: dict[str, Modality] = field(default_factory=dict)
    kinds: dict[str, Kind] = field(default_factory=dict)
    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    schemes: dict[str, str] = field(default_factory=dict)  # scheme -> backend
    failures: list[PluginFailure] = field(default_factory=list)

    # -- registration ----------------------------------------------------------------------------

    def add_spec(self, spec: ModelSpec, owner: Owner) -> None:
        for name in spec.names:
            if not MODEL_NAME.match(name):
                raise RegistryError(f"invalid model name {name!r} from {owner}: use letters, digits and . _ + - /")
        for name in spec.names:
            canonical = self.names.get(name.lower())
            if canonical is not None:
                raise DuplicateModelError(
                    f"model name {name!r} registered by {owner} is already registered by {self.owners[canonical]}"
                    f" (as {canonical!r}); rename the model or remove one of the two"
                )
        # A curated entry that names no kind is an embedder: asked for as another, it is refused by name
        # before anything downloads.
        self.specs[spec.name] = spec.replace(plugin=str(owner), kind=spec.kind or "embedder")
        self.owners[spec.name] = owner
        for name in spec.names:
            self.names[name.lower()] = spec.name

    def remove_spec(self, name: str) -> None:
        spec = self.specs.pop(name)
        del self.owners[name]
        for alias in spec.names:
            self.names.pop(alias.lower(), None)

    def add_modality(self, modality: Modality) -> None:
        if modality.name in self.modalities:
            raise RegistryError(f"modality {modality.name!r} registered by {modality.owner} is already registered "
                                f"by {self.modalities[modality.name].owner}")
        if not (callable(modality.decode_ref) or isinstance(modality.decode_ref, str)):
            raise RegistryError(f"modality {modality.name!r}: decode must be a callable or a 'module:function' string")
        if (modality.over is None) != (modality.tower_ref is None):
            raise RegistryError(f"modality {modality.name!r}: over= (the modality whose tower embeds it) and tower= "
                                "(what builds that tower) go together")
        try:  # recorded in provenance (JSON) and part of the options a server batches by (hashable)
            json.dumps(modality.settings)
            hash(tuple(modality.settings.items()))
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"modality {modality.name!r}: settings must be plain JSON values (numbers, strings, "
                                f"booleans): {exc}") from None
        bad = [s for s in modality.suffixes if not (s.startswith(".") and s == s.lower())]
        if bad:
            raise RegistryError(f"modality {modality.name!r}: suffixes must be lower case and start with '.', "
                                f"not {bad[0]!r}")
        self.modalities[modality.name] = modality

    def add_kind(self, kind: Kind) -> None:
        kind.check()
        if kind.name in self.kinds:
            raise RegistryError(f"kind {kind.name!r} registered by {kind.owner} is already registered by "
                                f"{self.kinds[kind.name].owner}")
        self.kinds[kind.name] = kind

    def kind(self, name: str) -> Kind:
        """The kind ``name``, or an error naming the kinds there are."""
        try:
            return self.kinds[name]
        except KeyError:
            raise UnsupportedModelKindError(
                f"no installed plugin registers model kind {name!r}{did_you_mean(name, self.kinds)} (kinds: "
                f"{', '.join(self.kinds)}); install the plugin that provides it (zoo plugins lists those "
                "installed)") from None

    def add_adapter(self, entry: AdapterEntry) -> None:
        if entry.backend in self.adapters:
            raise RegistryError(f"backend {entry.backend!r} registered by {entry.owner} is already registered by "
                                f"{self.adapters[entry.backend].owner}")
        for scheme in entry.schemes:
            if scheme in self.schemes:
                owner = self.adapters[self.schemes[scheme]].owner
                raise RegistryError(f"scheme '{scheme}:' registered by {entry.owner} is already registered by {owner}")
        self.adapters[entry.backend] = entry
        for scheme in entry.schemes:
            self.schemes[scheme] = entry.backend

    # -- look-ups -------------------------------------------------------------------------------

    def get(self, name: str) -> ModelSpec | None:
        """The spec for a curated name or alias (case-insensitive), or None."""
        canonical = self.names.get(name.lower())
        return self.specs[canonical] if canonical else None

    def suggest(self, name: str) -> list[str]:
        """Curated names whose name or an alias is close to ``name`` (each model once)."""
        hits = close_matches(name, [n for spec in self.specs.values() for n in spec.names], n=6)
        return list(dict.fromkeys(self.names[h.lower()] for h in hits))[:3]

    def naming_hint(self) -> str:
        schemes = ", ".join(f"'{s}:'" for s in sorted(self.schemes)) or "none"
        return f"(see `zoo list`; pass-through prefixes: {schemes}; or a path to a local folder)"

    def adapter_entry(self, backend: str) -> AdapterEntry:
        try:
            return self.adapters[backend]
        except KeyError:
            raise PluginError(
                f"no adapter for backend {backend!r}{did_you_mean(backend, self.adapters)}; "
                "install or enable the plugin that provides it (`zoo plugins`)"
            ) from None

    def modality(self, name: str) -> Modality:
        try:
            return self.modalities[name]
        except KeyError:
            raise PluginError(
                f"no plugin registers modality {name!r}{did_you_mean(name, self.modalities)}"
            ) from None

    def modality_of_media(self, media_type: str) -> str | None:
        """The modality whose data URLs have MIME type ``media_type`` (``"image/png"``), or None."""
        import fnmatch

        return next((m.name for m in self.modalities.values()
                     if any(fnmatch.fnmatch(media_type.lower(), pattern) for pattern in m.media_types)), None)

    def media_suffixes(self) -> frozenset[str]:
        """Every media file suffix any modality registers."""
        return frozenset(suffix for m in self.modalities.values() for suffix in m.suffixes)

    def models_of(self, query: str) -> list[str]:
        """Sorted names of the models registered by the plugin ``query`` names."""
        return sorted(name for name, owner in self.owners.items() if owner.matches(query))

    def list_models(self, pattern: str | Iterable[str] | None = None, modality: str | None = None,
                    sort: str | None = None) -> list[str]:
        """Curated names matching any fnmatch ``pattern`` (on the name or an alias), sorted by name;
        with ``sort`` (a metric such as ``top1``), only the models that publish it, best first."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
        out = []
        for spec in self.specs.values():
            if modality is not None and spec.modality != modality:
                continue
            if patterns and not any(
                fnmatch.fnmatch(n.lower(), p.lower()) for p in patterns for n in spec.names
            ):
                continue
            out.append(spec)
        if sort is None:
            return sorted(spec.name for spec in out)
        published = sorted({metric for spec in self.specs.values() for metric in spec.scores})
        if sort not in published:
            raise RegistryError(f"no model publishes a {sort!r} score{did_you_mean(sort, published)} (metrics "
                                f"with figures: {', '.join(published) or 'none'})")
        best_first = sort_key(sort)
        scored = [spec for spec in out if sort in spec.scores]
        return [spec.name for spec in sorted(scored, key=lambda spec: (best_first(spec), spec.name))]


def call_registration_hook(pm: ZooPluginManager, hook_name: str, make_register: Callable[[Owner], Callable[..., Any]],
                           *, builtins_first: bool = False) -> None:
    """Call every implementation of a registration hook with a ``register`` bound to its plugin.

    zoo calls each implementation itself (not through pluggy's hook caller) so that each gets its
    own ``register``; a wrapper implementation (``wrapper=True`` or ``hookwrapper=True``) would
    have nothing to wrap, so it is refused. A built-in plugin's error propagates (it is a bug in
    zoo). A third-party plugin's bad registration is recorded as a failure naming the plugin and
    skipped, so its other registrations and every other plugin still work. With ``builtins_first``
    zoo's own implementations run before every plugin's.
    """
    impls = list(reversed(getattr(pm.hook, hook_name).get_hookimpls()))  # pluggy's call order
    if builtins_first:  # zoo's own names are taken first, so a clash is the plugin's failure
        impls.sort(key=lambda impl: not pm.is_builtin(impl.plugin_name))
    for impl in impls:
        builtin = pm.is_builtin(impl.plugin_name)
        owner = Owner(impl.plugin_name, pm.dist_of(impl.plugin_name))
        register = make_register(owner)

        def fail(exc: Exception, name: str = impl.plugin_name) -> None:
            pm.record_failure(PluginFailure(name, pm.dist_of(name), "register",
                                            f"{hook_name}: {type(exc).__name__}: {exc}"))

        def guarded(*args: Any, _register: Callable[..., Any] = register, _fail=fail, **kwargs: Any) -> Any:
            try:
                return _register(*args, **kwargs)
            except (RegistryError, TypeError) as exc:
                _fail(exc)

        try:
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(f"{hook_name} is a registration hook: implement it plainly, not as a wrapper "
                                  "(wrapper=True / hookwrapper=True), and call register()")
            impl.function(**({"register": register if builtin else guarded} if "register" in impl.argnames else {}))
        except Exception as exc:
            if builtin:
                raise
            fail(exc)


def build_registry(pm: ZooPluginManager, catalogue: Path | None = REGISTRY_FILE) -> Registry:
    """Collect modalities, adapters and models from ``registry.yaml`` and every plugin."""
    registry = Registry()

    def register_modality(owner: Owner) -> Callable[..., None]:
        def register(name: str, *, decode: Callable[[Any], Any] | str, description: str = "",
                     examples: Callable[[], list[Any]] | str | None = None, suffixes: Sequence[str] = (),
                     media_types: Sequence[str] = (), over: str | None = None,
                     tower: Callable[..., Any] | str | None = None, settings: Mapping[str, Any] | None = None
                     ) -> None:
            registry.add_modality(Modality(name, decode, description, owner, examples, tuple(suffixes),
                                           tuple(media_types), over, tower, dict(settings or {})))

        return register

    def register_adapter(owner: Owner) -> Callable[..., None]:
        def register(backend: str, adapter: type[Adapter] | str, *, schemes: Sequence[str] = ()) -> None:
            registry.add_adapter(AdapterEntry(backend, adapter, tuple(schemes), owner))

        return register

    def register_kind(owner: Owner) -> Callable[..., None]:
        def register(name: str, *, description: str, verbs: Sequence[str], rows: RowFormat | str | None = None
                     ) -> None:
            registry.add_kind(Kind(name, description, tuple(verbs), rows, owner))

        return register

    def register_model(owner: Owner) -> Callable[..., None]:
        def register(spec: ModelSpec | Mapping[str, Any]) -> None:
            registry.add_spec(spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec), owner)

        return register

    call_registration_hook(pm, "zoo_register_kinds", register_kind, builtins_first=True)
    call_registration_hook(pm, "zoo_register_modalities", register_modality)
    call_registration_hook(pm, "zoo_register_adapters", register_adapter)
    if catalogue is not None:
        for spec in read_registry(catalogue):
            registry.add_spec(spec, CATALOGUE_OWNER)
    call_registration_hook(pm, "zoo_register_models", register_model)
    _drop_unserved(registry, pm)
    registry.failures = list(pm.failures)
    return registry


def _drop_unserved(registry: Registry, pm: ZooPluginManager) -> None:
    """Models whose modality or backend no plugin provides cannot load: report them and leave them out."""
    for spec in list(registry.specs.values()):
        if spec.modality not in registry.modalities:
            need = f"modality {spec.modality!r}, which no plugin registers"
        elif (spec.kind or "embedder") not in registry.kinds:
            need = f"model kind {spec.kind!r}, which no plugin registers"
        elif spec.backend not in registry.adapters:
            need = f"backend {spec.backend!r}, which no adapter serves"
        else:
            continue
        owner = registry.owners[spec.name]
        if owner.is_catalogue:
            raise RegistryError(f"catalogue model {spec.name!r} needs {need}")
        registry.remove_spec(spec.name)
        pm.record_failure(PluginFailure(owner.plugin, owner.dist, "register",
                                        f"model {spec.name!r} needs {need}; install or enable the plugin "
                                        "that provides it"))


_lock = threading.RLock()
# The registry and the plugin manager it was built from: a new manager means a new registry.
_registry: tuple[ZooPluginManager, Registry] | None = None
_building = False


def get_registry() -> Registry:
    """The process-wide registry, built on first use from the process-wide plugin manager."""
    global _registry, _building
    pm = get_plugin_manager()
    with _lock:
        if _registry is None or _registry[0] is not pm:
            if _building:  # a hook implementation looked a model up while registering
                raise PluginError("the registry is being built: a zoo_register_* hook cannot look models up "
                                  "(zoo.load, zoo.resolve, zoo.list_models); read registry files directly instead")
            _building = True
            try:
                _registry = (pm, build_registry(pm))
            finally:
                _building = False
        return _registry[1]
