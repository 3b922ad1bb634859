"""What lower precision buys and costs on this CPU: MiniLM on real text (fortunes), against float32.

Rows: bfloat16 compute (``zoo.load(..., dtype="bfloat16")``) and dynamic int8 quantisation of the
Linear layers (PyTorch's ``quantize_dynamic``: per-tensor, per-channel weights, and per-channel on
the attention layers only). Each prints its speed against float32 (median of the rounds, run side
by side) and the lowest and median cosine similarity of its embeddings to float32's.

    python bench/bench_precision.py [--n 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import bench_inputs
import numpy as np
from sides import cosines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    import zoo

    warnings.filterwarnings("ignore", category=UserWarning)  # torch's quantized tensors are deprecated
    warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")  # so is the API; it still runs
    texts = bench_inputs.fortunes(args.n)
    fp32 = zoo.load("minilm-l6", device="cpu")
    linears = [n for n, m in fp32.model.named_modules() if isinstance(m, torch.nn.Linear)]

    def quantized(qconfig, names=None):
        model = zoo.load("minilm-l6", device="cpu")
        model.model = quantize_dynamic(copy.deepcopy(fp32.model), {n: qconfig for n in names or linears})
        return model

    variants = {
        "bfloat16 compute": zoo.load("minilm-l6", device="cpu", dtype="bfloat16"),
        "int8 dynamic, per-tensor": quantized(default_dynamic_qconfig),
        "int8 dynamic, per-channel": quantized(per_channel_dynamic_qconfig),
        "int8 dynamic, attention only": quantized(per_channel_dynamic_qconfig,
                                                  [n for n in linears if ".attention." in n]),
    }
    reference = fp32.featurize(texts, progress=False)
    print(f"torch threads: {torch.get_num_threads()}, {args.n} fortunes, against float32")
    for name, model in variants.items():
        ours, base = [], []
        for _ in range(args.rounds):
            for m, bucket in ((model, ours), (fp32, base)):
                began = time.perf_counter()
                out = m.featurize(texts, progress=False)
                bucket.append(time.perf_counter() - began)
                if m is model:
                    result = out
        cos = cosines(result, reference)
        print(f"{name:30s} speed {statistics.median(base) / statistics.median(ours):5.2f}x   "
              f"cosine min {cos.min():.4f} median {np.median(cos):.5f}")


if __name__ == "__main__":
    main()
