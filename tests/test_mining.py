"""Hard-negative mining (``zoo.mine_negatives`` / ``zoo mine-negatives``): the triplets equal
sentence-transformers' ``mine_hard_negatives`` on the same model and pairs, setting by setting,
and a mined table trains a contrastive finetune as it is."""

from __future__ import annotations

import json

import pytest

import zoo
from required_tools import FORTUNES, needs_tool

pytestmark = needs_tool("fortunes")


@pytest.fixture(scope="module")
def halves() -> list[tuple[str, str]]:
    """Real text pairs: the first and second half of each of 60 of Debian's science fortunes."""
    quotes = [q.split() for q in (FORTUNES / "science").read_text(errors="replace").split("\n%\n")]
    quotes = [q for q in quotes if 12 <= len(q) <= 60][:60]
    return [(" ".join(q[:len(q) // 2]), " ".join(q[len(q) // 2:])) for q in quotes]


@pytest.fixture(scope="module")
def st_model(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)


def _theirs(st_model, pairs, corpus=None, **settings):
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    dataset = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    mined = mine_hard_negatives(dataset, st_model, corpus=corpus, output_scores=True, verbose=False, **settings)
    return mined


CASES = {
    "defaults": {},
    "relative margin": {"relative_margin": 0.05, "num_negatives": 5},
    "window and ceiling": {"range_min": 2, "range_max": 12, "max_score": 0.5, "num_negatives": 4},
    "absolute margin and floor": {"absolute_margin": 0.1, "min_score": 0.1, "num_negatives": 3},
}


@pytest.mark.parametrize("case", [c if c == "defaults" else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_the_triplets_are_sentence_transformers_own(minilm, st_model, halves, case):
    pytest.importorskip("faiss")
    # an anchor with two positives, and an anchor that is also a candidate
    pairs = [*halves, (halves[0][0], halves[1][1]), (halves[2][1], halves[3][1])]
    corpus = [p for _, p in halves[40:]] + ["An unrelated sentence about cooking pasta."]
    settings = CASES[case]
    ours = zoo.mine_negatives(minilm, pairs, corpus=corpus, progress=False, **settings)
    theirs = _theirs(st_model, pairs, corpus=corpus, **settings)
    assert len(ours) > 0 and len(ours) == len(theirs)
    assert ours.triplets.anchors == theirs["anchor"] and ours.triplets.positives == theirs["positive"]
    assert ours.triplets.negatives == theirs["negative"]
    assert ours.positive_scores == pytest.approx([s[0] for s in theirs["scores"]], abs=1e-5)
    assert ours.negative_scores == pytest.approx([s[1] for s in theirs["scores"]], abs=1e-5)
    filters = {"absolute_margin", "relative_margin", "max_score", "min_score"}
    assert set(ours.skipped) == filters & set(settings)  # each filter set dropped candidates: it was exercised


@pytest.mark.slow
def test_random_sampling_draws_from_the_filtered_window_with_its_seed(minilm, halves, tmp_path):
    pytest.importorskip("faiss")
    top = zoo.mine_negatives(minilm, halves, num_negatives=2, range_max=10, progress=False)
    drawn = [zoo.mine_negatives(minilm, halves, num_negatives=2, range_max=10, sampling="random", seed=s,
                                progress=False) for s in (0, 0, 1)]
    assert drawn[0].triplets == drawn[1].triplets and drawn[0].triplets != drawn[2].triplets
    window = zoo.mine_negatives(minilm, halves, num_negatives=10, range_max=10, progress=False)
    allowed = {(a, n) for a, n in zip(window.triplets.anchors, window.triplets.negatives)}
    assert all((a, n) in allowed for a, n in zip(drawn[2].triplets.anchors, drawn[2].triplets.negatives))
    assert len(top) == len(drawn[0]) == 2 * len(halves)
    from zoo.training._data import read_pairs

    for suffix in (".csv", ".tsv", ".jsonl", ".parquet"):  # quotes, commas and tabs of real text survive each
        assert read_pairs(drawn[2].write(tmp_path / f"triplets{suffix}")) == drawn[2].triplets


@pytest.mark.slow
def test_mined_triplets_from_the_cli_train_a_contrastive_finetune(tiny_bert_dir, halves, tmp_path, capsys):
    pytest.importorskip("faiss")
    from zoo.cli import main

    table = tmp_path / "pairs.csv"
    import csv

    with open(table, "w", newline="") as fh:
        csv.writer(fh).writerows([("query", "passage"), *halves[:24]])
    mined = tmp_path / "triplets.parquet"
    assert main(["mine-negatives", "minilm-l6", str(table), "-o", str(mined), "--anchor-column", "query",
                 "--positive-column", "passage", "--num-negatives", "2", "--relative-margin", "0.05", "-q"]) == 0
    out = capsys.readouterr().out
    assert "triplets" in out and "zoo finetune" in out
    from zoo.training._data import fingerprint, read_pairs

    triplets = read_pairs(mined, anchor_column="query", positive_column="passage")
    assert triplets.negatives is not None and len(triplets) > 24  # most pairs got both negatives
    assert all(n != p for p, n in zip(triplets.positives, triplets.negatives))
    zoo.load(str(tiny_bert_dir), device="cpu").finetune(
        mined, objective="contrastive", output_dir=tmp_path / "run", epochs=1, batch_size=8, progress=False,
        anchor_column="query", positive_column="passage")
    manifest = json.loads((tmp_path / "run" / "zoo.json").read_text())
    assert manifest["settings"]["train"] == fingerprint(zip(*triplets.columns()))  # it trained on the triplets


def test_bad_mining_settings_are_refused_by_name(minilm, halves):
    with pytest.raises(ValueError, match="num_negatives must be at least 1"):
        zoo.mine_negatives(minilm, halves, num_negatives=0)
    with pytest.raises(ValueError, match="cannot mine 5 negatives per anchor from ranks 8 to 10"):
        zoo.mine_negatives(minilm, halves, num_negatives=5, range_min=8, range_max=10)
    with pytest.raises(ValueError, match="sampling must be one of top, random"):
        zoo.mine_negatives(minilm, halves, sampling="best")
    import numpy as np

    with pytest.raises(zoo.ZooError, match="looks inputs up by value"):
        zoo.mine_negatives(minilm, [(np.zeros(3), "a")])


@pytest.mark.slow
def test_random_draws_are_sentence_transformers_own_for_the_same_seed(minilm, st_model, halves):
    """sentence-transformers draws with the global ``random``; zoo with ``random.Random(seed)``:
    seeded alike, the same algorithm draws the same negatives."""
    import random

    pytest.importorskip("faiss")
    settings = {"num_negatives": 3, "range_max": 12, "sampling_strategy": "random"}
    random.seed(7)
    theirs = _theirs(st_model, halves, **settings)
    ours = zoo.mine_negatives(minilm, halves, num_negatives=3, range_max=12, sampling="random", seed=7,
                              progress=False)
    assert ours.triplets.negatives == theirs["negative"] and ours.triplets.anchors == theirs["anchor"]
