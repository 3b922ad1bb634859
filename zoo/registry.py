"""The runtime catalogue: models, modalities and adapters from ``registry.yaml`` and every plugin.

Built once per process from the plugin manager. Each registration is attributed to the plugin that
made it, so a clash names both sides; a third-party plugin whose registration hook raises is
reported and skipped without breaking the rest of the zoo.
"""

from __future__ import annotations

import fnmatch
import re
import importlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DuplicateModelError, PluginError, RegistryError, UnknownModelError, close_matches
from .registry_file import read_registry
from .spec import ModelSpec

if TYPE_CHECKING:
    from .adapter import Adapter
    from .plugin_manager import PluginFailure, ZooPluginManager

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]*$")
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
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


@dataclass
class Modality:
    """An input modality, how one input item of it decodes, and example inputs for conformance checks."""

    name: str
    decode_ref: Callable[[Any], Any] | str
    description: str
    plugin: str
    examples_ref: Callable[[], list[Any]] | str | None = None

    @property
    def decode(self) -> Callable[[Any], Any]:
        if isinstance(self.decode_ref, str):
            self.decode_ref = import_ref(self.decode_ref)
        return self.decode_ref

    def examples(self) -> list[Any]:
        """A few valid inputs of this modality (empty if its plugin gives none)."""
        if self.examples_ref is None:
            return []
        if isinstance(self.examples_ref, str):
            self.examples_ref = import_ref(self.examples_ref)
        return list(self.examples_ref())


@dataclass
class AdapterEntry:
    """A backend and the adapter class that serves it (imported on first use)."""

    backend: str
    ref: type[Adapter] | str
    schemes: tuple[str, ...]
    plugin: str

    def load_class(self) -> type[Adapter]:
        if isinstance(self.ref, str):
            self.ref = import_ref(self.ref)
        return self.ref


@dataclass
class Registry:
    """Everything registered: look-ups by name, alias, backend and scheme."""

    specs: dict[str, ModelSpec] = field(default_factory=dict)  # canonical name -> spec
    names: dict[str, str] = field(default_factory=dict)  # lower-case name or alias -> canonical name
    modalities: dict[str, Modality] = field(default_factory=dict)
    adapters: dict[str, AdapterEntry] = field(default_factory=dict)
    schemes: dict[str, str] = field(default_factory=dict)  # scheme -> backend
    failures: list[PluginFailure] = field(default_factory=list)

    # -- registration ----------------------------------------------------------------------------

    def add_spec(self, spec: ModelSpec, plugin: str) -> None:
        for name in spec.names:
            if not MODEL_NAME.match(name):
                raise RegistryError(f"invalid model name {name!r} from {plugin}: use letters, digits and . _ + - /")
        spec = spec.replace(plugin=plugin)
        for name in spec.names:
            owner = self.names.get(name.lower())
            if owner is not None:
                other = self.specs[owner].plugin
                raise DuplicateModelError(
                    f"model name {name!r} registered by {plugin} is already registered by {other}"
                    f" (as {owner!r}); rename the model or remove one of the two"
                )
        self.specs[spec.name] = spec
        for name in spec.names:
            self.names[name.lower()] = spec.name

    def add_modality(self, name: str, decode: Callable[[Any], Any] | str, description: str, plugin: str,
                     examples: Callable[[], list[Any]] | str | None = None) -> None:
        if name in self.modalities:
            raise RegistryError(
                f"modality {name!r} registered by {plugin} is already registered by {self.modalities[name].plugin}"
            )
        if not (callable(decode) or isinstance(decode, str)):
            raise RegistryError(f"modality {name!r}: decode must be a callable or a 'module:function' string")
        self.modalities[name] = Modality(name, decode, description, plugin, examples)

    def add_adapter(self, backend: str, adapter: type[Adapter] | str, schemes: Sequence[str], plugin: str) -> None:
        if backend in self.adapters:
            raise RegistryError(
                f"backend {backend!r} registered by {plugin} is already registered by {self.adapters[backend].plugin}"
            )
        for scheme in schemes:
            if scheme in self.schemes:
                owner = self.adapters[self.schemes[scheme]].plugin
                raise RegistryError(f"scheme '{scheme}:' registered by {plugin} is already registered by {owner}")
        self.adapters[backend] = AdapterEntry(backend, adapter, tuple(schemes), plugin)
        for scheme in schemes:
            self.schemes[scheme] = backend

    # -- look-ups -------------------------------------------------------------------------------

    def get(self, name: str) -> ModelSpec | None:
        """The spec for a curated name or alias (case-insensitive), or None."""
        canonical = self.names.get(name.lower())
        return self.specs[canonical] if canonical else None

    def __getitem__(self, name: str) -> ModelSpec:
        spec = self.get(name)
        if spec is None:
            raise UnknownModelError(name, self.suggest(name), hint=self.naming_hint())
        return spec

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
            from .errors import did_you_mean

            raise PluginError(
                f"no adapter for backend {backend!r}{did_you_mean(backend, self.adapters)}; "
                "install or enable the plugin that provides it (`zoo plugins`)"
            ) from None

    def modality(self, name: str) -> Modality:
        try:
            return self.modalities[name]
        except KeyError:
            from .errors import did_you_mean

            raise PluginError(
                f"no plugin registers modality {name!r}{did_you_mean(name, self.modalities)}"
            ) from None

    def list_models(self, pattern: str | Iterable[str] | None = None, modality: str | None = None) -> list[str]:
        """Sorted curated names matching any fnmatch ``pattern`` (on the name or an alias)."""
        patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
        out = []
        for spec in self.specs.values():
            if modality is not None and spec.modality != modality:
                continue
            if patterns and not any(
                fnmatch.fnmatch(n.lower(), p.lower()) for p in patterns for n in spec.names
            ):
                continue
            out.append(spec.name)
        return sorted(out)


def _call_each(pm: ZooPluginManager, hook_name: str, make_register: Callable[[str], Callable[..., None]]) -> None:
    """Call every implementation of a registration hook with a ``register`` bound to its plugin.

    A built-in plugin's error propagates (it is a bug in zoo). A third-party plugin's bad
    registration is recorded as a failure naming the plugin and skipped, so its other
    registrations and every other plugin still work.
    """
    from .plugin_manager import PluginFailure

    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):  # pluggy's call order
        builtin = pm.is_builtin(impl.plugin_name)
        register = make_register(pm.display_name(impl.plugin_name))

        def fail(exc: Exception, name: str = impl.plugin_name) -> None:
            pm.record_failure(PluginFailure(name, pm.dist_of(name), "register",
                                            f"{hook_name}: {type(exc).__name__}: {exc}"))

        def guarded(*args: Any, _register: Callable[..., None] = register, _fail=fail, **kwargs: Any) -> None:
            try:
                _register(*args, **kwargs)
            except (RegistryError, TypeError) as exc:
                _fail(exc)

        kwargs = {"register": register if builtin else guarded} if "register" in impl.argnames else {}
        try:
            impl.function(**kwargs)
        except Exception as exc:
            if builtin:
                raise
            fail(exc)


def build_registry(pm: ZooPluginManager, catalogue: Path | None = REGISTRY_FILE) -> Registry:
    """Collect modalities, adapters and models from ``registry.yaml`` and every plugin."""
    registry = Registry()

    def register_modality(who: str) -> Callable[..., None]:
        def register(name: str, *, decode: Callable[[Any], Any] | str, description: str = "",
                     examples: Callable[[], list[Any]] | str | None = None) -> None:
            registry.add_modality(name, decode, description, who, examples)

        return register

    def register_adapter(who: str) -> Callable[..., None]:
        def register(backend: str, adapter: type[Adapter] | str, *, schemes: Sequence[str] = ()) -> None:
            registry.add_adapter(backend, adapter, schemes, who)

        return register

    def register_model(who: str) -> Callable[..., None]:
        def register(spec: ModelSpec | Mapping[str, Any]) -> None:
            registry.add_spec(spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec), who)

        return register

    _call_each(pm, "zoo_register_modalities", register_modality)
    _call_each(pm, "zoo_register_adapters", register_adapter)
    if catalogue is not None:
        for spec in read_registry(catalogue):
            registry.add_spec(spec, f"zoo ({CATALOGUE})")
    _call_each(pm, "zoo_register_models", register_model)
    _drop_unserved(registry, pm)
    registry.failures = list(pm.failures)
    return registry


def _drop_unserved(registry: Registry, pm: ZooPluginManager) -> None:
    """Models whose modality or backend no plugin provides cannot load: report them and leave them out."""
    from .plugin_manager import PluginFailure

    for spec in list(registry.specs.values()):
        if spec.modality not in registry.modalities:
            need = f"modality {spec.modality!r}, which no plugin registers"
        elif spec.backend not in registry.adapters:
            need = f"backend {spec.backend!r}, which no adapter serves"
        else:
            continue
        if spec.plugin and spec.plugin.startswith("zoo ("):
            raise RegistryError(f"catalogue model {spec.name!r} needs {need}")
        del registry.specs[spec.name]
        for name in spec.names:
            registry.names.pop(name.lower(), None)
        pm.record_failure(PluginFailure(spec.plugin or "?", None, "register",
                                        f"model {spec.name!r} needs {need}; install or enable the plugin "
                                        "that provides it"))


_lock = threading.RLock()
_registry: Registry | None = None
_building = False


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry, _building
    from .plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    with _lock:
        if _registry is None:
            if _building:  # a hook implementation looked a model up while registering
                raise PluginError("the registry is being built: a zoo_register_* hook cannot look models up "
                                  "(zoo.load, zoo.resolve, zoo.list_models); read registry files directly instead")
            _building = True
            try:
                _registry = build_registry(pm)
            finally:
                _building = False
        return _registry


def reset_registry() -> None:
    """Forget the registry so the next look-up rebuilds it (after installing a plugin, in tests)."""
    global _registry
    with _lock:
        _registry = None
