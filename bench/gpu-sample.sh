#!/usr/bin/env bash
# The GPU sample: the full preset on torch-cuda (decode, then the KV-cache memory study), each study
# under its own time limit (SIGINT: the measured records are kept and the report is built from them),
# then one report from both. Usage: bench/gpu-sample.sh OUT_DIR [DECODE_SECONDS] [KV_SECONDS]
set -u
out=${1:?usage: bench/gpu-sample.sh OUT_DIR [DECODE_SECONDS] [KV_SECONDS]}
decode_s=${2:-270}
kv_s=${3:-110}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
$py -m profiles > "$out/profile.txt" 2>&1
cat "$out/profile.txt"
timeout -s INT -k 20 "$decode_s" $py -m bench --preset full --backend torch-cuda --only decode --out "$out/decode"
timeout -s INT -k 20 "$kv_s" $py -m bench --preset full --backend torch-cuda --only kv --out "$out/kv"
parts=()
for study in decode kv; do
  [ -s "$out/$study/results.json" ] && parts+=("$out/$study/results.json")
done
[ ${#parts[@]} -gt 0 ] && $py -m reports build "${parts[@]}" --out "$out/index.html"
