"""The built-in training plugin: finetuning (the ``zoo_finetune`` hook) and the finetuned model
format (recognised in folders, loaded on top of its base model).

The core knows none of this: it calls the hooks, and this plugin answers them, as a third-party
trainer would.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.catalog._loader import load
from zoo.catalog._spec import ModelSpec
from zoo.core._encoder import Encoder
from zoo.core._model import Model
from zoo.embeddings._inputs import open_inputs
from zoo.store._manifest import MANIFEST, is_manifest_of, read_json
from zoo.store._model_files import ModelFiles

from ..hookspecs import RegisterAdapter, RegisterCommand, hookimpl
from ._config import FinetuneConfig
from ._contrastive import train_contrastive
from ._finetuned import FORMAT, FinetunedCheckpoint
from ._loop import finetune
from ._merge import merge
from ._mining import SAMPLING, mine_negatives


@hookimpl
def zoo_register_adapters(register: RegisterAdapter) -> None:
    """Finetuned checkpoints load through the same hooks as any other model."""
    register(FinetunedCheckpoint.backend, FinetunedCheckpoint)


@hookimpl(tryfirst=True)
def zoo_spec_from_path(path: Path) -> ModelSpec | None:
    """A folder that ``finetune`` wrote: its ``zoo.json`` names the base model it requires."""
    if not is_manifest_of(path, FORMAT):
        return None
    return FinetunedCheckpoint.spec_for_path(path, read_json(path / MANIFEST))


@hookimpl
def zoo_load_pretrained(spec: ModelSpec, files: ModelFiles, adapter_class: type[Encoder],
                        requires: Mapping[str, Model]) -> Model | None:
    """A finetuned model is its base (already loaded by the loader) with the saved head on top."""
    if not issubclass(adapter_class, FinetunedCheckpoint):
        return None
    return FinetunedCheckpoint.attach(spec, files, requires[spec.requires[0]])


@hookimpl
def zoo_register_commands(register: RegisterCommand) -> None:
    """``zoo merge`` and ``zoo mine-negatives``: verbs of this plugin, registered as any plugin's are."""
    _merge_command(register)
    _mining_command(register)


def _merge_command(register: RegisterCommand) -> None:
    p = register("merge", _cmd_merge, help="interpolate a finetuned model with its base (WiSE-FT)")
    p.add_argument("base", help="the model it was finetuned from")
    p.add_argument("tuned", help="the folder finetune wrote")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="the finetuned weights' share: 0 gives the base, 1 the finetuned model (default 0.5)")
    p.add_argument("-o", "--output", required=True, help="output folder (zoo.load reads it back)")


def _mining_command(register: RegisterCommand) -> None:
    p = register("mine-negatives", _cmd_mine, help="add hard negatives to (anchor, positive) pairs, for finetune")
    p.add_argument("model", help="the model that ranks the candidates")
    p.add_argument("pairs", help="a CSV / TSV / JSONL / parquet table of pairs")
    p.add_argument("-o", "--output", required=True, help="the triplet table to write (.csv .tsv .jsonl .parquet)")
    p.add_argument("--corpus", help="more candidates: a text file (one per line) or a table (--corpus-column)")
    p.add_argument("--corpus-column", default="text", help="the corpus table's column (default text)")
    p.add_argument("--anchor-column", default="anchor")
    p.add_argument("--positive-column", default="positive")
    p.add_argument("--num-negatives", type=int, default=3, help="negatives per pair (default 3)")
    p.add_argument("--range-min", type=int, default=0, help="skip this many nearest candidates (default 0)")
    p.add_argument("--range-max", type=int, help="consider candidates up to this rank")
    p.add_argument("--relative-margin", type=float,
                   help="keep a negative only below positive - |positive| * MARGIN (0.05: NV-Retriever's choice)")
    p.add_argument("--absolute-margin", type=float, help="keep a negative only below positive - MARGIN")
    p.add_argument("--max-score", type=float, help="drop candidates scoring above this")
    p.add_argument("--min-score", type=float, help="drop candidates scoring below this")
    p.add_argument("--sampling", choices=SAMPLING, default="top", help="the best negatives left, or a random draw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--query-prompt", help="prompt name for the anchors (default: the model's 'query', if any)")
    p.add_argument("--corpus-prompt", help="prompt name for the candidates (default: 'document', 'passage' or "
                                           "'corpus', the first the model declares)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _cmd_mine(args: argparse.Namespace) -> int:
    model = load(args.model, device=args.device)
    corpus = None
    if args.corpus:  # read as zoo embed reads its inputs: lines, a table's column, or a folder of media
        corpus = [item for _, item in open_inputs(args.corpus, modality=model.modality, column=args.corpus_column)]
    mined = mine_negatives(
        model, args.pairs, corpus=corpus, num_negatives=args.num_negatives,
        range_min=args.range_min, range_max=args.range_max, max_score=args.max_score, min_score=args.min_score,
        absolute_margin=args.absolute_margin, relative_margin=args.relative_margin, sampling=args.sampling,
        seed=args.seed, query_prompt=args.query_prompt, corpus_prompt=args.corpus_prompt,
        batch_size=args.batch_size, anchor_column=args.anchor_column, positive_column=args.positive_column,
        progress=not args.quiet)
    mined.write(args.output, anchor_column=args.anchor_column, positive_column=args.positive_column)
    print(mined.summary())
    columns = "" if (args.anchor_column, args.positive_column) == ("anchor", "positive") else \
        f" --anchor-column {args.anchor_column} --positive-column {args.positive_column}"
    print(f"wrote {len(mined)} triplets to {args.output}; train on them with:\n"
          f"  zoo finetune {args.model} {args.output} -o DIR --objective contrastive{columns}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    out = merge(args.base, args.tuned, args.alpha, args.output)
    print(f"wrote {out}: {args.alpha:g} of the way from {args.base} to {args.tuned} (zoo.load reads it)")
    return 0


@hookimpl
def zoo_finetune(model: Model, train: Any, val: Any, config: FinetuneConfig) -> Any:
    """zoo's own training loops: a classifier (:mod:`zoo.training._loop`) or the embedding itself
    (:mod:`zoo.training._contrastive`)."""
    if config.objective == "contrastive":
        return train_contrastive(model, train, val, config)
    return finetune(model, train, val, config)
