#!/usr/bin/env bash
# srun launcher shared by slurm_train.sh and slurm_test.sh: one task per GPU; mmengine's
# slurm launcher (--launcher slurm) reads the ranks from Slurm's environment.
#   bash tools/slurm_launch.sh PARTITION JOB_NAME SCRIPT [SCRIPT ARGS...]
# Environment (defaults in brackets): GPUS [8] tasks in all, GPUS_PER_NODE [8],
# CPUS_PER_TASK [5], SRUN_ARGS [""] extra srun options (e.g. "--quotatype=auto"),
# PYTHON [the project's .venv/bin/python if present, else python], PORT [29500]
# (MASTER_PORT of the rendezvous). 16 GPUs on two nodes: GPUS=16 bash tools/slurm_train.sh ...
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
shift 3
HERE=$(cd "$(dirname "$0")" && pwd)
VENV_PYTHON="$HERE/../.venv/bin/python"
[ -x "$VENV_PYTHON" ] || VENV_PYTHON=python
PYTHON=${PYTHON:-$VENV_PYTHON}
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
    "$PYTHON" -u "$HERE/$SCRIPT" "$@"
