#!/usr/bin/env bash
# The quality ablation of docs/quality.md: train each ROW (quick profile unless the row says otherwise) on a dataset
# under one protocol, keep existing runs, then regenerate the table (scripts/quality_table.py) from the runs alone.
# Usage: scripts/quality.sh DATASET PREFIX [ROW[@SEED] ...]     e.g. scripts/quality.sh ml-100k q recent@0 recent@1
# ROW: before (the earlier deftrec: target response, L_neg over the mean of d, one positive, π exact)
#      fixes (the defects fixed, paper's history) | mean-neg | target | one-positive | exact-pi (fixes, one undone)
#      recent (fixes + the latest history in time order) | recent-cpu (recent, the ≤ 60 min cpu profile)
#      contrec (ContRec with the fixes) | contrec-recent
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?dataset, e.g. ml-100k or paper:../shared/datasets/deftrec-paper/software}
prefix=${2:?run name prefix, e.g. q}
shift 2
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(before@0 fixes@0 recent@0 recent@1)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
names=()
for spec in "${rows[@]}"; do
  row=${spec%@*}; seed=0; [[ $spec == *@* ]] && seed=${spec#*@}
  case $row in
    before) flags=(--response target --neg-norm mean --no-distinct-positives --pi-match exact) ;;
    fixes) flags=() ;;
    mean-neg) flags=(--neg-norm mean) ;;
    target) flags=(--response target) ;;
    one-positive) flags=(--no-distinct-positives) ;;
    exact-pi) flags=(--pi-match exact) ;;
    recent) flags=(--history recent) ;;
    recent-cpu) flags=(--history recent --profile cpu) ;;
    contrec) flags=(--variant contrec) ;;
    contrec-recent) flags=(--variant contrec --history recent) ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  name=$prefix-$row-s$seed
  names+=("$name")
  if [ -f "runs/$name/config.json" ]; then
    echo "keeping runs/$name" >&2
  else
    .venv/bin/deftrec train --dataset "$dataset" --name "$name" --seed "$seed" --force "${flags[@]}" >&2
  fi
done
.venv/bin/python scripts/quality_table.py "${names[@]/#/runs/}"
