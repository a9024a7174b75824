#!/usr/bin/env bash
# Distributed evaluation with torchrun, on GPUs (nccl) or CPU processes (gloo).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [tools/test.py ARGS...]
# Environment: PYTHON (interpreter, default python), NNODES (1), NODE_RANK (0),
# MASTER_ADDR (127.0.0.1), PORT (29500).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [tools/test.py ARGS...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROCS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
HERE=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROCS" \
    --master_port="$PORT" \
    "$HERE/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
