"""Every third-party module the tests import is declared: it comes from a requirement of pyproject.toml
(the core dependencies, or the ``test`` extra with the extras it names) or from one of .ci/run's
``pip install`` lines. Otherwise the suite passes here only because something else happened to pull the
package in, and fails (or skips) on a clean install of ``pip install -e '.[test]'``.

The imports are read with ``ast``: import statements anywhere in a file (in functions too), the names
given to ``pytest.importorskip`` / ``importlib.import_module``, and the Python code in string constants
(the scripts tests run with ``python -c``). Modules are mapped to their distributions with
``importlib.metadata.packages_distributions()``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DIST = "zoo-models"
# The package itself (zoo, and the folders it maps to zoo.adapters / zoo.plugins), the example plugin
# that the tests pip-install from examples/, and the tests' own helper modules.
LOCAL = {"zoo", "adapters", "plugins", "zoo_crepe", "zoo_sparse", "tiny_sparse"} | {p.stem for p in TESTS.glob("*.py")}
IMPORTING_CALLS = {"importorskip", "import_module", "__import__"}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (Open_Clip.torch == open-clip-torch)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(source: str) -> set[str]:
    """The top-level modules ``source`` imports, including those named in strings it runs as code."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in IMPORTING_CALLS:
                found.add(node.args[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            found.update(imported_modules(textwrap.dedent(node.value)))
    return {name.split(".")[0] for name in found if name}


def _requirement(spec: str) -> tuple[str, set[str]]:
    """(canonical name, extras) of a PEP 508 requirement string."""
    match = _NAME.match(spec)
    assert match, f"cannot read requirement {spec!r}"
    return canonical(match.group(1)), {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}


def _declared_by_pyproject() -> set[str] | None:
    """Read from pyproject.toml itself: the installed metadata can be stale (a zoo_models.egg-info left
    in the checkout shadows the editable install's on sys.path)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: read the installed metadata instead
        return None
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    names = {_requirement(spec)[0] for spec in project.get("dependencies", [])}
    todo, seen = ["test"], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in optional, f"pyproject.toml names the extra {extra!r}, which it does not define"
        for spec in optional[extra]:
            name, extras = _requirement(spec)
            if name == canonical(DIST):
                todo.extend(extras)
            else:
                names.add(name)
    return names


def _declared_by_metadata() -> set[str]:
    requires = importlib.metadata.requires(DIST) or []
    names, extras, todo = set(), set(), ["test"]
    while todo:
        extras.add(todo.pop())
        names.clear()
        for spec in requires:
            name, wanted = _requirement(spec)
            marker = spec.partition(";")[2]
            needs = set(re.findall(r"""extra\s*==\s*["']([^"']+)["']""", marker))
            if needs and not needs & extras:
                continue
            if name == canonical(DIST):
                todo.extend(wanted - extras)
            else:
                names.add(name)
    return names


def _installed_by_ci_script() -> set[str]:
    """What .ci/run installs beside the extras (resemblyzer, with --no-deps)."""
    names = set()
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        if "pip install" not in line or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line.split("pip install", 1)[1], comments=True)
        for before, word in zip(["", *words], words):
            if not word.startswith(("-", ".", "$")) and before != "-e" and _NAME.fullmatch(word.split("=")[0]):
                names.add(_requirement(word)[0])
    return names


def declared_distributions() -> set[str]:
    declared = _declared_by_pyproject()
    return (declared if declared is not None else _declared_by_metadata()) | _installed_by_ci_script()


def test_the_scanner_sees_every_way_the_tests_import():
    # Standard-library names only: this file is scanned too.
    source = textwrap.dedent('''
        import json.decoder, os as c
        from email.mime import text
        from . import local
        def t():
            import gzip
            pytest.importorskip("xml.dom")
            importlib.import_module("zlib")
        SCRIPT = """
            import csv, sys
            from html import escape
        """
        DOC = "the word import alone is not code"
    ''')
    assert imported_modules(source) == {"json", "os", "email", "gzip", "xml", "zlib", "csv", "sys", "html"}


def test_the_declared_set_includes_core_test_and_nested_extras():
    declared = declared_distributions()
    # core, the test extra itself, an extra the test extra names, one that extra names, .ci/run's
    assert {"torch", "pytest", "faiss-cpu", "onnx", "resemblyzer"} <= declared


def test_every_third_party_module_the_tests_import_is_declared():
    modules: dict[str, set[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        for module in imported_modules(path.read_text()):
            modules.setdefault(module, set()).add(path.relative_to(ROOT).as_posix())
    third_party = {m: files for m, files in modules.items() if m not in sys.stdlib_module_names and m not in LOCAL}
    assert {"torch", "pytest", "PIL"} <= set(third_party)  # the scan did read the tests

    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    problems = []
    for module, files in sorted(third_party.items()):
        dists = {canonical(d) for d in providers.get(module, [])}
        where = ", ".join(sorted(files))
        if not dists:
            problems.append(f"{module} (imported by {where}) is not installed here, so no declared package provides it")
        elif not dists & declared:
            problems.append(f"{module} (imported by {where}) comes from {' / '.join(sorted(dists))}, which is neither "
                            "a dependency nor in the 'test' extra of pyproject.toml")
    assert not problems, "undeclared test imports:\n" + "\n".join(problems)


@pytest.mark.parametrize("spec", ["PyYAML>=6", "uvloop>=0.19; sys_platform != 'win32'", "zoo-models[onnx,gpu]"])
def test_requirement_names_are_read_as_pip_reads_them(spec):
    assert _requirement(spec)[0] in {"pyyaml", "uvloop", "zoo-models"}
