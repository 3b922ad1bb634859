"""Every catalogue entry whose architecture is built from code is built here with random weights,
offline, and its feature width checked against the registry's embed_dim."""

from __future__ import annotations

import pytest

from zoo.catalog._registry import REGISTRY_FILE
from zoo.catalog._registry_file import read_registry

SPECS = [s for s in read_registry(REGISTRY_FILE) if s.backend in ("timm", "torchvision", "open_clip", "torchaudio")]


def _built_dim(spec) -> int:
    if spec.backend == "timm":
        import timm

        model = timm.create_model(spec.backend_id.split(".")[0], pretrained=False)
        return int(getattr(model, "head_hidden_size", None) or model.num_features)
    if spec.backend == "torchvision":
        import torchvision

        from zoo.adapters.torchvision import _replace_last_linear, split_weights_id

        arch, _ = split_weights_id(spec.backend_id)
        return _replace_last_linear(torchvision.models.get_model(arch, weights=None)).in_features
    if spec.backend == "torchaudio":
        import torch

        from zoo.adapters.torchaudio import find_bundle

        bundle = find_bundle(spec.backend_id)
        builder = {"Wav2Vec2": "wav2vec2_model", "WavLM": "wavlm_model"}[bundle._model_type]
        import torchaudio

        model = getattr(torchaudio.models, builder)(**bundle._params).eval()
        with torch.no_grad():
            features, _ = model.extract_features(torch.zeros(1, 16000))
        return int(features[-1].shape[-1])
    import open_clip

    arch = spec.backend_id.split("/")[0]
    model = open_clip.create_model(arch, pretrained=None)
    assert model.text_projection.shape[1] == open_clip.get_model_config(arch)["embed_dim"]
    return int(open_clip.get_model_config(arch)["embed_dim"])


# Over 80M parameters, a few seconds each to build: the full tier builds them.
LARGE = {"vit-base-patch16", "clip-vit-b-32", "wavlm-base-plus"}


@pytest.mark.parametrize("spec", [pytest.param(s, marks=pytest.mark.slow) if s.name in LARGE else s for s in SPECS],
                         ids=[s.name for s in SPECS])
def test_embed_dim_matches_the_architecture(spec):
    assert _built_dim(spec) == spec.embed_dim


def test_the_catalogue_covers_every_modality_and_backend():
    specs = read_registry(REGISTRY_FILE)
    assert {s.modality for s in specs} >= {"text", "vision", "audio", "image-text"}
    assert {s.backend for s in specs} >= {"transformers", "timm", "torchvision", "open_clip", "torchaudio", "ge2e"}
