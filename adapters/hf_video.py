"""transformers video models, each with its folder's own processor: VideoMAE, ViViT and
TimeSformer (a clip to one vector), and X-CLIP (clips and texts in one space).

Such a model reads a fixed number of frames together (space-time attention, or X-CLIP's
frame-integration transformer over its per-frame embeddings): its config's ``num_frames``, which its
position embeddings are built for. The adapter declares that count as the ``video`` tower's reading
(``preprocessing["video"]``), so zoo's video decoder samples exactly that many frames per clip, at
the centres of equal spans of its length, and records it in every row's provenance. The frames of
a clip go through the processor as one video and the model as one input: there is no per-frame row
to average. A video-only model's row is pooled as its own video-classification head reads it
(:data:`~zoo.adapters.hf_folders.HEAD_POOLING`: ViViT's and TimeSformer's class token, VideoMAE's
mean of tokens); X-CLIP's are ``get_video_features`` and ``get_text_features``, the embeddings that
its similarity compares before it conditions the text on the video (its prompt generator), so a
clip and a text embed independently and an index of clips can be searched by text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import Built, Encoder
from zoo.errors import ModelFormatError

from .hf_folders import CLASS_TOKEN_TYPES
from .hf_vision import head_pooling, pool_output
from .image_text import FeaturesTextSide, TextTower, features_output
from .transformers import TransformersFamily, load_model_and_processor

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.plugins.video import Clip
    from zoo.store._model_files import ModelFiles


def _reading(spec: ModelSpec, frames: int) -> dict[str, Any]:
    """The spec's preprocessing with the video tower's reading: the model's frame count, uniformly."""
    return {**spec.preprocessing, "video": {"frames": int(frames), "sampling": "uniform"}}


class VideoTower(TransformersFamily, Encoder):
    """What a transformers video tower shares: clips' sampled frames through the processor as
    videos, a batch at a time."""

    strategies: ClassVar[tuple[str, ...]] = ()  # finetuning on clips is not a zoo verb yet

    def __init__(self, spec: ModelSpec, model: Any, *, processor: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.processor = processor

    @property
    def preprocess(self) -> Any:
        """The folder's processor, which every clip's frames go through."""
        return self.processor

    def collate(self, items: list[Clip]) -> Any:
        """The processor's pixel values of each clip's frames, ``(clips, frames, 3, H, W)``."""
        return self.processor(videos=[list(clip.frames) for clip in items], return_tensors="pt")["pixel_values"]


class HFVideoAdapter(VideoTower):
    """A VideoMAE, ViViT or TimeSformer (``AutoModel`` with ``AutoVideoProcessor``): one row per clip."""

    pooling_modes: tuple[str, ...] = ("cls", "mean", "pooler")

    def __init__(self, spec: ModelSpec, model: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        config = model.config
        self.pooling_modes = tuple(mode for mode, has in (
            ("cls", config.model_type in CLASS_TOKEN_TYPES), ("mean", True),
            ("pooler", getattr(model, "pooler", None) is not None)) if has)

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        from transformers import AutoModel, AutoVideoProcessor

        model, processor = load_model_and_processor(files.root, AutoModel, AutoVideoProcessor, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        config = model.config
        if config.model_type == "videomae" and not config.use_mean_pooling and not spec.pooling:
            raise ModelFormatError(f"{files.root / 'config.json'}: use_mean_pooling is false, so VideoMAE's head "
                                   "reads its first patch token; zoo pools no video that way: name the pooling in a "
                                   "registry entry (pooling: mean)")
        pool = head_pooling(spec, config, files.root, "video")
        return Built(model, int(config.hidden_size),
                     {"pooling": pool, "preprocessing": _reading(spec, config.num_frames)}, {"processor": processor})

    def towers(self) -> Mapping[str, Encoder]:
        return {"video": self}

    def encode_batch(self, batch: torch.Tensor, *, pool: str | None = None) -> torch.Tensor:
        out = self.model(pixel_values=batch.to(self.device, self.dtype))
        return pool_output(out, self.model.config, pool, self.name)


class HFVideoTextAdapter(FeaturesTextSide, VideoTower):
    """An ``XCLIPModel``: the video tower (this) and a :class:`TextTower` on the same weights."""

    def __init__(self, spec: ModelSpec, model: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.tokenizer = self.processor.tokenizer
        self.text_tower = TextTower(self)

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        from transformers import AutoModel, AutoProcessor

        model, processor = load_model_and_processor(files.root, AutoModel, AutoProcessor, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        frames = model.config.vision_config.num_frames
        return Built(model, int(model.config.projection_dim),
                     {"normalize": True, "preprocessing": _reading(spec, frames)},  # X-CLIP's cosine
                     {"processor": processor})

    def towers(self) -> Mapping[str, Encoder]:
        return {"video": self, "text": self.text_tower}

    def encode_batch(self, batch: torch.Tensor, *, pool: str | None = None) -> torch.Tensor:
        return features_output(self.model.get_video_features(pixel_values=batch.to(self.device, self.dtype)))
