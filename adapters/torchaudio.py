"""torchaudio speech encoders: pipeline bundles (``WAV2VEC2_BASE``, ``HUBERT_BASE``, ``WAVLM_BASE``...)
and ``torchaudio.models`` architectures built from parameters in the spec.

A bundle builds its own model with ``bundle.get_model``; zoo hands it the verified weight file
(``load_state_dict_from_url`` finds it in ``model_dir`` and opens no socket) and reads it with
``weights_only=True``. Features are the last transformer layer, mean-pooled over valid frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog._spec import ModelSpec, Source
from zoo.core._encoder import Built
from zoo.errors import UnknownModelError, close_matches
from zoo.store._checkpoint import load_state_dict, weights_file

from .audio import AudioAdapter

if TYPE_CHECKING:
    import torch

    from zoo.store._model_files import ModelFiles

BUNDLE_URL = "https://download.pytorch.org/torchaudio/models/"


def find_bundle(name: str) -> Any:
    """The ``torchaudio.pipelines`` bundle called ``name`` that can extract features."""
    from torchaudio import pipelines

    bundle = getattr(pipelines, name, None)
    if bundle is None or not hasattr(bundle, "get_model") or not hasattr(bundle, "_path"):
        names = [n for n in dir(pipelines) if n.isupper() and hasattr(getattr(pipelines, n), "_params")]
        raise UnknownModelError(f"torchaudio:{name}", [f"torchaudio:{h}" for h in close_matches(name, names)],
                                hint="(speech encoder bundles of torchaudio.pipelines)")
    return bundle


class TorchaudioAdapter(AudioAdapter):
    """A torchaudio wav2vec2-family encoder (wav2vec 2.0, HuBERT, WavLM, XLS-R)."""

    backend = "torchaudio"
    pooling_modes = ("mean",)
    #: a torchaudio ``Wav2Vec2Model`` (``extract_features``)
    model: Any

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, sample_rate: int, normalize_waveform: bool,
                 **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.sample_rate = sample_rate
        self.normalize_waveform = normalize_waveform
        # A "group_norm" feature extractor (WavLM / wav2vec2 base) normalises each channel over the
        # whole padded length: such models batch clips of one length only.
        import torch

        extractor = getattr(model, "feature_extractor", model)
        self.pads_exactly = not any(isinstance(m, torch.nn.GroupNorm) for m in extractor.modules())

    @classmethod
    def spec_for_id(cls, backend: str, backend_id: str) -> ModelSpec:
        bundle = find_bundle(backend_id)
        url = bundle._path if bundle._path.startswith("https") else BUNDLE_URL + bundle._path
        return ModelSpec(name=f"torchaudio:{backend_id}", modality="audio", backend=backend, backend_id=backend_id,
                         sources=(Source("url", url),), config={"weights": Path(url).name})

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype) -> Built:
        import torch
        import torchaudio

        weights = weights_file(spec, files)
        architecture = spec.config.get("architecture")
        if architecture:  # a torchaudio.models builder with the spec's parameters
            model = getattr(torchaudio.models, architecture)(**spec.config.get("params", {}))
            model.load_state_dict(load_state_dict(weights))
            sample_rate = int(spec.preprocessing.get("sample_rate", 16000))
            normalize_waveform = bool(spec.preprocessing.get("normalize_waveform", False))
        else:
            bundle = find_bundle(spec.backend_id)
            model = bundle.get_model(dl_kwargs={"model_dir": str(weights.parent), "file_name": weights.name,
                                                "weights_only": True, "progress": False})
            sample_rate = int(bundle.sample_rate)
            normalize_waveform = bool(getattr(model, "normalize_waveform", False))
        # The bundle wrapper layer-normalises the whole padded batch at once; zoo normalises each
        # waveform on its own instead (the same result for one item, independent of batching).
        model = getattr(model, "model", model).eval()
        with torch.inference_mode():  # the width of the last layer, from a short probe on the CPU
            probe, _ = model.extract_features(torch.zeros(1, sample_rate))
        changes = {"pooling": "mean", "preprocessing": {"sample_rate": sample_rate,
                                                        "normalize_waveform": normalize_waveform,
                                                        **spec.preprocessing}}
        return Built(model, int(probe[-1].shape[-1]), changes,
                     {"sample_rate": sample_rate, "normalize_waveform": normalize_waveform})

    @property
    def preprocess(self) -> dict[str, Any]:
        """The input convention of these weights: sample rate and per-utterance normalisation."""
        return {"sample_rate": self.sample_rate, "normalize_waveform": self.normalize_waveform}

    def collate(self, items: list[tuple[Any, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        waves = [self.resample(item) for item in items]
        if self.normalize_waveform:
            waves = [torch.nn.functional.layer_norm(w, w.shape) for w in waves]
        lengths = torch.tensor([len(w) for w in waves])
        return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths

    def encode_batch(self, batch: tuple[torch.Tensor, torch.Tensor], *, pool: str | None = None) -> torch.Tensor:
        import torch

        waves, lengths = batch
        features, frame_lengths = self.model.extract_features(waves.to(self.device, self.dtype),
                                                              lengths.to(self.device))
        hidden = features[-1].float()
        frames = torch.arange(hidden.shape[1], device=hidden.device)
        mask = (frames[None, :] < frame_lengths[:, None]).unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
