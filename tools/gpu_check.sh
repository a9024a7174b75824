#!/bin/bash
# Usage: bash tools/gpu_check.sh WHEEL_DIR OUT_DIR      (run from the repo root)
#   e.g. bash tools/gpu_check.sh .device "$OUT"
#
# On a GPU machine without a package index: installs the OpenMMLab wheels
# (WHEEL_DIR/install.sh -> /tmp/site), runs tools/benchmark.py (dense vs 2:4) on
# DeiT-small, ViT-B/16, ResNet-50 and Mask R-CNN R50-FPN, then the GPU tests.
# OUT_DIR gets at most 8 files, each as soon as it exists:
#   gpu_check.log, deit-small.json, vit-base.json, resnet50.json, mask-rcnn.json,
#   summary.md (paste-ready tables), per_layer_speedups.png, and with TensorRT
#   installed onnx_trt_resnet50.json (tools/export_onnx.py: dense vs 2:4 engines)
# Every step has its own timeout and the whole run stays under ~5.5 minutes.
# Never calls torch._cslt_sparse_mm_search (it crashed the CUDA context on H200).
set -u -o pipefail

WHEELS=${1:?usage: bash tools/gpu_check.sh WHEEL_DIR OUT_DIR}
OUT=${2:?usage: bash tools/gpu_check.sh WHEEL_DIR OUT_DIR}
mkdir -p "$OUT"
WORK=/tmp/lbc_bench
mkdir -p "$WORK"
BUDGET=${GPU_CHECK_BUDGET:-345}  # seconds for everything
PY=$(command -v python3 || command -v python)  # install.sh installs for python3
START=$(date +%s)

# seconds a step may take: its own cap, but never past the global budget
cap() {
  local want=$1 left
  left=$(( BUDGET - ($(date +%s) - START) ))
  (( left < want )) && want=$left
  (( want < 5 )) && want=5
  echo "$want"
}

step() {  # step NAME WANT_SECONDS CMD...
  local name=$1 want=$2 t rc
  shift 2
  t=$(cap "$want")
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
    --out-json "$WORK/$name.json" --out-png "$WORK/$name.png" \
    --time-budget $(( t > 40 ? t - 25 : 15 )) --variants "$VARIANTS" "$@"
  [ -f "$WORK/$name.json" ] && cp "$WORK/$name.json" "$OUT/$name.json"
  return 0
}

main() {
  echo "[gpu_check] start $(date -Is) in $PWD"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv 2>&1 | head -5
  step "install wheels" 120 bash "$WHEELS/install.sh"
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export MPLBACKEND=Agg PYTHONUNBUFFERED=1
  step "versions" 30 "$PY" - <<'PY'
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)
try:
    print('cuSPARSELt', torch.backends.cusparselt.version())
except Exception as exc:
    print('cuSPARSELt ?', exc)
import lbc_mm, mmcv, mmdet, mmpretrain, mmengine
print('lbc_mm', lbc_mm.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__,
      'mmpretrain', mmpretrain.__version__, 'mmengine', mmengine.__version__)
PY
  # Each 2:4 variant once, in its own process: one that crashes the CUDA context
  # is left out of the benchmarks instead of taking a whole model down.
  step "preflight (each 2:4 variant once)" 40 "$PY" tools/benchmark.py --preflight \
    > "$WORK/preflight.txt" 2>&1
  cat "$WORK/preflight.txt"
  VARIANTS=$(sed -n 's/^PREFLIGHT_OK //p' "$WORK/preflight.txt" | paste -sd, -)
  [ -z "$VARIANTS" ] && VARIANTS=none
  echo "[gpu_check] 2:4 variants that passed the preflight: $VARIANTS"
  # Upstream configs, no trained model: random weights with magnitude 2:4 masks on
  # the layers NMSparsify's default rule picks (timing does not depend on values).
  # A trained model is benchmarked from its converted file: CONFIG MODEL.nm.pth.
  bench deit-small 60 'mmpretrain::deit/deit-small_4xb256_in1k.py' --batch 256
  bench vit-base 65 'mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py' \
    --batch 256
  bench resnet50 60 'mmpretrain::resnet/resnet50_8xb32_in1k.py' --batch 256
  bench mask-rcnn 75 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py' --batch 1
  local jsons=()
  for n in deit-small vit-base resnet50 mask-rcnn; do
    [ -f "$WORK/$n.json" ] && jsons+=("$WORK/$n.json")
  done
  if (( ${#jsons[@]} )); then
    step "summary" 40 "$PY" tools/benchmark.py --combine "${jsons[@]}" \
      --out-md "$OUT/summary.md" --out-png "$OUT/per_layer_speedups.png"
  fi
  # TensorRT, when installed: ResNet-50 (the LBC 2:4 config's sparse layers, random
  # weights with magnitude 2:4 masks) to ONNX, verified, then dense vs 2:4 engines.
  if command -v trtexec >/dev/null 2>&1 || [ -x /usr/src/tensorrt/bin/trtexec ] || \
      "$PY" -c 'import tensorrt' >/dev/null 2>&1; then
    step "onnx + TensorRT resnet50 (dense vs --sparsity=enable)" 150 "$PY" \
      tools/export_onnx.py configs/mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py \
      --random-weights --batch 16 --out "$WORK/onnx/resnet50.onnx" \
      --json "$OUT/onnx_trt_resnet50.json"
  else
    echo "[gpu_check] TensorRT not installed (no trtexec, no tensorrt module): ONNX/TensorRT step skipped"
  fi
  # GPU tests (every 2:4 path vs dense-with-zeros, and the other `gpu`-marked
  # tests): pytest when the machine has it, else the deploy file's own runner
  if "$PY" -c 'import pytest' 2>/dev/null; then
    step "gpu tests (pytest -m gpu)" 60 "$PY" -m pytest -q -p no:cacheprovider \
      -m gpu --continue-on-collection-errors tests
  else
    step "gpu tests (no pytest: direct runner)" 60 \
      "$PY" tests/test_deploy/test_gpu_paths.py
  fi
  echo "[gpu_check] done in $(( $(date +%s) - START ))s; files in $OUT:"
  ls -la "$OUT"
}

main 2>&1 | tee "$OUT/gpu_check.log"
