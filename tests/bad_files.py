"""Files whose decoders raise something other than an OSError, built here from valid ones."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image


def broken_png_chunk() -> bytes:
    """A PNG whose second chunk's type is broken: PIL raises SyntaxError, not an OSError."""
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[36] = 0
    return bytes(data)


def dds_of_unknown_format() -> bytes:
    """A DDS header naming a pixel format PIL does not know: PIL raises NotImplementedError."""
    header = struct.pack("<4sI", b"DDS ", 124) + struct.pack("<6I", 0x1007, 8, 8, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I4s5I", 32, 0x4, b"ZZZZ", 0, 0, 0, 0, 0)
    return header + pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0) + b"\0" * 64
