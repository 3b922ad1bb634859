"""Small, deterministic example inputs per built-in modality, generated here (no files, no network),
for the conformance kit (``zoo plugins check``) and quick experiments."""

from __future__ import annotations

from typing import Any

TEXTS = [
    "A man is eating food.",
    "The girl is carrying a baby.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "Two men pushed carts through the woods.",
]


def texts() -> list[str]:
    return list(TEXTS)


def images(n: int = 8, size: int = 64) -> list[Any]:
    """``n`` HxWx3 uint8 images: gradients, stripes and noise, each different."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        base = np.stack([np.sin((i + 1) * np.pi * xx), np.cos((i + 2) * np.pi * yy), (xx + yy) / 2], -1)
        noisy = (base * 0.5 + 0.5) * 200 + rng.uniform(0, 55, (size, size, 3))
        out.append(noisy.clip(0, 255).astype(np.uint8))
    return out


def sounds(n: int = 8, rate: int = 16000) -> list[tuple[Any, int]]:
    """``n`` half-second ``(waveform, rate)`` pairs: tones of different pitch in a little noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(rate // 2) / rate
    return [((0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32),
             rate) for i in range(n)]


def clips(n: int = 8, frames: int = 12, size: int = 48) -> list[Any]:
    """``n`` clips as ``(frames, H, W, 3)`` uint8 arrays: the example images drifting across the
    frame, each clip its own."""
    import numpy as np

    return [np.stack([np.roll(image, shift=3 * t, axis=1) for t in range(frames)])
            for image in images(n, size)]
