"""The plugin against sentence-transformers' SparseEncoder called directly, on tiny random-weight
models in each layout it has written, and through zoo embed, zoo index and zoo search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse

sys.path.insert(0, str(Path(__file__).parent))
from tiny_sparse import TEXTS, as_sparse_format, csr_folder, inference_free_folder, sparse_encoder_folder

import zoo
from zoo import search


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    current = sparse_encoder_folder(root / "plain")
    return {"current": current, "v5": as_sparse_format(current, "v5"),
            "capped": sparse_encoder_folder(root / "capped", max_active_dims=12), "csr": csr_folder(root / "csr"),
            "inference-free": inference_free_folder(root / "inference-free")}


def _library(folder: Path):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(folder), device="cpu")


@pytest.mark.parametrize("layout", ["current", "v5", "capped", "csr"])
def test_rows_equal_sparse_encoder_encode(folders, layout):
    model = zoo.load(folders[layout], device="cpu")
    assert model.kind == "sparse-encoder"
    # a SPLADE's dimensions are its tokens; a sparse autoencoder's (CSR) are learned features
    assert (model.encoder.vocabulary is None) == (layout == "csr")
    rows = model.featurize(TEXTS, batch_size=3)
    assert isinstance(rows, scipy.sparse.csr_array) and rows.dtype == np.float32
    library = _library(folders[layout])
    expected = library.encode(TEXTS, convert_to_sparse_tensor=True).to_dense().numpy()
    assert np.abs(rows.toarray() - expected).max() <= 1e-5
    if layout == "capped":
        assert (np.diff(rows.indptr) <= 12).all() and (np.diff(rows.indptr) > 0).all()
    alone = scipy.sparse.vstack([model.featurize([text]) for text in TEXTS]).toarray()
    assert np.abs(alone - rows.toarray()).max() <= 1e-5  # a row does not depend on its batch
    if layout != "csr":
        queries = model.featurize(TEXTS, prompt="query", batch_size=2)
        assert np.abs(queries.toarray() - library.encode_query(TEXTS).to_dense().numpy()).max() <= 1e-5


def test_a_routed_model_runs_queries_and_documents_through_their_own_modules(folders, tmp_path):
    """Inference-free SPLADE: role="query" is encode_query (the static weights), role="document"
    encode_document (the masked-LM model); zoo embed writes documents and zoo search embeds queries."""
    folder = folders["inference-free"]
    model, library = zoo.load(folder, device="cpu"), _library(folder)
    for role, encode in (("query", library.encode_query), ("document", library.encode_document)):
        rows = model.featurize(TEXTS, role=role, batch_size=3)
        assert np.abs(rows.toarray() - encode(TEXTS, convert_to_sparse_tensor=True).to_dense().numpy()).max() <= 1e-5
    assert model.featurize(TEXTS[:2], role="query").nnz != model.featurize(TEXTS[:2], role="document").nnz
    parquet = tmp_path / "docs.parquet"
    (tmp_path / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    done = _zoo("embed", str(folder), str(tmp_path / "docs.txt"), "-o", str(parquet), "-q")
    assert done.returncode == 0, done.stderr
    assert json.loads(pq.read_schema(parquet).metadata[b"zoo"])["role"] == "document"
    index = search.build(parquet, tmp_path / "index")
    queries = ["a cat", "free software"]
    expected = library.similarity(library.encode_query(queries), library.encode_document(TEXTS)).numpy()
    for row, hits in zip(expected, index.search(queries, k=3, model=model)):
        assert [float(h.score) for h in hits] == pytest.approx(sorted(row[row > 0], reverse=True)[:3], rel=1e-5)


def test_the_inverted_store_ranks_like_a_product_and_skips_documents_without_a_shared_term():
    from zoo_sparse.rows import InvertedStore

    documents = scipy.sparse.csr_array(np.array([[1, 0, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 5],
                                                 [3, 1, 0, 0]], dtype=np.float32))
    store = InvertedStore(4)
    store.add(documents[:2])
    store.add(documents[2:])
    queries = scipy.sparse.csr_array(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]], dtype=np.float32))
    scores, positions = store.search(queries, 3)
    assert positions.tolist() == [[4, 0, 2], [-1, -1, -1], [4, 1, 0]]  # equal scores: the earlier row first
    np.testing.assert_array_equal(scores[0], [3, 1, 1])
    expected = (queries @ documents.T).toarray()
    assert all(scores[q, j] == expected[q, p] for q in range(3) for j, p in enumerate(positions[q]) if p >= 0)


def _zoo(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The ``zoo`` command, as a user runs it (``env``: variables set for it)."""
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_embed_index_search_equal_the_library_scores(folders, tmp_path):
    folder = folders["current"]
    (tmp_path / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    done = _zoo("embed", str(folder), str(tmp_path / "docs.txt"), "-o", str(tmp_path / "docs.parquet"))
    assert done.returncode == 0 and "8 rows of sparse term-weight vectors of width" in done.stdout, done.stderr
    table = pq.read_table(tmp_path / "docs.parquet")
    assert table.column_names == ["id", "indices", "values", "content_sha256"]
    library = _library(folder)
    documents = library.encode(TEXTS).to_dense().numpy()
    for row, (indices, values) in enumerate(zip(table.column("indices").to_pylist(),
                                                table.column("values").to_pylist())):
        assert indices == np.flatnonzero(documents[row]).tolist()
        np.testing.assert_allclose(values, documents[row][indices], atol=1e-5)
    vocabulary = json.loads(table.schema.metadata[b"zoo.vocabulary"])
    assert vocabulary == library.tokenizer.convert_ids_to_tokens(list(range(len(vocabulary))))

    done = _zoo("index", str(tmp_path / "docs.parquet"), "-o", str(tmp_path / "idx"))
    assert done.returncode == 0 and "an inverted index of 8 rows" in done.stdout, done.stderr
    index = search.open_index(tmp_path / "idx")
    query = "free software for the world"
    (hits,) = index.search([query], k=5, prompt="query")  # as encode_query puts it before a query
    scores = library.similarity(library.encode_query([query]), library.encode(TEXTS)).numpy()[0]
    order = sorted(range(len(TEXTS)), key=lambda i: (-scores[i], i))[:5]
    assert [h.id for h in hits] == [str(i) for i in order]
    np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=1e-5)
    done = _zoo("search", str(tmp_path / "idx"), query, "-k", "2", "--prompt", "query", "--json")
    assert done.returncode == 0, done.stderr
    assert [h["id"] for h in json.loads(done.stdout)[0]["hits"]] == [str(i) for i in order[:2]]


def test_an_index_grows_and_refuses_other_index_types(folders, tmp_path):
    model = zoo.load(folders["current"], device="cpu")
    for name, texts in (("a", TEXTS[:4]), ("b", TEXTS)):
        (tmp_path / f"{name}.txt").write_text("\n".join(texts) + "\n")
        assert _zoo("embed", str(folders["current"]), str(tmp_path / f"{name}.txt"), "-o",
                    str(tmp_path / f"{name}.parquet")).returncode == 0
    index = search.build(tmp_path / "a.parquet", tmp_path / "idx")
    assert index.add(tmp_path / "b.parquet") == 4  # the first four are held already, by content
    reopened = search.open_index(tmp_path / "idx")
    assert len(reopened) == 8 and reopened.kind == "inverted" and reopened.metric == "dot"
    (hits,) = reopened.search_vectors(model.featurize(TEXTS[4:5]), k=8)
    assert len(hits) == 8 and hits[0].score >= hits[-1].score
    with pytest.raises(ValueError, match="does not hold sparse term-weight vectors"):
        search.build(tmp_path / "a.parquet", tmp_path / "hnsw", kind="hnsw")
    with pytest.raises(ValueError, match="m is a setting of hnsw indexes; a inverted index takes none"):
        search.build(tmp_path / "a.parquet", tmp_path / "with-m", m=8)
    done = _zoo("dedup", str(tmp_path / "a.parquet"))
    assert done.returncode == 1 and "and zoo dedup reads an embedder's dense vectors" in done.stderr, done.stderr


def test_what_sparse_rows_do_not_take_is_refused_by_name(folders, tmp_path):
    model = zoo.load(folders["current"], device="cpu")
    with pytest.raises(zoo.UnsupportedOptionError, match="take no precision= setting"):
        model.featurize(TEXTS, precision="int8")
    with pytest.raises(zoo.UnsupportedOptionError, match="take no truncate_dim= setting"):
        model.featurize(TEXTS, truncate_dim=8)
    with pytest.raises(zoo.UnsupportedModelKindError, match="is a sparse-encoder: it embeds texts as sparse term"):
        model.classify(TEXTS, ["cats", "software"])
    with pytest.raises(zoo.UnsupportedModelKindError, match="finetune needs an embedder"):
        model.finetune(TEXTS, output_dir=tmp_path / "ft")
    with pytest.raises(ValueError, match="return_tensors='np'"):
        model.featurize(TEXTS, return_tensors="pt")
    with pytest.raises(zoo.InputError, match="input 1"):
        model.featurize([TEXTS[0], 3, TEXTS[1]])
    with pytest.warns(RuntimeWarning, match="featurize skipped 1 of 3 inputs"):
        kept = model.featurize([TEXTS[0], 3, TEXTS[1]], on_error="skip")
    assert model.last_report.kept == [0, 2] and model.last_report.skipped[0][0] == 1
    assert np.abs(kept.toarray() - model.featurize([TEXTS[0], TEXTS[1]]).toarray()).max() <= 1e-5
    with pytest.raises(zoo.UnsupportedModelKindError, match="is a sparse-encoder, not an embedder"):
        zoo.load(folders["current"], kind="embedder")
    with pytest.raises(zoo.UnsupportedModelKindError, match="mine_negatives needs an embedder's dense vectors"):
        zoo.mine_negatives(model, [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3])])
    pq.write_table(pa.table({"anchor": TEXTS, "positive": TEXTS}), tmp_path / "pairs.parquet")
    done = _zoo("evaluate", str(folders["current"]), "--task", "retrieval", "--pairs", str(tmp_path / "pairs.parquet"))
    assert done.returncode == 1 and "zoo evaluate needs an embedder's dense vectors" in done.stderr, done.stderr
    (tmp_path / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    done = _zoo("embed", str(folders["current"]), str(tmp_path / "docs.txt"), "-o", str(tmp_path / "rows.npy"))
    assert done.returncode == 1 and "which zoo embed writes to a .parquet file" in done.stderr, done.stderr
    done = _zoo("serve", str(folders["current"]), "--port", "0")
    assert done.returncode == 1 and "zoo serve answers /v1/embeddings" in done.stderr, done.stderr
    pq.write_table(pa.table({"text": TEXTS, "values": list(range(len(TEXTS)))}), tmp_path / "table.parquet")
    done = _zoo("embed", str(folders["current"]), str(tmp_path / "table.parquet"), "--keep-columns", "values", "-o",
                str(tmp_path / "kept.parquet"))
    assert done.returncode == 1 and "--keep-columns 'values'" in done.stderr, done.stderr
    assert not (tmp_path / "kept.parquet.partial").exists()  # refused before anything ran


def test_a_sparse_model_travels_in_a_bundle(folders, tmp_path):
    """zoo pack / unpack: the folder's files with their sha256, loaded by name offline on the other side."""
    assert _zoo("pack", str(folders["current"]), "-o", str(tmp_path / "b.tar"),
                ZOO_HOME=str(tmp_path / "here")).returncode == 0
    there = {"ZOO_HOME": str(tmp_path / "there"), "ZOO_OFFLINE": "1"}
    assert _zoo("unpack", str(tmp_path / "b.tar"), **there).returncode == 0
    (tmp_path / "docs.txt").write_text("\n".join(TEXTS) + "\n")
    done = _zoo("embed", "sparse", str(tmp_path / "docs.txt"), "-o", str(tmp_path / "there.parquet"), **there)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "there.parquet")
    expected = zoo.load(folders["current"], device="cpu").featurize(TEXTS)
    for row, (indices, values) in enumerate(zip(table.column("indices").to_pylist(),
                                                table.column("values").to_pylist())):
        assert indices == expected[[row]].indices.tolist()
        np.testing.assert_allclose(values, expected[[row]].data, atol=1e-6)


def test_conformance(folders, tmp_path):
    results = zoo.assert_conformance(str(folders["current"]), workdir=tmp_path)
    assert "embed, index and search" in {r.check for r in results if r.status == "pass"}
