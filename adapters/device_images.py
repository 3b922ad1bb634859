"""Images decoded on the model's device: JPEGs go to the model as their encoded bytes and are
decoded there in batches (TorchCodec's ``decode_jpeg`` where it is installed, else torchvision's;
nvJPEG on CUDA), then resized, cropped and normalised there as the weights' own transform does on
the CPU.

The CPU decodes only what the device decoder cannot be trusted with, file by file, through the
modality's decoder and the weights' transform, exactly as when everything runs on the CPU: PNG and
other formats, CMYK and YCCK JPEGs (PIL converts their colours its own way), lossless and
arithmetic-coded JPEGs, JPEGs whose components may be RGB rather than YCbCr (decoders disagree on
them), files that end before their end marker (so a truncated file gets the same named error),
images over PIL's decompression-bomb limit, PIL images and arrays. A JPEG the device
decoder rejects is decoded on the CPU too; if that also fails, its error names the input.

:class:`ImageBatcher` is what an image adapter holds: it is resolved at load time (``mode``
``"device"`` on CUDA when the transform is one this module can replay on tensors: timm's,
torchvision's and open_clip's ``Resize`` / ``CenterCrop`` / to-tensor / ``Normalize``), and
``"pil"`` everywhere else. Setting ``model.image_decoding`` switches it.
"""

from __future__ import annotations

import base64
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from zoo.core._encoder import DeviceStage
from zoo.core._media import MediaBytes
from zoo.errors import is_item_error

if TYPE_CHECKING:
    import torch

ImageDecoding = Literal["device", "pil"]
#: Frame markers of the JPEGs the device decoder takes: baseline, extended and progressive Huffman.
_HUFFMAN_FRAMES = frozenset((0xC0, 0xC1, 0xC2))
#: Markers with no length field after them (restart markers, TEM).
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
# Transform steps that only make sure an image is RGB: the device decoder outputs RGB already.
_RGB_STEPS = frozenset(("MaybeConvertMode", "_convert_to_rgb", "convert_to_rgb"))
_TO_TENSOR_STEPS = frozenset(("ToTensor", "MaybeToTensor"))
# Resize filters whose antialiased tensor version follows PIL's to a level or so.
_PIL_LIKE = frozenset(("bilinear", "bicubic"))

# An 8x8 JPEG: what the device decoder is tried on once, before the first batch.
_PROBE = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1R"
    "V19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA"
    "AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6"
    "Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG"
    "x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA"
    "AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPE"
    "xcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDJooorA+nP/9k="
)


def device_decodable(data: bytes) -> bool:
    """Whether ``data`` is a JPEG the device decoder may take (see :func:`jpeg_size`)."""
    return jpeg_size(data) is not None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of a JPEG the device decoder may take: 8-bit Huffman (baseline or
    progressive) with 1 or 3 components that are surely YCbCr, within PIL's pixel limit, and
    complete to its end marker; None for anything else. Reads the headers up to the first scan."""
    if data[:2] != b"\xff\xd8" or data.rstrip(b"\0")[-2:] != b"\xff\xd9":
        return None
    jfif, adobe_transform, frame = False, None, None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE0 and segment[:5] == b"JFIF\0" and len(segment) >= 14:  # libjpeg's test
            jfif = True
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_transform = segment[11]
        elif marker in _HUFFMAN_FRAMES and frame is None:
            frame = segment
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical or arithmetic coded, or a second frame
        elif marker == 0xDA:  # the first scan: libjpeg has settled the colour space by here
            return _frame_size(frame, jfif, adobe_transform) if frame else None
        pos += 2 + length
    return None


def _frame_size(frame: bytes, jfif: bool, adobe_transform: int | None) -> tuple[int, int] | None:
    from PIL import Image

    if len(frame) < 6 or len(frame) != 6 + 3 * frame[5]:  # libjpeg refuses a frame of the wrong length
        return None
    precision, height, width, components = frame[0], int.from_bytes(frame[1:3], "big"), \
        int.from_bytes(frame[3:5], "big"), frame[5]
    limit = Image.MAX_IMAGE_PIXELS
    fits = (precision == 8 and components in (1, 3) and not _maybe_rgb(frame, jfif, adobe_transform)
            and height > 0 and width > 0 and (limit is None or height * width <= limit))
    return (height, width) if fits else None


def _maybe_rgb(frame: bytes, jfif: bool, adobe_transform: int | None) -> bool:
    """Whether a decoder could take the 3 components of a (well-formed) ``frame`` as RGB, not YCbCr:
    Adobe's colour transform 0, or (libjpeg's guess without JFIF or Adobe markers) components named
    R, G, B."""
    names = bytes(frame[6 + 3 * i] for i in range(frame[5]))
    return frame[5] == 3 and (adobe_transform == 0 or (not jfif and adobe_transform is None and names == b"RGB"))


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG left encoded for the device, with the item it came from (a path, or None for bytes)
    so that a CPU fallback reads it exactly as the CPU path would."""

    data: bytes
    pixels: int
    source: str | os.PathLike[str] | None = None


class KeepJpegsEncoded:
    """The decoder featurize runs in ``"device"`` mode: a JPEG path or bytes the device can decode
    stays encoded (an :class:`EncodedJpeg`); anything else goes through ``decode`` unchanged.
    Picklable, so it runs in DataLoader workers."""

    def __init__(self, decode: Callable[[Any], Any]) -> None:
        self.decode = decode

    def __call__(self, item: Any) -> Any:
        if isinstance(item, (str, os.PathLike)):
            data = _read_if_jpeg(item)
            size = jpeg_size(data) if data is not None else None
            if data is not None and size is not None:
                return EncodedJpeg(data, size[0] * size[1], item)
        elif (isinstance(item, (bytes, bytearray)) and _declared_jpeg(item)
              and (size := jpeg_size(bytes(item))) is not None):
            return EncodedJpeg(bytes(item), size[0] * size[1])
        return self.decode(item)  # and bytes declared as another type: the decoder holds them to it


def _declared_jpeg(item: Any) -> bool:
    """Whether bytes may be kept encoded as a JPEG: bytes declared as nothing, or as a JPEG."""
    return not isinstance(item, MediaBytes) or item.media_type in ("image/jpeg", "image/jpg", "image/pjpeg")


def _read_if_jpeg(path: str | os.PathLike[str]) -> bytes | None:
    """The file's bytes if it starts as a JPEG; None for anything else, and for anything unreadable
    (the modality's decoder then reads it, and names the error, as the CPU path does)."""
    try:
        with open(path, "rb") as file:
            return file.read() if file.read(2) == b"\xff\xd8" and file.seek(0) == 0 else None
    except (OSError, ValueError):
        return None


@dataclass
class ImageBatch:
    """A collated batch whose JPEGs are still encoded: row ``jpegs[i]`` is the JPEG ``data[i]``
    (read from ``sources[i]``, None for bytes, so a CPU fallback reads it as the CPU path does),
    and rows ``others`` are ``transformed``, stacked. Bytes and one tensor, not a tensor a row:
    each tensor crossing from a DataLoader worker holds a file descriptor until it is freed."""

    jpegs: list[int] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    sources: list[str | os.PathLike[str] | None] = field(default_factory=list)
    pixels: list[int] = field(default_factory=list)
    others: list[int] = field(default_factory=list)
    transformed: torch.Tensor | None = None


@dataclass(frozen=True)
class DeviceTransform:
    """The weights' CPU transform replayed on uint8 CxHxW tensors: resize (rounded and clamped to
    8 bits as PIL's resize of an 8-bit image is), centre crop, scale to [0, 1], normalise."""

    resize: Any  # a torchvision Resize, or None
    crop: Any  # a torchvision CenterCrop, or None
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, transform: Any) -> DeviceTransform | None:
        """The tensor version of ``transform``, or None where it has a step this cannot replay."""
        from torchvision import transforms as T

        if type(transform).__name__ == "ImageClassification":  # torchvision's weights.transforms()
            if transform.interpolation.value not in _PIL_LIKE:
                return None
            return cls(T.Resize(transform.resize_size, transform.interpolation, antialias=transform.antialias),
                       T.CenterCrop(transform.crop_size), tuple(transform.mean), tuple(transform.std))
        steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
        resize = crop = normalize = None
        to_tensor = False
        for step in steps:
            kind = getattr(step, "__name__", None) or type(step).__name__  # a function, or a step object
            if isinstance(step, T.Resize) and resize is None and crop is None and not to_tensor:
                if getattr(step.interpolation, "value", step.interpolation) not in _PIL_LIKE:
                    return None  # nearest and box sample otherwise on tensors than PIL does
                resize = step
            elif isinstance(step, T.CenterCrop) and crop is None and not to_tensor:
                crop = step
            elif kind in _TO_TENSOR_STEPS and not to_tensor:
                to_tensor = True
            elif isinstance(step, T.Normalize) and to_tensor and normalize is None:
                normalize = step
            elif kind in _RGB_STEPS and getattr(step, "mode", "RGB") == "RGB":
                continue
            else:
                return None
        if not to_tensor or (crop is None and not (resize is not None and isinstance(resize.size, (tuple, list))
                                                   and len(resize.size) == 2)):
            return None  # without a fixed output size, images of a batch could not be stacked
        mean, std = (tuple(map(float, normalize.mean)), tuple(map(float, normalize.std))) if normalize else \
            ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        return cls(resize, crop, mean, std)

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        import torch

        out = []
        for image in images:
            x = self._resized(image.float()) if self.resize is not None else image.float()
            out.append(self.crop(x) if self.crop is not None else x)
        batch = torch.stack(out).div_(255)
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        return batch.sub_(mean).div_(std)

    def _resized(self, x: torch.Tensor) -> torch.Tensor:
        """Resize as PIL does an 8-bit image: width first, then height, each pass rounded to 8 bits
        (one float pass differs from PIL by a level on 9% of pixels; this, on 0.003%)."""
        from torchvision.transforms.functional import resize

        height, width = x.shape[-2:]
        new_height, new_width = _resized_size(height, width, self.resize.size, self.resize.max_size)
        for size in ([height, new_width], [new_height, new_width]):
            if list(x.shape[-2:]) != size:
                # antialias always: PIL's filters always scale with the image, whatever Resize says
                x = resize(x, size, self.resize.interpolation, antialias=True).clamp_(0, 255).round_()
        return x


def _resized_size(height: int, width: int, size: int | list[int] | tuple[int, ...], max_size: int | None
                  ) -> tuple[int, int]:
    """The (height, width) torchvision's ``Resize(size, max_size=...)`` gives an image: ``size``
    itself when it is a pair; else the shorter side to ``size``, the longer kept in proportion
    (truncated), and both scaled down if the longer would pass ``max_size``."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    size = int(size[0]) if isinstance(size, (list, tuple)) else int(size)
    short, long = sorted((height, width))
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if height <= width else (new_long, new_short)


class ImageBatcher:
    """How an image adapter turns decoded items into batches: on the CPU with the weights'
    ``transform``, or (mode ``"device"``) with its JPEGs decoded and transformed on the device."""

    def __init__(self, transform: Callable[[Any], torch.Tensor], device: str) -> None:
        self.transform = transform
        self.decoders = jpeg_decoders()
        self.decoder: JpegDecoder | None = self.decoders[0] if self.decoders else None
        self.device_transform = DeviceTransform.of(transform) if self.decoder else None
        self.mode: ImageDecoding = "device" if str(device).startswith("cuda") and self.device_transform else "pil"
        self._probed = False  # whether the decoders were tried on the device (``decoder``: the one that works)

    def set_mode(self, mode: ImageDecoding) -> None:
        """Decode on the device or with PIL; ``"device"`` needs a transform this can replay."""
        if mode not in ("device", "pil"):
            raise ValueError(f"image_decoding must be 'device' or 'pil', not {mode!r}")
        if mode == "device" and self.device_transform is None:
            raise ValueError(f"image_decoding='device' needs a transform of Resize, CenterCrop, to-tensor and "
                             f"Normalize steps; this model's is {self.transform!r}: keep 'pil'")
        self.mode = mode

    def collate(self, items: list[Any]) -> torch.Tensor | ImageBatch:
        """A stacked batch; an :class:`ImageBatch` when some items are still encoded JPEGs."""
        import torch

        if not any(isinstance(item, EncodedJpeg) for item in items):
            return torch.stack([self.transform(item) for item in items])
        batch = ImageBatch()
        for row, item in enumerate(items):
            if isinstance(item, EncodedJpeg):
                batch.jpegs.append(row)
                batch.data.append(item.data)
                batch.sources.append(item.source)
                batch.pixels.append(item.pixels)
            else:
                batch.others.append(row)
        if batch.others:
            batch.transformed = torch.stack([self.transform(items[row]) for row in batch.others])
        return batch

    def finish(self, batch: Any, device: str, decode: Callable[[Any], Any]) -> tuple[Any, list[tuple[int, str]]]:
        """Decode and transform an :class:`ImageBatch`'s JPEGs on ``device``: the batch as one
        tensor there, and ``[(row, reason)]`` for rows no decoder could read (left out of it)."""
        if not isinstance(batch, ImageBatch):
            return batch, []
        import torch

        rows: dict[int, torch.Tensor] = {}
        if batch.transformed is not None:
            rows.update(zip(batch.others, batch.transformed.to(device)))
        failed: list[tuple[int, str]] = []
        for group in _by_pixels(batch.pixels, DECODE_PIXELS):
            decoded = self._decode_jpegs([batch.data[i] for i in group], device)
            for i in (i for i, image in zip(group, decoded) if image is None):
                try:  # the device decoder refused it: the CPU path, errors and all
                    rows[batch.jpegs[i]] = self.transform(decode(batch.sources[i] or batch.data[i])).to(device)
                except Exception as exc:  # whatever the decoder raises for this file (is_item_error)
                    if not is_item_error(exc):
                        raise
                    failed.append((batch.jpegs[i], f"{type(exc).__name__}: {exc}"))
            kept = [(batch.jpegs[i], image) for i, image in zip(group, decoded) if image is not None]
            del decoded  # this group's decoded images go before the next group's come
            if kept:
                assert self.device_transform is not None  # an ImageBatch comes from "device" mode, which has one
                rows.update(zip([row for row, _ in kept], self.device_transform([image for _, image in kept])))
            del kept
        order = sorted(rows)
        return (torch.stack([rows[row] for row in order]) if order else None), sorted(failed)

    def _decode_jpegs(self, data: list[bytes], device: str) -> list[torch.Tensor | None]:
        """:func:`decode_jpegs`, after checking once which decoder works on ``device`` at all (a
        CPU-only TorchCodec build does not; torchvision's nvJPEG then may): where none does,
        warn and decode with PIL from now on."""
        if not self._probed:
            self._probed = True
            candidates = list(dict.fromkeys(one for one in (self.decoder, *self.decoders) if one is not None))
            self.decoder = next((one for one in candidates if decode_jpegs([_PROBE], device, one)[0] is not None),
                                None)
            if self.decoder is None:
                names = " and ".join(one.name for one in candidates)
                warnings.warn(f"{names} cannot decode JPEGs on {device}; decoding them with PIL instead "
                              "(model.image_decoding = 'pil')", RuntimeWarning, stacklevel=2)
                self.mode = "pil"
        return decode_jpegs(data, device, self.decoder) if self.decoder else [None] * len(data)


# Decoded pixels held on the device at once (3 bytes each): a batch of camera photos is decoded in
# groups under this, each resized before the next, so GPU memory is bounded by it, not the batch.
DECODE_PIXELS = 1 << 27


def _by_pixels(pixels: list[int], budget: int) -> list[list[int]]:
    """The positions of ``pixels`` cut into consecutive groups of at most ``budget`` pixels (a
    larger image alone)."""
    groups: list[list[int]] = []
    held = budget
    for i, count in enumerate(pixels):
        if held + count > budget:
            groups.append([])
            held = 0
        groups[-1].append(i)
        held += count
    return groups


@dataclass(frozen=True)
class JpegDecoder:
    """A library's JPEG decoder: ``decode(encoded, device)`` turns a 1-D uint8 CPU tensor, or a list
    of them (one batched call), into RGB uint8 CxHxW tensors on ``device``."""

    name: str
    decode: Callable[[Any, str], Any]


def _torchcodec_decode(encoded: Any, device: str) -> Any:
    from torchcodec.decoders import decode_jpeg

    return decode_jpeg(encoded, mode="RGB", device=device)


def _torchvision_decode(encoded: Any, device: str) -> Any:
    from torchvision.io import ImageReadMode, decode_jpeg

    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


def jpeg_decoders() -> list[JpegDecoder]:
    """The JPEG decoders installed, preferred first: TorchCodec's (``pip install zoo-models[gpu]``;
    the maintained one, torchvision's successor) and torchvision's."""
    found = []
    try:
        from torchcodec.decoders import decode_jpeg as torchcodec_decode_jpeg  # noqa: F401 (whether it imports)
    except (ImportError, OSError, RuntimeError):  # absent, or its libraries do not load with this torch
        pass
    else:
        found.append(JpegDecoder("torchcodec", _torchcodec_decode))
    try:
        from torchvision.io import decode_jpeg as torchvision_decode_jpeg  # noqa: F401 (whether it imports)
    except ImportError:
        return found
    # torchvision 0.29 deprecates its decoders for TorchCodec's; where TorchCodec is not installed zoo
    # keeps torchvision's until they go, with no warning at every batch.
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning, module="torchvision")
    found.append(JpegDecoder("torchvision", _torchvision_decode))
    return found


def decode_jpegs(data: list[bytes], device: str, decoder: JpegDecoder | None = None) -> list[torch.Tensor | None]:
    """Decode JPEG bytes to RGB uint8 CxHxW tensors on ``device`` with ``decoder`` (the preferred
    one by default), in one batched call; when that fails, file by file, with None for each file
    the decoder cannot read. Running out of device memory is not a bad file: it is raised."""
    import torch

    if not data:
        return []
    decoder = decoder or jpeg_decoders()[0]
    encoded = [torch.frombuffer(bytearray(one), dtype=torch.uint8) for one in data]
    if torch.device(device).type == "cuda":
        # nvJPEG's writes do not wait for the work queued on this stream (torchvision decodes on a
        # stream of its own; the hardware engine ignores the stream it is given), and its outputs may
        # be blocks the caching allocator has just freed while queued kernels (the last group's
        # resize, the last batch's forward) are yet to read them (pytorch/vision#9606,
        # meta-pytorch/torchcodec#1634): let those finish first. The retries below free nothing.
        torch.cuda.current_stream(torch.device(device)).synchronize()
    try:
        return list(decoder.decode(encoded, device))
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for one in encoded:
        try:
            out.append(decoder.decode(one, device))
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError:
            out.append(None)
    return out


class DecodesImages:
    """What an image adapter (with an :class:`ImageBatcher` as ``images``, built at load time)
    answers for featurize: the decoder and collate for its mode, and the device work left."""

    images: ImageBatcher
    device: str
    decode: Callable[[Any], Any]

    @property
    def image_decoding(self) -> ImageDecoding:
        """Where featurize decodes JPEGs: ``"device"`` (on the GPU, the default there when the
        transform can run on tensors) or ``"pil"`` (on the CPU, in the decode workers)."""
        return self.images.mode

    @image_decoding.setter
    def image_decoding(self, mode: ImageDecoding) -> None:
        self.images.set_mode(mode)

    def device_stage(self) -> DeviceStage | None:
        """In ``"device"`` mode: a decoder that keeps JPEGs encoded, and the batch's JPEGs decoded
        and transformed on the model's device (not for a subclass with a ``collate`` of its own,
        which expects decoded images)."""
        if self.images.mode != "device" or type(self).collate is not DecodesImages.collate:
            return None
        return DeviceStage(KeepJpegsEncoded(self.decode), self._finish)

    def collate(self, items: list[Any]) -> torch.Tensor | ImageBatch:
        """The weights' transform of each image, stacked; encoded JPEGs kept for the device."""
        return self.images.collate(items)

    def _finish(self, batch: Any) -> tuple[Any, list[tuple[int, str]]]:
        """The JPEGs of an :class:`ImageBatch` decoded and transformed on the model's device."""
        return self.images.finish(batch, self.device, self.decode)
