"""A modality added by a plugin, with no core edit: a third-party distribution registers point
clouds (``.xyz`` files, ``chemical/x-xyz`` data URLs), an encoder and a model, and ``zoo embed``,
``zoo index`` / ``zoo search`` and ``zoo serve``'s endpoint take its inputs as they take images."""

from __future__ import annotations

import base64

import numpy as np
import pytest

import zoo
from plugin_fixtures import install_plugin
from zoo.catalog._plugin_manager import reset_plugin_manager

POINTS = '''
    import io
    import os

    import numpy as np

    import zoo
    from zoo import hookimpl


    def decode_points(item):
        """An (N, 3) float32 cloud from an .xyz path, its bytes, or an array."""
        if isinstance(item, (str, os.PathLike)):
            item = open(item, "rb").read()
        if isinstance(item, bytes):
            item = np.loadtxt(io.BytesIO(item), dtype=np.float32, ndmin=2)
        cloud = np.asarray(item, dtype=np.float32)
        if cloud.ndim != 2 or cloud.shape[1] != 3 or not len(cloud):
            raise ValueError(f"a point cloud is (N, 3) with N > 0, not {cloud.shape}")
        return cloud


    class PointStats(zoo.Encoder):
        """Mean and spread of a cloud through one fixed linear layer."""

        backend = "pointstats"

        @classmethod
        def _build(cls, spec, files, *, device, dtype):
            import torch

            torch.manual_seed(int(open(files.root / "seed.txt").read()))
            return zoo.Built(torch.nn.Linear(6, 8), 8)

        @property
        def preprocess(self):
            return None

        def collate(self, items):
            import torch

            return torch.tensor(np.stack([np.concatenate([c.mean(0), c.std(0)]) for c in items]))

        def encode_batch(self, batch, *, pool=None):
            return self.model(batch.to(self.device))


    @hookimpl
    def zoo_register_modalities(register):
        register("points", decode=decode_points, description="3-D point clouds", suffixes=(".xyz",),
                 media_types=("chemical/x-xyz",))


    @hookimpl
    def zoo_register_adapters(register):
        register("pointstats", PointStats)


    @hookimpl
    def zoo_register_models(register):
        register({"name": "pointstats-tiny", "modality": "points", "backend": "pointstats",
                  "sources": [{"path": SOURCE}]})
'''


@pytest.fixture
def points_plugin(tmp_path, monkeypatch):
    site, weights = tmp_path / "site", tmp_path / "weights"
    site.mkdir()
    weights.mkdir()
    (weights / "seed.txt").write_text("7")
    monkeypatch.syspath_prepend(str(site))
    install_plugin(site, "zoo-points", "zoo_points", f"    SOURCE = {str(weights)!r}\n" + POINTS)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def _clouds(folder, count=6):
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"cloud{i}.xyz"
        np.savetxt(path, rng.normal(size=(20 + i, 3)) * (i + 1))
        paths.append(path)
    return paths


def test_zoo_embed_and_search_take_the_plugins_files(points_plugin, tmp_path, capsys):
    from zoo.cli import main

    paths = _clouds(tmp_path / "clouds")
    model = zoo.load("pointstats-tiny", device="cpu")
    assert list(model.towers) == ["points"] and model.featurize(paths).shape == (6, 8)
    out, index = tmp_path / "clouds.parquet", tmp_path / "idx"
    assert main(["embed", "pointstats-tiny", str(tmp_path / "clouds"), "-o", str(out), "-q"]) == 0
    assert main(["index", str(out), "-o", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", str(index), str(paths[3]), "-k", "1", "--json"]) == 0
    assert "cloud3.xyz" in capsys.readouterr().out


def test_zoo_serve_takes_the_plugins_data_urls(points_plugin, tmp_path):
    from starlette.testclient import TestClient

    from zoo.serve._app import create_app

    paths = _clouds(tmp_path / "clouds", 2)
    model = zoo.load("pointstats-tiny", device="cpu")
    urls = [f"data:chemical/x-xyz;base64,{base64.b64encode(p.read_bytes()).decode()}" for p in paths]
    with TestClient(create_app({"pts": model})) as client:
        answer = client.post("/v1/embeddings", json={"model": "pts", "input": urls})
        assert answer.status_code == 200, answer.text
        rows = np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(rows, model.featurize(paths), atol=1e-5)
        refused = client.post("/v1/embeddings", json={"model": "pts", "input": [urls[0], "a text"]})
        assert refused.status_code == 400 and "input[1] is a text; pts embeds points inputs" in refused.text


def test_the_kit_fails_a_partial_finetune_that_trains_nothing(points_plugin, tmp_path):
    from zoo.testing import check_model

    clouds = [np.random.default_rng(i).normal(size=(10, 3)).astype(np.float32) for i in range(8)]
    results = {r.check: r for r in check_model("pointstats-tiny", workdir=tmp_path, strategies=("partial", "full"),
                                               examples=clouds)}
    assert results["featurize shape and dtype"].status == "pass"
    partial = results["finetune partial + zoo.load"]
    assert partial.status == "fail" and "partial trained no weight of the backbone" in partial.detail
    assert results["finetune full + zoo.load"].status == "pass"
