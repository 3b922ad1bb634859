"""A sentence-transformers model over a vision-language model (a VLM embedder whose Transformer
takes texts, images and chat messages, since sentence-transformers 5.4), run by the library's own
module pipeline: texts, images, and items that combine a text and an image
(``{"text": ..., "image": ...}``: one row for the pair), each through ``preprocess`` and the
pipeline as ``SentenceTransformer.encode`` runs them.

Its towers are ``vision`` (images), ``text`` and ``combined`` (the combined items, a modality of
their own: ``zoo/plugins/combined.py``); all three give rows of one space. A prompt (a role's, as
``encode_query`` / ``encode_document`` pick it, or one asked for) goes to the library's
preprocessing, which puts it in as a system message whatever the input. A pipeline that takes
videos has a ``video`` tower of its own: a clip's frames go through the library's video
preprocessing together, as ``encode`` takes a clip. Which frames: where the model's video processor
samples them itself (``do_sample_frames``: Qwen3-VL's 2 per second), the frames its own
``sample_frames`` chooses from the clip's header (its frame count and rate), read by zoo's decoder
without decoding the rest, and handed over with that metadata; otherwise every frame, as the
library takes a clip whose processor samples none (at most
:data:`~zoo.plugins.video.MAX_SAMPLED`; a longer clip is refused by name). The frames are read in
decode, so a clip that cannot be read is named; the library preprocesses each batch in the model's
process (a device stage), where an input it refuses is named by its row and the others go on. The
reading is recorded in each row's provenance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import Built, DeviceStage, Encoder
from zoo.errors import ModelFormatError
from zoo.plugins.combined import COMBINED
from zoo.plugins.video import ClipSource, read_frames

from .sentence_transformers import (
    as_texts,
    check_feature_extraction,
    ends_with_normalize,
    load_sentence_transformers,
    output_width,
    preprocess_each,
    run_pipeline,
    save_st,
)
from .transformers import TransformersFamily

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles

# What a video processor's sample_frames reads from its own settings (or the pipeline's call settings).
_SAMPLER_SETTINGS = ("num_frames", "fps", "min_frames", "max_frames", "temporal_patch_size")


class STMultimodalAdapter(TransformersFamily, Encoder):
    """``model`` is the ``SentenceTransformer``; this encoder is its image tower."""

    strategies: ClassVar[tuple[str, ...]] = ()  # finetuning a VLM embedder is not a zoo verb yet
    parallel_decode: ClassVar[bool] = False  # inputs decode here, beside the library's processor

    def __init__(self, spec: ModelSpec, model: Any, *, tokenizer: Any = None, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.tokenizer = tokenizer
        self._others = {"text": PipelineTower(self, as_texts), COMBINED: PipelineTower(self)}
        if "video" in self.spec.preprocessing:
            self._others["video"] = ClipTower(self, self.spec.preprocessing["video"])

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        root = files.root
        model, settled = load_sentence_transformers(spec, root, device=device, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        check_feature_extraction(root, model)
        if not {"text", "image", "message"} <= set(model.modalities):
            raise ModelFormatError(f"{root}: a sentence-transformers pipeline for {', '.join(model.modalities)} "
                                   "inputs; zoo runs those of texts, images and their combinations (chat messages)")
        if "video" in model.modalities:
            settled["preprocessing"] = {**settled["preprocessing"], "video": _video_reading(root, model)}
        return Built(model, output_width(model, root), {"normalize": ends_with_normalize(model), **settled},
                     {"tokenizer": model.tokenizer})

    @property
    def preprocess(self) -> Any:
        """The model's processor (its tokenizer, image processor and chat template)."""
        return self.model[0].processor

    def towers(self) -> Mapping[str, Encoder]:
        return {"vision": self, **self._others}

    def collate(self, items: list[Any]) -> dict[str, Any]:
        """A batch of one kind of input (images, texts, combined items, clips' frames), which the
        library recognises from the items themselves; :meth:`preprocessed` (the device stage)
        preprocesses it, with the call's prompt."""
        return {"items": items}

    def prompt_features(self, prompt: str) -> dict[str, Any]:
        """The prompt travels to the library's preprocessing, which puts it in as a system message
        whatever the input (as ``encode(..., prompt=...)`` does)."""
        return {"prompt": prompt}

    def device_stage(self) -> DeviceStage:
        """Each batch preprocessed by the library in the model's process, with the call's prompt
        (an input it refuses is named by its row, and the others go on)."""
        return DeviceStage(self.decode, self.preprocessed)

    def preprocessed(self, batch: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[int, str]]]:
        """The library's preprocessing of a collated batch (its items, the prompt, any processing
        settings), and the rows it refused."""
        def preprocess(items: list[Any]) -> Any:
            return self.model.preprocess(items, prompt=batch.get("prompt") or None,
                                         processing_kwargs=batch.get("processing_kwargs"))

        return preprocess_each(preprocess, batch["items"])

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        return run_pipeline(self.model, {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()})

    def save(self, directory: Any) -> Path:
        """The pipeline as sentence-transformers saves it, with zoo's manifest beside it."""
        return save_st(self, directory)


class PipelineTower(Encoder):
    """Another tower of the same pipeline (texts, combined items): the owner's preprocessing and
    forward pass, for that kind of input."""

    parallel_decode: ClassVar[bool] = False
    strategies: ClassVar[tuple[str, ...]] = ()

    def __init__(self, owner: STMultimodalAdapter, wrap: Callable[[list[Any]], list[Any]] = list) -> None:
        super().__init__(owner.spec, owner.model, files=owner.files, device=owner.device, dtype=owner.dtype)
        self.owner, self.wrap = owner, wrap  # wrap: texts as explicit text inputs

    @property
    def preprocess(self) -> Any:
        return self.owner.preprocess

    def collate(self, items: list[Any]) -> dict[str, Any]:
        return self.owner.collate(self.wrap(items))

    def prompt_features(self, prompt: str) -> dict[str, Any] | None:
        return self.owner.prompt_features(prompt)

    def device_stage(self) -> DeviceStage:
        return DeviceStage(self.decode, self.owner.preprocessed)

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        return self.owner.encode_batch(batch, pool=pool)


def _video_reading(root: Path, model: Any) -> dict[str, Any]:
    """How the pipeline's clips are read (see the module), as JSON for provenance: the frames its
    video processor samples, or every frame, which it takes when it samples none."""
    processor, asked = _video_processing(model)
    if processor is None:
        raise ModelFormatError(f"{root}: its pipeline takes videos, but its processor has no video processor")
    samples = bool(asked.get("do_sample_frames", processor.do_sample_frames))
    reading: dict[str, Any] = {"sampling": "processor", "sampler": type(processor).__name__,
                               "do_sample_frames": samples}
    if not samples:
        return reading
    sampler = {name: asked.get(name, getattr(processor, name, None)) for name in _SAMPLER_SETTINGS}
    if sampler["num_frames"] is not None:  # a count, not a rate: sample_frames reads no fps then
        sampler["fps"] = None
    return {**reading, **{name: value for name, value in sampler.items() if value is not None}}


def _video_processing(model: Any) -> tuple[Any, dict[str, Any]]:
    """The pipeline's video processor (None where it has none) and the settings its calls pass it."""
    return getattr(model[0].processor, "video_processor", None), dict(model[0].processing_kwargs.get("video") or {})


class ClipTower(PipelineTower):
    """The pipeline's own video tower: each clip's frames, as its video processor chooses them,
    through the library's video preprocessing and the pipeline."""

    def __init__(self, owner: STMultimodalAdapter, reading: dict[str, Any]) -> None:
        super().__init__(owner)
        self.reading = reading
        self.processor, self.asked = _video_processing(owner.model)

    def device_stage(self) -> DeviceStage:
        """The chosen frames are read in decode, so a clip that cannot be read is named; the
        library preprocesses each batch."""
        return DeviceStage(self.chosen_frames, self.owner.preprocessed)

    def collate(self, items: list[Any]) -> dict[str, Any]:
        once = {"video": {**self.asked, "do_sample_frames": False}}  # chosen already: not sampled again
        return {"items": list(items), "processing_kwargs": once}

    def chosen_frames(self, item: Any) -> dict[str, Any]:
        """A clip's frames as the library takes a clip: those its processor's own ``sample_frames``
        chooses from the header (every frame where it samples none), read without decoding the
        rest, with the metadata the processor reads them by (their indices, the clip's rate and
        length)."""
        from transformers.video_utils import VideoMetadata

        clip: ClipSource = self.decode(item)
        metadata = VideoMetadata(total_num_frames=clip.total_frames, fps=clip.fps, duration=clip.duration)
        if not self.reading["do_sample_frames"]:
            indices = list(range(clip.total_frames))
        else:
            sampling = {name: value for name, value in self.asked.items() if name in _SAMPLER_SETTINGS}
            try:
                indices = [int(i) for i in self.processor.sample_frames(metadata, **sampling)]
            except Exception as exc:  # the library's own refusal, of any type: this clip's, named
                raise ValueError(f"{clip.name}: {self.reading['sampler']}.sample_frames chooses no frames from "
                                 f"its {clip.total_frames}: {type(exc).__name__}: {exc}") from None
        metadata.frames_indices = indices
        return {"array": read_frames(clip, indices), "video_metadata": metadata}
