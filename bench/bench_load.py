"""Start-up costs: ``import zoo`` and ``zoo list``, and ``zoo.load`` against the backend called directly.

Load times are measured in one process, alternating, after a first untimed round (imports and the
page cache warm): zoo's load includes resolving the name, checking every file against its sha256
(memoised by size, mtime and inode) and building the model and its preprocessing, as the backend
call does. Import time is a fresh interpreter each round, against one that imports nothing.

    python bench/bench_load.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def fresh_process(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    rows = {"python -c pass": "pass", "import zoo": "import zoo",
            "zoo.list_models()": "import zoo; zoo.list_models()"}
    times = {k: [] for k in rows}
    for _ in range(args.rounds):
        for key, code in rows.items():
            times[key].append(fresh_process(code))
    base = statistics.median(times["python -c pass"])
    for key in list(rows)[1:]:
        print(f"{key:20s} {1000 * (statistics.median(times[key]) - base):6.1f} ms over a bare interpreter "
              f"(median of {args.rounds})")

    import timm
    import torch
    from transformers import AutoModel, AutoTokenizer

    import zoo
    from zoo.adapters.timm import remap_in_order

    minilm_dir = zoo.load("minilm-l6").files.root
    lite = zoo.load("efficientnet-lite0")
    lite_file = lite.files.root / lite.spec.config["weights"]

    def transformers_direct() -> None:
        AutoTokenizer.from_pretrained(minilm_dir)
        AutoModel.from_pretrained(minilm_dir).eval()

    def timm_direct() -> None:
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        model.load_state_dict(remap_in_order(torch.load(lite_file, weights_only=True), model.state_dict()))
        model.eval()
        timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

    pairs = {"minilm-l6 (transformers)": (lambda: zoo.load("minilm-l6"), transformers_direct),
             "efficientnet-lite0 (timm)": (lambda: zoo.load("efficientnet-lite0"), timm_direct)}
    for name, (ours, theirs) in pairs.items():
        ours(), theirs()
        zoo_t, direct_t = [], []
        for _ in range(args.rounds):
            for fn, bucket in ((ours, zoo_t), (theirs, direct_t)):
                began = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - began)
        z, d = statistics.median(zoo_t), statistics.median(direct_t)
        print(f"load {name}: zoo {1000 * z:6.1f} ms, backend directly {1000 * d:6.1f} ms, "
              f"ratio {z / d:.2f}x (median of {args.rounds})")


if __name__ == "__main__":
    main()
