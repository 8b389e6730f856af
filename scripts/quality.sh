#!/usr/bin/env bash
# The quality ablation of docs/quality.md: train each ROW (quick profile unless the row says otherwise) on a dataset
# under one protocol, keep existing runs, then regenerate the table (scripts/quality_table.py) from the runs alone.
# Usage: scripts/quality.sh DATASET PREFIX [ROW[@SEED] ...]     e.g. scripts/quality.sh ml-100k q recent@0 recent@1
# ROW (the settings of `deftrec train` it changes; the defaults are the chosen ones: history recent, π exact, α auto, titles
# without their year, refinement on the 3 latest items). Every row but noyear*, cpu-p0, *cat, *pool, *norm, fresh, long and *align* shows titles whole (--title-year keep)
# and every row but the *-t3 ones refines on the 5 latest items (--refine-targets 5), as the rows trained before those
# choices existed did, and every cpu row but cpu-p0 stops its refinement after 4 checks without a better one
# (--refine-patience 4, the cpu profile's before it ran to the end), every row but cat shows items by their titles
# alone (--item-text title), every row but *norm ranks by Eq. 14's cosine (--item-norm 0), every row but fresh refines
# the jointly trained denoiser (--refine-init joint), and every quick row but long and align* refines for at most 30 epochs
# (--refine-epochs 30, the quick profile's before 2026-12-05), every row but *align* trains without L_align
# (--align-weight 0, the default before config format 9), so each row names the
# same settings whatever the defaults become:
#   recent        the defaults of that time (titles whole)
#   random        --history random (the paper's shuffled history; every fix kept)
#   before        the earlier deftrec: paper history, target response, L_neg over the mean of d, one positive
#   target | mean-neg | one-positive | overlap-pi     the defaults with one choice undone or changed
#   noyear        --title-year drop (titles without their trailing year: prompts a third shorter)
#   noyear-bf16   the defaults with the LLM writing the preference texts in bf16 (--inference-precision bfloat16)
#   random-overlap | recent-overlap                   π 'overlap' (how the first two rows of docs/quality.md ran)
#   recent-cpu    the defaults of that time (titles whole) under the ≤ 60 min cpu profile
#   noyear-cpu    the defaults under the ≤ 60 min cpu profile
#   noyear-cpu-t3 the same with --refine-targets 3 named (the defaults since config format 4)
#   cpu-p0        the cpu profile as it is now: 3 refinement targets, the refinement run to its end (patience 0)
#   noyear-h5     the defaults with prompts of the 5 latest items (--max-history 5) instead of the profile's 8
#   noyear-t3    the defaults: the refinement targets each user's 3 latest train items (--refine-targets 3)
#   cat           the defaults with each history item's category after its title (--item-text title-category)
#   cpu-cat       the cpu profile as cpu-p0, with each item's category after its title (the defaults since format 5)
#   pool          the defaults with c pooled over the response and the prompt's user tokens (--condition-pool response+user)
#   cpu-pool      cpu-cat with the same pool
#   norm          the defaults (cat) with the retriever's item weight ‖q_j‖^α chosen on validation (--item-norm auto,
#                 the default since config format 7)
#   cpu-norm      the cpu profile with today's defaults (cpu-cat with --item-norm auto)
#   fresh         norm with the refinement starting from a newly initialized denoiser (--refine-init fresh)
#   long          norm with up to 90 refinement epochs instead of 30 (--refine-epochs 90): the defaults of 2026-12-05 until L_align
#   contrec       ContRec (σ-VAE tokenizer, dispersive x0 diffusion with CFG) with every default above
#   contrec-norm  ContRec with the defaults of 2026-12-05 (items' categories, 3 refinement targets, α auto, 90 epochs)
#   align         long with L_align: a ridge probe of c, refitted every joint step, predicts the user's LightGCN
#                 vector (--align-weight 1, the default since config format 9; every other row has none, --align-weight 0)
#   cpu-align     the cpu profile with today's defaults (cpu-norm with L_align)
#   cpu-align-mixed  cpu-align with the texts in mixed precision (what `auto` picks on a CPU with AMX)
#   contrec-align ContRec with today's defaults (contrec-norm with L_align)
#   align-w3 | align-w0.3   align with L_align's weight 3 or 0.3 instead of 1 (--align-weight 3, 0.3)
#   align-mixed   align with the prompt's pass in bf16 and the response in float32 (--inference-precision mixed);
#                 every other row writes its texts in float32 (--inference-precision float32) unless it says otherwise
#   align-w3-mixed   align-mixed with L_align's weight 3 (LastFM's validation choice under the default precision)
#   align-w10 | align-w10-mixed   align or align-mixed with L_align's weight 10 (past Software's validation choice of 3)
#   contrec-align-w3 | contrec-align-w10   contrec-align with L_align's weight 3 or 10 instead of 1
#   every row refines without a time bound (--refine-seconds 0; the quick profile's 360 s came later)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset=${1:?dataset, e.g. ml-100k or paper:../shared/datasets/deftrec-paper/software}
prefix=${2:?run name prefix, e.g. q}
shift 2
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(random-overlap@0 recent-overlap@0 recent-cpu@0)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
names=()
for spec in "${rows[@]}"; do
  row=${spec%@*}; seed=0; [[ $spec == *@* ]] && seed=${spec#*@}
  case $row in
    recent) flags=() ;;
    random) flags=(--history random) ;;
    before) flags=(--history random --response target --neg-norm mean --no-distinct-positives) ;;
    target) flags=(--response target) ;;
    mean-neg) flags=(--neg-norm mean) ;;
    one-positive) flags=(--no-distinct-positives) ;;
    overlap-pi) flags=(--pi-match overlap) ;;
    noyear) flags=() ;;
    noyear-bf16) flags=(--inference-precision bfloat16) ;;
    random-overlap) flags=(--history random --pi-match overlap) ;;
    recent-overlap) flags=(--pi-match overlap) ;;
    recent-cpu) flags=(--profile cpu --refine-patience 4) ;;
    noyear-cpu) flags=(--profile cpu --refine-patience 4) ;;
    noyear-h5) flags=(--max-history 5) ;;
    noyear-t3) flags=(--refine-targets 3) ;;
    noyear-cpu-t3) flags=(--profile cpu --refine-targets 3 --refine-patience 4) ;;
    cpu-p0) flags=(--profile cpu --refine-targets 3 --refine-patience 0) ;;
    cat) flags=(--item-text title-category --refine-targets 3) ;;
    cpu-cat) flags=(--profile cpu --refine-targets 3 --refine-patience 0 --item-text title-category) ;;
    pool) flags=(--item-text title-category --refine-targets 3 --condition-pool response+user) ;;
    cpu-pool) flags=(--profile cpu --refine-targets 3 --refine-patience 0 --item-text title-category --condition-pool response+user) ;;
    norm) flags=(--item-text title-category --refine-targets 3 --item-norm auto) ;;
    cpu-norm) flags=(--profile cpu --refine-targets 3 --refine-patience 0 --item-text title-category --item-norm auto) ;;
    fresh) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-init fresh) ;;
    long) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90) ;;
    contrec) flags=(--variant contrec) ;;
    contrec-norm) flags=(--variant contrec --item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90) ;;
    align) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 1) ;;
    cpu-align) flags=(--profile cpu --refine-targets 3 --refine-patience 0 --item-text title-category --item-norm auto --align-weight 1) ;;
    cpu-align-mixed) flags=(--profile cpu --refine-targets 3 --refine-patience 0 --item-text title-category --item-norm auto --align-weight 1 --inference-precision mixed) ;;
    contrec-align) flags=(--variant contrec --item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 1) ;;
    align-w3) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 3) ;;
    align-w0.3) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 0.3) ;;
    align-mixed) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 1 --inference-precision mixed) ;;
    align-w3-mixed) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 3 --inference-precision mixed) ;;
    align-w10) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 10) ;;
    align-w10-mixed) flags=(--item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 10 --inference-precision mixed) ;;
    contrec-align-w3) flags=(--variant contrec --item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 3) ;;
    contrec-align-w10) flags=(--variant contrec --item-text title-category --refine-targets 3 --item-norm auto --refine-epochs 90 --align-weight 10) ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  name=$prefix-$row-s$seed
  names+=("$name")
  if [ -f "runs/$name/config.json" ]; then
    echo "keeping runs/$name" >&2
  else
    [[ $row == noyear* || $row == cpu-p0 || $row == *cat || $row == *pool || $row == *norm || $row == fresh || $row == long || $row == *align* ]] || flags+=(--title-year keep)
    [[ " ${flags[*]} " == *" --refine-targets "* ]] || flags+=(--refine-targets 5)
    [[ " ${flags[*]} " == *" --item-text "* ]] || flags+=(--item-text title)
    [[ " ${flags[*]} " == *" --item-norm "* ]] || flags+=(--item-norm 0)
    [[ " ${flags[*]} " == *" --refine-init "* ]] || flags+=(--refine-init joint)
    [[ " ${flags[*]} " == *" --align-weight "* ]] || flags+=(--align-weight 0)
    [[ " ${flags[*]} " == *" --inference-precision "* ]] || flags+=(--inference-precision float32)
    flags+=(--refine-seconds 0)
    [[ " ${flags[*]} " == *" --refine-epochs "* || " ${flags[*]} " == *" --profile "* ]] || flags+=(--refine-epochs 30)
    .venv/bin/deftrec train --dataset "$dataset" --name "$name" --seed "$seed" --force "${flags[@]}" >&2
  fi
done
.venv/bin/python scripts/quality_table.py "${names[@]/#/runs/}"
