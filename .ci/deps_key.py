"""Print a short hash of everything that decides the CI virtual environment's contents."""

import hashlib
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
material = {
    "python": sys.version.split()[0],
    "dependencies": project.get("dependencies", []),
    "optional": project.get("optional-dependencies", {}),
    "build": tomllib.loads((root / "pyproject.toml").read_text())["build-system"],
    "install": [line for line in (root / ".ci/run").read_text().splitlines() if "pip install" in line],
}
print(hashlib.sha256(repr(sorted(material.items())).encode()).hexdigest()[:16])
