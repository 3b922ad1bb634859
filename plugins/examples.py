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


def clips(n: int = 8, frames: int = 12, size: int = 48, rate: int = 12) -> list[bytes]:
    """``n`` one-second MP4 clips (MPEG-4 part 2, encoded here with PyAV): the example images
    drifting across the frame, each clip its own. Files, not arrays, so that they carry a frame
    rate, which a model whose processor samples frames by rate needs."""
    import io
    from fractions import Fraction

    import av
    import numpy as np

    made = []
    for image in images(n, size):
        out = io.BytesIO()
        with av.open(out, "w", format="mp4") as container:
            stream = container.add_stream("mpeg4", rate=rate)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            for t in range(frames):
                frame = av.VideoFrame.from_ndarray(np.roll(image, shift=3 * t, axis=1), format="rgb24")
                frame.pts, frame.time_base = t, Fraction(1, rate)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        made.append(out.getvalue())
    return made
