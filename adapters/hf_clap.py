"""transformers' CLAP (``ClapModel``): audio and texts in one space, ``get_audio_features`` /
``get_text_features`` with the model's own processor.

The towers are ``{"audio": this, "text": its text tower}``, as an image-text model's are
``{"vision", "text"}``, so ``featurize(clips)``, ``featurize_texts(texts)``, ``classify(clips,
labels)`` and a search of an audio index by text work as they do for CLIP.

Each clip is embedded as transformers embeds it alone. Two of its extractor's behaviours are
random, and zoo makes them not so: a clip longer than the extractor's ``max_length_s`` (10 s) would
be cropped at random (or fused from random crops), so zoo cuts it into windows of at most that and
averages them by duration, as it does for every audio model; and a ``fusion`` extractor marks one
clip of each batch as "longer" at random when none is, which changes that clip's embedding, so zoo
marks every clip as transformers marks a clip passed alone (the zero-shot pipeline's case: always).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Built, Encoder

from .audio import AudioAdapter
from .image_text import FeaturesTextSide, TextTower, features_output
from .transformers import TransformersFamily, load_model_and_processor

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


class HFClapAdapter(FeaturesTextSide, TransformersFamily, AudioAdapter):
    """A ``ClapModel``: the audio tower (this) and a :class:`TextTower` on the same weights."""

    def __init__(self, spec: ModelSpec, model: Any, *, processor: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.processor = processor
        self.extractor = processor.feature_extractor
        self.tokenizer = processor.tokenizer
        self.sample_rate = int(self.extractor.sampling_rate)
        self.window_seconds = float(self.extractor.max_length_s)
        self.text_tower = TextTower(self)

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        from transformers import AutoModel, AutoProcessor

        model, processor = load_model_and_processor(files.root, AutoModel, AutoProcessor, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        changes = {"normalize": True,  # get_*_features give unit vectors: CLAP's cosine
                   "preprocessing": {"sampling_rate": int(processor.feature_extractor.sampling_rate),
                                     **spec.preprocessing}}
        return Built(model, int(model.config.projection_dim), changes, {"processor": processor})

    @property
    def preprocess(self) -> dict[str, Any]:
        """``{"audio": feature extractor, "text": tokenizer}`` bound to these weights."""
        return {"audio": self.extractor, "text": self.tokenizer}

    def towers(self) -> Mapping[str, Encoder]:
        return {"audio": self, "text": self.text_tower}

    # -- audio ----------------------------------------------------------------------------------

    def collate(self, items: list[tuple[Any, int]]) -> dict[str, Any]:
        """The extractor's features of each clip (at most ``max_length_s``: longer ones come as
        windows), flagged as one clip alone would be."""
        import numpy as np
        import torch

        waves = [self.resample(item).numpy() for item in items]
        state = np.random.get_state()  # the extractor draws its random flag from NumPy's global generator
        try:
            inputs = dict(self.extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt"))
        finally:
            np.random.set_state(state)
        if self.extractor.truncation == "fusion":
            inputs["is_longer"] = torch.ones_like(inputs["is_longer"])
        return inputs

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        features = batch["input_features"].to(self.device, dtype)
        return features_output(self.model.get_audio_features(input_features=features,
                                                             is_longer=batch["is_longer"].to(self.device)))
