#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh: GPUs (nccl) or CPU
# processes (gloo; the tools start it themselves when there is no GPU).
#   bash tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT ARGS...]
# Environment: PYTHON (interpreter, default python), NNODES (1), NODE_RANK (0),
# MASTER_ADDR (127.0.0.1), PORT (29500).
set -euo pipefail
SCRIPT=$1
NPROCS=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" \
    --master_port="${PORT:-29500}" \
    "$HERE/$SCRIPT" "$@"
