"""Where the time of a vision finetune goes: the ``plain`` side of ``bench_finetune.py`` (EfficientNet-Lite0
end to end on scikit-image's ``lfw_subset``, 120 training images) run once under cProfile, its wall time
split into the model's arithmetic (forward, backward, optimizer step), the batches' preparation (decode and
the weights' transform), the checkpoints, the curves, and the setup (copying the model, the optimizer, the
schedule). It is how ``docs/benchmarks.md`` says why zoo is short of the 1.5x vision target.

    python bench/profile_finetune.py [--epochs 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from bench_finetune import faces

#: (file suffix, function) of each part, as cProfile names them; cumulative times
PARTS = {
    "forward": ("zoo/training/_loop.py", "forward"),
    "backward": ("zoo/training/_optim.py", "backward"),
    "optimizer step and schedule": ("zoo/training/_optim.py", "step"),
    "batch preparation (decode, transform)": ("zoo/training/_augment.py", "<lambda>"),
    "checkpoints": ("zoo/training/_loop.py", "checkpoint"),
    "curves.png": ("zoo/training/_plot.py", "plot_history"),
    "setup (model copy, optimizer, schedule)": ("zoo/training/_loop.py", "__init__"),
    "best weights read back": ("zoo/training/_loop.py", "load_best"),
}


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Seconds spent in (and below) the function ``name`` of a file ending in ``suffix``."""
    return sum(row[3] for (file, _, func), row in stats.stats.items()  # type: ignore[attr-defined]
               if file.endswith(suffix) and func == name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import zoo

    train, y_train, _, _ = faces(args.seed)
    model = zoo.load("efficientnet-lite0", device="cpu")
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        profile.enable()
        model.finetune((train, y_train), strategy="full", epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                       seed=args.seed, output_dir=Path(tmp) / "run", progress=False)
        profile.disable()
        total = time.perf_counter() - began
    stats = pstats.Stats(profile)
    samples = args.epochs * len(train)
    print(f"{samples} training samples in {total:.1f} s: {samples / total:.1f} samples/s (under cProfile)")
    shown = 0.0
    for part, (suffix, name) in PARTS.items():
        seconds = cumulative(stats, suffix, name)
        shown += seconds
        print(f"  {part:<42}{seconds:>7.2f} s {seconds / total:>6.1%}")
    print(f"  {'the rest':<42}{total - shown:>7.2f} s {(total - shown) / total:>6.1%}")
    arithmetic = sum(cumulative(stats, *PARTS[p]) for p in ("forward", "backward", "optimizer step and schedule"))
    print(f"the model's arithmetic alone: {samples / arithmetic:.1f} samples/s")


if __name__ == "__main__":
    main()
