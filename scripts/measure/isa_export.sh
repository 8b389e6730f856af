#!/usr/bin/env bash
# How the export of docs/inference.md fares on a CPU with fewer instructions than this one: oneDNN (torch's bf16
# matmuls) limited to ISA (e.g. AVX512_CORE_BF16: avx512_bf16 without AMX, as the AMD EPYC of 2026-12-03), then the
# bare matmul's GFLOP/s per precision and the probe's ratio (scripts/measure/bf16_speed.py), and every user exported
# with K = 20 and nothing cached (on a copy of the run, in the run's own precision), timed and compared list by list
# with the lists cached at training. fp32 matmuls go through MKL, which the limit does not touch.
# Usage: scripts/measure/isa_export.sh RUN ISA [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${1:?a run directory, e.g. runs/ml-100k}
isa=${2:?a oneDNN ISA limit, e.g. AVX512_CORE_BF16}
out=${3:-runs/.isa-$(basename "$run")-$isa}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false ONEDNN_MAX_CPU_ISA=$isa
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=.venv/bin/python
$py scripts/measure/bf16_speed.py > "$out/bf16_speed.txt"
cat "$out/bf16_speed.txt"
scripts/measure/timed_export.sh "$run" "$out" "ONEDNN_MAX_CPU_ISA=$isa"
