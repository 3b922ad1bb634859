"""The README and docs/ say only what is true of the code they sit beside.

- every flag a ``zoo ...`` command names (in code blocks and inline code) is an option of that
  command in ``zoo.cli.build_parser()`` (the source of truth, commands added by plugins included);
  a flag named alone (`--kind hnsw`) is not checked: it may be a bench script's or pip's;
- every ```python block compiles;
- every relative link (and ``#anchor``) resolves;
- code fences are balanced, docs/README.md lists every page, and the README stays short and keeps the
  install + test command that CI runs.

Offline and fast: nothing is imported but the CLI's parser.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 10_000

# The install + test command CI runs (.ci/run), and the fast tier: the README keeps them verbatim.
CI_COMMAND = ('python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/pip install --no-deps '
              'resemblyzer==0.1.4 && .venv/bin/python -m pytest')
FAST_TIER = '.venv/bin/python -m pytest -m "not slow"'

# A word in command position that starts another tool's command: its flags are not zoo's.
OTHER_TOOLS = {"python", "python3", "pip", "pip3", "pytest", "torchrun", "curl", "bash", "sh", "apt-get", "apt",
               "uv", "git", "docker", "ray", "huggingface-cli", "wget", "tar"}
# Fenced blocks in these languages hold no shell commands.
NOT_SHELL = {"python", "py", "pycon", "toml", "yaml", "yml", "json", "ini", "cfg"}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
REF_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
TOKEN = re.compile(r"&&|\|\||[|;&]|[^\s\[\]|;&()]+")
LONG_FLAG = re.compile(r"^--[A-Za-z0-9][\w-]*")
SHORT_FLAG = re.compile(r"^-[A-Za-z]$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------------------------------ markdown


@dataclass
class Fence:
    lang: str
    start: int  # line number of the opening fence (1-based)
    lines: list[str] = field(default_factory=list)
    closed: bool = False


@dataclass
class Markdown:
    """A page split into fenced blocks and prose paragraphs (each with the line it starts on)."""

    path: Path
    fences: list[Fence]
    paragraphs: list[tuple[int, str]]
    headings: list[str]


def parse(path: Path) -> Markdown:
    fences: list[Fence] = []
    paragraphs: list[tuple[int, str]] = []
    headings: list[str] = []
    current: Fence | None = None
    opener = ""
    para: list[str] = []
    para_start = 0

    def flush() -> None:
        nonlocal para
        if para:
            paragraphs.append((para_start, "\n".join(para)))
        para = []

    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        match = FENCE.match(line)
        if current is not None:
            if match and match.group(1)[0] == opener[0] and len(match.group(1)) >= len(opener) \
                    and not match.group(2).strip():
                current.closed = True
                current = None
            else:
                current.lines.append(line)
            continue
        if match:
            flush()
            opener = match.group(1)
            info = match.group(2).strip()
            current = Fence(lang=info.split()[0].lower() if info else "", start=number)
            fences.append(current)
            continue
        if not line.strip():
            flush()
            continue
        if line.lstrip().startswith("#") and re.match(r"^ {0,3}#{1,6}(\s|$)", line):
            flush()
            headings.append(re.sub(r"^ {0,3}#{1,6}\s*|\s+#+\s*$", "", line).strip())
            paragraphs.append((number, line))
            continue
        if not para:
            para_start = number
        para.append(line)
    flush()
    return Markdown(path, fences, paragraphs, headings)


def code_spans(paragraph_start: int, text: str) -> list[tuple[int, str]]:
    """Inline code spans of a paragraph, each with the line it starts on."""
    return [(paragraph_start + text.count("\n", 0, m.start()), m.group(2).replace("\n", " ").strip())
            for m in CODE_SPAN.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Markdown) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in page.headings:
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


PAGES = {path: parse(path) for path in DOCS}


# ------------------------------------------------------------------------------------------ the parser


@dataclass
class Command:
    options: set[str]
    children: dict[str, Command]


def command_tree(parser: argparse.ArgumentParser) -> Command:
    node = Command(options=set(), children={})
    for action in parser._actions:
        node.options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                node.children[name] = command_tree(child)
    return node


def all_options(node: Command) -> set[str]:
    out = set(node.options)
    for child in node.children.values():
        out |= all_options(child)
    return out


@pytest.fixture(scope="module")
def tree() -> Command:
    from zoo.cli import build_parser

    return command_tree(build_parser())


# ------------------------------------------------------------------------------------------ commands


@dataclass
class Mention:
    line: int
    command: tuple[str, ...] | None  # None: a zoo command whose subcommand the text does not determine
    flag: str


def zoo_mentions(tree: Command, line: int, text: str, *,
                 continues: dict | None = None) -> tuple[list[Mention], list[str], dict]:
    """The flags that ``zoo`` commands in one logical line of shell name, and unknown subcommands.

    ``continues`` carries the command from the line before (an indented or backslash continuation)."""
    state = dict(continues) if continues else {"command": False, "path": None, "at_start": True}
    mentions: list[Mention] = []
    unknown: list[str] = []
    tokens = TOKEN.findall(text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        at_start = state["at_start"]
        state["at_start"] = False
        if token in {"|", "||", "&", "&&", ";", "$"}:
            state["at_start"] = True
            i += 1
            continue
        if at_start and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):  # VAR=value before a command
            state["at_start"] = True
            i += 1
            continue
        word = token.rsplit("/", 1)[-1]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if word == "zoo" and (at_start or nxt in tree.children):
            # `zoo SUB [SUBSUB...]`: walk down the parser as far as the words name commands
            node, path, j = tree, (), i + 1
            while j < len(tokens) and tokens[j] in node.children:
                node, path = node.children[tokens[j]], (*path, tokens[j])
                j += 1
            after = tokens[j] if j < len(tokens) else ""
            if node is tree and re.match(r"^[a-z][a-z0-9-]*$", after) and at_start:
                unknown.append(f"{line}: `zoo {after}` is not a zoo command "
                               f"(commands: {', '.join(sorted(tree.children))})")
                path = None
            elif node is tree and after and not after.startswith("-"):
                path = None  # a placeholder (`zoo COMMAND --help`): any command's flag will do
            state.update(command=True, path=path)
            i = j
            continue
        flag = LONG_FLAG.match(token) or SHORT_FLAG.match(token.rstrip(",."))
        if at_start and word in OTHER_TOOLS:
            state.update(command=False, path=None)
        elif state["command"] and flag:
            mentions.append(Mention(line, state["path"], flag.group(0)))
        i += 1
    state["at_start"] = True
    return mentions, unknown, state


def mentions_in(page: Markdown, tree: Command) -> tuple[list[Mention], list[str]]:
    mentions: list[Mention] = []
    unknown: list[str] = []
    for fence in page.fences:
        if fence.lang in NOT_SHELL:
            continue
        state = None
        backslash = False
        for offset, raw in enumerate(fence.lines, start=1):
            number = fence.start + offset
            text = re.sub(r"^\s*\$\s", "", raw)  # a shell prompt
            continuation = backslash or (raw[:1].isspace() and state is not None)
            carried = dict(state, at_start=backslash and state["at_start"]) if continuation and state else None
            found, bad, state = zoo_mentions(tree, number, text.rstrip().rstrip("\\"), continues=carried)
            mentions += found
            unknown += bad
            backslash = raw.rstrip().endswith("\\")
    for start, text in page.paragraphs:
        for number, span in code_spans(start, text):
            found, bad, _ = zoo_mentions(tree, number, span)
            mentions += found
            unknown += bad
    return mentions, unknown


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_every_flag_the_docs_name_is_in_the_parser(path: Path, tree: Command):
    mentions, unknown = mentions_in(PAGES[path], tree)
    anywhere = all_options(tree)
    problems = [f"{_rel(path)}:{u}" for u in unknown]
    for m in mentions:
        if m.command is None:
            if m.flag not in anywhere:
                problems.append(f"{_rel(path)}:{m.line}: `{m.flag}` is not an option of any zoo command")
            continue
        node = tree
        for name in m.command:
            node = node.children[name]
        if m.flag not in node.options:
            command = " ".join(("zoo", *m.command))
            problems.append(f"{_rel(path)}:{m.line}: `{m.flag}` is not an option of `{command}` "
                            f"(it has {', '.join(sorted(node.options))})")
    assert not problems, "\n".join(problems)


def test_the_flag_check_sees_commands_and_refuses_a_made_up_flag(tree: Command):
    """The check itself: a made-up flag is caught for the command named, another tool's flags are not."""
    found, unknown, _ = zoo_mentions(tree, 1, "zoo embed m in.txt -o out.parquet --made-up 3  # zoo search IDX -k 5")
    assert [(m.command, m.flag) for m in found] == [(("embed",), "-o"), (("embed",), "--made-up"),
                                                    (("search",), "-k")]
    found, _, _ = zoo_mentions(tree, 1, ".venv/bin/python -m pytest -m 'not slow' && pip install --no-deps x")
    assert found == []
    found, _, _ = zoo_mentions(tree, 1, "torchrun --nproc_per_node=2 -m zoo finetune ... --nproc 2")
    assert [(m.command, m.flag) for m in found] == [(("finetune",), "--nproc")]
    _, unknown, _ = zoo_mentions(tree, 7, "zoo embedd x")
    assert unknown and "embedd" in unknown[0]


# ------------------------------------------------------------------------------------------ code blocks


def python_source(fence: Fence) -> str:
    """A block's source; doctest-style blocks keep only what follows their prompts."""
    if not any(line.lstrip().startswith(">>>") for line in fence.lines):
        return "\n".join(fence.lines)
    out = []
    for line in fence.lines:
        stripped = line.lstrip()
        if stripped.startswith((">>> ", "... ")) or stripped in {">>>", "..."}:
            out.append(stripped[4:])
    return "\n".join(out)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_python_blocks_compile(path: Path):
    problems = []
    for fence in PAGES[path].fences:
        if fence.lang not in {"python", "py", "pycon"}:
            continue
        try:
            compile(python_source(fence), f"{_rel(path)}:{fence.start}", "exec")
        except SyntaxError as e:
            line = fence.start + (e.lineno or 0)
            problems.append(f"{_rel(path)}:{line}: the python block starting on line {fence.start} does not "
                            f"compile: {e.msg}: {(e.text or '').strip()}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_code_fences_are_closed(path: Path):
    unclosed = [f.start for f in PAGES[path].fences if not f.closed]
    assert not unclosed, f"{_rel(path)}: the code fence opened on line {unclosed[0]} is never closed"


# ------------------------------------------------------------------------------------------ links


def links(page: Markdown) -> list[tuple[int, str]]:
    out = []
    for start, text in page.paragraphs:
        # code spans hold no links; blank them, keeping offsets for line numbers
        plain = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        out += [(start + plain.count("\n", 0, m.start()), m.group(1)) for m in LINK.finditer(plain)]
        for offset, line in enumerate(plain.split("\n")):
            ref = REF_LINK.match(line)
            if ref:
                out.append((start + offset, ref.group(1)))
    return out


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_relative_links_resolve(path: Path):
    problems = []
    for line, target in links(PAGES[path]):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{_rel(path)}:{line}: link to {target!r}: {file_part} does not exist")
            continue
        if anchor and dest.suffix == ".md":
            page = PAGES.get(dest) or parse(dest)
            if anchor not in anchors(page):
                problems.append(f"{_rel(path)}:{line}: link to {target!r}: {dest.name} has no heading "
                                f"#{anchor} (it has {', '.join('#' + a for a in sorted(anchors(page)))})")
    assert not problems, "\n".join(problems)


def test_the_docs_index_lists_every_page():
    index = PAGES[ROOT / "docs" / "README.md"]
    listed = {(ROOT / "docs" / target.partition("#")[0]).resolve() for _, target in links(index)}
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md" and p.resolve() not in listed]
    assert not missing, f"docs/README.md does not link to {', '.join(sorted(missing))}"


# ------------------------------------------------------------------------------------------ the README


def test_readme_is_short():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) < README_LIMIT, (f"README.md is {len(text)} characters, over {README_LIMIT}: move detail to "
                                      "a page under docs/ and link it")


def test_readme_keeps_the_commands_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert CI_COMMAND in text, "README.md lost the install + test command that .ci/run mirrors"
    assert FAST_TIER in text, "README.md lost the fast tier's command"


def _zoo_imports(source: str, name: str) -> list[str]:
    """The ``zoo.*`` modules ``source`` imports (``import zoo`` / ``from zoo import x`` are the surface)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [f"{name}:{node.lineno} imports {m}" for m in modules if m.startswith("zoo.")]
    return found


def test_the_plugin_guide_and_the_examples_import_only_from_zoo():
    """``zoo`` exports what plugins may use; every other module may move, so the guide and the
    example plugin must not reach into one."""
    guide = ROOT / "docs" / "plugins.md"
    offenders = [hit for fence in PAGES[guide].fences if fence.lang in {"python", "py"}
                 for hit in _zoo_imports(python_source(fence), f"{_rel(guide)}:{fence.start}")]
    for path in sorted((ROOT / "examples").rglob("*.py")):
        if "build" not in path.relative_to(ROOT / "examples").parts:
            offenders += _zoo_imports(path.read_text(), _rel(path))
    assert not offenders, "\n".join(offenders)


def test_every_name_the_plugin_surface_exports_resolves():
    import zoo

    for name in zoo.__all__:
        assert getattr(zoo, name) is not None, name
