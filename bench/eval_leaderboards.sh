#!/usr/bin/env bash
# The leaderboards docs/evaluate.md quotes, one per modality, on the sets bench/eval_data.py writes.
#   python bench/eval_data.py --out /tmp/evaldata --packages /tmp/packages.txt
#   zoo finetune minilm-l6 /tmp/evaldata/packages-train.csv -o /tmp/evaldata/tuned-lora \
#       --objective contrastive --strategy lora --epochs 1      # the finetuned row (10.5 min here)
#   bash bench/eval_leaderboards.sh /tmp/evaldata
set -euo pipefail
D=${1:-/tmp/evaldata}
zoo evaluate minilm-l6 'minilm-l6[truncate_dim=128]' 'minilm-l6[layer=-2]' "$D/tuned-lora" \
    --task retrieval --pairs "$D/packages-pairs.csv" -o "$D/eval-retrieval" -q
zoo evaluate minilm-l6 'minilm-l6[truncate_dim=128]' 'minilm-l6[layer=-2]' "$D/tuned-lora" \
    --task classification --items "$D/fortunes.csv" -o "$D/eval-fortunes" -q
zoo evaluate minilm-l6 'minilm-l6[truncate_dim=128]' "$D/tuned-lora" \
    --task zero-shot --items "$D/fortunes.csv" -o "$D/eval-zero-shot" -q
zoo evaluate minilm-l6 'minilm-l6[truncate_dim=128]' 'minilm-l6[layer=-2]' "$D/tuned-lora" \
    --task clustering --items "$D/fortunes.csv" -o "$D/eval-clustering" -q
zoo evaluate efficientnet-lite0 'efficientnet-lite0[layer=-2]' 'efficientnet-lite0[truncate_dim=256]' \
    --task classification --items "$D/digits" -o "$D/eval-digits" -q
zoo evaluate ge2e-speaker 'ge2e-speaker[truncate_dim=128]' 'ge2e-speaker[truncate_dim=64]' \
    --task classification --items "$D/voices" -o "$D/eval-voices" -q
