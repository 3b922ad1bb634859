"""``zoo evaluate`` at scale: five models over a 100,000-item corpus and 1,000 queries, in one
process, with its wall time and peak memory.

    python bench/bench_evaluate_scale.py [--corpus 100000] [--queries 1000]

The models are a small randomly initialised BERT (4 layers, 128 wide, MiniLM's real tokenizer,
saved with ``save_pretrained``) and four variants of it (truncated, another layer), so that the
embedding of 500,000 rows stays minutes on a CPU: what is measured is the rest, the cache, the
blockwise ranking and the bootstrap, which do not depend on the model's size. The corpus is
short synthetic texts; each query is the first half of a corpus text, whose whole text is its
one relevant item.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench_inputs import minilm_dir, short_texts


def tiny_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    minilm = minilm_dir()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=256, max_position_embeddings=128)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, folder / name)
    return folder


def main() -> None:
    import warnings

    import zoo
    from zoo.evaluation import Retrieval

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as work:
        folder = tiny_bert(Path(work) / "tiny-bert")
        corpus = short_texts(args.corpus, seed=1)
        pairs = [(" ".join(text.split()[:len(text.split()) // 2]), text) for text in corpus[:args.queries]]
        task = Retrieval(pairs=pairs, corpus=corpus[args.queries:])
        models = [str(folder), *(f"{folder}[{s}]" for s in ("truncate_dim=96", "truncate_dim=64", "truncate_dim=32",
                                                           "layer=-2"))]
        began = time.perf_counter()
        board = zoo.evaluate(models, task, cache_dir=Path(work) / "cache", batch_size=256)
        first = time.perf_counter() - began
        began = time.perf_counter()
        zoo.evaluate(models, task, cache_dir=Path(work) / "cache", batch_size=256, progress=False)
        again = time.perf_counter() - began
    print(board)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\n{len(models)} models, {len(task.judged.queries)} queries, {len(task.judged.corpus)} corpus items: "
          f"{first:.0f} s embedding and scoring, {again:.0f} s again from the cache; peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
