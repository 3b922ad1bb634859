"""Install throwaway plugin distributions for real: a dist-info folder with entry_points.txt on
sys.path, found by importlib.metadata exactly as a pip-installed plugin is."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path


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
