"""Command-line plumbing shared by ``tools/train.py`` and ``tools/test.py``.

The arguments both tools take (mmdet / mmpretrain style), how they merge into the
config, and the check that the datasets a config needs exist (one line naming the
missing path and the fix, instead of a traceback from deep inside a dataset class).
"""
import argparse
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

#: Dataset types that download their data themselves when it is missing.
SELF_DOWNLOADING = ('CIFAR10', 'CIFAR100', 'MNIST', 'FashionMNIST')
#: Keys of a dataset config that hold inner dataset configs.
INNER_KEYS = ('dataset', 'datasets')



def add_runner_args(parser: argparse.ArgumentParser, loader: str) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank``.

    Args:
        parser (ArgumentParser): The tool's parser.
        loader (str): Dataloader key used in the ``--cfg-options`` example.
    """
    parser.add_argument('--work-dir', help='the dir to save logs and outputs')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. '
        f'{loader}.dataset.data_root=/data/coco/')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser,
                      argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse, and export ``LOCAL_RANK`` for launchers that pass ``--local-rank``."""
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


def build_runner(cfg: Config) -> Runner:
    """The config's runner (``runner_type`` if set, else mmengine's ``Runner``)."""
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


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
