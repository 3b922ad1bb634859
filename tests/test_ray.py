"""zoo.ray.featurize on a local Ray instance gives the vectors featurize gives."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
# Ray talks to its own processes over loopback; starting it is slow
pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.slow]

TEXTS = ["A man is eating food.", "A man is riding a horse.", "A monkey is playing drums.",
         "Two men pushed carts through the woods.", "A woman is slicing an onion.", "short",
         "The quick brown fox jumps over the lazy dog near the bank of the river."] * 3


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # A short temp dir: Ray's unix socket paths must fit in 107 bytes.
    with tempfile.TemporaryDirectory(prefix="zray", dir="/tmp") as temp:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                 configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
        ray.shutdown()


def _by_id(rows: list[dict], column: str = "embedding") -> tuple[list[int], np.ndarray]:
    rows = sorted(rows, key=lambda r: r["id"])
    return [r["id"] for r in rows], np.stack([r[column] for r in rows])


def test_text_equals_featurize(local_ray, minilm):
    import zoo.ray

    ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    out = zoo.ray.featurize(ds, "minilm-l6", column="text", batch_size=5, concurrency=2, num_cpus=1)
    ids, X = _by_id(out.take_all())
    assert ids == list(range(len(TEXTS)))
    assert X.dtype == np.float32 and X.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(X, minilm.featurize(TEXTS), atol=1e-5)
    assert set(out.schema().names) == {"id", "text", "embedding"}


def test_images_with_a_bad_row_skipped(local_ray, tmp_path: Path):
    import skimage.data
    from PIL import Image

    import zoo
    import zoo.ray

    paths = []
    for name in ("coffee", "chelsea", "astronaut", "rocket"):
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(str(path))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    rows = [{"id": i, "path": p} for i, p in enumerate(paths)]
    rows.insert(2, {"id": 99, "path": str(tmp_path / "broken.jpg")})
    out = zoo.ray.featurize(ray.data.from_items(rows), "efficientnet-lite0", column="path", batch_size=2,
                            on_error="skip")
    ids, X = _by_id(out.take_all())
    assert ids == [0, 1, 2, 3]  # the broken file is dropped, every good row kept
    np.testing.assert_allclose(X, zoo.load("efficientnet-lite0").featurize(paths), atol=1e-5)


def test_unknown_column_is_named(local_ray):
    import zoo.ray

    ds = ray.data.from_items([{"text": t} for t in TEXTS[:2]])
    with pytest.raises(Exception, match="no column 'txt'; did you mean 'text'"):
        zoo.ray.featurize(ds, "minilm-l6", column="txt").take_all()
