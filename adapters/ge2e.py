"""GE2E speaker encoder (Wan et al., 2018) with the weights that the ``resemblyzer`` package ships.

The network is small enough to define here: a 40-band mel spectrogram (25 ms window, 10 ms hop,
16 kHz, computed with torchaudio) -> 3-layer LSTM (256) -> Linear (256) -> ReLU -> L2 norm, run on
1.6 s partial utterances whose embeddings are averaged and normalised again. Nothing of
resemblyzer's code runs; its checkpoint is read with ``torch.load(weights_only=True)``.

One difference from resemblyzer's ``preprocess_wav``: zoo does not trim long silences with
webrtcvad (a compiled dependency); volume normalisation to -30 dBFS is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Built
from zoo.store._checkpoint import load_state_dict, weights_file

from .audio import AudioAdapter

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles

DEFAULTS = {
    "sample_rate": 16000,
    "n_mels": 40,
    "window_ms": 25,
    "hop_ms": 10,
    "partial_frames": 160,
    "partials_per_second": 1.3,
    "min_coverage": 0.75,
    "target_dbfs": -30.0,
}


def build_encoder(n_mels: int = 40, hidden: int = 256, layers: int = 3, embed: int = 256) -> torch.nn.Module:
    import torch

    class SpeakerEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(n_mels, hidden, layers, batch_first=True)
            self.linear = torch.nn.Linear(hidden, embed)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            """(batch, frames, n_mels) mel power spectrogram -> (batch, embed), unit length."""
            _, (h, _) = self.lstm(mels)
            e = torch.relu(self.linear(h[-1]))
            return e / e.norm(dim=1, keepdim=True).clamp(min=1e-12)

    return SpeakerEncoder()


def partial_slices(n_samples: int, sample_rate: int, hop: int, frames: int, rate: float,
                   min_coverage: float) -> list[int]:
    """Start frames of the partial utterances covering ``n_samples`` (as resemblyzer computes them):
    ``rate`` partials per second, the last one kept if it covers at least ``min_coverage``."""
    n_frames = math.ceil((n_samples + 1) / hop)
    step = max(1, round((sample_rate / rate) / hop))
    starts = list(range(0, max(1, n_frames - frames + step + 1), step))
    last_start = starts[-1] * hop
    coverage = (n_samples - last_start) / (frames * hop)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


class GE2EAdapter(AudioAdapter):
    """Speaker embeddings: utterances of one voice are close, different voices apart."""

    backend = "ge2e"
    parallel_decode = False  # collate computes the mel spectrogram on the model's device


    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, mel: torch.nn.Module, settings: dict[str, Any],
                 **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.mel = mel
        self.settings = settings
        self.sample_rate = int(settings["sample_rate"])
        self.hop = self.sample_rate * int(settings["hop_ms"]) // 1000

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype) -> Built:
        import torchaudio

        settings = {**DEFAULTS, **spec.preprocessing}
        state = load_state_dict(weights_file(spec, files), key=spec.config.get("state_key"))
        # The checkpoint also holds the GE2E loss's scale and bias, which inference does not use.
        state = {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}
        hidden = state["linear.weight"].shape[1]
        layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
        embed = state["linear.weight"].shape[0]
        model = build_encoder(int(settings["n_mels"]), hidden, layers, embed)
        model.load_state_dict(state)
        rate = int(settings["sample_rate"])
        window = rate * int(settings["window_ms"]) // 1000
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=rate, n_fft=window, win_length=window, hop_length=rate * int(settings["hop_ms"]) // 1000,
            n_mels=int(settings["n_mels"]), power=2.0, center=True, pad_mode="constant",
            norm="slaney", mel_scale="slaney",  # librosa's defaults, which the weights were trained with
        )
        mel.to(device).eval()  # float32 whatever the compute dtype: the log-mel range needs it
        return Built(model, int(embed), {"preprocessing": settings, "normalize": True},  # GE2E's cosine
                     {"mel": mel, "settings": settings})

    @property
    def preprocess(self) -> torch.nn.Module:
        """The mel front end (torchaudio ``MelSpectrogram``) matching the weights."""
        return self.mel

    def _normalize_volume(self, wave: torch.Tensor) -> torch.Tensor:
        import torch

        rms = wave.pow(2).mean().sqrt().clamp(min=1e-10)
        change_db = float(self.settings["target_dbfs"]) - 20 * torch.log10(rms)
        return wave * 10 ** (change_db / 20) if change_db > 0 else wave  # increase only

    def collate(self, items: list[tuple[Any, int]]) -> tuple[Any, list[int]]:
        """Cut each utterance into 1.6 s partials; returns their mel frames and the count per utterance."""
        import torch

        frames = int(self.settings["partial_frames"])
        partials, counts = [], []
        for item in items:
            wave = self._normalize_volume(self.resample(item))
            starts = partial_slices(len(wave), self.sample_rate, self.hop, frames,
                                    float(self.settings["partials_per_second"]), float(self.settings["min_coverage"]))
            needed = (starts[-1] + frames) * self.hop
            if needed > len(wave):
                wave = torch.nn.functional.pad(wave, (0, needed - len(wave)))
            mel = self.mel(wave.to(self.device)).T  # (frames, n_mels)
            partials += [mel[s:s + frames] for s in starts]
            counts.append(len(starts))
        return torch.stack(partials), counts

    def encode_batch(self, batch: tuple[Any, Sequence[int]], *, pool: str | None = None) -> torch.Tensor:
        import torch

        mels, counts = batch
        partial = self.model(mels.to(self.device, self.dtype)).float()
        means = torch.stack([chunk.mean(0) for chunk in torch.split(partial, list(counts))])
        return means / means.norm(dim=1, keepdim=True).clamp(min=1e-12)
