"""``zoo embed`` at scale: peak memory against input size, and kill -9 then resume.

For each size, runs the real command line (``python -m zoo embed ...``) in a child process and
reads its peak RSS from the kernel (``wait4``). Then, at the largest size, starts the same command
again into a new output, kills it with SIGKILL once its chunks hold 40% of the inputs, runs the
same command again, and checks the result: one row per input, in input order, equal to the
uninterrupted run's vectors.

    python -u bench/bench_embed_scale.py [--texts 10000 100000] [--images 1000 5000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bench_inputs


def kept_inputs(partial: Path) -> int:
    """How many inputs the chunks in ``partial`` hold (each part records its count)."""
    import pyarrow.parquet as pq

    count = 0
    for part in partial.glob("part-*.parquet"):
        try:
            count += int(pq.read_schema(part).metadata.get(b"count", b"0"))
        except OSError:  # renamed into place while we looked
            continue
    return count


def run(args: list[str], *, kill_at: float | None = None, partial: Path | None = None,
        total: int = 0) -> tuple[float, float, str]:
    """Run ``python -m zoo ARGS``; returns (seconds, peak RSS in MiB, the progress bar's last state).
    With ``kill_at``, SIGKILL it once the chunks in ``partial`` hold that share of ``total`` inputs."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    if kill_at is not None:
        assert partial is not None
        while kept_inputs(partial) < kill_at * total:
            if child.poll() is not None:
                raise SystemExit("the run finished before it could be killed; use more inputs")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    stderr = child.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if kill_at is None and child.returncode != 0:
        raise SystemExit(f"zoo {' '.join(args)} failed:\n{stderr[-2000:]}")
    bar = [s for s in stderr.replace("\r", "\n").splitlines() if "item" in s]
    return time.perf_counter() - began, usage.ru_maxrss / 1024, bar[-1].strip() if bar else ""


def check_equal(a: Path, b: Path, expected_ids: list) -> str:
    import numpy as np
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    ids = tb.column("id").to_pylist()
    if ids != expected_ids:
        raise SystemExit(f"{b}: ids are not the inputs in order")
    dim = ta.schema.field("embedding").type.list_size
    xa = ta.column("embedding").combine_chunks().values.to_numpy().reshape(-1, dim)
    xb = tb.column("embedding").combine_chunks().values.to_numpy().reshape(-1, dim)
    return f"{len(ids)} rows in input order, max |difference| from the uninterrupted run {np.abs(xa - xb).max():.1e}"


def scale(kind: str, model: str, inputs: list[tuple[int, Path, list]], workdir: Path, extra: list[str]) -> None:
    outputs = []
    for n, path, _ in inputs:
        out = workdir / f"{kind}-{n}.parquet"
        out.unlink(missing_ok=True)
        seconds, rss, bar = run(["embed", model, str(path), "-o", str(out), *extra])
        outputs.append(out)
        print(f"[{kind}] {n:>7} items: {seconds:6.1f} s, {n / seconds:7.1f} items/s, peak RSS {rss:7.1f} MiB")
        print(f"    bar: {bar}")
        if len(outputs) == 1:
            first_rss = rss
    print(f"[{kind}] peak RSS, {inputs[-1][0]} items against {inputs[0][0]}: {rss / first_rss:.3f}x")

    n, path, ids = inputs[-1]
    out = workdir / f"{kind}-{n}-killed.parquet"
    out.unlink(missing_ok=True)
    partial = out.with_name(out.name + ".partial")
    command = ["embed", model, str(path), "-o", str(out), *extra]
    run(command, kill_at=0.4, partial=partial, total=n)
    kept = len(list(partial.glob("part-*.parquet")))
    print(f"[{kind}] killed with SIGKILL: {kept} chunks holding {kept_inputs(partial)} of {n} inputs on disk, "
          f"output exists: {out.exists()}")
    seconds, _, bar = run(command)
    print(f"    rerun: {seconds:.1f} s; bar: {bar}")
    # The same command as the uninterrupted run, so it saw the same batches.
    print(f"[{kind}] after resume: {check_equal(outputs[-1], out, ids)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--images", type=int, nargs="*", default=[1_000, 5_000])
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "zoo-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    if args.texts:
        inputs = []
        for n in args.texts:
            path = args.workdir / f"texts-{n}.txt"
            path.write_text("\n".join(bench_inputs.short_texts(n)) + "\n")
            inputs.append((n, path, list(range(n))))
        scale("texts", "minilm-l6", inputs, args.workdir, [])
    if args.images:
        paths = bench_inputs.jpegs(args.workdir / "jpegs", max(args.images))
        inputs = []
        for n in args.images:
            listing = args.workdir / f"images-{n}"  # a folder of links: the input is a folder, as users give it
            listing.mkdir(exist_ok=True)
            for p in paths[:n]:
                link = listing / Path(p).name
                if not link.exists():
                    link.symlink_to(p)
            inputs.append((n, listing, sorted(str(listing / Path(p).name) for p in paths[:n])))
        scale("images", "efficientnet-lite0", inputs, args.workdir, [])


if __name__ == "__main__":
    main()
