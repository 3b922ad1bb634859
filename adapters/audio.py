"""What audio adapters share: resampling decoded waveforms to the model's rate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.adapter import Adapter

if TYPE_CHECKING:
    import torch


class AudioAdapter(Adapter):
    """An audio model; :attr:`sample_rate` is the rate its weights expect."""

    sample_rate: int = 16000

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
