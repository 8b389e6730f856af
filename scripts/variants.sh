#!/usr/bin/env bash
# Train DeftRec, ContRec and the two mixed combinations on one dataset under the same protocol and budget
# (quick profile, seed 0), then print each beside DeftRec. Usage: scripts/variants.sh DATASET PREFIX [COMBO...]
# COMBO is one of deftrec, contrec, kway-dispersive, sigmavae-bpr (default: these four), or a ContRec run with one
# anti-collapse technique switched off: contrec-nosigma (σ = 0), contrec-nomask, contrec-k1; existing runs are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?dataset, e.g. ml-100k or paper:../shared/datasets/deftrec-paper/software}
prefix=${2:?run name prefix, e.g. ml-100k}
shift 2
combos=("$@")
[ ${#combos[@]} -gt 0 ] || combos=(deftrec contrec kway-dispersive sigmavae-bpr)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, also from a git worktree
for combo in "${combos[@]}"; do
  case $combo in
    deftrec) flags=(--variant deftrec); name=$prefix ;;
    contrec) flags=(--variant contrec); name=$prefix-contrec ;;
    kway-dispersive) flags=(--variant contrec --tokenizer kway); name=$prefix-kway-dispersive ;;
    sigmavae-bpr) flags=(--variant deftrec --tokenizer sigma-vae --tokenizer-pretrain 50); name=$prefix-sigmavae-bpr ;;
    contrec-nosigma) flags=(--variant contrec --sigma 0); name=$prefix-contrec-nosigma ;;
    contrec-nomask) flags=(--variant contrec --no-mask); name=$prefix-contrec-nomask ;;
    contrec-k1) flags=(--variant contrec --k 1); name=$prefix-contrec-k1 ;;
    *) echo "unknown combination $combo" >&2; exit 2 ;;
  esac
  if [ -f "runs/$name/config.json" ]; then
    echo "keeping runs/$name"
  else
    .venv/bin/deftrec train --dataset "$dataset" --name "$name" "${flags[@]}"
  fi
done
for combo in "${combos[@]}"; do
  [ "$combo" = deftrec ] && continue
  name=$prefix-$combo
  base=$prefix; [[ $combo == contrec-* ]] && base=$prefix-contrec  # an ablation beside the full ContRec
  [ -f "runs/$base/config.json" ] && .venv/bin/deftrec eval "runs/$base" "runs/$name" || .venv/bin/deftrec eval "runs/$name"
done
