"""Keep freed memory in the process while a model runs on the CPU, so batches do not fault it back in.

glibc's malloc gives each large block back to the kernel when it is freed (blocks over its mmap
threshold are unmapped; free space at the top of the heap is trimmed). A CNN's activations are such
blocks: 154 MiB per tensor for EfficientNet-Lite0 at batch size 32. The next batch then touches
every 4 KiB page again and the kernel faults each one in, zeroed: about six million page faults
per thousand images, which halved the model's speed here. PyTorch's CPU performance guide swaps in
jemalloc or tcmalloc (``LD_PRELOAD``) for this reason; glibc's documented ``mallopt`` gets the
same effect inside a running process: the first time zoo runs a model on the CPU, it sets blocks
up to 1 GiB to come from the heap and up to 1 GiB of free heap to stay mapped. glibc cannot go back
to its adaptive defaults, so these settings stay for the life of the process; what zoo does not
leave behind is the memory: when each call ends, ``malloc_trim`` hands the free heap back.

``ZOO_MALLOC_TUNING=0`` leaves malloc alone. Other C libraries (musl, macOS, Windows) are left
alone too.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from zoo.store._settings import malloc_tuning

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30

_lock = threading.Lock()
_active = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.cache
def _tune() -> bool:
    """Set the thresholds once per process; True when they are in effect."""
    libc = _glibc()
    if libc is None or not malloc_tuning():
        return False
    # mallopt returns 1 on success; a glibc that refuses a value keeps its defaults.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


@contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within this block (when ``enabled``, for a model on the CPU), freed blocks stay in the
    process for the next batch; on leaving the outermost block, the free heap goes back to the
    kernel. Yields whether the tuning is in effect."""
    global _active
    tuned = enabled and _tune()
    if not tuned:
        yield False
        return
    with _lock:
        _active += 1
    try:
        yield True
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                libc = _glibc()  # loaded, as the tuning is in effect
                if libc is not None:
                    libc.malloc_trim(0)
