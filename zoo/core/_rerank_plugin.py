"""The built-in reranking plugin: ``zoo rerank``, registered as any plugin's verb is.

``zoo rerank MODEL QUERY DOCS`` orders the documents of ``DOCS`` (a text file, one per line, or a
CSV / TSV / JSONL / parquet column, as ``zoo embed`` reads them) by a reranker's score against
``QUERY``. ``zoo search --rerank`` reranks an index's candidates the same way.
"""

from __future__ import annotations

import argparse
import json

from zoo.catalog._loader import load
from zoo.embeddings._inputs import open_inputs
from zoo.errors import ZooError
from zoo.hookspecs import RegisterCommand, hookimpl


@hookimpl
def zoo_register_commands(register: RegisterCommand) -> None:
    """``zoo rerank``."""
    p = register("rerank", _cmd_rerank, help="order documents by a reranker's score against a query")
    p.add_argument("name", metavar="MODEL", help="a reranker: name, hf:org/name, or a CrossEncoder folder")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("documents", metavar="DOCS", help="a text file (one document per line), or a CSV / TSV / JSONL / "
                                                     "parquet table (see --column)")
    p.add_argument("--column", help="the documents' column of a table (default: text)")
    p.add_argument("--id-column", help="a table's column of document ids (default: the row number)")
    p.add_argument("-k", "--top-k", type=int, help="show the best K (default: all)")
    p.add_argument("--prompt", help="a prompt the reranker declares (its default applies otherwise)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print [{id, score, text}] best first")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _cmd_rerank(args: argparse.Namespace) -> int:
    model = load(args.name, device=args.device, kind="reranker")
    inputs = open_inputs(args.documents, modality=model.tower()[0], column=args.column, id_column=args.id_column)
    if inputs.kind not in ("lines", "table"):
        raise ZooError(f"{args.documents} is not a text file or a table: zoo rerank ranks the lines of a text file, "
                       "or a CSV / TSV / JSONL / parquet column (--column)")
    ids, documents = zip(*inputs) if len(inputs) else ((), ())
    ranked = model.rerank(args.query, list(documents), top_k=args.top_k, prompt=args.prompt,
                          batch_size=args.batch_size, progress=not args.quiet)
    if args.json:
        print(json.dumps([{"id": ids[r.index], "score": r.score, "text": documents[r.index]} for r in ranked],
                         indent=2))
        return 0
    print(f"{args.query}  ({model.name}'s score, id, text; {len(ranked)} of {len(documents)} from "
          f"{inputs.description})")
    for rank, r in enumerate(ranked, 1):
        text = " ".join(str(documents[r.index]).split())
        print(f"  {rank:>3}. {r.score:.4f}  {ids[r.index]}  {text[:100]}{'...' if len(text) > 100 else ''}")
    return 0
