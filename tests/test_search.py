"""zoo index / zoo search against brute force in numpy, on real MiniLM and EfficientNet embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import zoo
from zoo.embeddings._embed import embed_to_file
from zoo.errors import ProvenanceMismatchError, ZooError
from zoo.embeddings._inputs import open_inputs

pytest.importorskip("faiss")
from zoo import search  # noqa: E402

CORPUS = ["A cat sleeps on the warm sofa.", "Stocks fell sharply on Wall Street.", "The striker scored twice.",
          "Kittens play with a ball of wool.", "The central bank raised interest rates.",
          "The goalkeeper saved a penalty.", "A recipe for tomato soup.", "Bake the bread for forty minutes."]


@pytest.fixture
def corpus_parquet(minilm, tmp_path):
    lines = tmp_path / "corpus.txt"
    lines.write_text("\n".join(CORPUS) + "\n")
    out = tmp_path / "corpus.parquet"
    embed_to_file(minilm, open_inputs(str(lines)), out, progress=False)
    return out


def test_exact_search_equals_numpy_top_k_and_text_queries_find_their_neighbours(minilm, corpus_parquet, tmp_path):
    index = search.build(corpus_parquet, tmp_path / "idx")
    queries = ["my kitten is asleep", "the market dropped", "a football match", "how to cook soup"]
    hits = index.search(queries, k=3, model=minilm)
    assert [row[0].id for row in hits] == ["0", "1", "2", "6"]
    from zoo.embeddings._embedding_file import read_embeddings

    rows = read_embeddings(corpus_parquet).rows
    q = minilm.featurize(queries)
    expected = np.argsort(-(q @ rows.T), axis=1, kind="stable")[:, :3]
    assert [[int(h.id) for h in row] for row in hits] == expected.tolist()
    np.testing.assert_allclose([[h.score for h in row] for row in hits], np.sort(q @ rows.T, axis=1)[:, ::-1][:, :3],
                               atol=1e-5)
    # The same, read back from disk, with the model the provenance names.
    assert [h.id for h in search.open_index(tmp_path / "idx").search(["my kitten is asleep"], k=1)[0]] == ["0"]


def test_re_adding_is_a_no_op_and_another_models_rows_or_queries_are_refused(corpus_parquet, tmp_path):
    index = search.build(corpus_parquet, tmp_path / "idx")
    assert index.add(corpus_parquet) == 0 and len(search.open_index(tmp_path / "idx")) == len(CORPUS)
    vision = zoo.load("efficientnet-lite0", device="cpu")
    with pytest.raises(ProvenanceMismatchError, match="efficientnet-lite0.*minilm-l6|minilm-l6.*efficientnet-lite0"):
        index.search(["a cat"], model=vision)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "black.png")
    embed_to_file(vision, open_inputs(str(images), modality="vision"), tmp_path / "img.parquet", progress=False)
    with pytest.raises(ProvenanceMismatchError, match="img.parquet was embedded differently"):
        index.add(tmp_path / "img.parquet")


def test_new_inputs_are_added_and_repeated_ones_skipped(minilm, corpus_parquet, tmp_path):
    index = search.build(corpus_parquet, tmp_path / "idx")
    more = tmp_path / "more.txt"
    more.write_text("A dog barks at the postman.\nThe striker scored twice.\n")  # one new, one held
    embed_to_file(minilm, open_inputs(str(more)), tmp_path / "more.parquet", progress=False)
    assert index.add(tmp_path / "more.parquet") == 1
    hit = index.search(["a barking dog"], k=1)[0][0]
    assert (hit.id, hit.source) == ("0", "more.parquet")


@pytest.mark.slow
def test_image_queries_find_a_resized_copy(tmp_path):
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    model = zoo.load("efficientnet-lite0", device="cpu")
    folder = tmp_path / "images"
    folder.mkdir()
    photos = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry"]
    for name in photos:
        Image.fromarray(getattr(skimage_data, name)()).convert("RGB").save(folder / f"{name}.png")
    embed_to_file(model, open_inputs(str(folder), modality="vision"), tmp_path / "img.parquet", progress=False)
    index = search.build(tmp_path / "img.parquet", tmp_path / "idx")
    for name in photos:  # a smaller JPEG of each photo finds the photo first
        query = tmp_path / f"{name}-small.jpg"
        with Image.open(folder / f"{name}.png") as photo:
            photo.resize((photo.width // 2, photo.height // 2)).save(query, quality=80)
        assert index.search([str(query)], k=1, model=model)[0][0].id == str(folder / f"{name}.png")
    in_memory = Image.fromarray(skimage_data.chelsea()).resize((200, 150))  # not a path: the model's own tower
    assert index.search([in_memory], k=1, model=model)[0][0].id == str(folder / "chelsea.png")
    with pytest.raises(ValueError, match=r"query 0 \('a photo of coffee'\) is not a file, but efficientnet-lite0 "
                                         "embeds vision and video inputs"):
        index.search(["a photo of coffee"], k=1, model=model)


@pytest.mark.slow  # 20k rows through HNSW: the benchmark has the real figures
def test_hnsw_recall_against_exact_on_random_rows(corpus_parquet, tmp_path):
    """An approximate index over 20k unit rows in 400 clusters (as embeddings of real data cluster),
    written with zoo's schema and MiniLM's provenance."""
    import pyarrow as pa

    from zoo.embeddings._embed import _schema, _table

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((400, 384)).astype(np.float32)
    rows = centers[rng.integers(0, 400, 20_000)] + 0.6 * rng.standard_normal((20_000, 384)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    meta = json.loads(pq.read_schema(corpus_parquet).metadata[b"zoo"])
    schema = _schema(384, pa.int64(), meta)
    pq.write_table(_table(list(range(len(rows))), rows, [f"h{i}" for i in range(len(rows))], schema),
                   tmp_path / "random.parquet")
    exact = search.build(tmp_path / "random.parquet", tmp_path / "flat")
    approx = search.build(tmp_path / "random.parquet", tmp_path / "hnsw", kind="hnsw")
    queries = rows[:200] + 0.02 * rng.standard_normal((200, 384)).astype(np.float32)
    truth = [{h.id for h in row} for row in exact.search_vectors(queries, 10)]
    found = [{h.id for h in row} for row in approx.search_vectors(queries, 10)]
    recall = np.mean([len(t & f) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95, recall


def test_files_zoo_did_not_write_are_refused_with_a_clear_error(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "other.parquet")
    with pytest.raises(ZooError, match="not written by `zoo embed`"):
        search.build(tmp_path / "other.parquet", tmp_path / "idx")
    with pytest.raises(ZooError, match="is not a zoo index"):
        search.open_index(tmp_path)


def test_cli_index_and_search(corpus_parquet, tmp_path, capsys):
    from zoo.cli import main

    assert main(["index", str(corpus_parquet), "-o", str(tmp_path / "idx")]) == 0
    assert main(["index", str(corpus_parquet), "-o", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert "0 new rows" in out and "the same content as" not in out  # the same rows again: nothing to say
    assert main(["search", str(tmp_path / "idx"), "the market dropped", "-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["query"] == "the market dropped" and result[0]["hits"][0]["id"] == "1"
    assert main(["search", str(tmp_path / "idx"), "the market dropped", "-k", "1"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "the market dropped  (cosine, id, embedding file)"
    assert shown[1].split()[-2:] == ["1", "corpus.parquet"]
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"")
    with pytest.warns(UserWarning, match=r"query 0 \('.*cat.png'\) names a media file, but minilm-l6 embeds texts"):
        search.open_index(tmp_path / "idx").search([str(picture)], k=1)


def test_an_image_text_index_takes_text_and_image_queries_in_one_space(open_clip_dir, tmp_path):
    from PIL import Image

    model = zoo.load(str(open_clip_dir), device="cpu")
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    embed_to_file(model, open_inputs(str(folder), modality="image-text"), tmp_path / "img.parquet", progress=False)
    index = search.build(tmp_path / "img.parquet", tmp_path / "idx")
    queries = ["a photo of noise", str(folder / "3.png")]
    hits = index.search(queries, k=5, model=model)
    from zoo.embeddings._embedding_file import read_embeddings

    rows = read_embeddings(tmp_path / "img.parquet").rows
    expected = np.concatenate([model.featurize_texts(queries[:1]), model.featurize(queries[1:])]) @ rows.T
    assert [[h.id for h in row] for row in hits] == [[str(folder / f"{j}.png") for j in np.argsort(-e, kind="stable")]
                                                     for e in expected]
    assert hits[1][0].id == str(folder / "3.png")


def test_non_finite_rows_are_refused_by_id_and_k_must_be_positive(corpus_parquet, tmp_path):
    table = pq.read_table(corpus_parquet)
    rows = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    rows[[2, 5]] = np.nan
    import pyarrow as pa

    column = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1])
    poisoned = tmp_path / "poisoned.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("embedding"), "embedding", column), poisoned)
    with pytest.raises(ZooError, match=r"2 rows hold NaN or infinite values \(id 2, 5\); nothing was added"):
        search.build(poisoned, tmp_path / "bad-idx")
    index = search.build(corpus_parquet, tmp_path / "idx")
    with pytest.raises(ZooError, match="id 2, 5"):
        index.add(poisoned)
    assert len(search.open_index(tmp_path / "idx")) == len(CORPUS)  # what was saved is unchanged
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search_vectors(rows[:1] * 0 + 1, k=k)
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.search_vectors(rows[2:3])


def test_scores_are_cosines_even_where_the_model_does_not_normalise(tiny_bert_dir, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the plain folder's undeclared pooling
        model = zoo.load(tiny_bert_dir, device="cpu")
    assert model.spec.normalize is False
    lines = tmp_path / "corpus.txt"
    lines.write_text("\n".join(CORPUS) + "\n")
    embed_to_file(model, open_inputs(str(lines)), tmp_path / "raw.parquet", progress=False)
    index = search.build(tmp_path / "raw.parquet", tmp_path / "idx")
    rows, query = model.featurize(CORPUS), model.featurize(["a kitten asleep"])
    assert np.linalg.norm(rows, axis=1).min() > 1.5  # not unit length: raw inner products would exceed 1
    cosines = (rows @ query.T)[:, 0] / np.linalg.norm(rows, axis=1) / np.linalg.norm(query)
    hits = search.open_index(tmp_path / "idx").search(["a kitten asleep"], k=3, model=model)[0]
    assert [int(h.id) for h in hits] == list(np.argsort(-cosines)[:3])
    np.testing.assert_allclose([h.score for h in hits], np.sort(cosines)[::-1][:3], atol=1e-5)
    assert json.loads((tmp_path / "idx" / search.META_FILE).read_text())["metric"] == "cosine"


def test_an_index_changed_outside_zoo_is_refused_by_file(corpus_parquet, tmp_path):
    """Ids rotated, vectors replaced by as many others, settings edited by hand, a file cut short:
    each is named, none answers with wrong neighbours."""
    import shutil

    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    search.build(corpus_parquet, tmp_path / "good")

    def tampered(name, change):
        folder = tmp_path / name
        shutil.copytree(tmp_path / "good", folder)
        change(folder)
        with pytest.raises(ZooError) as refused:
            search.open_index(folder)
        return str(refused.value)

    def rotate_ids(folder):
        rows = pq.read_table(folder / search.ROWS_FILE)
        ids = rows.column("id").to_pylist()
        pq.write_table(rows.set_column(0, "id", pa.array(ids[1:] + ids[:1])), folder / search.ROWS_FILE)

    def replace_vectors(folder):
        other = faiss.IndexFlatIP(384)
        other.add(np.random.default_rng(0).standard_normal((len(CORPUS), 384)).astype(np.float32))
        faiss.write_index(other, str(folder / search.INDEX_FILE))

    def edit_pool(folder):
        meta = json.loads((folder / search.META_FILE).read_text())
        meta["provenance"]["pool"] = "cls"
        (folder / search.META_FILE).write_text(json.dumps(meta))

    def cut_short(folder):
        data = (folder / search.INDEX_FILE).read_bytes()
        (folder / search.INDEX_FILE).write_bytes(data[: len(data) // 2])

    assert "rows.parquet is not the file zoo wrote" in tampered("ids", rotate_ids)
    assert "index.faiss is not the file zoo wrote" in tampered("vectors", replace_vectors)
    assert "zoo-index.json was edited after zoo wrote it" in tampered("pool", edit_pool)
    assert "index.faiss is not the file zoo wrote" in tampered("short", cut_short)
    assert "is not valid JSON" in tampered("json", lambda f: (f / search.META_FILE).write_text("{not json"))
    assert "index.faiss is missing" in tampered("gone", lambda f: (f / search.INDEX_FILE).unlink())

    def as_written_before_digests(folder):
        meta = json.loads((folder / search.META_FILE).read_text())
        kept = {k: v for k, v in meta.items() if k not in ("seal", "sha256")}
        (folder / search.META_FILE).write_text(json.dumps(kept))

    assert "written by an earlier zoo" in tampered("old", as_written_before_digests)
    assert len(search.open_index(tmp_path / "good")) == len(CORPUS)


def test_rows_whose_content_another_id_holds_are_named_not_dropped_silently(minilm, tmp_path, capsys):
    from zoo.cli import main

    (tmp_path / "t.txt").write_text("\n".join([*CORPUS, CORPUS[1], CORPUS[3]]) + "\n")
    embed_to_file(minilm, open_inputs(str(tmp_path / "t.txt")), tmp_path / "t.parquet", progress=False)
    assert main(["index", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    assert f"{len(CORPUS)} rows" in out
    assert "  8: the same content as 1, which the index holds; not added" in out
    assert "  9: the same content as 3, which the index holds; not added" in out


def test_a_text_query_takes_its_prompt_by_name_or_as_text(minilm, corpus_parquet, tmp_path, capsys):
    from zoo.cli import main

    index = search.build(corpus_parquet, tmp_path / "idx")
    from zoo.embeddings._embedding_file import read_embeddings

    rows = read_embeddings(corpus_parquet).rows
    prompted = minilm.featurize(["query: the market dropped"])[0] @ rows.T
    hits = index.search(["the market dropped"], k=3, model=minilm, prompt_text="query: ")[0]
    np.testing.assert_allclose([h.score for h in hits], np.sort(prompted)[::-1][:3], atol=1e-5)
    plain = index.search(["the market dropped"], k=1, model=minilm)[0][0]
    assert abs(plain.score - hits[0].score) > 1e-3  # the prompt changed the query's row
    assert main(["search", str(tmp_path / "idx"), "the market dropped", "-k", "1", "--json",
                 "--prompt-text", "query: "]) == 0
    assert json.loads(capsys.readouterr().out)[0]["hits"][0]["score"] == pytest.approx(hits[0].score, abs=1e-5)
    with pytest.raises(ValueError, match="unknown prompt .query. for minilm-l6; it declares: none"):
        index.search(["the market dropped"], model=minilm, prompt="query")
    with pytest.raises(SystemExit):  # a name and a text are one or the other
        main(["search", str(tmp_path / "idx"), "x", "--prompt", "query", "--prompt-text", "query: "])


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantized_files_are_indexed_and_deduplicated_as_their_dequantized_rows(minilm, tmp_path, precision):
    from zoo.core._quantize import dequantize, quantize
    from zoo.duplicates import find_duplicates

    lines = tmp_path / "corpus.txt"
    lines.write_text("\n".join([*CORPUS, CORPUS[0]]) + "\n")  # the last line repeats the first
    out = tmp_path / f"{precision}.parquet"
    embed_to_file(minilm, open_inputs(str(lines)), out, progress=False, options=minilm.embed_options(precision=precision))
    index = search.build(out, tmp_path / "idx")
    queries = ["my kitten is asleep", "the market dropped", "a football match", "how to cook soup"]
    hits = index.search(queries, k=3, model=minilm)
    floats = minilm.featurize([*CORPUS, CORPUS[0]])
    meta = json.loads(pq.read_schema(out).metadata[b"zoo"])
    ranges = (meta.get("calibration") or {}).get("ranges")
    stored = dequantize(quantize(floats, precision, ranges), precision, floats.shape[1], ranges)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    expected = minilm.featurize(queries) @ stored[:-1].T  # the repeated line is held once by the index
    np.testing.assert_allclose([[h.score for h in row] for row in hits], -np.sort(-expected, axis=1)[:, :3], atol=1e-4)
    assert [row[0].id for row in hits] == ["0", "1", "2", "6"]  # as the float32 index finds them
    assert [g.ids for g in find_duplicates(out, threshold=1.0)] == [[0, len(CORPUS)]]


def test_int8_rows_dequantize_to_their_bucket_centres():
    from zoo.core._quantize import calibration_ranges, dequantize, quantize

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    ranges = calibration_ranges(x)
    back = dequantize(quantize(x, "int8", ranges), "int8", 16, ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert (np.abs(back - x) <= step / 2 + 1e-6).all()  # within half a bucket
    bits = dequantize(quantize(x, "ubinary"), "ubinary", 16)
    np.testing.assert_array_equal(bits, np.where(x > 0, 1.0, -1.0))
