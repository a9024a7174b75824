"""Evaluate a checkpoint of an mmdet or mmpretrain model trained with lbc_mm.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show] [--show-dir DIR] [--tta]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [ARGS...]

The config's ``default_scope`` picks the library. Like ``tools/train.py`` it checks
the test dataset before building the Runner (one line naming the missing path and
the fix) and sets up CPU (gloo) or GPU distributed evaluation. Before testing it
refuses (one line, exit 1) a checkpoint that does not fit the config (missing,
unexpected or mis-shaped keys: e.g. a 2:4 checkpoint under a 2:8 config would
otherwise be evaluated with fresh layers), a corrupted one (zip CRCs) or one whose
pickle is refused; ``--allow-partial`` evaluates a partial fit on purpose. A missing
config, and an ``--out`` file that cannot be written (checked before the
evaluation), are one line too. CHECKPOINT
may be a URL (or ``torchvision://`` ...): it is downloaded into the torch hub cache
and read weights-only like a local file. ``--show`` / ``--show-dir`` / ``--tta``
act as in mmdet's and mmpretrain's ``tools/test.py`` (:mod:`lbc_mm.eval_flags`).
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import argparse
import logging
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

from lbc_mm.apis import load_config
from lbc_mm.cli import (
    add_runner_args,
    apply_runner_args,
    build_runner,
    check_runner_checkpoint,
    find_missing_data,
    parse_runner_args,
)
from lbc_mm.config_check import exit_on_config_error
from lbc_mm.dist import setup_distributed, teardown_distributed
from lbc_mm.eval_flags import add_eval_flags, apply_eval_flags
from lbc_mm.io import check_writable


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (mmdet / mmpretrain ``tools/test.py`` style)."""
    parser = argparse.ArgumentParser(description='Test a model trained with lbc_mm')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='dump the predictions to this pickle file (DumpResults)')
    parser.add_argument(
        '--allow-partial', action='store_true',
        help='evaluate even when the checkpoint does not fit the config (missing, '
        'unexpected or mis-shaped keys; those weights keep their initial values)')
    add_eval_flags(parser)
    add_runner_args(parser, 'test_dataloader')
    return parse_runner_args(parser, argv)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config (in place) and return it."""
    apply_runner_args(cfg, args)
    try:
        apply_eval_flags(cfg, args)
    except ValueError as exc:  # a flag the config cannot take: one line, exit 1
        raise SystemExit(f'error: {exc}') from None
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl or .pickle file, got {args.out}')
        evaluator = cfg.test_evaluator
        evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [
            evaluator]
        cfg.test_evaluator = evaluators + [
            dict(type='DumpResults', out_file_path=args.out)]
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, merge, check checkpoint and data, set up distributed, test."""
    args = parse_args(argv)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        print(f'Checkpoint not found: {args.checkpoint}', file=sys.stderr)
        raise SystemExit(2)
    try:
        cfg = load_config(args.config)
        if args.out is not None:  # fail now, not after the whole evaluation
            check_writable(args.out)
    except FileNotFoundError as exc:
        print(f'error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f'error: cannot write {exc.filename} (--out): {exc.strerror}',
              file=sys.stderr)
        raise SystemExit(1) from None
    merge_args(cfg, args)
    exit_on_config_error(cfg, training=False)  # lbc_mm settings: one line, exit 2
    missing = find_missing_data(cfg, ('test_dataloader', ))
    if missing is not None:
        print(missing, file=sys.stderr)
        raise SystemExit(2)
    setup_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    problem = check_runner_checkpoint(
        runner, args.checkpoint, allow_partial=args.allow_partial,
        hint=' (--allow-partial evaluates it anyway)')
    if problem is not None:
        print_log(f'--allow-partial: {problem}', logger='current',
                  level=logging.WARNING)
    runner.test()
    del runner  # its DDP model holds the process group (see lbc_mm/dist.py)
    teardown_distributed()  # after success only


if __name__ == '__main__':
    from lbc_mm.tool_exit import run_tool
    sys.exit(run_tool(lambda: main() or 0))  # SIGTERM: one line, exit 143
