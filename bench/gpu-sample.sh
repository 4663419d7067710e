#!/usr/bin/env bash
# The GPU sample: the full preset on torch-cuda (decode, the KV-cache memory study, INT8), and the
# compiled engine beside it (the quick preset's decode study on torch-compile-cuda: GPT-2 124M cached
# decode with CUDA graphs, first-token latency, compile time, transformers' compiled peer; eager
# torch's figures for the same model come from the decode stage, so no benchmark is measured twice),
# each stage under its own time limit (SIGINT: the measured records are kept and the report is built
# from them), then one report from all.
# Usage: bench/gpu-sample.sh OUT_DIR [DECODE_S] [ENGINES_S] [KV_S] [INT8_S]
set -u
out=${1:?usage: bench/gpu-sample.sh OUT_DIR [DECODE_S] [ENGINES_S] [KV_S] [INT8_S]}
decode_s=${2:-180}
engines_s=${3:-150}
kv_s=${4:-120}
int8_s=${5:-60}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
$py -m profiles
run() {  # stage, time limit, then bench's arguments
  local stage=$1 limit=$2
  shift 2
  timeout -s INT -k 20 "$limit" $py -m bench "$@" --out "$out/$stage"
  rm -f "$out/$stage/index.html"
}
run decode "$decode_s" --preset full --backend torch-cuda --only decode
run engines "$engines_s" --preset quick --backend torch-compile-cuda --only decode
run kv "$kv_s" --preset full --backend torch-cuda --only kv
run int8 "$int8_s" --preset full --backend torch-cuda --only int8
parts=()
for stage in decode engines kv int8; do
  [ -s "$out/$stage/results.json" ] && parts+=("$out/$stage/results.json")
done
[ ${#parts[@]} -gt 0 ] && $py -m reports build "${parts[@]}" --out "$out/index.html"
