#!/usr/bin/env bash
# Evaluate on a Slurm cluster: one task per GPU (see tools/slurm_train.sh).
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py ARGS...]
# Environment (defaults in brackets): GPUS [8], GPUS_PER_NODE [8], CPUS_PER_TASK [5],
# SRUN_ARGS [""], PYTHON [the project's .venv/bin/python if present, else python],
# PORT [29500].
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py ARGS...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"
    else PYTHON=python; fi
fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [ "$GPUS" -lt "$GPUS_PER_NODE" ]; then GPUS_PER_NODE=$GPUS; fi
# shellcheck disable=SC2086
MASTER_PORT=${PORT:-29500} exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "$PYTHON" -u "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher=slurm "$@"
