"""Rerankers: folders that sentence-transformers' CrossEncoder saved, in each format it has written,
score through zoo exactly as ``CrossEncoder.predict`` / ``rank`` score them called directly, and
every verb refuses a model of the other kind by name.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from tiny_models import (
    TEXTS,
    as_cross_encoder_format,
    causal_reranker_folder,
    cross_encoder_folder,
    decoder_folder,
)

import zoo
from zoo.errors import InputError, ModelFormatError, UnsupportedModelKindError

MAX_ABS = 1e-5
QUERY = "Who plays a guitar in the street?"
PAIRS = [(QUERY, text) for text in TEXTS] + [("Rain?", TEXTS[4]), (TEXTS[3], TEXTS[1])]


class _Folders(dict):
    """Each reranker format by name, built on first use: CrossEncoder saves (v6), the same rewritten
    as v4-v5 and v2-v3 wrote them, a plain sequence classifier, and causal yes / no rerankers."""

    def __init__(self, root, tokenizer_dir) -> None:
        super().__init__()
        self.root, self.tokenizer_dir = root, tokenizer_dir

    def __missing__(self, name):
        import torch

        root, builders = self.root, {
            "current": lambda: cross_encoder_folder(self.root / "current", self.tokenizer_dir),
            "identity": lambda: cross_encoder_folder(root / "identity", self.tokenizer_dir,
                                                     activation=torch.nn.Identity()),
            "three-labels": lambda: cross_encoder_folder(root / "three-labels", self.tokenizer_dir, num_labels=3),
            "xlm-roberta": lambda: cross_encoder_folder(root / "xlm-roberta", self.tokenizer_dir, arch="xlm-roberta"),
            "causal": lambda: causal_reranker_folder(root / "causal", self["qwen3"]),
            "causal-chat": lambda: causal_reranker_folder(root / "causal-chat", self["qwen3"], chat=True),
            "qwen3": lambda: decoder_folder(root / "qwen3", self.tokenizer_dir, "qwen3"),
            "identity-v4": lambda: as_cross_encoder_format(shutil.copytree(self["identity"], root / name), "v4"),
            **{era: (lambda era=era: as_cross_encoder_format(shutil.copytree(self["current"], root / era), era))
               for era in ("v4", "v2", "plain")}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self[name] = builders[name]()
        return self[name]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_dir):
    return _Folders(tmp_path_factory.mktemp("rerankers"), minilm_dir)


def _theirs(folder, **kwargs):
    from sentence_transformers import CrossEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CrossEncoder(str(folder), device="cpu", local_files_only=True, **kwargs)


# The full tier runs every format; the fast one the current save.
FORMATS = ["current", *(pytest.param(name, marks=pytest.mark.slow)
                        for name in ("v4", "v2", "identity", "identity-v4", "xlm-roberta", "causal", "causal-chat"))]


@pytest.mark.parametrize("name", FORMATS)
def test_scores_equal_cross_encoder_predict_whatever_the_batch(folders, name):
    model = zoo.load(folders[name], device="cpu")
    assert model.kind == "reranker" and type(model.encoder).__name__ == "CrossEncoderAdapter"
    theirs = _theirs(folders[name]).predict(PAIRS, batch_size=4)
    ours = model.score(PAIRS)
    assert ours.dtype == np.float32 and ours.shape == (len(PAIRS),)
    assert np.abs(ours - theirs).max() <= MAX_ABS
    alone = np.array([model.score([pair])[0] for pair in PAIRS])
    assert np.abs(model.score(PAIRS, batch_size=3) - alone).max() <= MAX_ABS
    assert np.abs(ours - alone).max() <= MAX_ABS
    assert np.ptp(ours) > 100 * MAX_ABS  # the scores differ by more than the tolerance


def test_the_activation_is_the_one_the_folder_saved(folders):
    """A reranker saved with an identity activation gives raw logits, as predict does: zoo applies
    no sigmoid of its own."""
    raw = zoo.load(folders["identity"], device="cpu").score(PAIRS)  # the same weights, another activation
    squashed = zoo.load(folders["current"], device="cpu").score(PAIRS)
    assert np.abs(squashed - 1 / (1 + np.exp(-raw.astype(np.float64)))).max() <= MAX_ABS
    assert np.abs(squashed - raw).max() > 0.1


@pytest.mark.parametrize("name", ["current", pytest.param("causal", marks=pytest.mark.slow)])
def test_rerank_equals_cross_encoder_rank(folders, name):
    model = zoo.load(folders[name], device="cpu")
    documents = [document for _, document in PAIRS]
    theirs = _theirs(folders[name]).rank(QUERY, documents, top_k=4, return_documents=True)
    ours = model.rerank(QUERY, documents, top_k=4, return_documents=True)
    assert [r.index for r in ours] == [r["corpus_id"] for r in theirs]
    assert np.abs(np.array([r.score for r in ours]) - [r["score"] for r in theirs]).max() <= MAX_ABS
    assert [r.document for r in ours] == [r["text"] for r in theirs]
    index, score, _ = model.rerank(QUERY, documents)[0]
    assert (index, score) == (ours[0].index, ours[0].score)
    assert model.rerank(QUERY, []) == []


@pytest.mark.slow
def test_a_prompt_goes_through_the_library_s_own_preprocessing(folders):
    """A chat-template reranker takes the instruction as its system message, as predict does."""
    model = zoo.load(folders["causal-chat"], device="cpu")
    instruction = "Judge whether the document answers the query"
    theirs = _theirs(folders["causal-chat"]).predict(PAIRS, prompt=instruction)
    ours = model.score(PAIRS, prompt_text=instruction)
    assert np.abs(ours - theirs).max() <= MAX_ABS
    assert np.abs(ours - model.score(PAIRS)).max() > 100 * MAX_ABS
    with pytest.raises(ValueError, match="unknown prompt 'query'"):
        model.score(PAIRS, prompt="query")


@pytest.mark.slow
def test_a_pair_classifier_gives_every_label_and_does_not_rank(folders):
    model = zoo.load(folders["three-labels"], device="cpu")
    ours = model.score(PAIRS)
    assert ours.shape == (len(PAIRS), 3)
    assert np.abs(ours - _theirs(folders["three-labels"]).predict(PAIRS)).max() <= MAX_ABS
    with pytest.raises(zoo.UnsupportedOptionError, match="3 scores per pair"):
        model.rerank(QUERY, TEXTS)


def test_a_plain_sequence_classifier_is_a_reranker_only_when_asked(folders):
    """Its files do not say whether it reranks or classifies: zoo refuses to guess, and names the fix."""
    with pytest.raises(UnsupportedModelKindError, match=r"kind='reranker'"):
        zoo.load(folders["plain"], device="cpu")
    model = zoo.load(folders["plain"], device="cpu", kind="reranker")
    assert np.abs(model.score(PAIRS) - _theirs(folders["plain"]).predict(PAIRS)).max() <= MAX_ABS
    assert zoo.info(str(folders["v4"]))["config"]["folder"]["kind"] == "reranker"


def test_each_verb_refuses_the_other_kind_by_name(folders, tiny_bert_dir):
    reranker = zoo.load(folders["current"], device="cpu")
    for verb in (lambda: reranker.featurize(["a text"]), lambda: reranker.classify(["a"], ["b", "c"]),
                 lambda: reranker.finetune([("a", 0), ("b", 1)], output_dir="unused")):
        with pytest.raises(UnsupportedModelKindError, match="is a reranker: it scores"):
            verb()
    embedder = zoo.load(tiny_bert_dir, device="cpu")
    with pytest.raises(UnsupportedModelKindError, match=r"is an embedder.*rerank needs a reranker"):
        embedder.rerank("q", ["d"])
    with pytest.raises(UnsupportedModelKindError, match=r"is an embedder .*not a reranker"):
        zoo.load(tiny_bert_dir, device="cpu", kind="reranker")
    with pytest.raises(UnsupportedModelKindError, match=r"is a reranker .*not an embedder"):
        zoo.load(folders["current"], device="cpu", kind="embedder")
    with pytest.raises(ValueError, match="did you mean 'reranker'"):
        zoo.load(folders["current"], device="cpu", kind="rerankers")
    # a catalogue embedder is refused before anything downloads (sockets are blocked here)
    with pytest.raises(UnsupportedModelKindError, match="resnet50 is an embedder, not a reranker"):
        zoo.load("resnet50", kind="reranker")


def test_bad_pairs_are_named_or_skipped(folders):
    model = zoo.load(folders["current"], device="cpu")
    with pytest.raises(InputError, match=r"input 1\b.*\(query, document\) pair"):
        model.score([("q", "d"), ("only one",), ("q", "d")])
    with pytest.raises(InputError, match="input 2"):
        model.rerank("q", ["d", "e", 3])
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        ranked = model.rerank(QUERY, [TEXTS[0], None, TEXTS[1]], on_error="skip")
    assert sorted(r.index for r in ranked) == [0, 2] and model.last_report.skipped[0][0] == 1
    with pytest.raises(TypeError, match="wrap one pair in a list"):
        model.score(("q", "d"))
    with pytest.raises(TypeError, match="wrap a single one"):
        model.rerank("q", "one document")
    with pytest.raises(ValueError, match="top_k"):
        model.rerank("q", ["d"], top_k=0)


def test_an_activation_from_outside_torch_is_refused_by_name(folders, tmp_path):
    folder = shutil.copytree(folders["current"], tmp_path / "custom")
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "activation_fn": "my_package.Squash"}))
    with pytest.raises(ModelFormatError, match=r"config_sentence_transformers.json names activation 'my_package"):
        zoo.load(folder, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["v2", "plain"])
def test_a_saved_reranker_loads_back_with_the_same_scores(folders, tmp_path, name):
    """Saved, even a bare sequence classifier loaded as a reranker reads back as one with no kind= given."""
    model = zoo.load(folders[name], device="cpu", kind="reranker")
    again = zoo.load(model.save(tmp_path / "saved"), device="cpu")
    assert again.kind == "reranker"
    assert np.abs(again.score(PAIRS) - model.score(PAIRS)).max() <= MAX_ABS


# -- from the command line and over HTTP -------------------------------------------------------

def test_zoo_rerank_orders_a_text_file(folders, tmp_path, capsys):
    from zoo.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(TEXTS) + "\n")
    assert main(["rerank", str(folders["current"]), QUERY, str(docs), "-k", "3", "--json", "-q"]) == 0
    shown = json.loads(capsys.readouterr().out)
    expected = zoo.load(folders["current"], device="cpu").rerank(QUERY, TEXTS, top_k=3)
    assert [(row["id"], row["text"]) for row in shown] == [(r.index, TEXTS[r.index]) for r in expected]
    assert np.abs(np.array([row["score"] for row in shown]) - [r.score for r in expected]).max() <= MAX_ABS
    assert main(["rerank", str(folders["plain"]), QUERY, str(docs), "-q"]) == 0  # zoo rerank asks for a reranker
    assert "1." in capsys.readouterr().out


def test_zoo_search_reranks_the_index_candidates(folders, tiny_bert_dir, tmp_path, capsys):
    from zoo.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(TEXTS) + "\n")
    emb, index = tmp_path / "docs.parquet", tmp_path / "index"
    assert main(["embed", str(tiny_bert_dir), str(docs), "-o", str(emb), "--keep-columns", "text", "-q"]) == 0
    assert main(["index", str(emb), "-o", str(index)]) == 0
    capsys.readouterr()
    assert main(["search", str(index), QUERY, "-k", "3", "--rerank", str(folders["current"]), "--candidates", "5",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    plain = zoo.search.open_index(index).search([QUERY], k=5)[0]
    expected = zoo.load(folders["current"], device="cpu").rerank(QUERY, [h.fields["text"] for h in plain], top_k=3)
    assert [h["id"] for h in hits] == [plain[r.index].id for r in expected]
    assert [h["retrieval_score"] for h in hits] == pytest.approx([plain[r.index].score for r in expected])
    assert np.abs(np.array([h["score"] for h in hits]) - [r.score for r in expected]).max() <= MAX_ABS


def test_search_refuses_to_rerank_what_it_cannot(folders, tiny_bert_dir, tmp_path):
    from zoo.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(TEXTS) + "\n")
    emb, index = tmp_path / "docs.parquet", tmp_path / "index"
    main(["embed", str(tiny_bert_dir), str(docs), "-o", str(emb), "-q"])
    main(["index", str(emb), "-o", str(index)])
    opened = zoo.search.open_index(index)
    with pytest.raises(zoo.ZooError, match=r"keeps no 'text' column .*--keep-columns text"):
        opened.search([QUERY], rerank=zoo.load(folders["current"], device="cpu"))
    with pytest.raises(UnsupportedModelKindError, match="not a reranker"):
        opened.search([QUERY], rerank=zoo.load(tiny_bert_dir, device="cpu"))


@pytest.fixture(scope="module")
def server(folders, tiny_bert_dir):
    from test_serve import Server

    srv = Server(str(folders["current"]), str(tiny_bert_dir), str(folders["three-labels"]),
                 extra=("--max-inputs", "16", "--reranker", str(folders["plain"])))
    yield srv
    srv.stop()


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_cohere_s_clients_rerank_through_zoo_serve(folders, server):
    import cohere

    name, documents = str(folders["current"]), [document for _, document in PAIRS]
    expected = zoo.load(folders["current"], device="cpu").rerank(QUERY, documents)
    v2 = cohere.ClientV2(api_key="unused", base_url=server.url).rerank(model=name, query=QUERY, documents=documents,
                                                                      top_n=3)
    assert [r.index for r in v2.results] == [r.index for r in expected[:3]]
    assert np.abs(np.array([r.relevance_score for r in v2.results]) - [r.score for r in expected[:3]]).max() <= MAX_ABS
    v1 = cohere.Client(api_key="unused", base_url=server.url).rerank(model=name, query=QUERY, documents=documents,
                                                                     return_documents=True)
    assert [(r.index, r.document.text) for r in v1.results] == [(r.index, documents[r.index]) for r in expected]


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_folder_that_does_not_say_its_kind_is_served_as_a_reranker_when_named_so(folders, server):
    import httpx

    documents = [document for _, document in PAIRS]
    answer = httpx.post(f"{server.url}/v1/rerank", json={"model": str(folders["plain"]), "query": QUERY,
                                                          "documents": documents}, timeout=60)
    expected = _theirs(folders["plain"]).rank(QUERY, documents)
    assert [r["index"] for r in answer.json()["results"]] == [r["corpus_id"] for r in expected], answer.text
    assert np.abs(np.array([r["relevance_score"] for r in answer.json()["results"]])
                  - [r["score"] for r in expected]).max() <= MAX_ABS


def test_zoo_serve_names_the_reranker_option_for_a_bare_classifier(folders, capsys):
    from zoo.cli import main

    assert main(["serve", str(folders["plain"]), "--port", "0"]) == 1
    assert "zoo serve --reranker" in capsys.readouterr().err
    assert main(["serve", "--reranker", str(folders["plain"]), str(folders["plain"])]) == 1
    assert "named both as a model and as a reranker" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_bad_rerank_requests_get_a_named_4xx_and_the_server_stays_up(folders, server, tiny_bert_dir):
    import httpx

    name = str(folders["current"])
    cases = [({"model": name, "documents": ["d"]}, "query"),
             ({"model": name, "query": "q", "documents": []}, "documents"),
             ({"model": name, "query": "q", "documents": ["d", 3]}, "documents[1]"),
             ({"model": name, "query": "q", "documents": ["d", {"title": "t"}]}, "documents[1]"),
             ({"model": name, "query": "q", "documents": ["d"] * 17}, "documents"),
             ({"model": name, "query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
             ({"model": name, "query": "q", "documents": ["d"], "max_tokens_per_doc": 9}, "max_tokens_per_doc"),
             ({"model": str(tiny_bert_dir), "query": "q", "documents": ["d"]}, "model"),
             ({"model": str(folders["three-labels"]), "query": "q", "documents": ["d"]}, "model"),
             ({"model": name, "query": "q\ud800", "documents": ["d"]}, "query"),
             ({"model": name, "query": "q", "documents": ["d", "lone \ud800 surrogate"]}, "documents[1]"),
             ({"model": name, "query": "q", "documents": ["lone \ud800 surrogate"]}, "documents[0]"),
             ({"model": "nope", "query": "q", "documents": ["d"]}, "model")]
    for body, param in cases:  # ASCII JSON: lone surrogates travel as \uXXXX escapes, as many clients send them
        answer = httpx.post(f"{server.url}/v1/rerank", content=json.dumps(body).encode(), timeout=30,
                            headers={"content-type": "application/json"})
        assert 400 <= answer.status_code < 500 and answer.json()["error"]["param"] == param, (body, answer.text)
    wrong = httpx.post(f"{server.url}/v1/embeddings", json={"model": name, "input": ["a text"]}, timeout=30)
    assert wrong.status_code == 400 and "send it to /v1/rerank" in wrong.json()["error"]["message"]
    ok = httpx.post(f"{server.url}/v1/rerank", json={"model": name, "query": "q", "documents": [{"text": "d"}]},
                    timeout=30)
    assert ok.status_code == 200 and ok.json()["results"][0]["index"] == 0


@pytest.mark.parametrize("name", ["current", pytest.param("causal", marks=pytest.mark.slow)])
def test_the_conformance_kit_checks_a_reranker_by_its_own_verbs(folders, name):
    from zoo.testing import check_model, format_table

    results = check_model(str(folders[name]))
    assert {r.check for r in results} >= {"score shape and dtype", "pair order kept, whatever the batch",
                                          "rerank sorted by score", "bad pair named", "embedding verbs refused"}
    assert all(r.status == "pass" for r in results), format_table(results)


@pytest.mark.slow
def test_a_reranker_travels_in_a_bundle_and_keeps_its_kind(folders, tmp_path, monkeypatch):
    from zoo.store._bundle import pack, unpack

    saved = zoo.load(folders["plain"], device="cpu", kind="reranker").save(tmp_path / "my-reranker")
    expected = zoo.load(saved, device="cpu").score(PAIRS)
    pack([str(saved)], tmp_path / "models.tar")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "clean-home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    unpack(tmp_path / "models.tar")
    unpacked = zoo.load("my-reranker", device="cpu")
    assert unpacked.kind == "reranker" and unpacked.files.root != saved
    assert np.abs(unpacked.score(PAIRS) - expected).max() <= MAX_ABS
    (unpacked.files.root / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(zoo.IntegrityError):
        zoo.load("my-reranker", device="cpu")


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_hf_names_of_reranker_repositories(folders, fake_hub):
    """A CrossEncoder repository is a reranker by its files; a bare sequence classifier's is one
    when asked, through the same hub download and pinned commit."""
    commit = fake_hub.add_repo("someone/tiny-cross-encoder", folders["current"])
    model = zoo.load(f"hf:someone/tiny-cross-encoder@{commit}", device="cpu")
    assert model.kind == "reranker"
    assert np.abs(model.score(PAIRS) - _theirs(folders["current"]).predict(PAIRS)).max() <= MAX_ABS
    commit = fake_hub.add_repo("someone/tiny-classifier", folders["plain"])
    with pytest.raises(UnsupportedModelKindError, match=r"kind='reranker'"):
        zoo.load(f"hf:someone/tiny-classifier@{commit}", device="cpu")
    assert zoo.load(f"hf:someone/tiny-classifier@{commit}", device="cpu", kind="reranker").kind == "reranker"
