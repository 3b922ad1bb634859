"""The example plugin package, installed with pip for real, found through its entry point, and
checked with the conformance kit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from plugin_fixtures import example_on_path, pip_install_example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "zoo-crepe"


@pytest.fixture(scope="module")
def crepe_site(tmp_path_factory):
    pytest.importorskip("torchcrepe")
    return pip_install_example(EXAMPLE, tmp_path_factory.mktemp("site"))


@pytest.fixture
def with_plugin(crepe_site, monkeypatch):
    with example_on_path(crepe_site, "zoo_crepe", monkeypatch) as site:
        yield site


def test_the_plugin_is_listed_with_its_version_and_registrations(with_plugin, capsys):
    from zoo.cli import main

    assert main(["plugins"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("zoo-crepe"))
    assert re.search(r"zoo-crepe\s+0\.1\.0\s+1 models, 1 adapters", line)
    assert zoo.resolve("crepe-tiny").plugin == "zoo-crepe (crepe)"


def test_the_plugin_adds_a_command(with_plugin, tmp_path, capsys):
    import wave

    from zoo.cli import main

    rate = 16000
    tone = (0.5 * np.sin(2 * np.pi * 220.0 * np.arange(rate) / rate) * 32767).astype("<i2")
    with wave.open(str(tmp_path / "a3.wav"), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(tone.tobytes())
    assert main(["pitch", str(tmp_path / "a3.wav")]) == 0
    hertz = float(capsys.readouterr().out.split("\t")[1].split()[0])
    assert abs(hertz - 220.0) < 5, hertz  # A3, as CREPE hears it


@pytest.mark.slow
def test_the_plugin_passes_the_conformance_kit(with_plugin, tmp_path):
    from zoo.testing import assert_conformance

    results = assert_conformance("zoo-crepe", workdir=tmp_path)
    assert {r.check for r in results if r.status == "pass"} >= {"load", "featurize shape and dtype",
                                                                 "finetune partial + zoo.load"}


@pytest.mark.slow
def test_the_plugins_own_tests_and_the_cli_check(with_plugin, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(with_plugin), os.environ.get("PYTHONPATH", "")])}
    # The plugin's comparison with torchcrepe (its conformance test is the one above, in-process).
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                           str(EXAMPLE / "pyproject.toml"), str(EXAMPLE / "tests"), "-k", "not conformance"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "zoo", "plugins", "check", "zoo-crepe"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\d+ checks passed, 0 failed", proc.stdout)


@pytest.mark.slow
def test_conformance_kit_reports_a_broken_adapter(tmp_path):
    """The kit must fail on a model that breaks the contract (here: rows come back reversed)."""
    from zoo.adapters.sentence_transformers import SentenceTransformerAdapter
    from zoo.catalog._plugin_manager import get_plugin_manager
    from zoo.catalog._registry import REGISTRY_FILE
    from zoo.catalog._registry_file import read_registry
    from zoo.testing import check_model, format_table

    class Reversed(SentenceTransformerAdapter):
        def encode_batch(self, batch, *, pool=None):
            return super().encode_batch(batch, pool=pool).flip(0)

    class Plugin:
        @zoo.hookimpl
        def zoo_register_adapters(self, register):
            register("reversed", Reversed)

        @zoo.hookimpl
        def zoo_register_models(self, register):
            spec = next(s for s in read_registry(REGISTRY_FILE) if s.name == "minilm-l6")
            register(spec.replace(name="minilm-reversed", aliases=(), backend="reversed"))

    get_plugin_manager().register(Plugin())
    results = check_model("minilm-reversed", workdir=tmp_path)
    failed = {r.check for r in results if r.status == "fail"}
    assert "input order kept" in failed, format_table(results)
    assert format_table(results).splitlines()[-1].endswith(f"{len(failed)} failed, 0 skipped")
