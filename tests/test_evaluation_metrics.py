"""zoo.evaluation's scores against their references: retrieval metrics equal
sentence-transformers' ``InformationRetrievalEvaluator`` on the same embeddings and judgements;
the probe and k-NN equal scikit-learn called directly on the written split; hand-built cases
whose answer is known (perfect and reversed rankings, ties); and the bootstrap's pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.evaluation._bootstrap import distinguishable, interval, resampled
from zoo.evaluation._duplicates_task import _pairs, _precision_recall, _weight
from zoo.evaluation._labelled import PROBE_MAX_ITER, knn_predict, linear_probe, stratified_split
from zoo.evaluation._retrieval import Cutoffs, id_ranks, per_query_scores, top_k


class _Given:
    """The part of a SentenceTransformer the evaluator calls, answering with fixed embeddings."""

    def __init__(self, rows: dict[str, np.ndarray]) -> None:
        self.rows = rows

    def encode_query(self, sentences, **_):
        import torch

        return torch.tensor(np.stack([self.rows[s] for s in sentences]))


def _theirs(queries: np.ndarray, corpus: np.ndarray, relevant: list[set[int]], ids: list[str], chunk: int):
    import torch
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    query_text = {f"q{i}": f"query {i}" for i in range(len(queries))}
    evaluator = InformationRetrievalEvaluator(
        query_text, {cid: f"doc {cid}" for cid in ids}, {f"q{i}": {ids[j] for j in rel} for i, rel in
                                                         enumerate(relevant)},
        corpus_chunk_size=chunk, score_functions={"cos": cos_sim}, show_progress_bar=False)
    model = _Given({f"query {i}": row for i, row in enumerate(queries)})
    return evaluator.compute_all_metrics(model, corpus_embeddings=torch.tensor(corpus))["cos"]


def _ours(queries, corpus, relevant, ids, **blocks):
    cutoffs = Cutoffs()
    ranked = top_k(queries, corpus, cutoffs.deepest, id_ranks(ids), **blocks)
    return {name: float(v.mean()) for name, v in per_query_scores(ranked, relevant, cutoffs).items()}


@pytest.fixture(scope="module")
def judged():
    """60 queries over 400 corpus rows, 1 to 4 relevant each (some ranked far down), and exact
    ties: 30 corpus rows repeat others, so ties break by corpus id."""
    rng = np.random.default_rng(3)
    corpus = rng.normal(size=(400, 24)).astype(np.float32)
    corpus[370:] = corpus[:30]
    queries = rng.normal(size=(60, 24)).astype(np.float32)
    relevant = []
    for i in range(60):
        rel = set(rng.choice(400, size=int(rng.integers(1, 5)), replace=False).tolist())
        first = next(iter(rel))
        queries[i] += 2.5 * corpus[first] if i % 3 else 0  # a third stay random: relevant rows ranked anywhere
        relevant.append(rel)
    relevant[5] = {0, 370}  # a row and its exact copy
    ids = [f"d{j:03d}" for j in range(400)][::-1]  # ids in the opposite order to positions
    return queries, corpus, relevant, ids


@pytest.mark.parametrize("chunk", [50_000, 37])
def test_retrieval_metrics_equal_sentence_transformers(judged, chunk):
    """Every metric ST reports, on the same embeddings, judgements and ids, to 1e-6; zoo's corpus
    blocks and ST's corpus chunks of odd size give the same figures."""
    queries, corpus, relevant, ids = judged
    theirs = _theirs(queries, corpus, relevant, ids, chunk)
    ours = _ours(queries, corpus, relevant, ids, corpus_block=41, query_block=7)
    assert ours == pytest.approx(_ours(queries, corpus, relevant, ids), abs=1e-12)
    compared = 0
    for family, by_k in theirs.items():
        for k, value in by_k.items():
            assert ours[family.replace("@k", f"@{k}")] == pytest.approx(value, abs=1e-6), (family, k)
            compared += 1
    assert compared == 15
    assert 0.05 < ours["ndcg@10"] < 0.95  # neither trivial nor hopeless, so the comparison means something


def test_hand_built_rankings():
    """Perfect and reversed rankings and a tie, where the figures are known by hand."""
    corpus = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0.5, 0, 0]], dtype=np.float32)  # ranks rows 0, 1, then 2 and 3 tied at 0
    ids = ["a", "b", "c", "d"]
    perfect = _ours(queries, corpus, [{0, 1}], ids)
    assert perfect["recall@1"] == 0.5 and perfect["recall@3"] == 1.0
    assert perfect["ndcg@10"] == pytest.approx(1.0) and perfect["map@100"] == pytest.approx(1.0)
    assert perfect["mrr@10"] == 1.0 and perfect["precision@3"] == pytest.approx(2 / 3)
    reversed_ = _ours(queries, corpus, [{2, 3}], ids)  # the relevant rows ranked last (third and fourth)
    assert reversed_["accuracy@1"] == 0.0 and reversed_["mrr@10"] == pytest.approx(1 / 3)
    assert reversed_["map@100"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    ideal = 1 + 1 / math.log2(3)
    assert reversed_["ndcg@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / ideal)
    # rows 2 and 3 tie: the lower id ranks first, so relevance of "d" alone is found fourth
    assert _ours(queries, corpus, [{3}], ids)["mrr@10"] == pytest.approx(1 / 4)
    assert _ours(queries, corpus, [{3}], ["a", "b", "z", "c"])["mrr@10"] == pytest.approx(1 / 3)


def test_a_row_does_not_depend_on_its_block():
    """The top-k of each query is the same whatever the query and corpus blocks."""
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(300, 16)).astype(np.float32)
    corpus[200:] = corpus[:100]  # ties across blocks
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    ranks = id_ranks(list(range(300)))
    reference = top_k(queries, corpus, 20, ranks)
    for query_block, corpus_block in ((1, 7), (13, 64), (50, 299)):
        assert (top_k(queries, corpus, 20, ranks, query_block=query_block, corpus_block=corpus_block)
                == reference).all()


def test_probe_and_knn_equal_scikit_learn_called_directly():
    """The written split and chosen C, given to scikit-learn by hand, give the same predictions."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    digits = load_digits()
    rows, labels = digits.data.astype(np.float32), digits.target.astype(str)
    split = stratified_split(labels, 0.5, seed=0)
    assert sorted(split.train + split.test) == list(range(len(labels)))
    assert {labels[i] for i in split.test} == set(labels)
    probe = linear_probe(rows, labels, split)
    direct = LogisticRegression(C=probe.c, max_iter=PROBE_MAX_ITER).fit(rows[split.train], labels[split.train])
    assert (direct.predict(rows[split.test]) == probe.predictions).all()
    assert probe.validation_accuracy[probe.c] == max(probe.validation_accuracy.values())
    assert (probe.predictions == labels[split.test]).mean() > 0.9
    knn = KNeighborsClassifier(n_neighbors=10, metric="cosine").fit(rows[split.train], labels[split.train])
    assert (knn.predict(rows[split.test]) == knn_predict(rows, labels, split)).all()


def test_bootstrap_is_paired_and_fixed_by_its_seed():
    rng = np.random.default_rng(1)
    a = rng.random(200)
    b = a - 0.01  # worse by the same amount on every item: distinguishable only when paired
    one = resampled(200, {"m": a}, seed=4)["m"]
    assert (one == resampled(200, {"m": a}, seed=4)["m"]).all()
    band = interval(one)
    assert band.low < a.mean() < band.high
    two = resampled(200, {"m": b}, seed=4)["m"]
    assert interval(two).high > band.low  # their own intervals overlap ...
    assert distinguishable(one, two)  # ... but the paired difference is never 0
    assert not distinguishable(one, resampled(200, {"m": a[::-1]}, seed=4)["m"])
    # a mean recomputed on the drawn positions equals the per-item path
    again = resampled(200, {}, lambda drawn: {"m": float(a[drawn].mean())}, seed=4)["m"]
    assert again == pytest.approx(one)


def test_duplicate_pairs_by_hand():
    """Known groups {0,1,2}, {3,4}; found {0,1}, {3,4,5}: 2 of 4 found pairs are right, 2 of 4 known."""
    known, found = _pairs([[0, 1, 2], [3, 4], [5]], 6), _pairs([[0, 1], [3, 4, 5]], 6)
    hits = np.intersect1d(known, found)
    weight = np.ones(6)
    scores = _precision_recall(*(_weight(k, weight, 6) for k in (hits, found, known)))
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    weight[0] = 0  # a resample without item 0 loses the pairs it is in
    scores = _precision_recall(*(_weight(k, weight, 6) for k in (hits, found, known)))
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 2)


def test_pairs_judged_by_content_and_beir_tables_read_as_the_evaluator_reads_them(tmp_path):
    """A repeated query has all its positives relevant, a repeated positive is one corpus item,
    extra items answer nothing; a BEIR query with no relevant item is left out and counted."""
    from zoo.evaluation._retrieval_task import Retrieval, judge_pairs, pair_scores

    judged = judge_pairs(["q1", "q2", "q1", "q3"], ["a", "b", "c", "a"], extra=["z", "b"])
    assert judged.queries == ["q1", "q2", "q3"] and judged.corpus == ["a", "b", "c", "z"]
    assert judged.relevant == [{0, 2}, {1}, {0}]
    assert judged.query_at == [0, 1, 3] and judged.corpus_at == [0, 1, 2, 4]
    rows = np.eye(4, dtype=np.float32)  # pair i's anchor and positive are both row i
    only_first = Cutoffs(accuracy=(1,), precision_recall=(), mrr=(), ndcg=(), map=())
    rows[3] = [0, 0, 1, 0]  # q3 (pair 3) nearest to c, which is not its positive
    assert pair_scores(rows, rows, judge_pairs(["q1", "q2", "q1", "q3"], ["a", "b", "c", "a"]),
                       only_first) == {"accuracy@1": pytest.approx(2 / 3)}
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "cat"}\n{"_id": "q2", "text": "dog"}\n')
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "a cat"}\n{"_id": "d2", "text": "a dog"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t0\n")
    task = Retrieval(queries=tmp_path / "queries.jsonl", corpus=tmp_path / "corpus.jsonl", qrels=tmp_path / "qrels.tsv")
    assert task.judged.queries == ["cat"] and task.judged.relevant == [{0}] and task.judged.left_out == 1
    assert task.describe(0)["queries_left_out"] == 1
