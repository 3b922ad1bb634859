"""``zoo embed`` killed part-way, then run again: how much of the work the rerun keeps.

As a user would see it: the real command line (``python -m zoo embed ...``) runs once to the end
(its wall time, model loading included, is the full time), then again into a new output, killed
with SIGKILL at ``--kill-at`` of that time, then once more with the same command. Prints the
rerun's time as a share of the full run's, how many inputs the killed run had kept, and checks the
resumed output against the uninterrupted one. Texts: MiniLM on short texts; images:
EfficientNet-Lite0 on camera-sized JPEGs, decoded in the default worker processes.

    python bench/bench_resume.py [--texts 6000] [--images 600] [--kill-at 0.6] [--rounds 1] [--chunk-seconds S]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_inputs
import numpy as np
from bench_embed_scale import kept_inputs


def timed(command: list[str], kill_after: float | None = None) -> float:
    """Wall seconds of ``python -m zoo COMMAND``; with ``kill_after``, SIGKILL it then."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "zoo", *command], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        _, stderr = child.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return time.perf_counter() - began
    if child.returncode != 0:
        raise SystemExit(f"zoo {' '.join(command)} failed:\n{stderr.decode(errors='replace')[-2000:]}")
    if kill_after is not None:
        raise SystemExit("the run finished before it could be killed; use more inputs")
    return time.perf_counter() - began


def max_difference(a: Path, b: Path) -> float:
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.column("id").to_pylist() != tb.column("id").to_pylist():
        raise SystemExit(f"{b}: not the same ids, in the same order, as {a}")
    xa = np.stack(ta.column("embedding").to_numpy(zero_copy_only=False))
    xb = np.stack(tb.column("embedding").to_numpy(zero_copy_only=False))
    return float(np.abs(xa - xb).max())


def one_round(kind: str, model: str, source: Path, n: int, kill_at: float, workdir: Path,
              extra: list[str]) -> dict[str, float]:
    full_out, killed_out = workdir / f"{kind}-full.parquet", workdir / f"{kind}-killed.parquet"
    full_out.unlink(missing_ok=True)
    killed_out.unlink(missing_ok=True)
    full = timed(["embed", model, str(source), "-o", str(full_out), "-q", *extra])
    command = ["embed", model, str(source), "-o", str(killed_out), "-q", *extra]
    timed(command, kill_after=kill_at * full)
    kept = kept_inputs(killed_out.with_name(killed_out.name + ".partial"))
    rerun = timed(command)
    return {"full": full, "rerun": rerun, "kept": kept / n, "diff": max_difference(full_out, killed_out)}


def report(kind: str, n: int, rounds: list[dict[str, float]], kill_at: float) -> None:
    full = statistics.median(r["full"] for r in rounds)
    rerun = statistics.median(r["rerun"] for r in rounds)
    kept = statistics.median(r["kept"] for r in rounds)
    print(f"[{kind}] {n} inputs: full run {full:.1f} s; killed at {kill_at:.0%} of that, it had kept "
          f"{kept:.0%} of the inputs; the rerun took {rerun:.1f} s = {rerun / full:.0%} of the full run "
          f"(max |difference| from the full run {max(r['diff'] for r in rounds):.1e}; median of {len(rounds)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=6000)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--kill-at", type=float, default=0.6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--chunk-seconds", type=float, help="passed to zoo embed (default: zoo embed's)")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "zoo-bench-resume")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    extra = ["--chunk-seconds", str(args.chunk_seconds)] if args.chunk_seconds else []
    print(f"{sys.platform}, {len(__import__('os').sched_getaffinity(0))} cores; each run is the real command line")
    if args.texts:
        source = args.workdir / f"texts-{args.texts}.txt"
        source.write_text("\n".join(bench_inputs.short_texts(args.texts)) + "\n")
        rounds = [one_round("texts", "minilm-l6", source, args.texts, args.kill_at, args.workdir, extra)
                  for _ in range(args.rounds)]
        report("texts", args.texts, rounds, args.kill_at)
    if args.images:
        folder = args.workdir / f"images-{args.images}"
        folder.mkdir(exist_ok=True)
        for path in bench_inputs.jpegs(args.workdir / "jpegs", args.images)[:args.images]:
            link = folder / Path(path).name
            if not link.exists():
                link.symlink_to(path)
        rounds = [one_round("images", "efficientnet-lite0", folder, args.images, args.kill_at, args.workdir, extra)
                  for _ in range(args.rounds)]
        report("images", args.images, rounds, args.kill_at)


if __name__ == "__main__":
    main()
