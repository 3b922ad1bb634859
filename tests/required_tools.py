"""The Debian tools some tests need: espeak-ng (speech), fortunes (labelled quotes), chromium (renders
zoo map's page). Every test that needs one goes through :func:`require_tool` (or the ``needs_tool``
mark, which conftest.py routes to it): where the tool is missing the test skips, but under ``CI=true``
it fails, so CI cannot pass by quietly skipping what .ci/run installs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FORTUNES = Path("/usr/share/games/fortunes")

# name -> (how to install it, whether it is here)
TOOLS: dict[str, tuple[str, Callable[[], bool]]] = {
    "espeak-ng": ("apt-get install espeak-ng", lambda: shutil.which("espeak-ng") is not None),
    "fortunes": ("apt-get install fortunes", lambda: (FORTUNES / "science").is_file()),
    "chromium": ("apt-get install chromium", lambda: shutil.which("chromium") is not None),
}


def in_ci() -> bool:
    """Whether this is a CI run (CI=true, as CI services and .ci/run's callers set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_tool(name: str) -> None:
    """Return where tool ``name`` is installed; else skip the calling test, or fail it under CI=true."""
    install, present = TOOLS[name]
    if present():
        return
    message = f"{name} is not installed ({install})"
    if in_ci():
        pytest.fail(f"{message}; under CI=true a test that needs it fails instead of skipping "
                    "(.ci/run installs it when run as root)", pytrace=False)
    pytest.skip(message)


def needs_tool(*names: str) -> pytest.MarkDecorator:
    """Mark a test that needs these tools: ``@needs_tool("chromium")`` (checked by conftest.py at set-up)."""
    unknown = [name for name in names if name not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; known: {sorted(TOOLS)}")
    return pytest.mark.needs_tool(*names)
