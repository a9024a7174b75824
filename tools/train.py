"""Train an mmdet or mmpretrain model with lbc_mm (LBC / SR-STE / STE / ASP N:M).

One script for both libraries: the config's ``default_scope`` picks the registry.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_train.sh CONFIG NUM_PROCS [ARGS...]   # torchrun; CPU uses gloo

Before the Runner is built the script checks that the datasets the config needs exist
and otherwise exits with one line naming the missing path and the fix. A distributed
launch without a GPU initialises gloo itself (mmengine 0.10.7 assumes CUDA) and every
distributed launch uses ``LBCDistributedDataParallel`` (see ``lbc_mm/dist.py``).
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import argparse
import logging
import os
import os.path as osp
import sys
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from lbc_mm.dist import setup_distributed

#: Dataset types that download their data themselves when it is missing.
SELF_DOWNLOADING = ('CIFAR10', 'CIFAR100', 'MNIST', 'FashionMNIST')
#: Keys of a dataset config that hold inner dataset configs.
INNER_KEYS = ('dataset', 'datasets')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (mmdet / mmpretrain ``tools/train.py`` style)."""
    parser = argparse.ArgumentParser(description='Train a model with lbc_mm')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed precision training (AmpOptimWrapper, needs a CUDA GPU)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by the total batch size (config auto_scale_lr)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from PATH, or from the latest checkpoint in the work dir '
        'when no path is given')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. '
        'train_dataloader.dataset.data_root=/data/coco/')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
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
    # work_dir: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in the config.',
                      logger='current', level=logging.WARNING)
        else:
            if wrapper_type != 'OptimWrapper':
                raise SystemExit(f'--amp needs optim_wrapper.type OptimWrapper, the '
                                 f'config has {wrapper_type}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.base_batch_size '
                             'in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    set_scores_constructor(cfg)
    return cfg


def set_scores_constructor(cfg: Config) -> None:
    """Give LBC scores their own optimizer settings when the config has an LBCHook.

    The optimizer is built before hooks run, so ``lbc_mm.optim``'s
    ``LBCOptimWrapperConstructor`` does it; a config with an ``LBCHook`` and no
    constructor of its own gets it here (``scores_decay_mult=0`` by default).
    """
    hooks = cfg.get('custom_hooks', None) or []
    if not any(h.get('type') in ('LBCHook', 'lbc_mm.LBCHook') for h in hooks):
        return
    optim_wrapper = cfg.get('optim_wrapper', None)
    if optim_wrapper is None:
        return
    if optim_wrapper.get('constructor', 'DefaultOptimWrapperConstructor') in (
            None, 'DefaultOptimWrapperConstructor'):
        optim_wrapper.constructor = 'LBCOptimWrapperConstructor'
        print_log('LBC scores get their own optimizer settings: '
                  "optim_wrapper.constructor='LBCOptimWrapperConstructor'",
                  logger='current')


def _dataset_leaves(dataset: dict, key: str) -> Iterator[Tuple[str, dict]]:
    """``(dotted config key, dataset dict)`` for every dataset holding paths."""
    inner = False
    for inner_key in INNER_KEYS:
        value = dataset.get(inner_key, None)
        if isinstance(value, dict):
            inner = True
            yield from _dataset_leaves(value, f'{key}.{inner_key}')
        elif isinstance(value, (list, tuple)):
            inner = True
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield from _dataset_leaves(item, f'{key}.{inner_key}.{i}')
    if not inner:
        yield key, dataset


def _is_remote(path: str) -> bool:
    return '://' in path


def _missing_path(dataset: dict) -> Optional[str]:
    """The first path a dataset config needs that does not exist, or None."""
    if dataset.get('download', dataset.get('type') in SELF_DOWNLOADING):
        return None
    data_root = dataset.get('data_root', None) or ''
    if data_root and _is_remote(data_root):
        return None
    if data_root and not osp.isdir(data_root):
        return data_root

    def join(path: str) -> str:
        return path if osp.isabs(path) or not data_root else osp.join(data_root, path)

    ann_file = dataset.get('ann_file', None)
    for ann in ([ann_file] if isinstance(ann_file, str) else ann_file or []):
        if ann and not _is_remote(ann) and not osp.exists(join(ann)):
            return join(ann)
    prefix = dataset.get('data_prefix', None)
    prefixes = (prefix.values() if isinstance(prefix, dict) else
                [prefix] if isinstance(prefix, str) else [])
    for value in prefixes:
        if (isinstance(value, str) and value and not _is_remote(value)
                and not osp.exists(join(value))):
            return join(value)
    return None


def find_missing_data(cfg: Config, loaders: Tuple[str, ...]) -> Optional[str]:
    """One line naming a missing dataset path and the fix, or None if all exist.

    Args:
        cfg (Config): The merged config.
        loaders (tuple[str]): Dataloader keys to check, e.g.
            ``('train_dataloader', 'val_dataloader')``.
    """
    for loader_key in loaders:
        loader = cfg.get(loader_key, None)
        if not isinstance(loader, dict) or not isinstance(loader.get('dataset'), dict):
            continue
        for key, dataset in _dataset_leaves(loader['dataset'], f'{loader_key}.dataset'):
            missing = _missing_path(dataset)
            if missing is None:
                continue
            root = dataset.get('data_root', None)
            return (f'Dataset not found for {loader_key}: {missing} does not exist '
                    f'(cwd {os.getcwd()}); put the data there (see the config '
                    f'header / README, `make demo` generates the demo data) or point '
                    f'the config elsewhere with --cfg-options {key}.data_root=/path/'
                    f'to/data' + (f' (now {root})' if root else ''))
    return None


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, merge, check the data, set up distributed, train."""
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    merge_args(cfg, args)
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
    runner = (Runner.from_cfg(cfg) if 'runner_type' not in cfg else
              RUNNERS.build(cfg))
    runner.train()


if __name__ == '__main__':
    main()
