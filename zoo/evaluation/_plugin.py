"""The built-in evaluation plugin: ``zoo evaluate``, registered as any plugin's verb is."""

from __future__ import annotations

import argparse
from typing import Any

from zoo.errors import ZooError
from zoo.hookspecs import RegisterCommand, hookimpl

from . import TASKS
from ._evaluate import evaluate

#: the flags each task reads; any other data flag given is refused rather than ignored
_TASK_FLAGS = {
    "retrieval": ("pairs", "queries", "corpus", "qrels", "query_column", "positive_column", "corpus_column",
                  "query_prompt", "corpus_prompt", "reverse"),
    "classification": ("items", "text_column", "label_column", "test_fraction", "k"),
    "zero-shot": ("items", "text_column", "label_column", "label_names", "templates"),
    "clustering": ("items", "text_column", "label_column"),
    "duplicates": ("items", "text_column", "label_column", "threshold"),
}
_DATA_FLAGS = sorted({flag for flags in _TASK_FLAGS.values() for flag in flags})


@hookimpl
def zoo_register_commands(register: RegisterCommand) -> None:
    """``zoo evaluate``."""
    p = register("evaluate", _cmd_evaluate, help="compare models on your own data: a leaderboard with intervals")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="names, folders or backend:id names; NAME[key=value,...] makes a variant "
                        "(truncate_dim, layer, pool, normalize, prompt, query_prompt, corpus_prompt, runtime)")
    p.add_argument("--task", required=True, choices=list(_TASK_FLAGS))
    p.add_argument("-o", "--output", help="folder for leaderboard.json, leaderboard.parquet and leaderboard.png")
    data = p.add_argument_group("retrieval data: --pairs, or --queries, --corpus and --qrels (BEIR's layout)")
    data.add_argument("--pairs", help="a CSV / TSV / JSONL / parquet table of (query, positive) pairs")
    data.add_argument("--query-column", help="the pairs' query column (default anchor)")
    data.add_argument("--positive-column", help="the pairs' positive column (default positive)")
    data.add_argument("--queries", help="a table of queries: _id (or id) and text")
    data.add_argument("--corpus", help="a table of corpus items (_id and text), or, beside --pairs, more items "
                                       "that answer nothing: a text file, a table or a folder of media")
    data.add_argument("--corpus-column", help="the corpus table's text column (default text)")
    data.add_argument("--qrels", help="judgements: query-id, corpus-id and score columns (score > 0 is relevant)")
    data.add_argument("--reverse", action="store_true", default=None,
                      help="also rank the queries for each corpus item (image -> text, for caption-image pairs)")
    data.add_argument("--query-prompt", help="the prompt name queries take (default: the model's 'query', if any)")
    data.add_argument("--corpus-prompt", help="the prompt name corpus items take (default: 'document', 'passage' "
                                              "or 'corpus', the first the model declares)")
    items = p.add_argument_group("labelled items (classification, zero-shot, clustering, duplicates)")
    items.add_argument("--items", help="a folder with a subfolder per class, or a table of items and labels")
    items.add_argument("--text-column", help="the table's item column: texts or file paths (default text)")
    items.add_argument("--label-column", help="the table's label column (default label; duplicates: group)")
    items.add_argument("--test-fraction", type=float, help="classification: the share held out (default 0.5)")
    items.add_argument("--k", type=int, help="classification: neighbours of the k-NN vote (default 10)")
    items.add_argument("--label-names", help="zero-shot: texts for labels, LABEL=TEXT,... (default: the labels)")
    items.add_argument("--template", action="append", dest="templates",
                       help="zero-shot: text around each label, e.g. 'a photo of a {}.' (repeat to average)")
    items.add_argument("--threshold", type=float, help="duplicates: the cosine at which items are duplicates "
                                                        "(default 0.9, as zoo dedup)")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="fixes the split, k-means and the bootstrap (default 0)")
    run.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    run.add_argument("--cache-dir", help="where embeddings are kept between runs (default ZOO_HOME/evaluations)")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run.add_argument("--runtime", help="torch, onnx or openvino, for every model (a model's [runtime=...] wins)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress")


def task_from_args(args: argparse.Namespace) -> Any:
    """The task the flags describe; a data flag the task does not read is refused by name."""
    given = {flag: getattr(args, flag) for flag in _DATA_FLAGS if getattr(args, flag) is not None}
    stray = sorted(set(given) - set(_TASK_FLAGS[args.task]))
    if stray:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in stray)
        raise ZooError(f"--task {args.task} does not read {flags}; it reads "
                       + ", ".join("--" + f.replace("_", "-") for f in _TASK_FLAGS[args.task]))
    if "label_names" in given:
        given["label_names"] = _label_names(given["label_names"])
    return TASKS[args.task](**given)


def _label_names(text: str) -> dict[str, str]:
    names = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        label, equals, name = part.partition("=")
        if not equals or not label.strip() or not name.strip():
            raise ZooError(f"--label-names {part!r}: write LABEL=TEXT, e.g. comp=computers")
        names[label.strip()] = name.strip()
    return names


def _cmd_evaluate(args: argparse.Namespace) -> int:
    board = evaluate(args.models, task_from_args(args), output=args.output, cache_dir=args.cache_dir, seed=args.seed,
                     resamples=args.resamples, batch_size=args.batch_size, device=args.device, runtime=args.runtime,
                     progress=not args.quiet)
    print(board)
    if args.output:
        print(f"wrote {args.output}/leaderboard.json, leaderboard.parquet and leaderboard.png")
    return 0
