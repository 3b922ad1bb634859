"""zoo dedup on planted near-duplicates: whitespace-changed texts (MiniLM) and re-encoded or
resized photos (EfficientNet-Lite0). Every planted group is found, and nothing else, at the
default threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

import zoo
from required_tools import FORTUNES, needs_tool
from zoo.duplicates import DEFAULT_THRESHOLD, find_duplicates
from zoo.embeddings._embed import embed_to_file
from zoo.embeddings._inputs import open_inputs

pytest.importorskip("faiss")


@pytest.mark.slow
@needs_tool("fortunes")
def test_whitespace_changed_texts_are_grouped_and_nothing_else(minilm, tmp_path):
    quotes = [q.strip() for q in (FORTUNES / "science").read_text(errors="replace").split("\n%\n")]
    quotes = list(dict.fromkeys(" ".join(q.split()) for q in quotes if 40 < len(q) < 300))[:300]
    planted = {i: "  " + quotes[i].replace(" ", "  ") + " \t" for i in (3, 50, 120, 200, 299)}
    lines = quotes + [planted[i] for i in planted]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    embed_to_file(minilm, open_inputs(str(tmp_path / "t.txt")), tmp_path / "t.parquet", progress=False)
    groups = find_duplicates(tmp_path / "t.parquet")
    expected = [[i, len(quotes) + k] for k, i in enumerate(planted)]
    assert sorted(g.ids for g in groups) == expected
    assert min(g.min_similarity for g in groups) >= DEFAULT_THRESHOLD


@pytest.mark.slow
def test_re_encoded_and_resized_photos_are_grouped_and_nothing_else(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
             "coins", "moon", "page"]  # not skimage's "cat": it is chelsea
    for name in names:
        Image.fromarray(getattr(skimage_data, name)()).convert("RGB").save(folder / f"{name}.png")
    for name in names[:4]:
        with Image.open(folder / f"{name}.png") as photo:
            photo.save(folder / f"{name}-q75.jpg", quality=75)
            photo.resize((photo.width * 2 // 3, photo.height * 2 // 3)).save(folder / f"{name}-small.png")
    model = zoo.load("efficientnet-lite0", device="cpu")
    embed_to_file(model, open_inputs(str(folder), modality="vision"), tmp_path / "p.parquet", progress=False)
    groups = find_duplicates(tmp_path / "p.parquet")
    expected = sorted(sorted(str(folder / f) for f in (f"{n}.png", f"{n}-q75.jpg", f"{n}-small.png"))
                      for n in names[:4])
    assert sorted(sorted(g.ids) for g in groups) == expected


def test_cli_dedup_json(minilm, tmp_path, capsys):
    from zoo.cli import main

    (tmp_path / "t.txt").write_text("The cat sat on the mat.\nStocks fell.\nThe  cat sat on the mat. \n")
    embed_to_file(minilm, open_inputs(str(tmp_path / "t.txt")), tmp_path / "t.parquet", progress=False)
    assert main(["dedup", str(tmp_path / "t.parquet"), "--json"]) == 0
    assert [g["ids"] for g in json.loads(capsys.readouterr().out)] == [[0, 2]]
    assert main(["dedup", str(tmp_path / "t.parquet"), "--threshold", "1.5"]) != 0
    assert np.isfinite(DEFAULT_THRESHOLD)


def test_threshold_one_groups_identical_inputs_within_float_rounding(minilm, tmp_path, capsys):
    from zoo.cli import main

    # Five identical texts score 0.9999998 against each other in float32, not 1.0.
    (tmp_path / "t.txt").write_text("The cat sat on the mat.\n" * 5 + "Stocks fell.\n")
    embed_to_file(minilm, open_inputs(str(tmp_path / "t.txt")), tmp_path / "t.parquet", progress=False)
    assert [g.ids for g in find_duplicates(tmp_path / "t.parquet", 1.0)] == [[0, 1, 2, 3, 4]]
    assert main(["dedup", str(tmp_path / "t.parquet"), "--threshold", "1.0"]) == 0
    assert "1 group of near-duplicates (cosine >= 1.0, within float rounding); 4 rows could go" in \
        capsys.readouterr().out
