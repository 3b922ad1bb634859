"""The audio modality: files (decoded with soundfile), bytes, or ``(waveform, sample_rate)`` pairs.

Every input decodes to a mono float32 waveform and its sample rate; encoders resample it to their
model's rate (``AudioAdapter.resample``: torchaudio's sinc resampler, or scipy's polyphase filter
for a rate whose ratio to the model's does not reduce, such as 16001 Hz).

Work per item is bounded before any sample is decoded: a sample rate outside
``MIN_RATE``-``MAX_RATE`` is refused, and so is audio longer than the bound in force (read from the
file's header, and enforced again while reading, where a header does not say or undercounts):
:func:`audio_seconds_limit` sets it for a block of code (``zoo serve --max-audio-seconds`` does, 600 s
by default), else ``$ZOO_MAX_AUDIO_SECONDS`` does (``zoo embed``), else there is none (long
recordings are windowed, and a user embedding their own hour-long files may mean it).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from zoo.core._media import declared_format
from zoo.errors import InputWarning
from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl

# What libsndfile (soundfile) decodes.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

# More channels than this on the first axis means the array is (time, channels), soundfile's layout.
_MAX_CHANNELS = 16
# Enough of a WAV file to reach its data chunk's header past the usual metadata chunks.
_HEAD_BYTES = 1 << 16
# A data chunk size this large is a writer's "length unknown" placeholder, not a length: WAVs
# written to a pipe (espeak-ng --stdout, sox -) declare 0x7ffff000 or so, ffmpeg 0xffffffff.
_STREAMED_SIZE = 0x7FFF0000
# Frames read at a time from a file (a few MiB even for many channels).
_BLOCK_FRAMES = 1 << 18
# Sample rates a recording has: below, a header is forged or the "audio" is not sound; above, no
# converter writes it, and resampling's work grows with the ratio to the model's rate.
MIN_RATE, MAX_RATE = 1_000, 384_000
# Most frames a header's count sets aside at once (64 MiB); longer audio grows as it is read, so a
# forged count cannot ask for gigabytes before a sample arrives.
_FIRST_FRAMES = 1 << 24
# libsndfile's frame count for a file whose header does not say (a FLAC streamed with no total): SF_COUNT_MAX.
_UNKNOWN_FRAMES = (1 << 63) - 1
ENV_MAX_SECONDS = "ZOO_MAX_AUDIO_SECONDS"
# The bound audio_seconds_limit sets: per thread (zoo serve's worker), so one server's bound does not
# leak into another in the same process, as in tests.
_MAX_SECONDS: ContextVar[float | None] = ContextVar("zoo_max_audio_seconds", default=None)


@contextlib.contextmanager
def audio_seconds_limit(seconds: float | None) -> Iterator[None]:
    """Refuse audio longer than ``seconds`` while the block runs, in this thread (None: fall back
    to ``$ZOO_MAX_AUDIO_SECONDS``). ``zoo serve`` wraps each forward pass in it."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"the longest audio must be a positive number of seconds, not {seconds!r}")
    token = _MAX_SECONDS.set(seconds)
    try:
        yield
    finally:
        _MAX_SECONDS.reset(token)


def max_audio_seconds() -> float | None:
    """The longest audio decoded here and now: :func:`audio_seconds_limit`'s, else
    ``$ZOO_MAX_AUDIO_SECONDS``'s, else None (no bound)."""
    seconds = _MAX_SECONDS.get()
    if seconds is not None:
        return seconds
    value = os.environ.get(ENV_MAX_SECONDS, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # NaN included
        raise ValueError(f"{ENV_MAX_SECONDS}={value!r}: give the longest audio to decode in seconds, such as 600")
    return seconds


def check_audio(frames: int, rate: int, limit: float | None, *, declared: bool = True) -> None:
    """Refuse a sample rate outside ``MIN_RATE``-``MAX_RATE``, and ``frames`` lasting longer than
    ``limit`` seconds, naming the rate or the duration and how to change the bound. ``declared``:
    ``frames`` is the whole length (a header's), not what was read so far."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz, the rates zoo decodes: "
                         "resample it (sox in.wav -r 16000 out.wav)")
    if limit is not None and frames > limit * rate:
        what = f"audio of {frames / rate:.1f} s" if declared else "audio whose header does not give its length"
        raise ValueError(f"{what} is longer than the {limit:g} s allowed (zoo serve --max-audio-seconds; "
                         f"{ENV_MAX_SECONDS} elsewhere): cut it into shorter clips, or raise the bound")


def _to_mono_float(wave: Any) -> Any:
    import numpy as np

    if hasattr(wave, "detach") and hasattr(wave, "numpy"):
        wave = wave.detach().cpu().numpy()
    arr = np.asarray(wave)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected numeric samples, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError("empty waveform (no samples)")
    if arr.ndim == 2:
        channel_axis = 0 if arr.shape[0] <= _MAX_CHANNELS and arr.shape[0] < arr.shape[1] else 1
        arr = arr.mean(axis=channel_axis)  # mix down to mono
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D waveform or (channels, time), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("waveform contains NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def _declared_wav_frames(head: bytes) -> int | None:
    """The frame count a WAV file's header declares (libsndfile silently trims it to what the file
    holds), from the file's first bytes; None for other formats and for streamed WAVs that declare
    no length."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, block_align = 12, None
    while offset + 8 <= len(head):
        chunk, size = head[offset:offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        if chunk == b"fmt " and offset + 22 <= len(head):
            block_align = struct.unpack_from("<H", head, offset + 20)[0]
        if chunk == b"data":
            streamed = size == 0 or size >= _STREAMED_SIZE
            return None if streamed or not block_align else size // block_align
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _head(item: Any) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item[:_HEAD_BYTES])
    with open(item, "rb") as fh:
        return fh.read(_HEAD_BYTES)


# A data URL's audio type -> libsndfile's container: audio declared as one must be one.
_FORMAT_OF_MEDIA = {"audio/wav": "WAV", "audio/wave": "WAV", "audio/x-wav": "WAV", "audio/vnd.wave": "WAV",
                    "audio/flac": "FLAC", "audio/x-flac": "FLAC", "audio/ogg": "OGG", "audio/opus": "OGG",
                    "audio/mpeg": "MP3", "audio/mp3": "MP3", "audio/aiff": "AIFF", "audio/x-aiff": "AIFF"}


def _read_mono(source: Any, declared: str | None = None) -> tuple[Any, int]:
    """A file's samples mixed to mono float32, read block by block: memory holds the mono result
    and one block, not every channel of the whole file. The rate and the duration its header
    declares are checked before any sample is decoded, and the duration again as blocks arrive (a
    format whose header does not say, or says less than the file holds)."""
    import numpy as np
    import soundfile

    limit = max_audio_seconds()
    try:
        with soundfile.SoundFile(source) as sound:
            if declared is not None and sound.format != declared:
                raise ValueError(f"the audio data declared as {declared} is a {sound.format} file; declare its own "
                                 "type")
            rate, frames = int(sound.samplerate), max(sound.frames, 0)
            known = frames != _UNKNOWN_FRAMES
            check_audio(frames if known else 0, rate, limit)
            mono = np.empty(min(frames, _FIRST_FRAMES) if known else _BLOCK_FRAMES, dtype=np.float32)
            filled = 0
            while True:
                block = sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                check_audio(filled + len(block), rate, limit, declared=False)
                if filled + len(block) > len(mono):  # more than the header said or than set aside: grow
                    mono = np.resize(mono, max(2 * len(mono), filled + len(block)))
                mono[filled:filled + len(block)] = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                filled += len(block)
    except soundfile.LibsndfileError as exc:  # a RuntimeError: make it a decode error
        # libsndfile's own words, naming a file by its path, never as "<_io.BytesIO object at 0x...>"
        why = getattr(exc, "error_string", None) or str(exc)
        if isinstance(source, (str, os.PathLike)):
            why = f"{os.fspath(source)}: {'no such file' if not os.path.exists(source) else why}"
        raise OSError(f"cannot decode audio: {why}") from None
    return _to_mono_float(mono[:filled]), rate


def decode_audio(item: Any) -> tuple[Any, int]:
    """An audio input -> ``(mono float32 waveform, sample_rate)``."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        container = declared_format(item, _FORMAT_OF_MEDIA, "audio")
        wave, rate = _read_mono(io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else item, container)
        declared = _declared_wav_frames(_head(item))
        if declared is not None and len(wave) < declared:
            warnings.warn(f"truncated audio: its header promises {declared} frames, the file holds {len(wave)}; "
                          "the part that survives is embedded", InputWarning, stacklevel=2)
        return wave, rate
    if isinstance(item, tuple) and len(item) == 2:
        wave, rate = item
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"sample rate must be a positive int, got {rate!r}")
        wave = _to_mono_float(wave)
        check_audio(len(wave), rate, max_audio_seconds())
        return wave, rate
    raise TypeError(f"expected an audio file path, bytes or a (waveform, sample_rate) pair, got {type(item).__name__}")


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("audio", decode=decode_audio,
             description="audio: file paths, bytes, (waveform, sample_rate) pairs; resampled, mixed to mono",
             examples="zoo.plugins.examples:sounds", suffixes=AUDIO_SUFFIXES, media_types=("audio/*",))
    register("audio-text", decode=decode_audio,
             description="audio and texts in one space (CLAP): featurize(clips), featurize_texts(texts)",
             examples="zoo.plugins.examples:sounds", suffixes=AUDIO_SUFFIXES)


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("ge2e", "zoo.adapters.ge2e:GE2EAdapter")
    register("torchaudio", "zoo.adapters.torchaudio:TorchaudioAdapter", schemes=("torchaudio",))
