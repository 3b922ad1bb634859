"""The sparse-embedding example plugin (examples/zoo-sparse), installed with pip for real and found
through its entry point: a model kind with rows of its own, registered through the hooks alone."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from plugin_fixtures import example_on_path, pip_install_example
from zoo.catalog._plugin_manager import reset_plugin_manager

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "zoo-sparse"


def _tiny_sparse():
    """The plugin's own builder of tiny SparseEncoder folders (examples/zoo-sparse/tests)."""
    spec = importlib.util.spec_from_file_location("tiny_sparse", EXAMPLE / "tests" / "tiny_sparse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sparse_site(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    return pip_install_example(EXAMPLE, tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def sparse_folder(tmp_path_factory):
    return _tiny_sparse().sparse_encoder_folder(tmp_path_factory.mktemp("splade"))


@pytest.fixture
def with_plugin(sparse_site, monkeypatch):
    with example_on_path(sparse_site, "zoo_sparse", monkeypatch) as site:
        yield site


def test_the_plugin_is_listed_with_its_kind(with_plugin, capsys):
    from zoo.cli import main

    assert main(["plugins"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("zoo-sparse"))
    assert re.search(r"zoo-sparse\s+0\.1\.0\s+1 kinds, 1 adapters\s+zoo_register_adapters, zoo_register_kinds", line)


def test_the_kind_loads_and_embeds_through_the_plugin_alone(with_plugin, sparse_folder):
    model = zoo.load(sparse_folder, device="cpu")
    assert model.kind == "sparse-encoder" and type(model.row_format).__module__ == "zoo_sparse.rows"
    rows = model.featurize(["free software", "a cat"])
    assert rows.shape == (2, model.embed_dim) and rows.nnz > 0


def test_without_the_plugin_a_sparse_folder_is_refused_naming_it(sparse_folder):
    reset_plugin_manager()
    with pytest.raises(zoo.UnsupportedModelKindError, match="which the zoo-sparse plugin loads, embeds and searches"):
        zoo.load(sparse_folder, device="cpu")
    with pytest.raises(ValueError, match="kind must be one of embedder, reranker"):
        zoo.load(sparse_folder, kind="sparse-encoder")


@pytest.mark.slow
def test_the_plugins_own_tests_and_the_cli_check(sparse_site, sparse_folder, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sparse_site), os.environ.get("PYTHONPATH", "")])}
    # Parity with SparseEncoder.encode in each layout, embed / index / search, refusals, the kit.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                           str(EXAMPLE / "pyproject.toml"), str(EXAMPLE / "tests")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "zoo", "plugins", "check", str(sparse_folder)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"9 checks passed, 0 failed", proc.stdout), proc.stdout
    assert re.search(r"embed, index and search\s+PASS", proc.stdout), proc.stdout
