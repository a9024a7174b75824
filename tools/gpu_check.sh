#!/bin/bash
# Usage: bash tools/gpu_check.sh WHEEL_DIR OUT_DIR      (run from the repo root)
#        bash tools/gpu_check.sh --plan                 (print the steps, run nothing)
#   e.g. bash tools/gpu_check.sh .device "$OUT"
#
# On a GPU machine without a package index: installs the OpenMMLab wheels
# (WHEEL_DIR/install.sh -> /tmp/site), then, what tells most first: versions and the
# 2:4 preflight, the `gpu` tests, benchmarks of DeiT-small, ViT-B/16, ResNet-50 and
# Mask R-CNN, their summary, and ONNX + TensorRT where trtexec is installed. Each
# step has a timeout within the ~5.5 min budget; OUT_DIR gets gpu_check.log, the
# benchmark JSONs, summary.md, per_layer_speedups.png (onnx_trt_resnet50.json).
set -u -o pipefail

PLAN=0
if [ "${1:-}" = --plan ]; then
  PLAN=1
  WHEELS=WHEEL_DIR OUT=OUT_DIR
else
  WHEELS=${1:?usage: bash tools/gpu_check.sh WHEEL_DIR OUT_DIR (or --plan)}
  OUT=${2:?usage: bash tools/gpu_check.sh WHEEL_DIR OUT_DIR (or --plan)}
  mkdir -p "$OUT"
fi
WORK=/tmp/lbc_bench
BUDGET=${GPU_CHECK_BUDGET:-345}  # seconds for everything
PY=$(command -v python3 || command -v python)  # install.sh installs for python3
START=$(date +%s)
PLANNED=0  # --plan: seconds the steps so far may take at most

# seconds a step may take: its own cap, but never past the global budget
cap() {
  local want=$1 left
  left=$(( BUDGET - ($(date +%s) - START) - PLANNED ))
  (( left < want )) && want=$left
  (( want < 5 )) && want=5
  echo "$want"
}

step() {  # step NAME WANT_SECONDS CMD...
  local name=$1 want=$2 t rc
  shift 2
  t=$(cap "$want")
  if (( PLAN )); then  # print the step and its worst-case time, run nothing
    echo "[plan] at ${PLANNED}s: $name (timeout ${t}s)"
    PLANNED=$(( PLANNED + t ))
    return 0
  fi
  echo "[gpu_check] $(date +%T) >>> $name (timeout ${t}s)"
  timeout -k 5 "$t" "$@"
  rc=$?
  echo "[gpu_check] $(date +%T) <<< $name rc=$rc$([ $rc = 124 ] && echo ' (TIMEOUT)')"
  return 0
}

bench() {  # bench NAME WANT_SECONDS CONFIG ARGS...
  local name=$1 want=$2 cfg=$3 t
  shift 3
  t=$(cap "$want")
  step "benchmark $name" "$t" "$PY" tools/benchmark.py "$cfg" --name "$name" \
    --out-json "$OUT/$name.json" --time-budget $(( t > 40 ? t - 25 : 15 )) \
    --variants "$VARIANTS" "$@"
}

main() {
  echo "[gpu_check] start $(date -Is) in $PWD (budget ${BUDGET}s)"
  (( PLAN )) || nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv 2>&1 | head -5
  mkdir -p "$WORK"
  step "install wheels" 120 bash "$WHEELS/install.sh"
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export MPLBACKEND=Agg PYTHONUNBUFFERED=1
  # 1. each 2:4 variant once, in its own process: one that crashes the CUDA context
  # is left out of the benchmarks instead of taking a whole model down
  step "versions" 30 "$PY" -c 'import lbc_mm
from lbc_mm.deploy.report import environment
print("lbc_mm", lbc_mm.__version__, environment())'
  step "preflight (each 2:4 variant once)" 40 bash -c \
    "'$PY' tools/benchmark.py --preflight > '$WORK/preflight.txt' 2>&1"
  (( PLAN )) || cat "$WORK/preflight.txt"
  VARIANTS=$(sed -n 's/^PREFLIGHT_OK //p' "$WORK/preflight.txt" 2>/dev/null | \
    paste -sd, -)
  [ -z "$VARIANTS" ] && VARIANTS=none
  (( PLAN )) || echo "[gpu_check] 2:4 variants that passed the preflight: $VARIANTS"
  # 2. the `gpu`-marked tests (pytest, else the 2:4 paths' own runner)
  if "$PY" -c 'import pytest' 2>/dev/null; then
    step "gpu tests (pytest -m gpu)" 60 "$PY" -m pytest -q -rA -p no:cacheprovider \
      -m gpu --continue-on-collection-errors tests
  else
    step "gpu tests (no pytest: direct runner)" 60 \
      "$PY" tests/test_deploy/test_gpu_paths.py
  fi
  # 3. upstream configs, random weights with magnitude 2:4 masks
  bench deit-small 60 'mmpretrain::deit/deit-small_4xb256_in1k.py' --batch 256
  bench vit-base 65 'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py' \
    --batch 256
  bench resnet50 60 'mmpretrain::resnet/resnet50_8xb32_in1k.py' --batch 256
  bench mask-rcnn 75 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py' --batch 1
  local jsons=()
  for n in deit-small vit-base resnet50 mask-rcnn; do
    [ -f "$OUT/$n.json" ] && jsons+=("$OUT/$n.json")
  done
  if (( ${#jsons[@]} || PLAN )); then
    step "summary" 40 "$PY" tools/benchmark.py --combine "${jsons[@]}" \
      --out-md "$OUT/summary.md" --out-png "$OUT/per_layer_speedups.png"
  fi
  # 4. TensorRT, only where it is installed: ResNet-50 to ONNX, dense vs 2:4 engines
  if command -v trtexec >/dev/null 2>&1 || [ -x /usr/src/tensorrt/bin/trtexec ] || \
      (( PLAN )); then
    (( PLAN )) && echo "[plan] (TensorRT step: only where trtexec is installed)"
    step "onnx + TensorRT resnet50 (dense vs --sparsity=enable)" 150 "$PY" \
      tools/export_onnx.py configs/mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py \
      --random-weights --batch 16 --out "$WORK/onnx/resnet50.onnx" \
      --json "$OUT/onnx_trt_resnet50.json"
  else
    echo "[gpu_check] TensorRT not installed (no trtexec): ONNX/TensorRT step skipped"
  fi
  if (( PLAN )); then
    echo "[plan] worst case ${PLANNED}s of the ${BUDGET}s budget; nothing was run"
    return 0
  fi
  echo "[gpu_check] done in $(( $(date +%s) - START ))s; files in $OUT:"
  ls -la "$OUT"
}

if (( PLAN )); then
  main
else
  main 2>&1 | tee "$OUT/gpu_check.log"
fi
