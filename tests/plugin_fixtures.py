"""Install throwaway plugin distributions for real: a dist-info folder with entry_points.txt on
sys.path, found by importlib.metadata exactly as a pip-installed plugin is."""

from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def install_plugin(site: Path, dist: str, module: str, source: str, *, version: str = "1.0",
                   entry_name: str | None = None) -> None:
    """Write ``module.py`` and ``<dist>-<version>.dist-info`` into ``site`` (which must be on sys.path)."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[zoo]\n{entry_name or module} = {module}\n")
    importlib.invalidate_caches()
    sys.modules.pop(module, None)


def pip_install_example(example: Path, site: Path) -> Path:
    """Install an example plugin package (examples/...) with pip for real, into the folder ``site``."""
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(example)], check=True)
    return site


@contextlib.contextmanager
def example_on_path(site: Path, module: str, monkeypatch: Any) -> Iterator[Path]:
    """The installed example plugin found through its entry point, for one test: on ``sys.path``
    with a fresh plugin manager; its modules forgotten afterwards."""
    from zoo.catalog._plugin_manager import reset_plugin_manager

    monkeypatch.syspath_prepend(str(site))
    reset_plugin_manager()
    yield site
    for name in [m for m in sys.modules if m.startswith(module)]:
        del sys.modules[name]
    reset_plugin_manager()
