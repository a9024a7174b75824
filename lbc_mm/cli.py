"""Command-line plumbing of ``tools/train.py`` and ``tools/test.py``: their arguments
(mmdet / mmpretrain style) and how they merge into the config, the check that the
datasets a config needs exist, the runner, and the check that the checkpoint it
resumes from or loads fits its model. How every tool stops is
:mod:`lbc_mm.tool_exit`.
"""
import argparse
import logging
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from .tool_exit import fail

#: Dataset types that download their data themselves when it is missing.
SELF_DOWNLOADING = ('CIFAR10', 'CIFAR100', 'MNIST', 'FashionMNIST')
#: Keys of a dataset config that hold inner dataset configs.
INNER_KEYS = ('dataset', 'datasets')


class KeyValueAction(DictAction):
    """mmengine's ``DictAction``, but ``KEY`` without ``=VALUE`` is an argparse
    usage error (usage line, exit 2) instead of a ``ValueError`` traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values if isinstance(values, (list, tuple)) else [values]:
            if '=' not in item:
                raise argparse.ArgumentError(
                    self, f'expected KEY=VALUE, got {item!r} (e.g. '
                    f'train_cfg.max_epochs=12)')
        super().__call__(parser, namespace, values, option_string)


def add_runner_args(parser: argparse.ArgumentParser, loader: str) -> None:
    """``--work-dir``, ``--cfg-options`` (its example names the dataloader key
    ``loader``), ``--launcher``, ``--local-rank``."""
    parser.add_argument('--work-dir', help='the dir to save logs and outputs')
    parser.add_argument(
        '--cfg-options', nargs='+', action=KeyValueAction,
        help='override config settings, e.g. '
        f'{loader}.dataset.data_root=/data/coco/')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser, loader: str,
                      argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Add the runner arguments (:func:`add_runner_args`), parse, and export
    ``LOCAL_RANK`` for launchers that pass ``--local-rank``."""
    add_runner_args(parser, loader)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_runner_args(cfg: Config, args: argparse.Namespace) -> None:
    """Launcher, ``--cfg-options`` and the work dir into ``cfg`` (in place).

    work_dir: command line > config > ``./work_dirs/<config name>``.
    """
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])


def parse_train_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``tools/train.py``'s arguments (mmdet / mmpretrain style)."""
    parser = argparse.ArgumentParser(description='Train a model with lbc_mm')
    parser.add_argument('config', help='train config file path')
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
    return parse_runner_args(parser, 'train_dataloader', argv)


def merge_train_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply ``tools/train.py``'s command line to the config (in place); return it."""
    apply_runner_args(cfg, args)
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
    if args.resume is not None:  # 'auto': the latest checkpoint of the work dir
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    return cfg


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


def _missing_path(dataset: dict) -> Optional[str]:
    """The first local path a dataset config needs that does not exist, or None."""
    if dataset.get('download', dataset.get('type') in SELF_DOWNLOADING):
        return None
    data_root = dataset.get('data_root', None) or ''
    if '://' in data_root:
        return None
    if data_root and not osp.isdir(data_root):
        return data_root
    ann_file = dataset.get('ann_file', None)
    prefix = dataset.get('data_prefix', None)
    paths = [ann_file] if isinstance(ann_file, str) else list(ann_file or [])
    paths += list(prefix.values()) if isinstance(prefix, dict) else [prefix]
    for path in paths:
        if isinstance(path, str) and path and '://' not in path:
            path = osp.join(data_root, path)  # an absolute path stays as it is
            if not osp.exists(path):
                return path
    return None


def find_missing_data(cfg: Config, loaders: Tuple[str, ...]) -> Optional[str]:
    """One line naming a missing dataset path and the fix, or None if all the
    datasets of ``loaders`` (e.g. ``('train_dataloader', )``) exist."""
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


def check_runner_checkpoint(runner: Runner, path: str, allow_partial: bool = False,
                            hint: str = '') -> Optional[str]:
    """Refuse, in one line on stderr with exit code 1, a checkpoint (file or
    address) that does not fit the runner's model, is corrupted or is refused
    (:func:`lbc_mm.apis.check_checkpoint`; mmengine would only log mismatches).

    Args:
        allow_partial (bool): return a key mismatch instead of refusing.
        hint (str): appended to the refusal of a key mismatch (e.g. the flag that
            allows a partial load).
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper

    from .apis import check_checkpoint
    from .checkpoint_io import CheckpointMismatchError
    # unwrapped as mmengine's load_state_dict does (DDP, and --tta's BaseTTAModel)
    wrapped = is_model_wrapper(runner.model) or isinstance(runner.model, BaseTTAModel)
    model = runner.model.module if wrapped else runner.model
    try:
        _ckpt, problem = check_checkpoint(model, path, allow_partial=allow_partial)
    except FileNotFoundError as exc:
        fail(f'error: {exc}', 1)
    except KeyError as exc:  # torchvision:// / open-mmlab:// name mmengine lacks
        fail(f'error: checkpoint {path}: no checkpoint named {exc}', 1)
    except CheckpointMismatchError as exc:
        mismatch = 'does not match the config' in str(exc)
        fail(f'error: {exc}{hint if mismatch else ""}', 1)
    return problem
