"""Which model is best on your data: ``zoo.evaluate`` / ``zoo evaluate`` scores several models on
the same items and ranks them, with bootstrap confidence intervals.

>>> from zoo.evaluation import Retrieval
>>> board = zoo.evaluate(["minilm-l6", "minilm-l6[truncate_dim=128]", "runs/tuned"],
...                      Retrieval(pairs="pairs.csv", query_column="question", positive_column="answer"),
...                      output="eval/")
>>> print(board)

Tasks: :class:`Retrieval` (recall@k, precision@k, MRR@10, nDCG@10, MAP@100, as
sentence-transformers' ``InformationRetrievalEvaluator`` computes them), :class:`Classification`
(k-NN and linear-probe accuracy and macro-F1), :class:`ZeroShot`, :class:`Clustering`
(V-measure) and :class:`Duplicates` (pairwise precision and recall). Rows are embedded through
``zoo embed``'s resumable path and cached by provenance and content (:mod:`._cache`).
"""

from ._bootstrap import Interval
from ._candidates import Candidate
from ._duplicates_task import Duplicates
from ._evaluate import evaluate
from ._labelled_tasks import Classification, Clustering, ZeroShot
from ._report import Leaderboard, Row
from ._retrieval import Cutoffs
from ._retrieval_task import Retrieval
from ._task import Task

#: the tasks by the name ``zoo evaluate --task`` takes
TASKS: dict[str, type[Task]] = {t.name: t for t in (Retrieval, Classification, ZeroShot, Clustering, Duplicates)}

__all__ = ["TASKS", "Candidate", "Classification", "Clustering", "Cutoffs", "Duplicates", "Interval", "Leaderboard",
           "Retrieval", "Row", "Task", "ZeroShot", "evaluate"]
