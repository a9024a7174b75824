"""Train an mmdet or mmpretrain model with lbc_mm (LBC / SR-STE / STE / ASP N:M).

One script for both libraries: the config's ``default_scope`` picks the registry.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_train.sh CONFIG NUM_PROCS [ARGS...]   # torchrun; CPU uses gloo

Before the Runner is built the script checks that the config and the datasets it
needs exist and otherwise exits with one line naming the missing path (and the fix);
``--resume`` of a missing file is one line up front too, and ``--resume`` in a work
dir without a checkpoint yet (a run stopped before its first one) says, in a
warning, that training starts from scratch. A checkpoint to resume from that does not
fit the config (another pattern or model: missing, unexpected or mis-shaped keys), is
corrupted or is refused by weights-only loading stops the run in one line (exit 1)
before the first iteration; so does a corrupted or refused ``load_from`` (which may
fit partially). Both may be URLs (or ``torchvision://`` ...), downloaded into the
torch hub cache and checked the same way; ``init_cfg`` checkpoints load weights-only
too, and one that cannot be loaded into its module (missing, corrupted, refused,
another N:M pattern or method) stops the run in one line. An error that stops
training with a message that says it all (a divergence, an ``LBCHook`` refusal
such as ``t_f`` after the end of training, a full disk) is one line on stderr, exit
1 (:func:`lbc_mm.cli.run_error_line`); any other keeps its traceback. A distributed
launch without a GPU initialises gloo itself (mmengine 0.10.7 assumes CUDA) and every
distributed launch uses ``LBCDistributedDataParallel`` (see ``lbc_mm/dist.py``); a
finished run destroys its process group before it exits.
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import logging
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

from lbc_mm.apis import resolve_config
from lbc_mm.cli import (
    build_runner,
    check_runner_checkpoint,
    exit_on_run_error,
    find_missing_data,
    merge_train_args,
    parse_train_args,
)
from lbc_mm.config_check import exit_on_config_error
from lbc_mm.dist import setup_distributed, teardown_distributed
from lbc_mm.hooks.checkpoint import LAST_CHECKPOINT


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, merge, check the data, set up distributed, train."""
    args = parse_train_args(argv)
    if args.resume not in (None, 'auto') and '://' not in args.resume and \
            not osp.isfile(args.resume):
        print(f'Checkpoint not found: {args.resume} (--resume)', file=sys.stderr)
        raise SystemExit(2)
    try:
        cfg = Config.fromfile(resolve_config(args.config))
    except FileNotFoundError as exc:
        print(f'error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    merge_train_args(cfg, args)
    # lbc_mm settings, e.g. an LBCHook without optim_wrapper.constructor=
    # 'LBCOptimWrapperConstructor' (the config says it; nothing adds it):
    # one line, exit 2
    exit_on_config_error(cfg)
    loaders = ('train_dataloader', ) + (
        ('val_dataloader', ) if cfg.get('val_cfg', None) is not None else ())
    missing = find_missing_data(cfg, loaders)
    if missing is not None:
        print(missing, file=sys.stderr)
        raise SystemExit(2)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            print('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); on CPU train '
                  'without it', file=sys.stderr)
            raise SystemExit(2)
    setup_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    if cfg.get('resume', False):  # the checkpoint mmengine will resume from
        resume_from = cfg.get('load_from', None) or find_latest_checkpoint(
            runner.work_dir)
        if resume_from:  # of another pattern / model: refuse before training
            check_runner_checkpoint(runner, resume_from)
        else:  # mmengine starts from scratch without a word
            print_log(f'--resume: no checkpoint in {runner.work_dir} yet (no '
                      f'{LAST_CHECKPOINT}: the run stopped before its first '
                      'checkpoint); training starts from scratch', logger='current',
                      level=logging.WARNING)
    elif cfg.get('load_from', None):  # fine-tuning may fit partially; must be sound
        check_runner_checkpoint(runner, cfg.load_from, allow_partial=True)
    try:
        runner.train()
    except Exception as exc:  # a clear message (divergence, full disk) is one line
        exit_on_run_error(exc, runner)
        raise
    del runner  # its DDP model holds the process group (see lbc_mm/dist.py)
    teardown_distributed()  # after success only


if __name__ == '__main__':
    from lbc_mm.io import run_tool
    sys.exit(run_tool(lambda: main() or 0))  # SIGTERM: one line, exit 143
