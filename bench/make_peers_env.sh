#!/usr/bin/env bash
# The environment bench_text.py runs its ONNX peers in: sentence-transformers with backend="onnx"
# needs optimum, which pins transformers < 4.58 (zoo's own environment has 5.x), and fastembed pins
# huggingface_hub < 2. The new venv sees the zoo environment's packages (torch, numpy...) through a
# .pth file and installs only what differs, so it takes a minute, not a second torch.
#
#     bash bench/make_peers_env.sh [PEERS_VENV]   # default ~/.cache/zoo-bench-peers
set -euo pipefail
peers=${1:-$HOME/.cache/zoo-bench-peers}
python=${PYTHON:-python}
site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$python" -m venv "$peers"
peer_site=$("$peers/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$site" > "$peer_site/zoo-env.pth"
"$peers/bin/python" -m pip install -q "sentence-transformers[onnx]" fastembed
echo "peers environment: $peers/bin/python"
