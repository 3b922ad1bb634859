"""What audio adapters share: resampling decoded waveforms to the model's rate."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Encoder, longest_first

if TYPE_CHECKING:
    import torch


# Above this reduced source rate (rate / gcd(rate, target)), audio is resampled with scipy's
# polyphase filter instead of torchaudio's sinc kernel; every common rate reduces far below it
# (44100 -> 16000 is 441 / 160).
_SINC_MAX_RATIO = 1000


class AudioAdapter(Encoder):
    """An audio model; :attr:`sample_rate` is the rate its weights expect.

    An input longer than :attr:`window_seconds` runs as near-equal windows no longer than that,
    whose rows are averaged by duration: a model's memory (attention is quadratic in length) stays
    that of one window however long the recording. Shorter inputs run whole, exactly as the backend
    runs them.

    A row must not depend on the clips batched with it: a model that pads exactly (a mask, or a
    fixed window) batches clips of any lengths, longest first; one that does not (group
    normalisation over the time axis sees the padding) sets :attr:`pads_exactly` to False and is
    batched only with clips of the same length."""

    sample_rate: int = 16000
    window_seconds: float | None = 30.0
    pads_exactly: bool = True

    def plan_batches(self, items: Sequence[tuple[Any, int]], batch_size: int
                     ) -> Iterator[tuple[list[int], Any]]:
        """Longest first; where padding would change a row, each batch holds one length only."""
        if self.pads_exactly:
            yield from longest_first(items, batch_size, _seconds, self.collate)
            return
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (wave, rate) in enumerate(items):
            groups.setdefault((len(wave), int(rate)), []).append(index)
        for key in sorted(groups, key=lambda k: -k[0] / k[1]):
            positions = groups[key]
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                yield chunk, self.collate([items[i] for i in chunk])

    def windows(self, item: tuple[Any, int]) -> list[tuple[tuple[Any, int], float]] | None:
        wave, rate = item
        if self.window_seconds is None or len(wave) <= self.window_seconds * rate:
            return None
        count = math.ceil(len(wave) / (self.window_seconds * rate))
        size = math.ceil(len(wave) / count)
        return [((wave[start:start + size], rate), len(wave[start:start + size]) / rate)
                for start in range(0, len(wave), size)]

    def resample(self, item: tuple[Any, int]) -> torch.Tensor:
        """A decoded ``(waveform, rate)`` pair as a float32 tensor at :attr:`sample_rate`."""
        import torch
        import torchaudio

        wave, rate = item
        tensor = torch.from_numpy(wave)
        common = math.gcd(int(rate), self.sample_rate)
        if rate == self.sample_rate:
            return tensor
        if int(rate) // common > _SINC_MAX_RATIO:
            # torchaudio's sinc kernel is (new / gcd) x (orig / gcd) wide: gigabytes for a rate such as
            # 16001 Hz. A polyphase filter's length grows only linearly with the ratio.
            from scipy.signal import resample_poly

            out = resample_poly(wave, self.sample_rate // common, int(rate) // common)
            return torch.from_numpy(out.astype(wave.dtype, copy=False))
        return torchaudio.functional.resample(tensor, orig_freq=rate, new_freq=self.sample_rate)


def _seconds(item: tuple[Any, int]) -> float:
    """A decoded clip's duration: batching similar durations together wastes little padding."""
    wave, rate = item
    return len(wave) / rate
