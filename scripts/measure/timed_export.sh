#!/usr/bin/env bash
# Every user of RUN exported with K = 20 and nothing cached (on a copy of the run, in the run's own precision), timed,
# and compared list by list with the lists cached at training; writes OUT/export.json {seconds, users, same_lists,
# warning: the export's kernel warning or null}, read by scripts/inference_table.py; with LABEL, also printed as one
# line under that label. Used by scripts/inference.sh, scripts/measure/isa_export.sh and threads_export.sh.
# Usage: scripts/measure/timed_export.sh RUN OUT_DIR [LABEL]
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${1:?a run directory, e.g. runs/ml-100k}
out=${2:?an output directory}
label=${3:-}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
copy=$(mktemp -d)/run
cp -r "$run" "$copy"
.venv/bin/deftrec export "$run" --out "$out/cached.csv" --k 20 > /dev/null
start=$(date +%s.%N)
.venv/bin/deftrec export "$copy" --out "$out/recomputed.csv" --k 20 --recompute > /dev/null 2> "$out/export.log" \
  || { cat "$out/export.log" >&2; exit 1; }
end=$(date +%s.%N)
rm -rf "$(dirname "$copy")"
.venv/bin/python - "$out" "$start" "$end" "$label" <<'PY'
import csv, json, re, sys
out, start, end, label = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def lists(path):
    rows = {}
    for r in csv.DictReader(open(path)):
        rows.setdefault(r["user_id"], []).append(r["item_id"])
    return rows
a, b = lists(f"{out}/cached.csv"), lists(f"{out}/recomputed.csv")
found = re.search(r"warning: .*?cached ones", " ".join(open(f"{out}/export.log").read().split()))  # rich wraps lines
warning = found.group(0) if found else None
export = {"seconds": end - start, "users": len(b), "same_lists": sum(a.get(u) == l for u, l in b.items()),
          "warning": warning}
json.dump(export, open(f"{out}/export.json", "w"))
if label:
    print(f"{label}: {export['users']} users exported with nothing cached in {export['seconds']:.1f} s, "
          f"{export['same_lists']} lists equal to the cached ones; the export said: {export['warning'] or 'nothing'}")
PY
