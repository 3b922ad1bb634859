"""The sparse-embedding plugin (examples/zoo-sparse) against sentence-transformers' ``SparseEncoder``
on the same folder, texts and batch size: encoding, and searching the encoded corpus.

The model is a SPLADE over MiniLM-L6's real body: ``BertForMaskedLM`` from the MiniLM weights (its
masked-LM transform is new, seeded; the decoder is tied to MiniLM's word embeddings; its output
bias is lowered so that a row keeps about 150 terms, as a trained SPLADE's document rows do), then
sentence-transformers' ``SpladePooling``, saved by ``SparseEncoder.save``. No trained SPLADE weights
are on this machine, so this is the size, density and speed of a MiniLM SPLADE; its rows have no
meaning.
The texts are Debian fortunes.

Sides, each in its own interpreter (see ``sides.py``), alternating, ``--rounds`` rounds:

- ``zoo``: ``zoo.load(folder).featurize(texts)`` (CSR rows), then the corpus indexed with the
  plugin's inverted store (its postings built, as ``zoo index`` writes them) and ``--queries``
  queries searched (top 10).
- ``st``: ``SparseEncoder(folder).encode(texts)`` (a sparse tensor), then the queries scored with
  ``SparseEncoder.similarity`` against every document and the top 10 taken with ``torch.topk``.

Prints each side's median texts per second and queries per second, the ratios, and the largest
difference between the two sides' rows (the first 256, densified) and top-10 ids.

    pip install ./examples/zoo-sparse
    python bench/bench_sparse.py [--texts 2000] [--queries 200] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import bench_inputs
import numpy as np
from sides import retrieval_runs

SHOWN = 256  # rows each side hands back, densified, for the comparison
ACTIVE = 150  # terms a row keeps, about a trained SPLADE document's


def splade_folder(root: Path) -> Path:
    """MiniLM-L6's body under a seeded masked-LM head, pooled by SpladePooling, saved by ``SparseEncoder.save``."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import AutoTokenizer, BertForMaskedLM

    minilm = bench_inputs.minilm_dir()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlm = BertForMaskedLM.from_pretrained(str(minilm))
        tokenizer = AutoTokenizer.from_pretrained(str(minilm))
        _sparsify(mlm, tokenizer, bench_inputs.fortunes(64), ACTIVE)
        mlm.save_pretrained(root / "mlm")
        tokenizer.save_pretrained(root / "mlm")
        transformer = Transformer(str(root / "mlm"), transformer_task="fill-mask", max_seq_length=256)
        SparseEncoder(modules=[transformer, SpladePooling("max")]).save(str(root / "splade"), create_model_card=False)
    return root / "splade"


def _sparsify(mlm: Any, tokenizer: Any, texts: list[str], active: int) -> None:
    """Lower the new head's output bias until a text's SPLADE row keeps about ``active`` terms, the
    density of a trained SPLADE's document rows (a new head leaves almost every term active)."""
    import torch

    with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        logits = mlm(**batch).logits.masked_fill(~batch["attention_mask"].bool()[..., None], -1e9)
        peaks = logits.max(dim=1).values  # SpladePooling's max over tokens, before its activation
        shift = peaks.sort(dim=1, descending=True).values[:, active].median()
        mlm.cls.predictions.bias -= shift


def _split(texts: list[str], queries: int) -> tuple[list[str], list[str]]:
    return texts[queries:], [t.splitlines()[0][:80] for t in texts[:queries]]


def zoo_side(folder: str, texts: list[str], queries: int, batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    from zoo_sparse.rows import SparseRows

    import zoo

    model = zoo.load(folder, device="cpu")
    corpus, asked = _split(texts, queries)
    model.featurize(corpus[:64], batch_size=batch_size, progress=False)  # warm-up
    began = time.perf_counter()
    rows = model.featurize(corpus, batch_size=batch_size, progress=False)
    encoded = time.perf_counter() - began
    store = SparseRows().new_store(model.embed_dim, "inverted", {})
    store.add(rows)
    store.postings()  # built by `zoo index`, read back by `zoo search`
    query_rows = model.featurize(asked, batch_size=batch_size, progress=False)
    began = time.perf_counter()
    _, top = store.search(query_rows, 10)
    searched = time.perf_counter() - began
    return rows[:SHOWN].toarray(), {"seconds": encoded, "search_seconds": searched, "top": top.tolist(),
                                    "nnz_per_row": rows.nnz / rows.shape[0]}


def st_side(folder: str, texts: list[str], queries: int, batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    import torch
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(folder, device="cpu", local_files_only=True)
    corpus, asked = _split(texts, queries)
    model.encode(corpus[:64], batch_size=batch_size, show_progress_bar=False)  # warm-up
    began = time.perf_counter()
    rows = model.encode(corpus, batch_size=batch_size, show_progress_bar=False, convert_to_sparse_tensor=True)
    encoded = time.perf_counter() - began
    query_rows = model.encode(asked, batch_size=batch_size, show_progress_bar=False, convert_to_sparse_tensor=True)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
        top = torch.topk(model.similarity(query_rows, rows), 10, dim=1).indices
    searched = time.perf_counter() - began
    shown = torch.stack([rows[i].to_dense() for i in range(min(SHOWN, len(corpus)))]).numpy()
    return shown, {"seconds": encoded, "search_seconds": searched, "top": top.tolist()}


def main() -> None:
    args, runs = retrieval_runs(__file__, __doc__ or "", {"zoo": zoo_side, "st": st_side}, splade_folder)
    speed = {side: statistics.median(args.texts / r["seconds"] for r in rs) for side, rs in runs.items()}
    qps = {side: statistics.median(args.queries / r["search_seconds"] for r in rs) for side, rs in runs.items()}
    for side, results in runs.items():
        each = ", ".join(f"{args.texts / r['seconds']:.1f}" for r in results)
        print(f"{side:>4}: {speed[side]:7.1f} texts/s (median of {len(results)}: {each}); "
              f"{qps[side]:8.1f} queries/s over {args.texts} documents")
    gap = float(np.abs(runs["zoo"][0]["vectors"] - runs["st"][0]["vectors"]).max())
    same_top = float(np.mean([a == b for a, b in zip(runs["zoo"][0]["top"], runs["st"][0]["top"])]))
    print(f"zoo / st: {speed['zoo'] / speed['st']:.2f}x texts per second, {qps['zoo'] / qps['st']:.2f}x queries "
          f"per second; largest row difference {gap:.2e}; identical top-10 lists {same_top:.3f}; "
          f"{runs['zoo'][0]['nnz_per_row']:.0f} active terms per row (batch {args.batch_size})")
    print(json.dumps({"texts_per_s": speed, "queries_per_s": qps, "max_abs_diff": gap, "same_top10": same_top}))


if __name__ == "__main__":
    main()
