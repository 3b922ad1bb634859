"""Peak memory of featurizing one long recording, by duration: each run is a fresh process that
writes a WAV of N minutes (16 kHz mono, 16-bit), embeds it with ge2e-speaker and prints its peak
resident memory. With long audio cut into windows, the peak grows only by the decoded waveform
(4 bytes per sample), not by the model's activations.

    python bench/bench_long_audio.py 2 10 30
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

CHILD = """
import resource, sys, time
import numpy as np, soundfile as sf, zoo
minutes, path = float(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as out:
    for _ in range(int(minutes * 6)):  # 10 s at a time: the writer stays small
        out.write((0.1 * rng.standard_normal(160000)).astype(np.float32))
model = zoo.load("ge2e-speaker", device="cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
row = model.featurize([path])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{minutes:6.1f} min  peak {peak / 1024:7.0f} MiB  (+{(peak - base) / 1024:6.0f} MiB over the loaded model)"
      f"  {time.perf_counter() - began:6.1f} s  shape {row.shape}")
"""


def main(durations: list[float]) -> None:
    print(f"{'audio':>10}  peak resident memory of one featurize call (ge2e-speaker, CPU)")
    for minutes in durations:
        with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
            subprocess.run([sys.executable, "-c", CHILD, str(minutes), wav.name], check=True)


if __name__ == "__main__":
    main([float(x) for x in sys.argv[1:]] or [2.0, 10.0, 30.0])
