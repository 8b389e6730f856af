#!/usr/bin/env bash
# One cold user with titles alone against titles with categories, as a ratio measured in one session: `deftrec bench`
# on two runs alternated twice (16 users, K = 20, draft decoding, batch 1, no baseline).
# Usage: scripts/measure/item_text_bench.sh TITLES_RUN CATEGORIES_RUN   e.g. runs/r-noyear-t3-s0 runs/ml-100k
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=$(mktemp -d)
for i in 1 2; do
  for run in "$1" "$2"; do
    .venv/bin/deftrec bench "$run" --decoding draft --users 16 --k 20 --batch-sizes 1 --no-baseline \
      --json "$out/$(basename "$run")-$i.json" > /dev/null
  done
done
.venv/bin/python - "$out" "$(basename "$1")" "$(basename "$2")" <<'PY'
import json, sys
out, a, b = sys.argv[1:]
def latency(name, i):
    return json.load(open(f"{out}/{name}-{i}.json"))["run"]["latency_s"]
for i in (1, 2):
    la, lb = latency(a, i), latency(b, i)
    print(f"round {i}: {a} {1000 * la['total']:.1f} ms (prefill {1000 * la['prefill']:.1f}), "
          f"{b} {1000 * lb['total']:.1f} ms (prefill {1000 * lb['prefill']:.1f}): {lb['total'] / la['total']:.2f}x")
PY
rm -rf "$out"
