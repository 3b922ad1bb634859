"""Clips through zoo's video tower against the loop a careful user writes with PyAV and timm, same
clips, model weights, frame sampling and batch: videos per second.

The clips are real photographs (scikit-image's and scikit-learn's samples) panned and zoomed over
4 s at 24 fps, 320x240, encoded here with PyAV (MPEG-4 part 2) and kept in ``--clips-folder`` between
runs. The model is EfficientNet-Lite0 (the weights ``efficientnet-lite0`` ships offline).

Sides, each in its own interpreter (see ``sides.py``), alternating, ``--rounds`` rounds:

- ``zoo``: ``zoo.load("efficientnet-lite0").featurize(paths, tower="video", num_workers=W)``.
- ``loop``: a ``DataLoader`` over the clips with ``W`` workers, each clip opened with PyAV and its 8
  frames at the centres of 8 equal spans kept (the frame shown at each time), timm's
  ``create_transform`` from the weights' data config on each, the batch's frames through the model
  in channels_last, and each clip's 8 rows averaged.

Prints each side's median clips per second and the largest difference between their rows.

    python bench/bench_video.py [--clips 96] [--rounds 3] [--batch-size 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from sides import alternate, child, side_arguments

SECONDS, RATE, WIDTH, HEIGHT = 4, 24, 320, 240


def make_clips(folder: Path, n: int) -> list[str]:
    """``n`` clips panning and zooming over the sample photographs, written once."""
    import av
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"clip-{i:04d}.mp4" for i in range(n)]
    photos = [getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")]
    photos = [p for p in photos + list(load_sample_images().images) if p.ndim == 3]
    for i, path in enumerate(paths):
        if path.is_file():
            continue
        photo = Image.fromarray(photos[i % len(photos)])
        tmp = path.with_suffix(".tmp.mp4")
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("mpeg4", rate=RATE)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            for t in range(SECONDS * RATE):
                zoom = 1.0 + 0.3 * t / (SECONDS * RATE) + 0.05 * (i % 5)
                w, h = int(photo.width / zoom), int(photo.height / zoom)
                x = int((photo.width - w) * ((t + 7 * i) % (SECONDS * RATE)) / (SECONDS * RATE))
                frame = photo.crop((x, (photo.height - h) // 2, x + w, (photo.height - h) // 2 + h))
                image = np.asarray(frame.resize((WIDTH, HEIGHT), Image.BILINEAR))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        tmp.replace(path)
    return [str(p) for p in paths]


def zoo_side(paths: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    import zoo

    model = zoo.load("efficientnet-lite0", device="cpu")
    run = {"tower": "video", "batch_size": args.batch_size, "num_workers": args.workers, "progress": False}
    model.featurize(paths[:args.batch_size], **run)  # warm-up
    began = time.perf_counter()
    rows = model.featurize(paths, **run)
    return rows, {"seconds": time.perf_counter() - began}


def loop_side(paths: list[str], args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    import av
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
    model = model.eval().to(memory_format=torch.channels_last)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

    class Clips(Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            with av.open(paths[i]) as container:
                stream = container.streams.video[0]
                duration = float(stream.duration * stream.time_base)
                targets, shown, frames = [(k + 0.5) * duration / 8 for k in range(8)], None, []
                for frame in container.decode(stream):
                    while targets and frame.time > targets[0]:
                        frames.append(shown or frame)
                        targets.pop(0)
                    if not targets:
                        break
                    shown = frame
                frames += [shown] * len(targets)
            return torch.stack([transform(Image.fromarray(f.to_ndarray(format="rgb24"))) for f in frames])

    def run(chosen: list[str]) -> np.ndarray:
        loader = DataLoader(Clips(), batch_size=args.batch_size, num_workers=args.workers,
                            sampler=[paths.index(p) for p in chosen])
        out = []
        with torch.inference_mode():
            for clips in loader:
                frames = clips.flatten(0, 1).contiguous(memory_format=torch.channels_last)
                rows = model.forward_head(model.forward_features(frames), pre_logits=True)
                out.append(rows.unflatten(0, clips.shape[:2]).mean(1))
        return torch.cat(out).numpy()

    run(paths[:args.batch_size])
    began = time.perf_counter()
    rows = run(paths)
    return rows, {"seconds": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--workers", type=int, default=1, help="decode processes on each side (default 1)")
    parser.add_argument("--clips-folder", default="/tmp/zoo-bench-clips", help="where the clips are kept")
    side_arguments(parser, batch_size=8)
    args = parser.parse_args()
    paths = make_clips(Path(args.clips_folder), args.clips)
    if args.side:
        child(args.side, args.vectors, {"zoo": lambda: zoo_side(paths, args), "loop": lambda: loop_side(paths, args)})
        return
    argv = ["--clips", str(args.clips), "--workers", str(args.workers), "--batch-size", str(args.batch_size),
            "--clips-folder", args.clips_folder]
    runs = alternate(__file__, ["zoo", "loop"], argv, args.rounds)
    speed = {side: statistics.median(args.clips / r["seconds"] for r in rs) for side, rs in runs.items()}
    for side, results in runs.items():
        each = ", ".join(f"{args.clips / r['seconds']:.2f}" for r in results)
        print(f"{side:>4}: {speed[side]:6.2f} clips/s (median of {len(results)}: {each})")
    gap = float(np.abs(runs["zoo"][0]["vectors"] - runs["loop"][0]["vectors"]).max())
    print(f"zoo / loop: {speed['zoo'] / speed['loop']:.2f}x clips per second; largest row difference {gap:.2e} "
          f"({args.clips} clips of {SECONDS} s at {RATE} fps, {WIDTH}x{HEIGHT}, 8 frames each, "
          f"batch {args.batch_size}, {args.workers} decode workers)")
    print(json.dumps({"clips_per_s": speed, "max_abs_diff": gap}))


if __name__ == "__main__":
    main()
