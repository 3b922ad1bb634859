"""What audio adapters share: resampling decoded waveforms to the model's rate."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.adapter import Adapter

if TYPE_CHECKING:
    import torch


class AudioAdapter(Adapter):
    """An audio model; :attr:`sample_rate` is the rate its weights expect.

    An input longer than :attr:`window_seconds` runs as near-equal windows no longer than that,
    whose rows are averaged by duration: a model's memory (attention is quadratic in length) stays
    that of one window however long the recording. Shorter inputs run whole, exactly as the backend
    runs them."""

    sample_rate: int = 16000
    window_seconds: ClassVar[float | None] = 30.0

    def windows(self, item: tuple[Any, int]) -> list[tuple[tuple[Any, int], float]] | None:
        wave, rate = item
        if self.window_seconds is None or len(wave) <= self.window_seconds * rate:
            return None
        count = math.ceil(len(wave) / (self.window_seconds * rate))
        size = math.ceil(len(wave) / count)
        return [((wave[start:start + size], rate), len(wave[start:start + size]) / rate)
                for start in range(0, len(wave), size)]

    def size(self, item: tuple[Any, int]) -> float:
        """Duration in seconds: batching similar lengths together wastes little padding."""
        wave, rate = item
        return len(wave) / rate

    def resample(self, item: tuple[Any, int]) -> torch.Tensor:
        """A decoded ``(waveform, rate)`` pair as a float32 tensor at :attr:`sample_rate`."""
        import torch
        import torchaudio

        wave, rate = item
        tensor = torch.from_numpy(wave)
        if rate != self.sample_rate:
            tensor = torchaudio.functional.resample(tensor, orig_freq=rate, new_freq=self.sample_rate)
        return tensor
