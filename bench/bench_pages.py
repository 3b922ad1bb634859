"""A page-image retriever (ColPali-style) through zoo against sentence-transformers'
``MultiVectorEncoder`` on the same folder, page files and batch size: pages per second, and the
flat index's bytes per page.

The pages are real text: Debian fortunes typeset onto 850x1100 pages (letter paper at 100 dpi),
every fourth with a scikit-image photograph on it, written as PNG once into ``--pages-folder``. The
model is a ``ColQwen2ForRetrieval`` over a Qwen2-VL of random weights, built here at a small size (a
4-block vision encoder of width 128, a 4-layer language model of width 256, 128-wide token vectors)
with its ``ColQwen2Processor`` (pages resized to at most 256 tokens). No ColPali weights are on
this machine: these are the speeds of that size, not of ColQwen2-2B; the scores mean nothing.

Sides, each in its own interpreter (see ``sides.py``), alternating, ``--rounds`` rounds:

- ``zoo``: ``zoo.load(folder).featurize(paths, role="document", num_workers=W)``: pages decoded in
  ``W`` worker processes (in process for 0), a batch at a time, through the library's processor and
  model.
- ``st``: ``MultiVectorEncoder(folder).encode_document(paths)``, which opens each file itself.

Prints each side's median pages per second, the ratio, the largest difference between the two
sides' token vectors (the first 8 pages), tokens per page and the flat index's bytes per page.

    python bench/bench_pages.py [--pages 96] [--rounds 3] [--batch-size 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bench_inputs
import numpy as np
from sides import alternate, child, side_arguments

SHOWN = 8  # pages whose token vectors each side hands back for the comparison
WIDTH, HEIGHT = 850, 1100
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]


def make_pages(folder: Path, n: int) -> list[str]:
    """``n`` typeset pages of fortunes, every fourth with a photograph, written once."""
    import skimage.data
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"page{i:04d}.png" for i in range(n)]
    photos = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(), skimage.data.astronaut()]
    texts = bench_inputs.fortunes(4 * n)
    for i, path in enumerate(paths):
        if path.exists():
            continue
        page = Image.new("RGB", (WIDTH, HEIGHT), "white")
        draw, y = ImageDraw.Draw(page), 60
        for text in texts[4 * i:4 * i + 4]:
            draw.multiline_text((70, y), text, fill="black", font_size=18)
            y += 40 + 22 * text.count("\n")
        if i % 4 == 0:
            page.paste(Image.fromarray(photos[i // 4 % len(photos)]).resize((400, 300)), (220, max(y, 600)))
        page.save(path)
    return [str(p) for p in paths]


def colqwen2_folder(root: Path) -> Path:
    """The random ColQwen2 described above, with a BPE tokenizer trained on fortunes, saved by
    ``save_pretrained``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (ColQwen2Config, ColQwen2ForRetrieval, ColQwen2Processor, PreTrainedTokenizerFast,
                              Qwen2VLConfig, Qwen2VLImageProcessor)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(bench_inputs.fortunes(2000), trainers.BpeTrainer(vocab_size=4000, special_tokens=SPECIALS,
                                                                             show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    vlm = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"],
                     "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]}},
        vision_config={"depth": 4, "embed_dim": 128, "hidden_size": 256, "num_heads": 4, "in_chans": 3,
                       "spatial_merge_size": 2, "patch_size": 14, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm, embedding_dim=128)).save_pretrained(root / "colqwen2")
    processor = ColQwen2Processor(image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 16,
                                                                        max_pixels=28 * 28 * 256), tokenizer=tokenizer)
    processor.save_pretrained(root / "colqwen2")
    return root / "colqwen2"


def zoo_side(folder: str, paths: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    import zoo
    from zoo.core._token_rows import MultiVectorRows

    model = zoo.load(folder, device="cpu")
    run = {"role": "document", "batch_size": args.batch_size, "num_workers": args.workers, "progress": False}
    model.featurize(paths[:args.batch_size], **run)  # warm-up
    began = time.perf_counter()
    rows = model.featurize(paths, **run)
    seconds = time.perf_counter() - began
    rows_format = MultiVectorRows()
    store = rows_format.new_store(model.embed_dim, "flat", rows_format.index_options("flat", {}))
    store.add(rows)
    with tempfile.TemporaryDirectory() as tmp:
        size = sum((Path(tmp) / name).stat().st_size for name in store.write(Path(tmp)))
    return rows[:SHOWN].vectors, {"seconds": seconds, "bytes_per_page": size / len(paths),
                                  "tokens_per_page": float(rows.lengths.mean())}


def st_side(folder: str, paths: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    import torch
    from sentence_transformers import MultiVectorEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MultiVectorEncoder(folder, device="cpu", local_files_only=True)
    run = {"batch_size": args.batch_size, "show_progress_bar": False}
    model.encode_document(paths[:args.batch_size], **run)  # warm-up
    began = time.perf_counter()
    rows = model.encode_document(paths, **run)
    return torch.cat(rows[:SHOWN]).numpy(), {"seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=96)
    parser.add_argument("--workers", type=int, default=1, help="zoo's decode processes (default 1)")
    parser.add_argument("--pages-folder", default="/tmp/zoo-bench-pages", help="where the pages are kept")
    side_arguments(parser, batch_size=8)
    args = parser.parse_args()
    paths = make_pages(Path(args.pages_folder), args.pages)
    if args.side:
        sides = {"zoo": zoo_side, "st": st_side}
        child(args.side, args.vectors, {args.side: lambda: sides[args.side](args.folder, paths, args)})
        return
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--pages", str(args.pages), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
                "--pages-folder", args.pages_folder, "--folder", str(colqwen2_folder(Path(tmp)))]
        runs = alternate(__file__, ["zoo", "st"], argv, args.rounds)
    speed = {side: statistics.median(args.pages / r["seconds"] for r in rs) for side, rs in runs.items()}
    for side, results in runs.items():
        each = ", ".join(f"{args.pages / r['seconds']:.2f}" for r in results)
        print(f"{side:>4}: {speed[side]:6.2f} pages/s (median of {len(results)}: {each})")
    zoo_run, st_run = runs["zoo"][0], runs["st"][0]
    gap = float(np.abs(zoo_run["vectors"] - st_run["vectors"]).max()) \
        if zoo_run["vectors"].shape == st_run["vectors"].shape else float("inf")
    print(f"zoo / st: {speed['zoo'] / speed['st']:.2f}x pages per second; largest token-vector difference {gap:.2e}; "
          f"{zoo_run['tokens_per_page']:.1f} token vectors per page; flat index {zoo_run['bytes_per_page']:,.0f} "
          f"bytes per page ({args.pages} pages of {WIDTH}x{HEIGHT}, batch {args.batch_size}, "
          f"{args.workers} decode workers)")
    print(json.dumps({"pages_per_s": speed, "max_abs_diff": gap, "bytes_per_page": zoo_run["bytes_per_page"],
                      "tokens_per_page": zoo_run["tokens_per_page"]}))


if __name__ == "__main__":
    main()
