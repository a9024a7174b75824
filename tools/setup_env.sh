#!/usr/bin/env bash
# Build the lbc_mm environment: torch + torchvision, mmcv 2.1.0 built from source
# with its ops (cached wheel), mmengine, mmdet, mmpretrain, and lbc_mm itself.
#
# Usage:
#   tools/setup_env.sh [VENV_DIR]      create/refresh VENV_DIR (default .venv)
#   LBC_PYTHON=/path/to/python tools/setup_env.sh --existing
#                                      install into an existing environment that
#                                      already has torch (e.g. a CUDA box)
#
# The mmcv wheel is cached in $LBC_MM_CACHE (default ~/.cache/lbc_mm/wheels), keyed
# by Python, torch version and build flags, so a second clone never rebuilds it.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
MMCV_VERSION=2.1.0
CACHE=${LBC_MM_CACHE:-$HOME/.cache/lbc_mm/wheels}

log() { printf '[setup_env %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [[ "${1:-}" == "--existing" ]]; then
  PY=${LBC_PYTHON:-python3}
  "$PY" -c 'import torch' 2>/dev/null || {
    echo "setup_env: --existing needs torch already installed in $PY" >&2; exit 1; }
  STAMP=""
else
  VENV=${1:-.venv}
  PY="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")/bin/python"
  STAMP="$VENV/.lbc_mm_env"
  if [[ ! -x "$PY" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --upgrade 'pip<27'
  # torch/torchvision: a matching pair (docs/platform.md; mmpretrain imports torchvision).
  if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
    "$PY" -m pip install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  fi
fi

# mmcv's setup.py and mmengine's `pkg::path` config lookup both import pkg_resources,
# which setuptools >= 81 no longer ships.
"$PY" -m pip install -q 'setuptools<81' wheel ninja 'numpy<3'

# Cache key: Python ABI, torch version (incl. CUDA tag), whether CUDA ops are built.
read -r KEY WITH_CUDA CXX_STD < <("$PY" - <<'PY'
import os, sys, torch
cuda = torch.cuda.is_available() or os.environ.get('FORCE_CUDA') == '1'
major, minor = (int(x) for x in torch.__version__.split('+')[0].split('.')[:2])
# torch >= 2.14 headers `#error` below C++20; mmcv 2.1.0's setup.py hard-codes c++17.
std = 'c++20' if (major, minor) >= (2, 14) else 'c++17'
arch = os.environ.get('TORCH_CUDA_ARCH_LIST', 'native').replace(' ', '_').replace(';', '_')
ops = f'cuda-{arch}' if cuda else 'cpu'
print(f'cp{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}-{ops}-{std}',
      int(cuda), std)
PY
)
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-$KEY"
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION with ops ($KEY); ~10 min on 2 cores, cached afterwards"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  "$PY" -m pip download -q --no-deps --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -d "$build"
  tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
  src="$build/mmcv-$MMCV_VERSION"
  if [[ "$CXX_STD" != c++17 ]]; then
    sed -i "s/-std=c++17/-std=$CXX_STD/g" "$src/setup.py"
  fi
  (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
     "$PY" -m pip wheel -q --no-deps --no-build-isolation . -w "$build/dist")
  # Publish atomically: a half-built wheel never appears under the cache key.
  mkdir -p "$CACHE"
  tmp_dir=$(mktemp -d "$CACHE/.tmp.XXXXXX")
  cp "$build"/dist/mmcv-*.whl "$tmp_dir"/
  mv -T "$tmp_dir" "$WHEEL_DIR"
else
  log "reusing cached mmcv wheel $WHEEL_DIR"
fi

# The exact tested set (setup.py asks only for ranges; docs/get_started.md).
log "installing mmcv, mmengine, mmdet, mmpretrain, lbc_mm"
"$PY" -m pip install -q "$WHEEL_DIR"/mmcv-*.whl \
  'mmengine==0.10.7' 'mmdet==3.3.0' 'mmpretrain==1.2.0' 'setuptools<81' \
  'sphinx==9.0.4' 'myst-parser==5.2.0' 'furo==2025.12.19'
# The editable wheel carries lbc_mm_config_hook.pth (setup.py), so `_base_ =
# 'lbc_mm::...'` parses before lbc_mm is imported and `pip uninstall lbc_mm` removes it.
"$PY" -m pip install -q --no-build-isolation -e ".[all,tests,deploy,mim,docs]"
"$PY" -c "import lbc_mm, mmcv.ops, mmdet.models, mmpretrain.models; print('lbc_mm environment ok')"
[[ -n "$STAMP" ]] && touch "$STAMP"
log "done"
