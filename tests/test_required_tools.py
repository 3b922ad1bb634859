"""The tests that need espeak-ng, fortunes or chromium go through required_tools: they skip where the
tool is missing, except under CI=true, where they fail; and no test checks for those tools by itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import required_tools
from required_tools import TOOLS, needs_tool, require_tool

TESTS = Path(__file__).resolve().parent
TOOL_WORDS = re.compile(r"espeak|fortune|chromium", re.IGNORECASE)
SKIPPING = {"skip", "skipif", "importorskip", "which"}


@pytest.fixture
def missing_tool(monkeypatch):
    monkeypatch.setitem(TOOLS, "espeak-ng", ("apt-get install espeak-ng", lambda: False))
    return "espeak-ng"


@pytest.mark.parametrize("ci", ["", "false", "0"])
def test_a_missing_tool_skips_outside_ci(missing_tool, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="espeak-ng is not installed"):
        require_tool(missing_tool)


@pytest.mark.parametrize("ci", ["true", "True", "1"])
def test_a_missing_tool_fails_under_ci(missing_tool, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="espeak-ng is not installed.*under CI=true"):
        require_tool(missing_tool)


def test_a_present_tool_lets_the_test_run(monkeypatch):
    monkeypatch.setitem(TOOLS, "chromium", ("apt-get install chromium", lambda: True))
    monkeypatch.setenv("CI", "true")
    assert require_tool("chromium") is None


def test_the_mark_names_only_known_tools():
    assert needs_tool("fortunes", "chromium").args == ("fortunes", "chromium")
    with pytest.raises(ValueError, match="unknown tool"):
        needs_tool("espeak")


@pytest.mark.slow  # reads every test module
def test_no_test_checks_for_the_tools_by_itself():
    """A skip (or shutil.which) about espeak-ng, fortunes or chromium outside required_tools.py would skip
    quietly under CI too: every such test goes through require_tool or @needs_tool instead."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name in {"required_tools.py", Path(__file__).name}:
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            segment = ast.get_source_segment(source, node) or ""
            if name in SKIPPING and TOOL_WORDS.search(segment):
                offenders.append(f"{path.name}:{node.lineno}: {segment.splitlines()[0]}")
    assert not offenders, "use required_tools.require_tool / @needs_tool:\n" + "\n".join(offenders)


def test_ci_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert required_tools.in_ci()
    monkeypatch.delenv("CI")
    assert not required_tools.in_ci()
