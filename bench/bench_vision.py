"""zoo featurize from JPEG files vs a hand-written timm + DataLoader loop, on EfficientNet-Lite0.

The baseline is what one writes from timm's docs: ``timm.create_model`` in its default layout
(NCHW, eager), the transform from ``resolve_data_config``, a ``Dataset`` that opens each file with
PIL, a ``DataLoader`` with the same workers and batch size, ``forward_head(forward_features(x),
pre_logits=True)`` under ``torch.inference_mode``. Both read the same files; rounds alternate.
Also printed: zoo's end-to-end speed as a share of its own model-only speed (the same batches,
already decoded), which shows how much of the decoding is hidden behind compute.

    python bench/bench_vision.py [--n 640] [--rounds 3] [--workers 1] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
from datasets import jpegs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "zoo-bench" / "jpegs")
    args = parser.parse_args()

    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    import zoo

    paths = jpegs(args.data, args.n)
    ours = zoo.load("efficientnet-lite0", device="cpu")
    # timm's model with the same weights, in timm's default layout.
    model = copy.deepcopy(ours.model).to(memory_format=torch.contiguous_format).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

    class Files(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(paths[i]) as img:
                return transform(img.convert("RGB"))

    def baseline() -> np.ndarray:
        loader = DataLoader(Files(), batch_size=args.batch_size, num_workers=args.workers)
        out = []
        with torch.inference_mode():
            for x in loader:
                out.append(model.forward_head(model.forward_features(x), pre_logits=True))
        return torch.cat(out).numpy()

    def zoo_e2e() -> np.ndarray:
        return ours.featurize(paths, batch_size=args.batch_size, num_workers=args.workers, progress=False)

    decoded = [ours.collate([ours.decoder()(p) for p in paths[i:i + args.batch_size]])
               for i in range(0, min(len(paths), 8 * args.batch_size), args.batch_size)]
    model_items = sum(len(b) for b in decoded)

    def zoo_model_only() -> None:
        with torch.inference_mode():
            for batch in decoded:
                ours.encode_batch(batch)

    print(f"torch threads: {torch.get_num_threads()}, {len(paths)} JPEGs, batch size {args.batch_size}, "
          f"{args.workers} decode worker(s)")
    zoo_model_only()  # warm-up (and BatchNorm folding, built once)
    times: dict[str, list[float]] = {"zoo": [], "timm": [], "model": []}
    outputs = {}
    for _ in range(args.rounds):
        for key, fn in (("zoo", zoo_e2e), ("timm", baseline), ("model", zoo_model_only)):
            began = time.perf_counter()
            outputs[key] = fn()
            times[key].append(time.perf_counter() - began)
    a, b = outputs["zoo"], outputs["timm"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    z, t, m = (statistics.median(times[k]) for k in ("zoo", "timm", "model"))
    print(f"zoo featurize (JPEG to vector):   {len(paths) / z:7.1f} images/s (median of {args.rounds})")
    print(f"timm + DataLoader (JPEG to vector): {len(paths) / t:5.1f} images/s")
    print(f"zoo model only (decoded batches): {model_items / m:7.1f} images/s")
    print(f"ratio zoo / timm + DataLoader: {t / z:.2f}x   min cosine {cos.min():.6f}")
    print(f"zoo end-to-end as share of its model-only speed: {(len(paths) / z) / (model_items / m):.0%}")


if __name__ == "__main__":
    main()
