"""Environment settings, read at call time so tests and long-lived processes see changes.

=====================  ========================================================================
``ZOO_HOME``           cache root (default: the user cache directory, e.g. ``~/.cache/zoo``)
``ZOO_OFFLINE``        ``1`` never opens a socket; ``HF_HUB_OFFLINE=1`` means the same
``ZOO_PLUGINS``        comma-separated allow-list of third-party plugins (distribution or entry
                       point names); unset loads all, empty loads none
``ZOO_MALLOC_TUNING``  ``0`` leaves glibc's malloc settings alone when a model runs on the CPU
                       (see :mod:`zoo.core._allocator`)
``ZOO_API_KEY``        the key ``zoo serve`` asks of every request but ``GET /health`` (``Authorization:
                       Bearer KEY``); unset: no key
``ZOO_RUNTIME``        what runs a loaded model's frozen forward pass when ``zoo.load`` is not
                       told: ``torch`` (default), ``onnx`` or ``openvino`` (see
                       :mod:`zoo.core._compiled`)
=====================  ========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def zoo_home() -> Path:
    """The cache root: ``$ZOO_HOME`` or the platform's user cache directory."""
    value = os.environ.get("ZOO_HOME")
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("zoo", appauthor=False))


def offline() -> bool:
    """True when zoo must not open any network connection."""
    return _flag("ZOO_OFFLINE") or _flag("HF_HUB_OFFLINE")


def offline_reason() -> str:
    """Which variable turned offline mode on (for error messages)."""
    if _flag("ZOO_OFFLINE"):
        return "ZOO_OFFLINE=1"
    return "HF_HUB_OFFLINE=1"


def malloc_tuning() -> bool:
    """False when ``ZOO_MALLOC_TUNING`` turns zoo's malloc tuning off (it is on by default)."""
    return os.environ.get("ZOO_MALLOC_TUNING", "1").strip().lower() not in {"0", "false", "no", "off"}


def serve_api_key() -> str | None:
    """``$ZOO_API_KEY``: the key ``zoo serve`` asks every request for (None when unset or empty)."""
    return os.environ.get("ZOO_API_KEY", "").strip() or None


def default_runtime() -> str:
    """``$ZOO_RUNTIME`` (lower-cased), or ``torch``."""
    return os.environ.get("ZOO_RUNTIME", "").strip().lower() or "torch"


def plugin_allow_list() -> frozenset[str] | None:
    """Names allowed by ``ZOO_PLUGINS``, or None when every installed plugin may load."""
    value = os.environ.get("ZOO_PLUGINS")
    if value is None:
        return None
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())
