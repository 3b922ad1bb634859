"""The pluggy plugin manager: built-in plugins by module path, third-party ones by entry point.

A third-party plugin that fails to import or does not match the hook specs is reported by its
distribution name (see :func:`plugin_failures` and ``zoo plugins``) and skipped; the rest of the zoo
keeps working. ``ZOO_PLUGINS`` restricts which third-party plugins load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
import warnings
from dataclasses import dataclass

import pluggy

from zoo import hookspecs
from zoo.errors import did_you_mean
from zoo.store._settings import plugin_allow_list

ENTRY_POINT_GROUP = "zoo"

# Registered by module path, as pytest and datasette do: never also as entry points, since pluggy
# refuses a plugin registered twice.
BUILTIN_PLUGINS = (
    "zoo.catalog._defaults",
    "zoo.training._plugin",
    "zoo.evaluation._plugin",
    "zoo.core._rerank_plugin",
    "zoo.plugins.text",
    "zoo.plugins.vision",
    "zoo.plugins.audio",
    "zoo.plugins.image_text",
    "zoo.plugins.video",
    "zoo.plugins.combined",
    "zoo.cli",
)


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, for ``zoo plugins``."""

    name: str
    dist: str | None
    version: str | None
    builtin: bool
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, and why."""

    name: str
    dist: str | None
    stage: str  # "import", "validate" or "register"
    error: str

    def __str__(self) -> str:
        who = f"{self.dist} ({self.name})" if self.dist else self.name
        fix = {
            "import": f"fix or uninstall {self.dist or self.name}, or leave it out of ZOO_PLUGINS",
            "register": f"fix the registration in {self.dist or self.name}",
        }.get(self.stage)
        return f"plugin {who} failed to {self.stage}: {self.error}" + (f"; {fix}" if fix else "")


class ZooPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from and which ones failed."""

    def __init__(self) -> None:
        super().__init__("zoo")
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.builtin_names: set[str] = set()

    def record_failure(self, failure: PluginFailure) -> None:
        self.failures.append(failure)
        warnings.warn(str(failure), RuntimeWarning, stacklevel=3)

    def dist_of(self, plugin_name: str) -> str | None:
        entry = self.dists.get(plugin_name)
        return entry[0] if entry else None

    def is_builtin(self, plugin_name: str) -> bool:
        return plugin_name in self.builtin_names

    def infos(self) -> list[PluginInfo]:
        out = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            dist, version = self.dists.get(name, (None, None))
            hooks = tuple(sorted(h.name for h in self.get_hookcallers(plugin) or ()))
            out.append(PluginInfo(name, dist, version, name in self.builtin_names, hooks))
        return out


def _allowed(allow: frozenset[str] | None, *names: str | None) -> bool:
    if allow is None:
        return True
    return any(n is not None and n.lower() in allow for n in names)


def _register(pm: ZooPluginManager, plugin: object, name: str, dist: str | None) -> bool:
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        pm.record_failure(PluginFailure(name, dist, "validate", f"{exc}; fix the hookimpl's name or arguments"))
        if pm.get_plugin(name) is not None:  # pluggy < 1.7 could leave a half-registered plugin behind
            pm.unregister(name=name)
        return False
    return True


def load_entry_point_plugins(pm: ZooPluginManager) -> None:
    """Import and register every allowed plugin of the ``zoo`` entry-point group."""
    allow = plugin_allow_list()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        if not _allowed(allow, ep.name, dist_name):
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # any error in third-party import code must not break the zoo
            pm.record_failure(PluginFailure(ep.name, dist_name, "import", f"{type(exc).__name__}: {exc}"))
            continue
        if _register(pm, plugin, ep.name, dist_name):
            pm.dists[ep.name] = (dist_name or ep.name, version or "")


def build_plugin_manager(*, builtins: tuple[str, ...] = BUILTIN_PLUGINS, entry_points: bool = True) -> ZooPluginManager:
    """A fresh manager with the built-in plugins and (optionally) the entry-point ones."""
    pm = ZooPluginManager()
    for module_name in builtins:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        pm.builtin_names.add(module_name)
    if entry_points:
        load_entry_point_plugins(pm)
    # A hookimpl whose name starts with zoo_ but matches no spec is a typo: fail loudly, per plugin.
    while True:  # ends: each pass unregisters one plugin or raises
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            bad_name = pm.get_name(exc.plugin) or repr(exc.plugin)
            if bad_name in pm.builtin_names:
                raise
            pm.unregister(exc.plugin)
            pm.record_failure(PluginFailure(bad_name, pm.dist_of(bad_name), "validate",
                                            f"{exc}{_hook_hint(exc.plugin)}; the hooks are listed in zoo.hookspecs"))
    return pm


def _hook_hint(plugin: object) -> str:
    """A did-you-mean for each function of ``plugin`` named like a hook that zoo does not have."""
    known = [name for name in dir(hookspecs) if name.startswith("zoo_")]
    typos = [name for name in dir(plugin) if name.startswith("zoo_") and name not in known]
    return "".join(f" ({name}{did_you_mean(name, known)})" for name in typos if did_you_mean(name, known))


_lock = threading.Lock()
_pm: ZooPluginManager | None = None


def get_plugin_manager() -> ZooPluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = build_plugin_manager()
        return _pm


def reset_plugin_manager(pm: ZooPluginManager | None = None) -> None:
    """Replace (or drop, to rebuild lazily) the process-wide manager; for tests and notebooks.
    The registry follows: it is rebuilt from whichever manager is current."""
    global _pm
    with _lock:
        _pm = pm
