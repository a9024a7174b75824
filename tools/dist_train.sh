#!/usr/bin/env bash
# Distributed training with torchrun, on GPUs (nccl) or CPU processes (gloo).
#   bash tools/dist_train.sh CONFIG NUM_PROCS [tools/train.py ARGS...]
# Environment (PYTHON, NNODES, NODE_RANK, MASTER_ADDR, PORT): see tools/dist_launch.sh.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [tools/train.py ARGS...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" "$1" --launcher pytorch "${@:3}"
