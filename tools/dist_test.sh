#!/usr/bin/env bash
# Distributed evaluation with torchrun, on GPUs (nccl) or CPU processes (gloo).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [tools/test.py ARGS...]
# Environment (PYTHON, NNODES, NODE_RANK, MASTER_ADDR, PORT): see tools/dist_launch.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [tools/test.py ARGS...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$3" "$1" "$2" --launcher pytorch \
    "${@:4}"
