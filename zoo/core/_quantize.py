"""Quantized embeddings: int8 / uint8 scalar buckets and packed binary, as sentence-transformers'
``quantize_embeddings`` defines them, so a zoo output and a sentence-transformers one are
interchangeable.

- ``int8`` / ``uint8``: each dimension's range ``[min, max]`` (the *calibration*: from a given
  set of embeddings, or the embeddings being quantized) is cut into 256 equal buckets;
  ``uint8`` is the bucket, ``int8`` the bucket minus 128.
- ``binary`` / ``ubinary``: one bit per dimension (``x > 0``), packed eight to a byte
  (``ceil(D / 8)`` columns); ``binary`` is the byte minus 128 as int8, ``ubinary`` the byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from zoo.errors import did_you_mean

if TYPE_CHECKING:
    import numpy as np

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")


def check_precision(precision: str) -> str:
    """``precision`` if zoo writes it, else a ValueError listing the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}{did_you_mean(str(precision), PRECISIONS)} "
                         f"(choices: {', '.join(PRECISIONS)})")
    return precision


def needs_calibration(precision: str) -> bool:
    """Whether ``precision`` buckets by per-dimension ranges (int8, uint8)."""
    return precision in ("int8", "uint8")


def output_width(dim: int, precision: str) -> int:
    """Columns of a ``dim``-wide embedding at ``precision`` (packed bits take a byte per 8 dims)."""
    return -(-dim // 8) if precision in ("binary", "ubinary") else dim


def output_dtype(precision: str) -> np.dtype:
    import numpy as np

    return np.dtype({"float32": np.float32, "int8": np.int8, "binary": np.int8}.get(precision, np.uint8))


def calibration_ranges(embeddings: np.ndarray) -> np.ndarray:
    """``(2, D)``: each dimension's minimum and maximum over ``embeddings`` (at least two rows)."""
    import numpy as np

    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError("int8 / uint8 calibration needs at least two embeddings (an (M, D) array); pass "
                         "calibration= with a representative set, e.g. embeddings of your corpus")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))


def quantize(embeddings: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """``embeddings`` (float, ``(N, D)``) at ``precision``; ``ranges`` (``(2, D)``, see
    :func:`calibration_ranges`) default to the embeddings' own for int8 / uint8."""
    import numpy as np

    check_precision(precision)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if precision == "float32":
        return embeddings
    if precision in ("binary", "ubinary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if len(embeddings) == 0:
        return np.zeros(embeddings.shape, dtype=output_dtype(precision))
    ranges = calibration_ranges(embeddings) if ranges is None else np.asarray(ranges, dtype=np.float32)
    if ranges.shape != (2, embeddings.shape[1]):
        raise ValueError(f"calibration ranges have shape {ranges.shape}; expected (2, {embeddings.shape[1]})")
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)  # a constant dimension: every value in bucket 0
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)


def dequantize(rows: np.ndarray, precision: str, dim: int, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float32 rows standing for quantized ``rows``, for cosine search over them: each int8 / uint8
    value's bucket centre in ``ranges`` (the calibration the output records), each bit of a binary
    / ubinary row as +1 or -1 (whose cosines rank as the Hamming distance does), cut to ``dim``."""
    import numpy as np

    check_precision(precision)
    rows = np.asarray(rows)
    if precision == "float32":
        return rows.astype(np.float32, copy=False)
    if precision in ("binary", "ubinary"):
        packed = (rows.astype(np.int16) + 128).astype(np.uint8) if precision == "binary" else rows.astype(np.uint8)
        return np.unpackbits(packed, axis=-1)[:, :dim].astype(np.float32) * 2 - 1
    if ranges is None:
        raise ValueError(f"{precision} rows need the calibration ranges they were bucketed with")
    ranges = np.asarray(ranges, dtype=np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    buckets = rows.astype(np.float32) + (128 if precision == "int8" else 0)
    return ranges[0] + (buckets + 0.5) * np.where(steps == 0, 0, steps)
