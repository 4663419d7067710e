#!/usr/bin/env bash
# The GPU sample: the full preset on torch-cuda (decode, the KV-cache memory study, INT8), each study
# under its own time limit (SIGINT: the measured records are kept and the report is built from them),
# then one report from all. Usage: bench/gpu-sample.sh OUT_DIR [DECODE_S] [KV_S] [INT8_S]
set -u
out=${1:?usage: bench/gpu-sample.sh OUT_DIR [DECODE_S] [KV_S] [INT8_S]}
decode_s=${2:-220}
kv_s=${3:-150}
int8_s=${4:-80}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
$py -m profiles
for study in decode kv int8; do
  limit=${study}_s
  timeout -s INT -k 20 "${!limit}" $py -m bench --preset full --backend torch-cuda --only $study --out "$out/$study"
  rm -f "$out/$study/index.html"
done
parts=()
for study in decode kv int8; do
  [ -s "$out/$study/results.json" ] && parts+=("$out/$study/results.json")
done
[ ${#parts[@]} -gt 0 ] && $py -m reports build "${parts[@]}" --out "$out/index.html"
