"""zoo featurize (or ``zoo embed``) from JPEG files vs a hand-written timm + DataLoader loop, on
EfficientNet-Lite0.

The baseline is what one writes from timm's docs: ``timm.create_model`` in its default layout
(NCHW, eager) with the same weights, the transform from ``resolve_data_config``, a ``Dataset`` that
opens each file with PIL, a ``DataLoader`` with the same workers and batch size, and
``forward_head(forward_features(x), pre_logits=True)`` under ``torch.inference_mode``. Each side
runs in its own interpreter (see ``sides.py``), alternating, after a warm-up pass on two batches.
zoo runs once per runtime (``torch``, and on the CPU ``onnx`` and ``openvino``: the same weights
exported, see ``zoo.core._compiled``) and, on a GPU, once per image decoding (``device``: JPEGs decoded
by nvJPEG and transformed on the GPU; ``pil``: on the CPU in the workers). ``--embed`` times
``zoo embed`` into a parquet file instead of featurize. Also printed: each one's end-to-end speed
as a share of its own model-only speed (the same batches, already decoded), which shows how much of
the decoding is hidden behind compute.

    python bench/bench_vision.py [--n 640] [--rounds 3] [--workers 1] [--batch-size 32] [--device cpu]
    python bench/bench_vision.py --device cuda --workers 8 --batch-size 256 --n 4096 --embed
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_inputs import jpegs
from sides import alternate, child, min_cosine


def zoo_side(paths: list[str], args: argparse.Namespace, runtime: str = "torch",
             decoding: str = "pil") -> tuple[np.ndarray, dict[str, Any]]:
    import torch

    import zoo
    from zoo.core._allocator import keep_freed_memory

    ours = zoo.load("efficientnet-lite0", device=args.device, runtime=runtime)
    ours.encoder.image_decoding = decoding
    encode = ours.compiled.forward(ours.encoder.resolve_pool(None)) if ours.compiled else ours.encoder.encode_batch
    ours.featurize(paths[:2 * args.batch_size], batch_size=args.batch_size, progress=False)
    began = time.perf_counter()
    vectors = embed_files(ours, paths, args) if args.embed else \
        ours.featurize(paths, batch_size=args.batch_size, num_workers=args.workers, progress=False)
    seconds = time.perf_counter() - began

    decode = ours.encoder.decode
    batches = [ours.encoder.collate([decode(p) for p in paths[i:i + args.batch_size]])
               for i in range(0, min(len(paths), 8 * args.batch_size), args.batch_size)]
    with keep_freed_memory(), torch.inference_mode():  # as featurize runs the model
        encode(batches[0])
        began = time.perf_counter()
        for batch in batches:
            encode(batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        model_seconds = time.perf_counter() - began
    return vectors, {"seconds": seconds, "model_items": sum(len(b) for b in batches),
                     "model_seconds": model_seconds, "threads": torch.get_num_threads()}


def embed_files(model: Any, paths: list[str], args: argparse.Namespace) -> np.ndarray:
    """``zoo embed`` of ``paths`` (listed in a parquet table's column) into a parquet file, read back."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoo.embeddings._embed import embed_to_file
    from zoo.embeddings._inputs import open_inputs

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "inputs.parquet"
        pq.write_table(pa.table({"path": paths}), table)
        inputs = open_inputs(str(table), modality=model.modality, column="path")
        embed_to_file(model, inputs, Path(tmp) / "out.parquet", batch_size=args.batch_size,
                      num_workers=args.workers, progress=False)
        return np.stack(pq.read_table(Path(tmp) / "out.parquet").column("embedding").to_numpy(zero_copy_only=False))


def timm_side(paths: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from zoo.adapters.timm import remap_in_order
    from zoo.catalog._loader import locate_files, resolve

    spec = resolve("efficientnet-lite0")  # only to find the weights file; zoo runs nothing here
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(locate_files(spec).root / spec.config["weights"], weights_only=True)
    model.load_state_dict(remap_in_order(state, model.state_dict()))
    model.to(args.device).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

    class Files(Dataset):
        def __init__(self, paths: list[str]) -> None:
            self.paths = paths

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            with Image.open(self.paths[i]) as img:
                return transform(img.convert("RGB"))

    def run(paths: list[str]) -> np.ndarray:
        loader = DataLoader(Files(paths), batch_size=args.batch_size, num_workers=args.workers)
        with torch.inference_mode():
            return torch.cat([model.forward_head(model.forward_features(x.to(args.device)), pre_logits=True).cpu()
                              for x in loader]).numpy()

    run(paths[:2 * args.batch_size])
    began = time.perf_counter()
    vectors = run(paths)
    return vectors, {"seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "zoo-bench" / "jpegs")
    parser.add_argument("--device", default="cpu", help="where both sides run the model (cpu, cuda)")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "openvino"],
                        help="zoo's runtimes to run (on the CPU; a GPU runs torch)")
    parser.add_argument("--decodings", nargs="+", choices=["device", "pil"],
                        help="zoo's image decodings to run (default: device and pil on a GPU, pil on the CPU)")
    parser.add_argument("--embed", action="store_true", help="time zoo embed into a parquet file, not featurize")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    paths = jpegs(args.data, args.n)
    runtimes = args.runtimes if args.device == "cpu" else ["torch"]
    decodings = args.decodings or (["pil"] if args.device == "cpu" else ["device", "pil"])
    sides = {"-".join(["zoo"] + [r] * (r != "torch") + [d] * (len(decodings) > 1 and d != decodings[0])): (r, d)
             for r in runtimes for d in decodings}
    if args.side:
        child(args.side, args.vectors, {"timm": lambda: timm_side(paths, args),
                                        **{side: (lambda r=r, d=d: zoo_side(paths, args, r, d))
                                           for side, (r, d) in sides.items()}})
        return
    argv = ["--n", str(args.n), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
            "--data", str(args.data), "--device", args.device, "--runtimes", *runtimes, "--decodings", *decodings,
            *(["--embed"] if args.embed else [])]
    runs = alternate(__file__, [*sides, "timm"], argv, args.rounds)
    t = statistics.median(r["seconds"] for r in runs["timm"])
    first = runs[next(iter(sides))][0]
    print(f"{args.device}, torch threads: {first['threads']}, {len(paths)} JPEGs, zoo image decoding: "
          f"{', '.join(decodings)}, zoo {'embed' if args.embed else 'featurize'}, "
          f"batch size {args.batch_size}, {args.workers} decode worker(s), each side in its own process, "
          f"median of {args.rounds}")
    print(f"timm + DataLoader (JPEG to vector): {len(paths) / t:7.1f} images/s")
    for side in sides:
        z = statistics.median(r["seconds"] for r in runs[side])
        m = statistics.median(r["model_seconds"] / r["model_items"] for r in runs[side])
        cos = min_cosine(runs[side][-1]["vectors"], runs["timm"][-1]["vectors"])
        verb = "embed" if args.embed else "featurize"
        print(f"{side:<16} {verb} (JPEG to vector): {len(paths) / z:7.1f} images/s = {t / z:.2f}x timm + "
              f"DataLoader, min cosine {cos:.6f}; model only {1 / m:7.1f} images/s, end-to-end "
              f"{(len(paths) / z) * m:.0%} of it")

if __name__ == "__main__":
    main()
