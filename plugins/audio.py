"""The audio modality: files (decoded with soundfile), bytes, or ``(waveform, sample_rate)`` pairs.

Every input decodes to a mono float32 waveform and its sample rate; encoders resample it to their
model's rate (``AudioAdapter.resample``: torchaudio's sinc resampler, or scipy's polyphase filter
for a rate whose ratio to the model's does not reduce, such as 16001 Hz).
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Any

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


def _read_mono(source: Any) -> tuple[Any, int]:
    """A file's samples mixed to mono float32, read block by block: memory holds the mono result
    and one block, not every channel of the whole file."""
    import numpy as np
    import soundfile

    try:
        with soundfile.SoundFile(source) as sound:
            rate = int(sound.samplerate)
            mono = np.empty(max(sound.frames, 0), dtype=np.float32)
            filled = 0
            while True:
                block = sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if filled + len(block) > len(mono):  # a header that undercounts: grow
                    mono = np.resize(mono, filled + len(block))
                mono[filled:filled + len(block)] = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                filled += len(block)
    except soundfile.LibsndfileError as exc:  # a RuntimeError: make it a decode error
        raise OSError(f"cannot decode audio: {exc}") from None
    return _to_mono_float(mono[:filled]), rate


def decode_audio(item: Any) -> tuple[Any, int]:
    """An audio input -> ``(mono float32 waveform, sample_rate)``."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        wave, rate = _read_mono(io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else item)
        declared = _declared_wav_frames(_head(item))
        if declared is not None and len(wave) < declared:
            warnings.warn(f"truncated audio: its header promises {declared} frames, the file holds {len(wave)}; "
                          "the part that survives is embedded", InputWarning, stacklevel=2)
        return wave, rate
    if isinstance(item, tuple) and len(item) == 2:
        wave, rate = item
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"sample rate must be a positive int, got {rate!r}")
        return _to_mono_float(wave), rate
    raise TypeError(f"expected an audio file path, bytes or a (waveform, sample_rate) pair, got {type(item).__name__}")


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("audio", decode=decode_audio,
             description="audio: file paths, bytes, (waveform, sample_rate) pairs; resampled, mixed to mono",
             examples="zoo.plugins.examples:sounds", suffixes=AUDIO_SUFFIXES, media_types=("audio/*",))


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("ge2e", "zoo.adapters.ge2e:GE2EAdapter")
    register("torchaudio", "zoo.adapters.torchaudio:TorchaudioAdapter", schemes=("torchaudio",))
