"""registry.yaml validation, name resolution and the catalogue itself."""

from __future__ import annotations

import textwrap

import pytest

import zoo
from zoo.errors import RegistryError, UnknownModelError
from zoo.catalog._registry import REGISTRY_FILE, get_registry
from zoo.catalog._registry_file import read_registry


def read(text: str):
    return read_registry("catalogue.yaml", text=textwrap.dedent(text))


GOOD_ENTRY = """
models:
  - name: m1
    modality: text
    backend: transformers
    embed_dim: 8
    sources:
      - hub: org/m1
        revision: abc
"""


def test_reads_a_valid_entry():
    (spec,) = read(GOOD_ENTRY)
    assert spec.name == "m1" and spec.sources[0].describe() == "hub:org/m1@abc" and spec.embed_dim == 8


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GOOD_ENTRY.replace("embed_dim: 8", "embed_dims: 8"), 6, "unknown field 'embed_dims'; did you mean 'embed_dim'?"),
        (GOOD_ENTRY.replace("revision: abc", "revison: abc"), 9, "unknown source field 'revison'; did you mean 'revision'?"),
        (GOOD_ENTRY.replace("models:", "model:"), 2, "unknown top-level key 'model'; did you mean 'models'?"),
        (GOOD_ENTRY.replace("      - hub: org/m1\n", "      - hubb: org/m1\n"), 8, "did you mean 'hub'?"),
        (GOOD_ENTRY.replace("    backend: transformers\n", ""), 3, "missing required field 'backend'"),
        (GOOD_ENTRY + "    sha256: {weights.bin: nothex}\n", 3, "sha256 of 'weights.bin' in 'm1' is not 64"),
        (GOOD_ENTRY.replace("embed_dim: 8", "embed_dim: [8"), 7, "invalid YAML"),
        (GOOD_ENTRY + GOOD_ENTRY.replace("models:\n", "").replace("name: m1", "name: M1"), 11, "'M1' is already used at line 3"),
    ],
)
def test_validation_errors_name_file_line_and_fix(text, line, message):
    with pytest.raises(RegistryError) as info:
        read(text)
    assert str(info.value).startswith(f"catalogue.yaml:{line}: "), str(info.value)
    assert message in str(info.value)


def test_shipped_catalogue_is_valid_and_served_by_registered_plugins():
    registry = get_registry()
    specs = read_registry(REGISTRY_FILE)
    assert specs, "registry.yaml is empty"
    for spec in specs:
        assert spec.modality in registry.modalities, spec.name
        assert spec.backend in registry.adapters, spec.name
        assert spec.sources, spec.name
        assert spec.embed_dim, spec.name
        for source in spec.sources:
            if source.kind == "hub":
                assert source.revision and len(source.revision) == 40, f"{spec.name}: pin a full commit"


def test_list_models_with_patterns_and_modality():
    assert zoo.list_models("*minilm*") == ["minilm-l6", "ms-marco-minilm-l6"]
    assert zoo.list_models("ALL-MINILM*") == ["minilm-l6"]  # aliases match, case-insensitively
    text = zoo.list_models(modality="text")
    assert "minilm-l6" in text and "efficientnet-lite0" not in text
    assert set(zoo.list_models(modality="vision")) >= {"efficientnet-lite0", "resnet50", "dinov2-small"}
    assert zoo.list_models("*", modality="no-such-modality") == []
    assert zoo.list_models(["nothing*", "minilm*"]) == ["minilm-l6"]


def test_info_gives_the_spec_as_plain_data():
    data = zoo.info("all-MiniLM-L6-v2")
    assert data["name"] == "minilm-l6" and data["embed_dim"] == 384
    assert data["sources"][0] == {"hub": "sentence-transformers/all-MiniLM-L6-v2",
                                  "revision": "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"}
    assert data["sha256"]["model.safetensors"].startswith("53aa5117")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("minilm-l6", "minilm-l6"), ("All-MiniLM-L6-v2", "minilm-l6"),
     ("sentence-transformers/all-MiniLM-L6-v2", "minilm-l6"), ("hf:org/name@abc", "hf:org/name@abc")],
)
def test_name_resolution(name, expected, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # an hf: name would fetch its config.json otherwise
    assert zoo.resolve(name).name == expected


def test_hf_pass_through_spec_pins_the_revision(monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    spec = zoo.resolve("hf:org/name@0123abc")
    assert (spec.backend, spec.backend_id, spec.revision) == ("transformers", "org/name", "0123abc")
    with pytest.raises(RegistryError, match="expected 'hf:org/name"):
        zoo.resolve("hf:just-a-name")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError) as info:
        zoo.load("minilm-l5")
    assert str(info.value).startswith("unknown model 'minilm-l5'; did you mean 'minilm-l6'?")
    assert info.value.suggestions == ["minilm-l6"]
    with pytest.raises(UnknownModelError, match="no plugin serves the prefix 'timmm:'"):
        zoo.resolve("timmm:resnet50")
    with pytest.raises(UnknownModelError, match=r"^unknown model 'qwertyuiop' \(see `zoo list`"):
        zoo.resolve("qwertyuiop")


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        zoo.resolve(str(tmp_path / "absent"))
