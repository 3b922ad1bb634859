"""mypy over zoo/, adapters/ and plugins/ under the names they are imported by.

pyproject's package-dir installs adapters/ as zoo.adapters and plugins/ as zoo.plugins. mypy names a
file by its folder (adapters/timm.py would be ``adapters.timm``) and cannot follow the editable
install's import hook, so ``from zoo.adapters.timm import TimmAdapter`` would not resolve. This runs
mypy with the ``[tool.mypy]`` configuration (and any arguments given, as the ``mypy`` command takes
them), renaming those two folders' modules before the build. Exit status as mypy's.

    python .ci/typecheck.py
"""

from __future__ import annotations

import sys
import time

from mypy import util
from mypy.fscache import FileSystemCache
from mypy.main import process_options, run_build

# Folders installed under another package name: [tool.setuptools.package-dir] in pyproject.toml.
PACKAGE_DIR = {"adapters": "zoo.adapters", "plugins": "zoo.plugins"}


def _installed_name(module: str) -> str:
    top, dot, rest = module.partition(".")
    return PACKAGE_DIR[top] + dot + rest if top in PACKAGE_DIR else module


def main(args: list[str]) -> int:
    t0 = time.time()
    fscache = FileSystemCache()
    sources, options = process_options(args, stdout=sys.stdout, stderr=sys.stderr, fscache=fscache)
    for source in sources:
        source.module = _installed_name(source.module)
    _, messages, blockers = run_build(sources, options, fscache, t0, sys.stdout, sys.stderr)
    formatter = util.FancyFormatter(sys.stdout, sys.stderr, options.hide_error_codes)
    n_errors, _, n_files = util.count_stats(messages)
    if n_errors:
        print(formatter.format_error(n_errors, n_files, len(sources), blockers=blockers,
                                     use_color=options.color_output))
        return 2 if blockers else 1
    print(formatter.format_success(len(sources), options.color_output))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
