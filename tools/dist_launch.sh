#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh: GPUs (nccl) or CPU
# processes (gloo; the tools start it themselves when there is no GPU).
#   bash tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT ARGS...]
# Environment: PYTHON (interpreter; default the project's .venv/bin/python when it
# exists, else python from PATH), NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# PORT (29500). Several nodes: run this once per node with the same NNODES,
# MASTER_ADDR and PORT and NODE_RANK 0..NNODES-1 (node 0 hosts the rendezvous).
set -euo pipefail
SCRIPT=$1
NPROCS=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
VENV_PYTHON="$HERE/../.venv/bin/python"
[ -x "$VENV_PYTHON" ] || VENV_PYTHON=python
PYTHON=${PYTHON:-$VENV_PYTHON}

# lbc_mm is installed (editable by `make env`): no PYTHONPATH needed.
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" \
    --master_port="${PORT:-29500}" \
    "$HERE/$SCRIPT" "$@"
