#!/usr/bin/env bash
# `make demo`: the whole lbc_mm pipeline on CPU with generated data, no download
# (the steps: docs/get_started.md, "What `make demo` does"). Work dir: work_dirs/demo/
# (recreated on every run). Environment: PYTHON (default .venv/bin/python),
# DEMO_CONFIG, DEMO_WORK_DIR, DEMO_DATA, DEMO_CFG_OPTIONS (extra training
# --cfg-options, space separated, e.g. "train_cfg.max_epochs=2" for a smoke run).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
PY=${PYTHON:-.venv/bin/python}
CONFIG=${DEMO_CONFIG:-configs/demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py}
WORK=${DEMO_WORK_DIR:-work_dirs/demo}
DATA=${DEMO_DATA:-data/demo}
export MPLBACKEND=${MPLBACKEND:-Agg}
export PYTHONUNBUFFERED=1

log() { printf '\n[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[demo] error: %s\n' "$*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || die "no Python at '$PY' (run 'make env' or set PYTHON=...)"
[[ -f "$CONFIG" ]] || die "config not found: $CONFIG"

t0=$(date +%s)
rm -rf "$WORK"
mkdir -p "$WORK"

log "1/5 generating demo data into $DATA"
"$PY" tools/make_demo_data.py "$DATA"

data_opts=()
if [[ "$DATA" != data/demo ]]; then
  data_opts+=(
    train_dataloader.dataset.data_root="$DATA/coco/"
    val_dataloader.dataset.data_root="$DATA/coco/"
    test_dataloader.dataset.data_root="$DATA/coco/"
    val_evaluator.ann_file="$DATA/coco/annotations/instances_val.json"
    test_evaluator.ann_file="$DATA/coco/annotations/instances_val.json")
fi
# tools/test.py evaluates the saved checkpoint: no val loop at the end of training.
train_opts=(${data_opts[@]+"${data_opts[@]}"} train_cfg.val_begin=1000000)
# shellcheck disable=SC2206
if [[ -n "${DEMO_CFG_OPTIONS:-}" ]]; then train_opts+=(${DEMO_CFG_OPTIONS}); fi

log "2/5 training $CONFIG on CPU (a log line every few iterations; ~10 min on 2 free cores)"
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" \
  ${train_opts[@]+--cfg-options "${train_opts[@]}"} 2>&1 | tee "$WORK/train.log"
t_train=$(date +%s)

[[ -f "$WORK/last_checkpoint" ]] || die "training wrote no checkpoint ($WORK/last_checkpoint)"
ckpt=$(cat "$WORK/last_checkpoint")
[[ -f "$ckpt" ]] || die "checkpoint $ckpt is missing"

log "3/5 evaluating $ckpt on the val split (bbox + segm mAP)"
metrics_log="$WORK/test.log"
"$PY" tools/test.py "$CONFIG" "$ckpt" --work-dir "$WORK/test" \
  ${data_opts[@]+--cfg-options "${data_opts[@]}"} 2>&1 | tee "$metrics_log"

export_dir="$WORK/export"
mkdir -p "$export_dir"
stock="$export_dir/$(basename "${CONFIG%.py}")_stock.pth"
log "4/5 converting $ckpt -> $stock (+ compressed 2:4 form)"
"$PY" tools/convert.py "$CONFIG" "$ckpt" "$stock" --pattern 2:4 \
  --json "$export_dir/convert.json" 2>&1 | tee "$WORK/convert.log"
converted=$(find "$export_dir" -type f | sort | tr '\n' ' ')

onnx_status="skipped (needs onnx and onnxruntime: pip install -e '.[deploy]')"
if "$PY" -c 'import onnx, onnxruntime' 2>/dev/null; then
  images="$DATA/coco/val"
  [[ "$CONFIG" == *rcnn* ]] || images="$DATA/cls/val"
  log "4/5 exporting $stock to ONNX; checking its N:M initializers and onnxruntime vs PyTorch"
  # NVIDIA's own 2:4 checker (polygraphy inspect sparsity) judges the ONNX file too
  poly=()
  "$PY" -c 'import polygraphy' 2>/dev/null && poly=(--polygraphy)
  "$PY" tools/export_onnx.py "$CONFIG" "$stock" --out "$export_dir/model.onnx" \
    --images "$images" --batch 2 --json "$export_dir/onnx.json" "${poly[@]}" 2>&1 | tee "$WORK/export_onnx.log"
  onnx_status="$export_dir/model.onnx verified ($WORK/export_onnx.log)"
  two_of_four=$("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
rows = [i for i in r["initializers"] if i["is_2of4"]]
n = len({i["initializer"] for i in rows})
judge = "Polygraphy" if r.get("polygraphy") else "lbc_mm (Polygraphy not installed)"
shared = " (%d layers; identical weights share one)" % len(rows) if len(rows) > n else ""
print("%d weight initializers%s, judged by %s" % (n, shared, judge))' "$export_dir/onnx.json")
fi

# deploy reads what export wrote: the compressed file tools/convert.py made
nm_model="${stock%.pth}.nm.pth"
log "5/5 benchmarking dense vs 2:4 on $nm_model (needs a CUDA GPU)"
set +e
"$PY" tools/benchmark.py "$CONFIG" "$nm_model" --out-json "$WORK/benchmark/benchmark.json" \
  2>&1 | tee "$WORK/benchmark.log"
rc=${PIPESTATUS[0]}
set -e
case $rc in
  0) bench="done ($WORK/benchmark/, $WORK/benchmark.log)" ;;
  2) bench="no GPU here: weights checked, timing skipped (exit 2)" ;;
  *) die "tools/benchmark.py failed with exit code $rc" ;;
esac
t_end=$(date +%s)

# The last COCO metric line, e.g. "coco/bbox_mAP: 0.512 ... coco/segm_mAP: 0.433".
metric() {
  grep -o "coco/$1: [0-9.-]*" "$metrics_log" | tail -n 1 | awk '{print $2}' || true
}
bbox=$(metric bbox_mAP); segm=$(metric segm_mAP)
bbox50=$(metric bbox_mAP_50); segm50=$(metric segm_mAP_50)
plots=$(find "$WORK" -name '*.png' 2>/dev/null | sort | tr '\n' ' ')

cat <<SUMMARY

================================ lbc_mm demo ================================
wall time        $(( t_end - t0 ))s in all ($(( t_train - t0 ))s data + training)
bbox mAP         ${bbox:-n/a} (mAP@0.5 ${bbox50:-n/a})
segm mAP         ${segm:-n/a} (mAP@0.5 ${segm50:-n/a})
checkpoint       $ckpt
converted        $converted
onnx             $onnx_status
2:4 in the ONNX  ${two_of_four:-n/a}
benchmark        $bench
plots            ${plots:-none}
logs             $WORK/*.log
=============================================================================
SUMMARY
