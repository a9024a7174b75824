"""Train an mmdet or mmpretrain model with lbc_mm (LBC / SR-STE / STE / ASP N:M).

One script for both libraries: the config's ``default_scope`` picks the registry.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_train.sh CONFIG NUM_PROCS [ARGS...]   # torchrun; CPU uses gloo

The config, its datasets and the checkpoint it resumes from or loads (local or a
URL, read weights-only) are checked before the first iteration; each problem, and an
error that stops training with a message that says it all, is one line on stderr
(docs/user_guides/failure_behaviour.md). The sequence is :mod:`lbc_mm.training`.
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import os.path as osp
import sys
from typing import List, Optional

from lbc_mm.apis import load_config
from lbc_mm.cli import merge_train_args, parse_train_args
from lbc_mm.dist import teardown_distributed
from lbc_mm.tool_exit import fail
from lbc_mm.training import prepare_training, run_training


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, merge, check the config and data, set up distributed, train."""
    args = parse_train_args(argv)
    if args.resume not in (None, 'auto') and '://' not in args.resume and \
            not osp.isfile(args.resume):
        fail(f'Checkpoint not found: {args.resume} (--resume)', 2)
    try:
        cfg = load_config(args.config)
    except FileNotFoundError as exc:
        fail(f'error: {exc}', 2)
    merge_train_args(cfg, args)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            fail('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); on CPU train '
                 'without it', 2)
    runner = prepare_training(cfg, args.launcher)
    run_training(runner)
    del runner  # its DDP model holds the process group (see lbc_mm/dist.py)
    teardown_distributed()  # after success only


if __name__ == '__main__':
    from lbc_mm.tool_exit import run_tool
    sys.exit(run_tool(lambda: main() or 0))  # SIGTERM: one line, exit 143
