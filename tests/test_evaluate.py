"""``zoo evaluate`` / ``zoo.evaluate`` on real models and real text: figures equal
sentence-transformers' evaluator run on its own model, the leaderboard's files, the embedding
cache (a model added re-embeds nothing, a killed run resumes), each task on Debian's fortunes,
a cross-modal run, and bad input refused by name before anything is embedded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from required_tools import FORTUNES, needs_tool

import zoo
from zoo.cli import main
from zoo.embeddings._tables import write_rows
from zoo.errors import ZooError
from zoo.evaluation import Classification, Clustering, Duplicates, Retrieval, ZeroShot

pytestmark = needs_tool("fortunes")
CATEGORIES = ("science", "computers", "food", "love")


def _quotes(category: str, count: int) -> list[str]:
    quotes = [" ".join(q.split()) for q in (FORTUNES / category).read_text(errors="replace").split("\n%\n")]
    return [q for q in quotes if 8 <= len(q.split()) <= 60][:count]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    """First and second halves of 60 science fortunes: each half finds its other half."""
    words = [quote.split() for quote in _quotes("science", 60)]
    return write_rows(tmp_path_factory.mktemp("eval") / "pairs.csv",
                      {"anchor": [" ".join(w[:len(w) // 2]) for w in words],
                       "positive": [" ".join(w[len(w) // 2:]) for w in words]})


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory) -> Path:
    """30 fortunes from each of four categories, labelled by category."""
    rows = [(quote, category) for category in CATEGORIES for quote in _quotes(category, 30)]
    return write_rows(tmp_path_factory.mktemp("eval") / "fortunes.csv",
                      {"text": [q for q, _ in rows], "label": [c for _, c in rows]})


def _st_figures(minilm_dir: Path, pairs: Path) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    rows = list(csv.DictReader(open(pairs)))
    evaluator = InformationRetrievalEvaluator(
        {str(i): r["anchor"] for i, r in enumerate(rows)}, {i: r["positive"] for i, r in enumerate(rows)},
        {str(i): {i} for i in range(len(rows))}, show_progress_bar=False)
    model = SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True)
    theirs = evaluator(model)
    return {name.removeprefix("cosine_"): v for name, v in theirs.items() if name.startswith("cosine_")}


@pytest.mark.slow
def test_cli_leaderboard_equals_sentence_transformers_and_writes_its_files(pairs_file, minilm_dir, tmp_path,
                                                                          capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "minilm-l6", "minilm-l6[truncate_dim=64]", "--task", "retrieval", "--pairs",
                 str(pairs_file), "-o", str(out), "--cache-dir", str(tmp_path / "cache"), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "minilm-l6[truncate_dim=64]" in printed and "ndcg@10" in printed and "sbert-sentence" in printed
    board = json.loads((out / "leaderboard.json").read_text())
    full = next(m for m in board["models"] if m["label"] == "minilm-l6")
    theirs = _st_figures(minilm_dir, pairs_file)
    assert set(theirs) <= set(full["values"])
    for metric, value in theirs.items():
        assert full["values"][metric] == pytest.approx(value, abs=1e-6), metric
    band = full["intervals"]["ndcg@10"]
    assert band["low"] < full["values"]["ndcg@10"] < band["high"]
    assert full["provenance"]["queries"]["sha256"] and full["items_per_second"] > 0
    assert board["data"]["queries"] == 60 and board["seed"] == 0 and board["resamples"] == 1000
    import pyarrow.parquet as pq

    table = pq.read_table(out / "leaderboard.parquet")
    assert table.column("label").to_pylist() == [m["label"] for m in board["models"]]
    assert "ndcg@10_low" in table.column_names and b"zoo" in table.schema.metadata
    assert (out / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_model_added_re_embeds_nothing_and_a_killed_run_resumes(pairs_file, tmp_path, monkeypatch):
    import zoo.embeddings._embed as embed_module

    cache = tmp_path / "cache"
    task = Retrieval(pairs=pairs_file)
    written: list[int] = []
    real_write = embed_module._write_chunk

    def dies_on_the_third_chunk(model, chunk, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(len(chunk))
        return real_write(model, chunk, *args, **kwargs)

    monkeypatch.setattr(embed_module, "_write_chunk", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        zoo.evaluate(["minilm-l6"], task, cache_dir=cache, batch_size=8, progress=False)
    assert len(list(cache.glob("*.partial"))) == 1
    monkeypatch.setattr(embed_module, "_write_chunk", real_write)
    counted: list[int] = []
    monkeypatch.setattr(embed_module, "_write_chunk", lambda model, chunk, *a, **k: (
        counted.append(len(chunk)), real_write(model, chunk, *a, **k))[1])
    first = zoo.evaluate(["minilm-l6"], task, cache_dir=cache, batch_size=8, progress=False)
    assert sum(counted) == 120 - sum(written)  # the chunks written before the kill were kept
    counted.clear()
    second = zoo.evaluate(["minilm-l6", "minilm-l6[layer=-2]"], task, cache_dir=cache, batch_size=8, progress=False)
    assert sum(counted) == 120  # only the new variant's queries and corpus
    again = next(r for r in second.rows if r.label == "minilm-l6")
    assert again.values == first.rows[0].values and again.items_per_second == first.rows[0].items_per_second


@pytest.mark.slow
def test_each_labelled_task_on_fortunes(labelled_file, tmp_path):
    cache, runs = tmp_path / "cache", {}
    for task in (Classification(items=labelled_file), ZeroShot(items=labelled_file), Clustering(items=labelled_file),):
        runs[task.name] = zoo.evaluate(["minilm-l6"], task, cache_dir=cache, progress=False, resamples=200).rows[0]
    probe = runs["classification"]
    assert probe.values["probe_accuracy"] > 0.6 and probe.values["knn_accuracy"] > 0.5
    assert probe.details["probe_c"] in (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)
    assert runs["zero-shot"].values["accuracy"] > 0.4  # four labels: chance is 0.25
    assert 0.05 < runs["clustering"].values["v_measure"] < 1
    assert len(list(cache.glob("*.parquet"))) == 1  # the three tasks embedded the items once


@pytest.mark.slow
def test_duplicates_found_against_known_groups(tmp_path):
    path = tmp_path / "dups.csv"
    quotes = _quotes("science", 40)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "group"])
        for i, quote in enumerate(quotes):
            writer.writerow([quote, i])
            if i % 4 == 0:  # a copy with other whitespace and case: a duplicate
                writer.writerow(["  " + quote.upper().replace(" ", "  "), i])
    row = zoo.evaluate(["minilm-l6"], Duplicates(items=path), cache_dir=tmp_path / "c", progress=False,
                       resamples=200).rows[0]
    assert row.details["pairs_known"] == 10
    assert row.values["recall"] >= 0.8 and row.values["precision"] >= 0.8


def test_cross_modal_retrieval_both_ways_through_both_towers(open_clip_dir, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        image = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
        rows.append((f"a photo of thing number {i}", str(image)))
    model = zoo.load(str(open_clip_dir), device="cpu")
    board = zoo.evaluate([model], Retrieval(pairs=rows, reverse=True), cache_dir=tmp_path / "c", progress=False,
                         resamples=100)
    provenance = board.rows[0].provenance
    assert provenance["queries"]["tower"] == "text" and provenance["corpus"]["tower"] == "vision"
    text = model.featurize([caption for caption, _ in rows], tower="text", normalize=True)
    images = model.featurize([image for _, image in rows], normalize=True)
    hits = (text @ images.T).argmax(axis=1) == np.arange(12)
    assert board.rows[0].values["accuracy@1"] == pytest.approx(hits.mean())
    found = (images @ text.T).argmax(axis=1) == np.arange(12)  # image -> text
    assert board.rows[0].values["reverse_accuracy@1"] == pytest.approx(found.mean())
    assert "reverse_ndcg@10" in board.shown and "reverse_ndcg@10" in board.rows[0].intervals


def test_bad_input_is_refused_by_name_before_embedding(pairs_file, labelled_file, tmp_path, capsys):
    queries, corpus, qrels = tmp_path / "q.jsonl", tmp_path / "c.jsonl", tmp_path / "qrels.tsv"
    queries.write_text('{"_id": "q1", "text": "what is a cat"}\n')
    corpus.write_text('{"_id": "d1", "text": "a cat is an animal"}\n')
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(ZooError, match="judges 'd9', which is no id of the corpus"):
        zoo.evaluate(["minilm-l6"], Retrieval(queries=queries, corpus=corpus, qrels=qrels), progress=False)
    assert main(["evaluate", "minilm-l6", "--task", "clustering", "--pairs", str(pairs_file)]) == 1
    assert "does not read --pairs" in capsys.readouterr().err
    assert main(["evaluate", "minilm-l6[truncate=3]", "--task", "retrieval", "--pairs", str(pairs_file)]) == 1
    assert "no setting of a model" in capsys.readouterr().err
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(ZooError, match="fewer than two labels"):
        zoo.evaluate(["minilm-l6"], Classification(items=one_class), progress=False)
    with pytest.raises(ZooError, match="are texts .* vision tower"):
        zoo.evaluate(["efficientnet-lite0"], Clustering(items=labelled_file), cache_dir=tmp_path / "c",
                     progress=False)
    with pytest.raises(zoo.UnsupportedOptionError, match="no text tower"):
        zoo.evaluate(["efficientnet-lite0"], ZeroShot(items=labelled_file), cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.parquet"))
