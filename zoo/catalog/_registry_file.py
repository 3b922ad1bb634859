"""Read a ``registry.yaml`` catalogue into :class:`~zoo.catalog._spec.ModelSpec` objects.

The reader keeps YAML line numbers so that every validation error says ``file:line`` and, for a
misspelled field, what was probably meant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from zoo.errors import RegistryError, did_you_mean

from ._spec import SOURCE_KINDS, ModelSpec

_TOP_LEVEL = ("models",)
_SOURCE_FIELDS = (*SOURCE_KINDS, "revision", "filename", "dist")


# libyaml's parser where PyYAML was built with it (its wheels are): the same nodes and line marks,
# several times faster than the pure-Python one, which the registry is read with on every start.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _construct(node: yaml.Node) -> Any:
    """Turn a composed node into plain Python data (safe tags only)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_registry(path: str | Path, *, text: str | None = None) -> list[ModelSpec]:
    """Parse and validate a registry file; raise :class:`RegistryError` naming file and line."""
    path = Path(path)
    source = text if text is not None else path.read_text(encoding="utf-8")
    file = str(path)
    try:
        root = yaml.compose(source, Loader=_COMPOSER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RegistryError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=file,
                            line=mark.line + 1 if mark else None) from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise RegistryError("the top level must be a mapping with a 'models' list", file=file, line=_line(root))
    models_node = None
    for key_node, value_node in root.value:
        key = key_node.value
        if key not in _TOP_LEVEL:
            raise RegistryError(f"unknown top-level key {key!r}{did_you_mean(key, _TOP_LEVEL)}",
                                file=file, line=_line(key_node))
        models_node = value_node
    if models_node is None or (isinstance(models_node, yaml.ScalarNode) and models_node.value in ("", "null")):
        return []
    if not isinstance(models_node, yaml.SequenceNode):
        raise RegistryError("'models' must be a list", file=file, line=_line(models_node))

    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for entry in models_node.value:
        spec = _read_entry(entry, file)
        for name in spec.names:
            if name.lower() in seen:
                raise RegistryError(
                    f"model name {name!r} is already used at line {seen[name.lower()]}",
                    file=file, line=_line(entry),
                )
            seen[name.lower()] = _line(entry)
        specs.append(spec)
    return specs


def _read_entry(entry: yaml.Node, file: str) -> ModelSpec:
    if not isinstance(entry, yaml.MappingNode):
        raise RegistryError("each model must be a mapping of fields", file=file, line=_line(entry))
    known = ModelSpec.field_names()
    for key_node, value_node in entry.value:
        key = key_node.value
        if key not in known or key == "plugin":
            raise RegistryError(f"unknown field {key!r}{did_you_mean(key, known)}", file=file, line=_line(key_node))
        if key == "sources":
            _check_sources(value_node, file)
    data = _construct(entry)
    try:
        return ModelSpec.from_dict(data)
    except RegistryError as exc:
        name = data.get("name", "?")
        raise RegistryError(f"model {name!r}: {exc}", file=file, line=_line(entry)) from None
    except TypeError as exc:
        raise RegistryError(f"model {data.get('name', '?')!r}: {exc}", file=file, line=_line(entry)) from None


def _check_sources(node: yaml.Node, file: str) -> None:
    if not isinstance(node, yaml.SequenceNode):
        raise RegistryError("'sources' must be a list", file=file, line=_line(node))
    for item in node.value:
        if not isinstance(item, yaml.MappingNode):
            raise RegistryError("each source must be a mapping such as {hub: org/name, revision: ...}",
                                file=file, line=_line(item))
        for key_node, _ in item.value:
            if key_node.value not in _SOURCE_FIELDS:
                raise RegistryError(
                    f"unknown source field {key_node.value!r}{did_you_mean(key_node.value, _SOURCE_FIELDS)}",
                    file=file, line=_line(key_node),
                )
