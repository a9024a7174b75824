"""Evaluate a checkpoint of an mmdet or mmpretrain model trained with lbc_mm.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [ARGS...]

The config's ``default_scope`` picks the library. Like ``tools/train.py`` it checks
the test dataset before building the Runner (one line naming the missing path and
the fix) and sets up CPU (gloo) or GPU distributed evaluation.
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import argparse
import importlib.util
import os
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from lbc_mm.dist import setup_distributed


def _train_tool():
    """``tools/train.py`` as a module (shares the dataset check)."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'train.py')
    spec = importlib.util.spec_from_file_location('lbc_mm_tools_train', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (mmdet / mmpretrain ``tools/test.py`` style)."""
    parser = argparse.ArgumentParser(description='Test a model trained with lbc_mm')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--out', help='dump the predictions to this pickle file (DumpResults)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. '
        'test_dataloader.dataset.data_root=/data/coco/')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config (in place) and return it."""
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
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
    if not osp.isfile(args.checkpoint):
        print(f'Checkpoint not found: {args.checkpoint}', file=sys.stderr)
        raise SystemExit(2)
    cfg = Config.fromfile(args.config)
    merge_args(cfg, args)
    missing = _train_tool().find_missing_data(cfg, ('test_dataloader', ))
    if missing is not None:
        print(missing, file=sys.stderr)
        raise SystemExit(2)
    setup_distributed(cfg, args.launcher)
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg else
              RUNNERS.build(cfg))
    runner.test()


if __name__ == '__main__':
    main()
