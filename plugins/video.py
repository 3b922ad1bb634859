"""The video modality: clips, embedded by any image or image-text model over their sampled frames.

A clip (a file, its bytes, or a ``(T, H, W, 3)`` uint8 array of frames) decodes to the frames at
the centres of :data:`FRAMES` equal spans of its length (the uniform sampling of CLIP4Clip and
X-CLIP), read with PyAV (FFmpeg's libraries, shipped in its wheel). The container's header is read
first: a clip longer than :func:`max_video_seconds` or larger than :data:`MAX_PIXELS` per frame is
refused before any frame is decoded, and an unreadable file is a named error.

The modality registers ``over="vision"``: every model with an image tower (timm, torchvision,
open_clip, transformers) gets a ``video`` tower, :class:`FramesTower`, which embeds a clip's frames
through that image tower (its own preprocessing and weights) and averages their rows, each taken at
unit length where the model normalises (CLIP4Clip's mean pooling); the row is normalised again as
the model's rows are. The sampling and pooling are this modality's registered ``settings``,
recorded in the provenance of every row.

A video model (VideoMAE, ViViT, TimeSformer, X-CLIP: ``zoo/adapters/hf_video.py``) has a ``video``
tower of its own, which reads the number of frames the model was built for, as its adapter declares
(``preprocessing["video"]``); the decoder samples that many the same way. ``video-text`` is the
modality of models that embed clips and texts into one space (X-CLIP).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._encoder import DeviceStage, Encoder
from zoo.hookspecs import RegisterModality, hookimpl

if TYPE_CHECKING:
    import numpy as np
    import torch

#: frames read from each clip, at the centres of equal spans of its length
FRAMES = 8
#: the largest frame read, in pixels (a 4K frame is 8.3 million)
MAX_PIXELS = 8192 * 4320
#: frames decoded at most from the keyframe before a sample time to it
MAX_DECODED = 10_000
#: frames read at most from a clip whose model's processor chooses them
MAX_SAMPLED = 1024
#: how frames are chosen: at the centres of equal spans, or by the model's own processor
SAMPLINGS = ("uniform", "processor")
ENV_MAX_SECONDS = "ZOO_MAX_VIDEO_SECONDS"
#: the longest clip read unless the environment or the caller says otherwise (an hour)
DEFAULT_MAX_SECONDS = 3600.0
# Containers whose headers say the length (MPEG program streams only estimate it, so .mpg is not read).
SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ogv")
SETTINGS = {"frames": FRAMES, "sampling": "uniform", "pool": "mean"}


@dataclass(frozen=True)
class ClipSource:
    """A clip whose frames its model's processor chooses (``sampling="processor"``): where it is
    (a path, bytes, or its frames as an array) and what its header says; :func:`read_frames` reads
    the chosen frames. ``fps`` and ``duration`` are None for an array, which says neither."""

    source: Any
    name: str
    total_frames: int
    fps: float | None = None
    duration: float | None = None
    start: float = 0.0


@dataclass(frozen=True)
class Clip:
    """A decoded clip: its sampled frames, ``(frames, H, W, 3)`` uint8, and each one's time in
    seconds (its index for an array of frames)."""

    frames: np.ndarray
    times: tuple[float, ...]


def max_video_seconds() -> float:
    """The longest clip read: ``$ZOO_MAX_VIDEO_SECONDS``, else an hour."""
    raw = os.environ.get(ENV_MAX_SECONDS)
    try:
        return float(raw) if raw else DEFAULT_MAX_SECONDS
    except ValueError:
        raise ValueError(f"${ENV_MAX_SECONDS}={raw!r} is not a number of seconds") from None


def sample_times(duration: float, frames: int = FRAMES) -> list[float]:
    """The centres of ``frames`` equal spans of ``[0, duration)``."""
    return [(i + 0.5) * duration / frames for i in range(frames)]


def decode_video(item: Any, *, frames: int = FRAMES, sampling: str = "uniform",
                 fps: float | None = None) -> Clip | ClipSource:
    """Any supported clip input -> ``frames`` frames sampled uniformly (see the module): a model's
    tower binds the count it reads (:data:`FRAMES` over an image tower, an HF video model's own).
    With ``sampling="processor"`` (a model whose processor chooses the frames, ``fps`` a second
    where it samples by rate), the clip's header only, checked, as a :class:`ClipSource` for
    :func:`read_frames`; an array, which says no frame rate, cannot be sampled by rate."""
    import numpy as np

    if not isinstance(frames, int) or frames < 1 or sampling not in SAMPLINGS:
        raise ValueError(f"clips are read as frames >= 1 sampled {' or '.join(SAMPLINGS)}, not frames={frames!r}, "
                         f"sampling={sampling!r}")
    if hasattr(item, "__array_interface__") or type(item).__module__ == "numpy":
        array = np.asarray(item)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or not array.shape[0]:
            raise ValueError(f"a clip as an array is (frames, height, width, 3) uint8, not {array.shape} "
                             f"{array.dtype}")
        if sampling == "processor":
            if fps is not None:
                raise ValueError(f"an array of {len(array)} frames says no frame rate, and this model's processor "
                                 f"samples {fps:g} frames a second: pass the clip's file or bytes")
            return ClipSource(array, f"the array of {len(array)} frames", len(array))
        chosen = [min(int(t), len(array) - 1) for t in sample_times(len(array), frames)]
        return Clip(np.ascontiguousarray(array[chosen]), tuple(float(i) for i in chosen))
    source, name = _file_source(item)
    with _opened(source, name) as (container, stream, duration, start):
        if sampling == "processor":
            return ClipSource(source, name, *_frame_count(stream, duration, name), duration, start)
        shown = [_frame_at(container, stream, start + at, name) for at in sample_times(duration, frames)]
    return Clip(np.stack([frame for _, frame in shown]), tuple(at for at, _ in shown))


def read_frames(clip: ClipSource, indices: Sequence[int]) -> np.ndarray:
    """The frames of ``clip`` at ``indices`` (counted at its frame rate, from its first timestamp):
    for a file, the frame shown at the middle of each index's span, reached by a seek, so the work
    is bounded by the count asked for, at most :data:`MAX_SAMPLED`."""
    import numpy as np

    if not 0 < len(indices) <= MAX_SAMPLED or any(not 0 <= i < clip.total_frames for i in indices):
        raise ValueError(f"{clip.name}: {len(indices)} frames chosen ({list(indices)[:4]}...) of its "
                         f"{clip.total_frames}; between 1 and {MAX_SAMPLED} of them are read")
    if isinstance(clip.source, np.ndarray):
        return np.ascontiguousarray(clip.source[list(indices)])
    assert clip.fps is not None  # a file's ClipSource carries its rate
    with _opened(clip.source, clip.name) as (container, stream, _, start):
        return np.stack([_frame_at(container, stream, start + (i + 0.5) / clip.fps, clip.name)[1] for i in indices])


def _file_source(item: Any) -> tuple[Any, str]:
    """A path or bytes as what PyAV opens (bytes stay bytes: a source travels between processes)."""
    if isinstance(item, (str, os.PathLike)):
        if not os.path.isfile(item):  # nor a URL, which FFmpeg would fetch
            raise FileNotFoundError(f"no such video file: {item}")
        return os.fspath(item), str(item)
    if isinstance(item, (bytes, bytearray)):
        return bytes(item), f"the video data ({len(item)} bytes)"
    raise TypeError(f"expected a video path, bytes or a (frames, H, W, 3) uint8 array, got {type(item).__name__}")


@contextlib.contextmanager
def _opened(source: Any, name: str) -> Iterator[tuple[Any, Any, float, float]]:
    """The open container, its video stream, its length and first timestamp in seconds, the header
    checked before any frame is decoded; what PyAV cannot read is an ``OSError`` naming the clip."""
    import av

    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
            if not container.streams.video:
                raise ValueError(f"{name} holds no video stream")
            stream = container.streams.video[0]
            duration = _duration(container, stream, name)
            _check_header(name, duration, stream.codec_context.width, stream.codec_context.height)
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            yield container, stream, duration, start
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise OSError(f"{name} is not a video PyAV reads: {exc}") from None


def _frame_count(stream: Any, duration: float, name: str) -> tuple[int, float]:
    """A clip's frame count and rate, as its header says them (the count from its length where the
    container does not store it)."""
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise ValueError(f"{name}'s header says no frame rate; remux it (ffmpeg -i IN -c copy OUT.mp4)")
    return int(stream.frames or round(duration * float(rate))), float(rate)


def _frame_at(container: Any, stream: Any, at: float, name: str) -> tuple[float, np.ndarray]:
    """The frame shown at ``at`` seconds (the last whose time is at or before it; the first, for a
    time before it): a seek to the keyframe before it, then at most :data:`MAX_DECODED` frames, so
    the work per sample is bounded whatever the file's length."""
    container.seek(int(at / stream.time_base), stream=stream, backward=True, any_frame=False)
    shown = None
    for count, frame in enumerate(container.decode(stream)):
        if frame.time is None:
            raise ValueError(f"{name} has frames without timestamps; remux it (ffmpeg -i IN -c copy OUT.mp4)")
        if shown is not None and frame.time > at:
            break
        if frame.width * frame.height > MAX_PIXELS:
            raise ValueError(f"{name} has {frame.width}x{frame.height} frames, more than {MAX_PIXELS:,} pixels")
        shown = frame
        if frame.time > at or count >= MAX_DECODED:
            break
    if shown is None:
        raise ValueError(f"{name} decodes to no frame at {at:.3f} s")
    return round(float(shown.time), 6), shown.to_ndarray(format="rgb24")


def _duration(container: Any, stream: Any, name: str) -> float:
    """The clip's length in seconds, from its header (the stream's, else the container's)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    raise ValueError(f"{name}'s header says no duration; remux it (ffmpeg -i IN -c copy OUT.mp4)")


def _check_header(name: str, duration: float, width: int, height: int) -> None:
    if not duration > 0:
        raise ValueError(f"{name} has no length (its header says {duration} s)")
    limit = max_video_seconds()
    if duration > limit:
        raise ValueError(f"{name} is {duration:.1f} s long, more than the {limit:g} s this run reads "
                         f"(${ENV_MAX_SECONDS}); cut it into clips")
    if width * height > MAX_PIXELS:
        raise ValueError(f"{name} has {width}x{height} frames, more than {MAX_PIXELS:,} pixels; scale it down")


class FramesTower(Encoder):
    """A ``video`` tower over an image tower (``inner``): a clip's sampled frames through the
    image tower's preprocessing and model, their rows averaged (see the module)."""

    parallel_decode: ClassVar[bool] = True
    strategies: ClassVar[tuple[str, ...]] = ()  # finetuning trains on images, not clips

    def __init__(self, inner: Encoder, *, frames: int = FRAMES, sampling: str = "uniform", pool: str = "mean") -> None:
        if (frames, sampling, pool) != (FRAMES, "uniform", "mean"):
            raise ValueError(f"the video tower reads {FRAMES} uniformly sampled frames and averages their rows, "
                             f"not frames={frames}, sampling={sampling!r}, pool={pool!r}")
        super().__init__(inner.spec, inner.model, files=inner.files, device=inner.device, dtype=inner.dtype)
        self.inner = inner
        self.pooling_modes = inner.pooling_modes

    def collate(self, items: list[Clip]) -> dict[str, Any]:
        """Every frame of the batch's clips as one batch of the image tower, and each clip's count."""
        frames = [self.inner.decode(frame) for clip in items for frame in clip.frames]
        return {"frames": self.inner.collate(frames), "counts": [len(clip.frames) for clip in items]}

    def prompt_features(self, prompt: str) -> dict[str, Any] | None:
        """The image tower's: a prompt goes with the frames as with its images."""
        return self.inner.prompt_features(prompt)

    def device_stage(self) -> DeviceStage:
        """The frames' batch finished as the image tower finishes its own (with the prompt's
        entries, where the call has a prompt); a clip whose frames it refuses is named."""
        return DeviceStage(self.decode, functools.partial(self._finished, self.inner.device_stage()))

    def _finished(self, stage: DeviceStage | None, batch: dict[str, Any]
                  ) -> tuple[dict[str, Any], list[tuple[int, str]]]:
        frames, counts = batch["frames"], batch["counts"]
        extra = {key: value for key, value in batch.items() if key not in ("frames", "counts")}
        frames = {**frames, **extra} if extra else frames
        if stage is None:
            return {"frames": frames, "counts": counts}, []
        frames, refused = stage.finish(frames)
        clip_of = [clip for clip, count in enumerate(counts) for _ in range(count)]
        failed = {clip_of[row]: reason for row, reason in reversed(refused)}  # each clip's first refusal
        if sum(counts[clip] for clip in failed) != len(refused):
            raise RuntimeError("the image tower refused some frames of a clip and kept others")
        kept = [count for clip, count in enumerate(counts) if clip not in failed]
        return {"frames": frames, "counts": kept}, sorted(failed.items())

    def encode_batch(self, batch: dict[str, Any], *, pool: str | None = None) -> torch.Tensor:
        import torch

        images, counts = batch["frames"], batch["counts"]
        rows = self.inner.encode_batch(images, pool=pool).float()
        if self.spec.normalize:  # each frame's row as the image tower's featurize gives it
            rows = torch.nn.functional.normalize(rows, dim=-1)
        return torch.stack([part.mean(dim=0) for part in rows.split(counts)])

    @property
    def preprocess(self) -> Any:
        """The image tower's preprocessing, which every frame goes through."""
        return self.inner.preprocess


@hookimpl
def zoo_register_modalities(register: RegisterModality) -> None:
    register("video", decode=decode_video,
             description=f"video clips: paths, bytes, (T, H, W, 3) uint8 arrays; frames sampled uniformly ({FRAMES} "
                         "through an image tower, their rows averaged; a video model's own count)",
             examples="zoo.plugins.examples:clips", suffixes=SUFFIXES, media_types=("video/*",),
             over="vision", tower=FramesTower, settings=SETTINGS)
    register("video-text", decode=decode_video,
             description="clips and texts in one space (X-CLIP): featurize(clips), featurize_texts(texts)",
             examples="zoo.plugins.examples:clips", suffixes=SUFFIXES, media_types=("video/*",))
