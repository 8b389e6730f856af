#!/usr/bin/env bash
# The inference figures of docs/inference.md and the README's Table-4 layout, from one run, in one go:
#   1. deftrec bench RUN (16 cold users, K = 20, draft decoding; full greedy decoding timed on the same users,
#      interleaved; the beam-search baseline in the same process)
#   2. all users exported with K = 20 and nothing cached (on a copy of the run), timed, and compared list by list
#      with the lists cached at training
#   3. scripts/measure/decoding_equal.py: every user under full, template and draft decoding (draft in batches of 8,
#      where it guesses) in the run's precision, and template in the other one
# then scripts/inference_table.py prints the tables. Usage: scripts/inference.sh RUN [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?a run directory, e.g. runs/ml-100k}
out=${2:-runs/.inference-$(basename "$run")}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=.venv/bin/python
.venv/bin/deftrec bench "$run" --decoding draft --users 16 --k 20 --batch-sizes 1,8,32 --json "$out/bench.json" > "$out/bench.txt"
scripts/measure/timed_export.sh "$run" "$out"
precision=$($py -c "import sys; from engine.services.run import Run; print(Run.open(sys.argv[1]).deftrec_config.llm.inference_precision)" "$run")
other=$([ "$precision" = float32 ] && echo bfloat16 || echo float32)  # the run's precision first, the other last
$py scripts/measure/decoding_equal.py "$run" 0 "full/$precision,template/$precision,draft/$precision@8,template/$other" \
  | tail -1 > "$out/decoding.json"
$py scripts/inference_table.py "$out"
