#!/usr/bin/env bash
# Whether a mixed-precision run's texts survive another thread count on the same CPU: every user exported with
# K = 20 and nothing cached under OMP_NUM_THREADS=THREADS (scripts/measure/timed_export.sh), timed, compared list by
# list with the lists cached at training, with the kernel warning the export printed (on AMX, oneDNN's bf16 matmul
# rounds otherwise with 1 thread than with 2: engine.model.runtime.kernel_fingerprint).
# Usage: scripts/measure/threads_export.sh RUN THREADS [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${1:?a run directory, e.g. runs/ml-100k}
threads=${2:?a thread count, e.g. 1}
out=${3:-runs/.threads-$(basename "$run")-$threads}
mkdir -p "$out"
export OMP_NUM_THREADS=$threads
scripts/measure/timed_export.sh "$run" "$out" "OMP_NUM_THREADS=$threads"
