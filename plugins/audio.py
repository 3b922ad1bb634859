"""The audio modality: files (decoded with soundfile), bytes, or ``(waveform, sample_rate)`` pairs.

Every input decodes to a mono float32 waveform and its sample rate; adapters resample it to their
model's rate with ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import io
import os
from typing import Any

from zoo.hookspecs import RegisterAdapter, RegisterModality, hookimpl

# More channels than this on the first axis means the array is (time, channels), soundfile's layout.
_MAX_CHANNELS = 16


def _to_mono_float(wave: Any) -> Any:
    import numpy as np

    if hasattr(wave, "detach") and hasattr(wave, "numpy"):
        wave = wave.detach().cpu().numpy()
    arr = np.asarray(wave)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected numeric samples, got dtype {arr.dtype}")
    if arr.ndim == 2:
        channel_axis = 0 if arr.shape[0] <= _MAX_CHANNELS and arr.shape[0] < arr.shape[1] else 1
        arr = arr.mean(axis=channel_axis)  # mix down to mono
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D waveform or (channels, time), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("empty waveform (no samples)")
    if not np.isfinite(arr).all():
        raise ValueError("waveform contains NaN or infinite values")
    return arr.astype(np.float32, copy=False)


def decode_audio(item: Any) -> tuple[Any, int]:
    """An audio input -> ``(mono float32 waveform, sample_rate)``."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        import soundfile

        source = io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else item
        try:
            data, rate = soundfile.read(source, dtype="float32", always_2d=True)
        except soundfile.LibsndfileError as exc:  # a RuntimeError: make it a decode error
            raise OSError(f"cannot decode audio: {exc}") from None
        return _to_mono_float(data.T), int(rate)
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
             examples="zoo.plugins.examples:sounds")


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    register("ge2e", "zoo.adapters.ge2e:GE2EAdapter")
    register("torchaudio", "zoo.adapters.torchaudio:TorchaudioAdapter", schemes=("torchaudio",))
