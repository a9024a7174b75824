#!/usr/bin/env bash
# Train on a Slurm cluster: one task per GPU, srun starts them, mmengine's slurm
# launcher (--launcher slurm) reads the ranks from Slurm's environment.
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py ARGS...]
# Environment (defaults in brackets): GPUS [8] tasks in all, GPUS_PER_NODE [8],
# CPUS_PER_TASK [5], SRUN_ARGS [""] extra srun options (e.g. "--quotatype=auto"),
# PYTHON [the project's .venv/bin/python if present, else python], PORT [29500]
# (MASTER_PORT of the rendezvous). 16 GPUs on two nodes: GPUS=16 bash tools/slurm_train.sh ...
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py ARGS...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"
    else PYTHON=python; fi
fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [ "$GPUS" -lt "$GPUS_PER_NODE" ]; then GPUS_PER_NODE=$GPUS; fi
# SRUN_ARGS is a list of options: split on spaces on purpose.
# shellcheck disable=SC2086
MASTER_PORT=${PORT:-29500} exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "$PYTHON" -u "$HERE/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "$@"
