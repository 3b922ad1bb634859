"""Write the offline evaluation sets that docs/evaluate.md's leaderboards are run on.

    python bench/eval_data.py --out /tmp/evaldata [--packages /tmp/packages.txt]

* ``packages-pairs.csv``: Debian package one-line descriptions (``anchor``) and long
  descriptions (``positive``), the 2,000 held-out pairs of ``bench_contrastive.py``'s split (so a
  model finetuned on ``packages-train.csv``, its 4,000 training pairs, is evaluated on packages
  of other source packages). Needs the package list:
  ``apt-get update`` then ``apt-cache dumpavail > /tmp/packages.txt``.
* ``fortunes.csv``: 100 fortunes from each of six categories (``text``, ``label``).
* ``digits/<digit>/*.png``: scikit-learn's 1,797 handwritten digits as 64 px greyscale images.
* ``voices/<voice>/*.wav``: eight espeak-ng voices, each saying twelve sentences at two speeds.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
from pathlib import Path

from bench_contrastive import read_packages, split

FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = ("computers", "science", "food", "love", "sports", "education")
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland+m7", "en-us+m3", "en-gb+f2", "en-029", "en-gb-x-rp+m1")
SENTENCES = ("the quick brown fox jumps over the lazy dog", "please call me back when you get this message",
             "the weather will be cloudy with a chance of rain", "my train leaves from platform nine at noon",
             "open the window and let some fresh air in", "she sells sea shells by the sea shore",
             "we will meet at the library after lunch", "turn left at the second traffic light",
             "the meeting has been moved to thursday morning", "how much does a ticket to the museum cost",
             "remember to water the plants every week", "the children played football in the park")


def packages(path: Path, out: Path) -> None:
    train, test = split(read_packages(path), 4000, 2000, seed=0)
    for name, pairs in (("packages-pairs.csv", test), ("packages-train.csv", train)):
        with open(out / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["anchor", "positive"])
            writer.writerows([p["query"], p["passage"]] for p in pairs)


def fortunes(out: Path, per_class: int = 100) -> None:
    with open(out / "fortunes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for category in CATEGORIES:
            quotes = [" ".join(q.split()) for q in (FORTUNES / category).read_text(errors="replace").split("\n%\n")]
            writer.writerows([q, category] for q in [q for q in quotes if 5 <= len(q.split()) <= 80][:per_class])


def digits(out: Path) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for i, (image, label) in enumerate(zip(data.images, data.target)):
        folder = out / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (255 - image * 16).clip(0, 255).astype(np.uint8)  # dark ink on white paper
        Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(folder / f"{i:04d}.png")


def voices(out: Path) -> None:
    for voice in VOICES:
        folder = out / "voices" / voice.replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i, sentence in enumerate(SENTENCES):
            for speed in (140, 175):
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(folder / f"{i:02d}-{speed}.wav"),
                                sentence], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--packages", type=Path, help="the apt-cache dumpavail output (skipped if not given)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.packages:
        packages(args.packages, args.out)
    fortunes(args.out)
    digits(args.out)
    voices(args.out)
    print(f"wrote the evaluation sets under {args.out}")


if __name__ == "__main__":
    main()
