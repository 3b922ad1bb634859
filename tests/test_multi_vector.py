"""Multi-vector (ColBERT-style) models: featurize, zoo embed, zoo index and zoo search equal
sentence-transformers' ``MultiVectorEncoder`` called directly (``encode_query``,
``encode_document``, ``encode``, ``similarity``), on tiny random-weight models in each format it
reads: its own save, PyLate 3's, and a Stanford-NLP ColBERT checkpoint; and a ColPali-style page
retriever (a tiny ColQwen2) as transformers and sentence-transformers save it, over page images."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from tiny_models import TEXTS, as_pylate_v3, bert_folder, colbert_folder, colqwen2_folder, stanford_colbert_folder

import zoo
import zoo.sklearn
import zoo.testing
from zoo.core._token_rows import MaxSimStore, MultiVectorRows, TokenMatrices, maxsim
from zoo.embeddings._embed import embed_to_file
from zoo.embeddings._inputs import items_source
from zoo.errors import InputError, UnsupportedModelKindError, UnsupportedOptionError, ZooError
from zoo.search import build, open_index

DOCUMENTS = [*TEXTS, "The cat sleeps on a mat, in the sun!", "Free software is built by volunteers.",
             "A castle of sand, near the water.", "Rain, rain, rain."]
QUERIES = ["a sleeping cat", "who builds free software?", "sand castle", "weather"]
FORMATS = ("native", "pylate-v3", "stanford")


@pytest.fixture(scope="module")
def colbert_folders(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("colbert")
    base = bert_folder(root / "bert", minilm_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = colbert_folder(root / "native", base)
        return {"native": native, "pylate-v3": as_pylate_v3(native, root / "pylate-v3"),
                "stanford": stanford_colbert_folder(root / "stanford", base)}


def library(folder: Path):
    from sentence_transformers import MultiVectorEncoder

    return MultiVectorEncoder(str(folder), device="cpu", local_files_only=True)


def assert_same_matrices(rows: TokenMatrices, reference: list, atol: float = 1e-5) -> None:
    assert len(rows) == len(reference)
    for ours, theirs in zip(rows, reference):
        theirs = np.asarray(theirs)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= atol


@pytest.mark.parametrize("layout", FORMATS)
def test_featurize_equals_the_library_in_each_role(colbert_folders, layout):
    folder = colbert_folders[layout]
    model, st = zoo.load(folder, device="cpu"), library(folder)
    assert model.kind == "multi-vector" and model.spec.config["folder"]["format"] == "multi-vector"
    assert model.embed_dim == 16
    for role, encode in (("query", st.encode_query), ("document", st.encode_document), (None, st.encode)):
        rows = model.featurize(DOCUMENTS, role=role, batch_size=3)
        assert isinstance(rows, TokenMatrices) and rows.vectors.dtype == np.float32
        assert_same_matrices(rows, encode(DOCUMENTS, convert_to_numpy=True))
    # the query side is expanded to its fixed length; the document side drops skiplisted punctuation
    assert set(model.featurize(DOCUMENTS, role="query").lengths) == {16}
    assert model.featurize(["Rain, rain, rain."], role="document").lengths[0] == \
        model.featurize(["Rain rain rain"], role="document").lengths[0]  # the skiplist drops the commas


def test_a_row_does_not_depend_on_its_batch(colbert_folders):
    model = zoo.load(colbert_folders["native"], device="cpu")
    for role in ("query", "document"):
        together = model.featurize(DOCUMENTS, role=role, batch_size=len(DOCUMENTS))
        alone = [model.featurize([text], role=role)[0] for text in DOCUMENTS]
        assert_same_matrices(together, alone)
    pt = model.featurize(DOCUMENTS[:3], role="document", return_tensors="pt")
    assert isinstance(pt, list) and all(tuple(t.shape)[1] == 16 for t in pt)


def test_embed_index_and_search_equal_maxsim(colbert_folders, tmp_path):
    folder = colbert_folders["native"]
    model, st = zoo.load(folder, device="cpu"), library(folder)
    out = tmp_path / "docs.parquet"
    embed_to_file(model, items_source(DOCUMENTS, "documents"), out, batch_size=4, progress=False)
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    documents = st.encode_document(DOCUMENTS, convert_to_numpy=True)
    assert table.column("tokens").to_pylist() == [len(d) for d in documents]
    provenance = json.loads(table.schema.metadata[b"zoo"])
    assert provenance["kind"] == "multi-vector" and provenance["role"] == "document"
    expected = st.similarity(st.encode_query(QUERIES), st.encode_document(DOCUMENTS)).numpy()
    for index_type in ("flat", "hnsw"):
        index = open_index(build(out, tmp_path / index_type, kind=index_type).path)
        hits = index.search(QUERIES, k=5, model=model)
        for row, found in zip(expected, hits):
            order = np.lexsort((np.arange(len(row)), -row))[:5]
            assert [h.id for h in found] == [str(i) for i in order]
            assert np.abs(np.array([h.score for h in found]) - row[order]).max() <= 1e-4
    assert index.metric == "maxsim" and index.options["token_candidates"] == 32


@pytest.mark.slow
def test_the_cli_embeds_indexes_and_searches(colbert_folders, tmp_path, capsys):
    from zoo.cli import main

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCUMENTS)))
    folder = str(colbert_folders["native"])
    assert main(["embed", folder, str(docs), "--id-column", "id", "-o", str(tmp_path / "e.parquet"), "-q"]) == 0
    assert "token-vector matrices" in capsys.readouterr().out
    assert main(["index", str(tmp_path / "e.parquet"), "-o", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), *QUERIES, "-k", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = open_index(tmp_path / "idx").search(QUERIES, k=3)
    assert [[h["id"] for h in q["hits"]] for q in printed] == [[h.id for h in row] for row in expected]
    assert {h["id"] for q in printed for h in q["hits"]} <= {f"d{i}" for i in range(len(DOCUMENTS))}


def test_settings_and_verbs_it_does_not_take_are_refused(colbert_folders, tmp_path):
    model = zoo.load(colbert_folders["native"], device="cpu")
    for setting in ({"precision": "int8"}, {"truncate_dim": 8}, {"pool": "mean"}, {"layer": -2}):
        with pytest.raises(UnsupportedOptionError, match="token-vector matrices"):
            model.featurize(DOCUMENTS[:2], **setting)
    with pytest.raises(ValueError, match="role must be 'query' or 'document'"):
        model.featurize(DOCUMENTS[:2], role="passage")
    with pytest.raises(UnsupportedModelKindError, match="is a multi-vector"):
        model.classify(DOCUMENTS[:2], ["a", "b"])
    with pytest.raises(UnsupportedModelKindError, match="is a multi-vector"):
        model.finetune([("a", 0), ("b", 1)])
    with pytest.raises(UnsupportedOptionError, match="runs on PyTorch only"):
        zoo.load(colbert_folders["native"], device="cpu", runtime="onnx")
    out = tmp_path / "e.npy"
    with pytest.raises(ZooError, match=r"writes to a \.parquet file"):
        embed_to_file(model, items_source(DOCUMENTS, "documents"), out, progress=False)
    rows = embed_to_file(model, items_source(DOCUMENTS, "documents"), tmp_path / "e.parquet", progress=False).output
    from zoo.duplicates import find_duplicates
    from zoo.embeddings._embedding_file import read_embeddings

    for verb in (lambda: find_duplicates(rows), lambda: read_embeddings(rows, what="zoo map")):
        with pytest.raises(ZooError, match="holds the rows of a multi-vector model"):
            verb()
    with pytest.raises(UnsupportedModelKindError, match="needs an embedder's dense vectors"):
        zoo.sklearn.Featurizer(str(colbert_folders["native"])).fit_transform(DOCUMENTS[:2])


def test_bad_items_are_named_or_skipped(colbert_folders):
    model = zoo.load(colbert_folders["native"], device="cpu")
    with pytest.raises(InputError) as caught:
        model.featurize(["fine", 3, "also fine"], role="document")
    assert caught.value.index == 1
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3"):
        rows = model.featurize(["fine", 3, "also fine"], role="document", on_error="skip")
    assert len(rows) == 2 and model.last_report.skipped[0][0] == 1
    assert_same_matrices(rows, list(model.featurize(["fine", "also fine"], role="document")))


@pytest.mark.slow
def test_saved_model_reads_back_the_same(colbert_folders, tmp_path):
    model = zoo.load(colbert_folders["pylate-v3"], device="cpu")
    again = zoo.load(model.save(tmp_path / "saved"), device="cpu")
    assert again.kind == "multi-vector"
    assert_same_matrices(again.featurize(DOCUMENTS, role="query"), list(model.featurize(DOCUMENTS, role="query")))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["colbert", "page retriever"])
def test_the_conformance_kit_passes(request, tmp_path, which):
    folder = request.getfixturevalue("colbert_folders")["native"] if which == "colbert" else \
        request.getfixturevalue("page_folders")["sentence-transformers"]
    results = zoo.testing.check_model(str(folder), workdir=tmp_path)
    failed = [(r.check, r.detail) for r in results if r.status == "fail"]
    assert not failed, failed
    assert any(r.check == "embed, index and search" and r.status == "pass" for r in results)


PAGE_QUERIES = ["a cup of coffee", "a cat", "an astronaut in a suit", "the rocket launch", "free software"]


@pytest.fixture(scope="module")
def page_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny ColQwen2 page retriever as transformers saved it, the same as sentence-transformers
    saved it, and a folder of pages: photographs of several sizes and a page of text."""
    from PIL import Image, ImageDraw
    from skimage import data

    root = tmp_path_factory.mktemp("pages")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native = colqwen2_folder(root / "colqwen2")
        library(native).save(str(root / "st"), create_model_card=False)
    pages = root / "page-images"
    pages.mkdir()
    for name, picture in (("coffee", data.coffee()), ("chelsea", data.chelsea()[::3, ::2]),
                          ("astronaut", data.astronaut()[::4, ::4]), ("rocket", data.rocket()), ("camera", data.camera())):
        Image.fromarray(picture).save(pages / f"{name}.png")
    text_page = Image.new("RGB", (210, 297), "white")
    ImageDraw.Draw(text_page).multiline_text((12, 12), "\n".join(DOCUMENTS), fill="black")
    text_page.save(pages / "text.png")
    return {"transformers": native, "sentence-transformers": root / "st", "pages": pages}


def page_files(folders: dict[str, Path]) -> list[str]:
    return sorted(str(p) for p in folders["pages"].iterdir())


def opened(paths: list[str]) -> list:
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in paths]


@pytest.mark.parametrize("layout", ["transformers", "sentence-transformers"])
def test_a_page_retriever_equals_the_library(page_folders, layout):
    folder, pages = page_folders[layout], page_files(page_folders)
    model, st = zoo.load(folder, device="cpu"), library(folder)
    assert (model.kind, model.modality, list(model.towers)) == ("multi-vector", "image-text", ["vision", "text"])
    assert model.spec.config["folder"]["format"] == "multi-vector-pages" and model.embed_dim == 16
    for role, encode in (("document", st.encode_document), (None, st.encode)):
        assert_same_matrices(model.featurize(pages, role=role, batch_size=4), encode(opened(pages), convert_to_numpy=True))
    assert_same_matrices(model.featurize_texts(PAGE_QUERIES, role="query", batch_size=2),
                         st.encode_query(PAGE_QUERIES, convert_to_numpy=True))
    # pages of other sizes give other token counts, and a row is the same alone as in any batch
    together = model.featurize(pages, role="document", batch_size=len(pages))
    assert len(set(together.lengths)) > 1
    assert_same_matrices(together, [model.featurize([page], role="document")[0] for page in pages])


def test_a_page_its_processor_refuses_is_named_and_the_others_go_on(page_folders, tmp_path):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (1200, 4), "white").save(strip)  # sides too unequal for Qwen2-VL's processor
    model, pages = zoo.load(page_folders["transformers"], device="cpu"), page_files(page_folders)[:2]
    asked = [pages[0], str(strip), pages[1]]
    with pytest.raises(InputError, match=r"input 1 .*strip\.png.*aspect ratio"):
        model.featurize(asked, role="document")
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3"):
        rows = model.featurize(asked, role="document", on_error="skip")
    assert_same_matrices(rows, model.featurize(pages, role="document"))


def test_pages_embed_index_and_are_searched_by_text(page_folders, tmp_path, capsys):
    from zoo.cli import main

    folder, pages = str(page_folders["transformers"]), page_files(page_folders)
    out = tmp_path / "pages.parquet"
    assert main(["embed", folder, str(page_folders["pages"]), "-o", str(out), "-q", "--batch-size", "4"]) == 0
    import pyarrow.parquet as pq

    provenance = json.loads(pq.read_table(out).schema.metadata[b"zoo"])
    assert (provenance["kind"], provenance["role"], provenance["tower"]) == ("multi-vector", "document", "vision")
    st = library(folder)
    expected = st.similarity(st.encode_query(PAGE_QUERIES), st.encode_document(opened(pages))).numpy()
    for index_type in ("flat", "hnsw"):
        assert main(["index", str(out), "-o", str(tmp_path / index_type), "--kind", index_type]) == 0
        hits = open_index(tmp_path / index_type).search(PAGE_QUERIES, k=3)
        for row, found in zip(expected, hits):
            order = np.lexsort((np.arange(len(row)), -row))[:3]
            assert [h.id for h in found] == [pages[i] for i in order]
            assert np.abs(np.array([h.score for h in found]) - row[order]).max() <= 1e-4
    capsys.readouterr()


def test_a_multi_vector_pipeline_for_inputs_zoo_does_not_read_is_refused(colbert_folders, tmp_path):
    saved = shutil.copytree(colbert_folders["native"], tmp_path / "audio-colbert")
    config = json.loads((saved / "sentence_bert_config.json").read_text())
    config.update(modality_config={"text": {}, "audio": {}})
    (saved / "sentence_bert_config.json").write_text(json.dumps(config))
    (saved / "model.safetensors").write_bytes(b"not weights")  # refused from its config, before any weight loads
    with pytest.raises(UnsupportedModelKindError, match="multi-vector pipeline for audio, text inputs"):
        zoo.load(saved, device="cpu")


def test_a_stanford_checkpoint_without_its_metadata_is_refused(colbert_folders, tmp_path):
    folder = shutil.copytree(colbert_folders["stanford"], tmp_path / "stanford")
    (folder / "artifact.metadata").unlink()
    with pytest.raises(zoo.ModelFormatError, match="without its artifact.metadata"):
        zoo.load(folder, device="cpu")


# -- the rows and their store ------------------------------------------------------------------

def _matrices(seed: int, lengths: list[int], width: int = 8) -> TokenMatrices:
    rng = np.random.default_rng(seed)
    return TokenMatrices.stack([rng.standard_normal((n, width)).astype(np.float32) for n in lengths], width)


def test_token_matrices_index_like_a_sequence():
    rows = _matrices(0, [3, 1, 4, 2])
    assert len(rows) == 4 and list(rows.lengths) == [3, 1, 4, 2]
    assert np.array_equal(rows[-1], rows.vectors[8:10])
    picked = rows[[2, 0]]
    assert isinstance(picked, TokenMatrices) and list(picked.lengths) == [4, 3]
    assert np.array_equal(picked[1], rows[0]) and list(rows[1:3].lengths) == [1, 4]
    with pytest.raises(IndexError):
        rows[4]


def test_maxsim_in_blocks_equals_the_definition(monkeypatch):
    documents, query = _matrices(1, [5, 1, 0, 7, 3, 9, 2]), _matrices(2, [4])[0]
    expected = [float((query @ d.T).max(axis=1).sum()) if len(d) else -1e9 for d in documents]  # ST's empty score
    monkeypatch.setattr("zoo.core._token_rows.BLOCK_TOKENS", 6)  # blocks end inside, at and past documents
    assert np.allclose(maxsim(query, documents), expected, atol=1e-5)


def test_the_store_reads_back_and_breaks_ties_by_position(tmp_path):
    rows = _matrices(3, [2, 3, 2])
    twice = TokenMatrices.stack([rows[0], rows[1], rows[0]], 8)  # documents 0 and 2 score alike
    store = MultiVectorRows().new_store(8, "flat", {})
    store.add(twice)
    scores, positions = store.search([rows[0]], 3)
    order = list(positions[0])
    assert sorted(order) == [0, 1, 2] and order.index(0) < order.index(2)
    assert scores[0][order.index(0)] == scores[0][order.index(2)]
    store.write(tmp_path)
    again = MaxSimStore.read(tmp_path, {"kind": "flat", "dim": 8})
    assert np.array_equal(again.search([rows[0]], 3)[1], positions)
    with pytest.raises(ValueError, match="query matrices"):
        store.search(np.zeros((2, 8), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="width 8"):
        store.search([np.zeros((2, 4), dtype=np.float32)], 1)


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_zoo_serve_returns_token_matrices_in_the_openai_shape(colbert_folders, tiny_bert_dir):
    import base64

    import httpx
    from test_serve import Server

    folder, dense = str(colbert_folders["native"]), str(tiny_bert_dir)
    st = library(colbert_folders["native"])
    server = Server(folder, dense, extra=("--max-inputs", "8"))
    try:
        url = f"{server.url}/v1/embeddings"
        for role, encode in (("query", st.encode_query), ("document", st.encode_document)):
            answer = httpx.post(url, json={"model": folder, "input": DOCUMENTS[:5], "input_type": role}, timeout=60)
            assert answer.status_code == 200, answer.text
            data = answer.json()["data"]
            assert_same_matrices(TokenMatrices.stack([np.array(d["embedding"], dtype=np.float32) for d in data], 16),
                                 encode(DOCUMENTS[:5], convert_to_numpy=True))
        packed = httpx.post(url, json={"model": folder, "input": DOCUMENTS[:2], "input_type": "query",
                                       "encoding_format": "base64"}, timeout=60).json()["data"]
        first = np.frombuffer(base64.b64decode(packed[0]["embedding"]), dtype="<f4").reshape(-1, 16)
        assert_same_matrices(TokenMatrices.stack([first], 16), st.encode_query(DOCUMENTS[:1], convert_to_numpy=True))
        cases = [({"model": folder, "input": ["a text"]}, "input_type"),
                 ({"model": folder, "input": ["a text"], "input_type": "passage"}, "input_type"),
                 ({"model": folder, "input": ["a text"], "input_type": "query", "dimensions": 8}, "dimensions"),
                 ({"model": folder, "input": ["fine", 3], "input_type": "document"}, "input[1]")]
        for body, param in cases:
            answer = httpx.post(url, json=body, timeout=30)
            assert 400 <= answer.status_code < 500 and answer.json()["error"]["param"] == param, (body, answer.text)
        # a dense embedder beside it takes input_type as its role's prompt (none declared: the same rows)
        plain = httpx.post(url, json={"model": dense, "input": ["a text"]}, timeout=30).json()["data"]
        as_query = httpx.post(url, json={"model": dense, "input": ["a text"], "input_type": "query"},
                              timeout=30).json()["data"]
        assert np.allclose(plain[0]["embedding"], as_query[0]["embedding"], atol=1e-6)
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    finally:
        server.stop()


def test_hnsw_candidates_are_scored_exactly_and_map_tokens_to_their_documents():
    """With one candidate per query token, a document is found exactly when one of its tokens is a
    query token's nearest (brute force over every token), and scored by exact MaxSim."""
    corpus, queries = _matrices(4, [3, 0, 5, 1, 4, 2, 6, 3]), _matrices(5, [3, 2])
    store = MultiVectorRows().new_store(8, "hnsw", {**MultiVectorRows().index_options("hnsw", {}),
                                                    "token_candidates": 1, "ef_search": 200})
    store.add(corpus[:3])
    store.add(corpus[3:])  # added in two parts, as two files would be
    scores, positions = store.search(queries, 8)
    owner = np.repeat(np.arange(len(corpus)), corpus.lengths)
    for query, found, got in zip(queries, positions, scores):
        nearest = set(owner[(query @ corpus.vectors.T).argmax(axis=1)])
        assert set(found[found >= 0]) == nearest
        exact = maxsim(query, corpus)
        assert np.allclose(got[found >= 0], exact[found[found >= 0]], atol=1e-5)


def test_rows_read_back_from_several_chunks(tmp_path):
    import pyarrow as pa

    rows_format, rows = MultiVectorRows(), _matrices(6, [2, 0, 3, 1, 4])
    fields = rows_format.fields(8)
    chunks = [pa.table(rows_format.to_arrow(part, fields), schema=pa.schema(fields)) for part in (rows[:2], rows[2:])]
    table = pa.concat_tables(chunks)
    back = rows_format.read(table.slice(1), {"embed_dim": 8})  # a slice: offsets that do not start at 0
    assert list(back.lengths) == [0, 3, 1, 4] and np.array_equal(back.vectors, rows[1:].vectors)
    assert back.vectors.flags.writeable


@pytest.mark.slow
def test_an_index_keeps_one_role(colbert_folders, tmp_path):
    model = zoo.load(colbert_folders["native"], device="cpu")
    source = items_source(DOCUMENTS, "documents")
    documents = embed_to_file(model, source, tmp_path / "d.parquet", progress=False).output
    queries = embed_to_file(model, source, tmp_path / "q.parquet", progress=False,
                            options=model.embed_options(role="query")).output
    index = build(documents, tmp_path / "idx")
    with pytest.raises(zoo.ProvenanceMismatchError, match="role"):
        index.add(queries)
    wrong = build(queries, tmp_path / "idx-queries")
    with pytest.raises(ZooError, match="embedded as queries"):
        wrong.search(["sand castle"], model=model)


@pytest.mark.slow
def test_roles_pick_a_dense_model_s_prompts_and_search_follows_the_corpus_role(colbert_folders, tmp_path):
    """For a dense model a role only picks the prompt, as encode_query / encode_document do (their
    ``document`` placeholder, saved as "", wins over ``passage``); a corpus embedded as documents is
    searched with queries in the query role."""
    from sentence_transformers import SentenceTransformer
    from tiny_models import st_folder

    folder = st_folder(tmp_path / "e5-like", colbert_folders["native"].parent / "bert",
                       prompts={"query": "query: ", "passage": "passage: "}, default_prompt="passage")
    model, st = zoo.load(folder, device="cpu"), SentenceTransformer(str(folder), device="cpu")
    assert model.search_role("query") is None  # the same code runs both roles
    documents = model.featurize(DOCUMENTS, role="document")
    assert np.abs(documents - st.encode_document(DOCUMENTS)).max() <= 1e-5
    assert np.abs(model.featurize(QUERIES, role="query") - st.encode_query(QUERIES)).max() <= 1e-5
    assert np.abs(model.featurize(QUERIES) - st.encode(QUERIES)).max() <= 1e-5  # no role: the default prompt
    out = embed_to_file(model, items_source(DOCUMENTS, "documents"), tmp_path / "d.parquet", progress=False,
                        options=model.embed_options(role="document")).output
    hits = build(out, tmp_path / "idx").search(QUERIES[:1], k=3, model=model)[0]
    scores = documents @ st.encode_query(QUERIES[:1])[0]
    assert [h.id for h in hits] == [str(i) for i in np.argsort(-scores)[:3]]
