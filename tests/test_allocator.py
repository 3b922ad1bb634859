"""zoo.core._allocator: freed blocks stay mapped while a model runs, and go back to the kernel after.

malloc settings are per process, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="malloc tuning applies to glibc only")

# Runs a small CNN whose activations (64 MiB each) are over glibc's largest adaptive mmap
# threshold (32 MiB), counting the page faults of the repeats once warm, then reads the resident
# size inside and after the block.
SCRIPT = """
import json, resource, torch
from zoo.core._allocator import keep_freed_memory

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU()).eval()
x = torch.randn(8, 3, 256, 256)
with keep_freed_memory() as tuned, torch.inference_mode():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net(x)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    inside = rss_mib()
print(json.dumps({"tuned": tuned, "faults": faults, "inside": inside, "after": rss_mib()}))
"""


def run(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_freed_blocks_are_reused_without_page_faults_then_handed_back() -> None:
    tuned = run()
    default = run(ZOO_MALLOC_TUNING="0")
    assert tuned["tuned"] and not default["tuned"]
    # By default glibc unmaps each activation when it is freed, so every pass faults its pages in
    # again: 5 passes x at least 3 activations x 16384 pages.
    assert default["faults"] > 5 * 3 * 16384
    assert tuned["faults"] < default["faults"] / 10
    # The activations stayed mapped inside the block; malloc_trim handed them back on leaving.
    assert tuned["inside"] - tuned["after"] > 64


@pytest.mark.slow  # the fast tier keeps under two minutes
def test_featurize_on_cpu_runs_in_the_block(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import zoo.core._featurize

    seen: list[bool] = []

    @contextlib.contextmanager
    def spy(enabled: bool = True):
        seen.append(enabled)
        yield False

    monkeypatch.setattr(zoo.core._featurize, "keep_freed_memory", spy)
    minilm.featurize(["a", "b c"], progress=False)
    assert seen == [True]
