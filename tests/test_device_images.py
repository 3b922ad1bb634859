"""JPEGs decoded and transformed on the model's device (``image_decoding="device"``), compared
with timm, torchvision and open_clip called directly on PIL images.

This machine has no GPU: the device here is the CPU, where TorchCodec's and torchvision's
``decode_jpeg`` are libjpeg-turbo; everything but nvJPEG itself runs as it does on CUDA (the header
check, the batch left encoded through the workers, the batched decode, the per-file CPU fallback,
the tensor transform). The last tests run on CUDA where there is one.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import zoo
from zoo.adapters.device_images import (DeviceTransform, EncodedJpeg, ImageBatch, ImageBatcher, JpegDecoder,
                                        device_decodable, jpeg_decoders)
from zoo.errors import InputError

skimage_data = pytest.importorskip("skimage.data")


def _jpeg(array: np.ndarray, **save: object) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lite0():
    model = zoo.load("efficientnet-lite0", device="cpu")
    model.encoder.image_decoding = "device"
    return model


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """JPEGs as cameras and datasets write them: sizes, orientations, progressive, 4:4:4, grey."""
    from PIL import Image

    coffee, chelsea, rocket = skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket()
    big = np.asarray(Image.fromarray(chelsea).resize((1003, 761), Image.BICUBIC))
    return {"coffee": _jpeg(coffee), "chelsea-progressive": _jpeg(chelsea, progressive=True),
            "rocket-portrait": _jpeg(rocket), "big-444": _jpeg(big, subsampling=0),
            "grey": _jpeg(skimage_data.camera()), "small": _jpeg(coffee[::5, ::5].copy())}


def _timm_reference(model, images):
    """EfficientNet-Lite0 through timm's own transform of PIL images and the model's forward."""
    import timm
    import torch

    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model.model))
    net = model.model.eval()
    with torch.inference_mode():
        x = torch.stack([transform(image) for image in images])
        return net.forward_head(net.forward_features(x), pre_logits=True).numpy()


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _installed(name: str) -> JpegDecoder:
    """The JPEG decoder ``name``, or the test skipped where it is not installed."""
    found = {one.name: one for one in jpeg_decoders()}
    if name not in found:
        pytest.skip(f"{name} is not installed")
    return found[name]


@pytest.fixture(params=["torchcodec", pytest.param("torchvision", marks=pytest.mark.slow)])
def decoder(request, lite0, monkeypatch) -> JpegDecoder:
    """Each JPEG decoder zoo can use, set on ``lite0`` for the test."""
    found = _installed(request.param)
    monkeypatch.setattr(lite0.encoder.images, "decoder", found)
    monkeypatch.setattr(lite0.encoder.images, "_probed", False)  # its own check that it decodes at all
    return found


def _segments(data: bytes) -> list[bytes]:
    """A JPEG cut into its marker segments up to the first scan, then the rest whole."""
    out, pos = [data[:2]], 2
    while data[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append(data[pos:end])
        pos = end
    return [*out, data[pos:]]


def _rgb_named(data: bytes) -> bytes:
    """``data`` without its JFIF marker and with its components named R, G, B: libjpeg (and so PIL)
    then takes the components for RGB, not YCbCr."""
    segments = [one for one in _segments(data) if not one.startswith(b"\xff\xe0")]
    frame = next(i for i, one in enumerate(segments) if one[:2] == b"\xff\xc0")
    named_frame, named_scan = bytearray(segments[frame]), bytearray(segments[-1])
    for i, name in enumerate(b"RGB"):
        named_frame[10 + 3 * i] = named_scan[5 + 2 * i] = name  # the frame's and the scan's names
    return b"".join([*segments[:frame], bytes(named_frame), *segments[frame + 1:-1], bytes(named_scan)])


def test_the_header_check_sends_only_plain_jpegs_to_the_device(photos, monkeypatch):
    from PIL import Image

    for name, data in photos.items():
        assert device_decodable(data), name
    coffee = skimage_data.coffee()
    buffer = io.BytesIO()
    Image.fromarray(coffee).convert("CMYK").save(buffer, format="JPEG")
    assert not device_decodable(buffer.getvalue())  # PIL converts CMYK itself
    buffer = io.BytesIO()
    Image.fromarray(coffee).save(buffer, format="PNG")
    assert not device_decodable(buffer.getvalue())
    assert not device_decodable(photos["coffee"][:5000])  # truncated: PIL names the error
    assert not device_decodable(b"not an image at all")
    assert device_decodable(photos["coffee"] + b"\0\0")  # padding after the end marker
    assert not device_decodable(_rgb_named(photos["coffee"]))  # libjpeg's RGB; nvJPEG's may differ
    segments = _segments(photos["coffee"])
    adobe_rgb = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # colour transform 0: RGB
    frame = next(i for i, one in enumerate(segments) if one[:2] == b"\xff\xc0")
    after_frame = b"".join([*segments[:frame + 1], adobe_rgb, *segments[frame + 1:]])
    assert not device_decodable(after_frame)  # an Adobe marker counts wherever it is before the scan
    short_jfif = b"\xff\xe0\x00\x0eJFIF\x00\x01\x01\x00\x00\x01"  # 12 bytes: libjpeg ignores it
    rgb = _rgb_named(photos["coffee"])
    assert not device_decodable(rgb[:2] + short_jfif + rgb[2:])
    stretched = bytearray(segments[frame])
    stretched[3] += 1  # the frame's length one past its 3 components
    assert not device_decodable(b"".join([*segments[:frame], bytes(stretched) + b"\0", *segments[frame + 1:]]))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert not device_decodable(photos["coffee"])  # PIL's decompression-bomb check applies


def test_device_decoding_equals_timm_on_pil_images(lite0, decoder, photos, tmp_path):
    from PIL import Image

    paths = []
    for name, data in photos.items():
        paths.append(tmp_path / f"{name}.jpg")
        paths[-1].write_bytes(data)
    batch = lite0.encoder.collate([lite0.encoder.device_stage().decode(p) for p in paths])
    assert isinstance(batch, ImageBatch) and batch.jpegs == list(range(len(paths)))  # all left encoded
    pil = [Image.open(p).convert("RGB") for p in paths]
    expected = _timm_reference(lite0, pil)
    got = lite0.featurize([*paths, *photos.values()], batch_size=4)
    cosines = _cosines(got, np.concatenate([expected, expected]))
    assert cosines.min() >= 0.999, f"minimum cosine {cosines.min():.6f}"
    print(f"{decoder.name}: minimum cosine against timm on PIL images: {cosines.min():.6f}")


def test_what_the_device_cannot_decode_takes_the_cpu_path_unchanged(lite0, photos, tmp_path):
    from PIL import Image

    coffee = skimage_data.coffee()
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(coffee).convert("CMYK").save(cmyk, format="JPEG")
    png = tmp_path / "coffee.png"
    Image.fromarray(coffee).save(png)
    rgb = _rgb_named(photos["coffee"])
    items = [cmyk, png, Image.fromarray(coffee), coffee, rgb, photos["coffee"]]
    decoded = [lite0.encoder.device_stage().decode(item) for item in items]
    assert [isinstance(d, EncodedJpeg) for d in decoded] == [False, False, False, False, False, True]
    pil = [Image.open(cmyk).convert("RGB"), Image.open(png).convert("RGB"), Image.fromarray(coffee),
           Image.fromarray(coffee), Image.open(io.BytesIO(rgb)).convert("RGB"),
           Image.open(io.BytesIO(photos["coffee"])).convert("RGB")]
    got = lite0.featurize(items, batch_size=6)
    expected = _timm_reference(lite0, pil)
    np.testing.assert_allclose(got[:5], expected[:5], atol=1e-5)  # the CPU path itself
    assert _cosines(got[5:], expected[5:]).min() >= 0.999


def test_bad_files_get_the_same_named_errors_in_both_modes(lite0, decoder, photos, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos["coffee"][:2000])
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    # A scan that names Huffman tables the file never defines: it passes the header check, and
    # neither decoder reads it.
    undefined = bytearray(photos["coffee"])
    undefined[undefined.index(b"\xff\xda") + 6] = 0x33
    undefined_tables = tmp_path / "undefined-tables.jpg"
    undefined_tables.write_bytes(undefined)
    assert device_decodable(undefined_tables.read_bytes())
    good = tmp_path / "good.jpg"
    good.write_bytes(photos["rocket-portrait"])
    batch = [good, truncated, text, tmp_path / "missing.jpg", undefined_tables, good, 42]
    reports, rows = {}, {}
    for mode in ("pil", "device"):
        lite0.encoder.image_decoding = mode
        with pytest.raises(InputError, match=r"input 1 \(.*truncated.jpg'\): OSError"):
            lite0.featurize(batch)
        with pytest.raises(InputError, match=r"input 1 \(.*undefined-tables.jpg'\)"):
            lite0.featurize([good, undefined_tables])
        with pytest.warns(RuntimeWarning, match="skipped 5 of 7"):
            rows[mode] = lite0.featurize(batch, on_error="skip", batch_size=3)
        reports[mode] = lite0.last_report
        # the first bad input named, whether the workers or the device decoder found it
        with pytest.raises(InputError, match=r"input 1 \(.*undefined-tables.jpg'\)"):
            lite0.featurize([good, undefined_tables, text], batch_size=3)
    lite0.encoder.image_decoding = "device"
    assert reports["device"].skipped == reports["pil"].skipped
    assert reports["device"].kept == reports["pil"].kept == [0, 5]
    assert _cosines(rows["device"], rows["pil"]).min() >= 0.999


def test_a_jpeg_the_device_decoder_refuses_is_decoded_on_the_cpu(lite0, decoder, photos, monkeypatch):
    """nvJPEG refuses some files libjpeg reads (odd markers, sampling it does not support): the
    batch is decoded again file by file, and the refused file alone takes the CPU path."""
    from PIL import Image

    refused = photos["chelsea-progressive"]
    calls = []

    def refusing(encoded, device):
        calls.append(len(encoded) if isinstance(encoded, list) else 1)
        for one in encoded if isinstance(encoded, list) else [encoded]:
            if one.numpy().tobytes() == refused:
                raise RuntimeError("nvjpegDecodeBatchedPhaseOne failed: 6")
        return decoder.decode(encoded, device)

    monkeypatch.setattr(lite0.encoder.images, "decoder", JpegDecoder("refusing", refusing))
    items = [photos["coffee"], refused, photos["grey"]]
    got = lite0.featurize(items, batch_size=3)
    assert lite0.last_report.skipped == []
    # the check that it decodes at all, the batch, then file by file; the refused one alone took the CPU path
    assert calls == [1, 3, 1, 1, 1]
    expected = _timm_reference(lite0, [Image.open(io.BytesIO(d)).convert("RGB") for d in items])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)  # the CPU path, exactly
    assert _cosines(got, expected).min() >= 0.999


def test_a_batch_of_large_photos_is_decoded_in_groups(lite0, photos, monkeypatch):
    from zoo.adapters import device_images

    assert device_images._by_pixels([5, 5, 5, 20], 10) == [[0, 1], [2], [3]]
    items = list(photos.values())
    whole = lite0.featurize(items, batch_size=len(items))
    calls = []
    decode_jpegs = device_images.decode_jpegs
    monkeypatch.setattr(device_images, "decode_jpegs", lambda data, device, decoder: calls.append(len(data)) or
                        decode_jpegs(data, device, decoder))
    monkeypatch.setattr(device_images, "DECODE_PIXELS", 1)  # one photo per decoder call
    np.testing.assert_array_equal(lite0.featurize(items, batch_size=len(items)), whole)
    assert calls == [1] * len(items)


def test_a_device_that_cannot_decode_at_all_falls_back_to_pil_with_a_warning(photos, monkeypatch):
    from zoo.adapters import device_images

    model = zoo.load("efficientnet-lite0", device="cpu")
    model.encoder.image_decoding = "device"
    monkeypatch.setattr(device_images, "decode_jpegs", lambda data, device, decoder: [None] * len(data))
    items = list(photos.values())[:3]
    names = " and ".join(one.name for one in model.encoder.images.decoders)
    with pytest.warns(RuntimeWarning, match=f"{names} cannot decode JPEGs on cpu; decoding them with PIL"):
        got = model.featurize(items)
    assert model.encoder.image_decoding == "pil"
    model.encoder.image_decoding = "pil"
    np.testing.assert_array_equal(got, model.featurize(items))


def test_a_decoder_that_cannot_decode_on_the_device_gives_way_to_the_next(photos, monkeypatch):
    """TorchCodec built for the CPU only cannot decode on CUDA, where torchvision's nvJPEG may."""
    from zoo.adapters import device_images

    model = zoo.load("efficientnet-lite0", device="cpu")
    if len(model.encoder.images.decoders) < 2:
        pytest.skip("needs TorchCodec and torchvision")
    model.encoder.image_decoding = "device"
    first, second = model.encoder.images.decoders[:2]
    decode_jpegs = device_images.decode_jpegs
    monkeypatch.setattr(device_images, "decode_jpegs", lambda data, device, decoder: [None] * len(data)
                        if decoder is first else decode_jpegs(data, device, decoder))
    items = list(photos.values())[:3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = model.featurize(items)
    assert not [w for w in caught if "cannot decode JPEGs" in str(w.message)]
    assert model.encoder.images.decoder is second and model.encoder.image_decoding == "device"
    model.encoder.image_decoding = "pil"
    assert _cosines(got, model.featurize(items)).min() >= 0.999


def test_encoded_batches_cross_decode_workers(lite0, photos):
    from PIL import Image

    items = [*photos.values(), Image.open(io.BytesIO(photos["grey"]))] * 2
    in_process = lite0.featurize(items, batch_size=4)
    np.testing.assert_array_equal(lite0.featurize(items, batch_size=4, num_workers=1), in_process)
    batch = lite0.encoder.collate([lite0.encoder.device_stage().decode(item) for item in items[-3:]])
    assert batch.jpegs == [0, 1] and batch.others == [2] and batch.transformed.shape == (1, 3, 224, 224)
    assert all(isinstance(one, bytes) for one in batch.data)  # no tensor, no file descriptor, per JPEG


def test_a_subclass_with_its_own_collate_gets_decoded_images(photos):
    from zoo.adapters.timm import TimmAdapter

    class OwnCollate(TimmAdapter):
        def collate(self, items):
            assert all(hasattr(item, "size") and not isinstance(item, EncodedJpeg) for item in items)
            return super().collate(items)

    model = zoo.load("efficientnet-lite0", device="cpu")
    model.encoder.__class__ = OwnCollate
    model.encoder.image_decoding = "device"
    assert model.featurize(list(photos.values())[:2]).shape == (2, 1280)


@pytest.mark.slow
def test_a_finetuned_model_decodes_as_its_base(lite0, photos, tmp_path):
    images = list(photos.values())
    lite0.finetune((images, ["a", "b"] * 3), strategy="linear-probe", epochs=1, output_dir=tmp_path / "run")
    tuned = zoo.load(str(tmp_path / "run"), device="cpu")
    assert type(tuned.encoder) is type(lite0.encoder)  # the base's encoder, with a head beside it
    assert tuned.encoder.image_decoding == "pil"
    pil = tuned.predict_proba(images)
    tuned.encoder.image_decoding = "device"
    assert isinstance(tuned.encoder.device_stage().decode(images[0]), EncodedJpeg)
    np.testing.assert_allclose(tuned.predict_proba(images), pil, atol=1e-3)
    with pytest.raises(ValueError, match="'device' or 'pil'"):
        tuned.encoder.image_decoding = "gpu"


@pytest.mark.slow
def test_a_finetuned_text_model_holds_its_text_encoder(minilm, tmp_path):
    minilm.finetune((["tea", "coffee", "rain", "snow"], ["drink", "drink", "sky", "sky"]), strategy="linear-probe",
                    epochs=1, output_dir=tmp_path / "run")
    tuned = zoo.load(str(tmp_path / "run"), device="cpu")
    assert type(tuned.encoder) is type(minilm.encoder) and list(tuned.towers) == ["text"]
    assert not hasattr(tuned.encoder, "image_decoding")


@pytest.mark.parametrize("library", ["torchvision", "open_clip", "timm-squash"])
def test_the_device_transform_replays_each_library_on_tensors(library):
    import torch
    from PIL import Image

    if library == "torchvision":
        import torchvision

        transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    elif library == "open_clip":
        import open_clip

        transform = open_clip.image_transform(224, is_train=False)
    else:
        import timm

        transform = timm.data.create_transform(224, crop_mode="squash", crop_pct=1.0)
    replay = DeviceTransform.of(transform)
    assert replay is not None, transform
    image = skimage_data.chelsea()
    got = replay([torch.from_numpy(image).permute(2, 0, 1).contiguous()])[0]
    expected = transform(Image.fromarray(image))
    assert got.shape == expected.shape
    one_level = 1 / 255 / min(replay.std)
    assert (got - expected).abs().max() <= 1.01 * one_level
    assert (got - expected).abs().mean() <= 0.01 * one_level


def test_transforms_that_cannot_run_on_tensors_keep_pil():
    from torchvision import transforms as T

    assert DeviceTransform.of(T.Compose([T.RandomResizedCrop(224), T.ToTensor()])) is None
    assert DeviceTransform.of(T.Compose([T.Resize(224), T.ToTensor()])) is None  # sizes would differ
    nearest = T.Resize(224, interpolation=T.InterpolationMode.NEAREST)
    assert DeviceTransform.of(T.Compose([nearest, T.CenterCrop(224), T.ToTensor()])) is None

    def processor(image):  # what the transformers adapters hand over
        return image

    batcher = ImageBatcher(processor, "cuda")
    assert batcher.mode == "pil"
    with pytest.raises(ValueError, match="image_decoding='device' needs a transform"):
        batcher.set_mode("device")
    with pytest.raises(ValueError, match="'device' or 'pil'"):
        batcher.set_mode("gpu")


def test_the_device_is_the_default_on_cuda_only(lite0):
    assert ImageBatcher(lite0.encoder.transform, "cuda:0").mode == "device"
    assert ImageBatcher(lite0.encoder.transform, "cpu").mode == "pil"
    assert zoo.load("efficientnet-lite0", device="cpu").encoder.image_decoding == "pil"


def test_open_clip_images_decoded_on_the_device_equal_open_clip(open_clip_dir, photos):
    import open_clip
    import torch
    from PIL import Image

    model = zoo.load(str(open_clip_dir), device="cpu")
    model.encoder.image_decoding = "device"
    reference, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{open_clip_dir}")
    with torch.no_grad():
        pil = [Image.open(io.BytesIO(d)).convert("RGB") for d in photos.values()]
        expected = reference.eval().encode_image(torch.stack([preprocess(p) for p in pil])).numpy()
    got = model.featurize(list(photos.values()), batch_size=3)
    assert _cosines(got, expected).min() >= 0.999


needs_cuda = pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("name", ["torchcodec", "torchvision"])
def test_nvjpeg_equals_timm_on_pil_images(name, photos, monkeypatch):
    from PIL import Image

    from zoo.adapters.device_images import decode_jpegs

    decoder = _installed(name)
    model = zoo.load("efficientnet-lite0", device="cuda")
    assert model.encoder.image_decoding == "device"
    monkeypatch.setattr(model.encoder.images, "decoder", decoder)
    assert all(image is not None for image in decode_jpegs(list(photos.values()), "cuda", decoder))
    got = model.featurize(list(photos.values()), batch_size=4)
    model.model.cpu()
    expected = _timm_reference(model, [Image.open(io.BytesIO(d)).convert("RGB") for d in photos.values()])
    cosines = _cosines(got, expected)
    print(f"{name} on CUDA: minimum cosine against timm on PIL images: {cosines.min():.6f}")
    assert cosines.min() >= 0.999


def _sums_overwritten(decode, shapes, rounds: int = 5) -> int:
    """How many sums over freed blocks come out wrong when ``decode`` runs while they are queued."""
    import torch

    wrong = 0
    big = torch.randn(4096, 4096, device="cuda")
    for _ in range(rounds):
        filled = [torch.full(shape, 7, dtype=torch.uint8, device="cuda") for shape in shapes]
        torch.cuda.synchronize()
        for _ in range(20):  # keeps the stream busy, so the sums below are still queued
            big = big @ big / 64
        sums = [one.sum(dtype=torch.int64) for one in filled]
        del filled  # freed while the sums that read them are queued: the allocator may hand them on
        decode()
        torch.cuda.synchronize()
        wrong += sum(int(got) != 7 * int(np.prod(shape)) for got, shape in zip(sums, shapes))
    return wrong


@needs_cuda
@pytest.mark.parametrize("name", ["torchcodec", "torchvision"])
def test_the_gpu_decoder_leaves_memory_queued_kernels_still_read_alone(name, photos):
    """nvJPEG's writes do not wait for the kernels queued on the caller's stream, and may land in
    blocks freed while those still read them (pytorch/vision#9606): zoo waits for them first."""
    import torch

    from zoo.adapters.device_images import decode_jpegs

    decoder, data = _installed(name), list(photos.values()) * 4
    shapes = [image.shape for image in decode_jpegs(data, "cuda", decoder)]
    encoded = [torch.frombuffer(bytearray(one), dtype=torch.uint8) for one in data]
    if not _sums_overwritten(lambda: decoder.decode(encoded, "cuda"), shapes):
        pytest.skip(f"{name} on this GPU does not overwrite queued memory when called directly")
    assert _sums_overwritten(lambda: decode_jpegs(data, "cuda", decoder), shapes) == 0
