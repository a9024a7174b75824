"""Tiny real model, data, metric and configs for the LBCHook / tools tests.

Registered (``force=True``) in mmengine's root registries, so configs written by the
tests (also ones run by ``tools/train.py`` in a subprocess with this folder on
``PYTHONPATH`` and ``custom_imports=dict(imports=['lbc_toy'])``) can build them.
"""
import os
import os.path as osp
import uuid
from typing import Optional

import torch
from mmengine.dist import get_rank
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from torch import nn
from torch.utils.data import Dataset

import lbc_mm  # noqa: F401  (registers LBCHook & co.)
from lbc_mm.layers import NMSparseConv, NMSparseLinear

TOY_DIR = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(TOY_DIR))


def subprocess_env() -> dict:
    """Environment for a tool run in a subprocess that builds the toy model: the repo
    and this folder on ``PYTHONPATH``, headless plots, one thread."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO, TOY_DIR] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('MPLBACKEND', 'Agg')
    env['OMP_NUM_THREADS'] = '1'
    return env

IN_CH = 8


@MODELS.register_module(force=True)
class LBCToyNet(BaseModel):
    """2:4 LBC conv + 2:4 LBC linear + dense head; input ``(B, 8, 4, 4)``.

    Args:
        frozen_conv (bool): Freeze every parameter of ``conv`` (scores included) at
            build time and at every ``train()``, like mmdet's ``frozen_stages``.
        method (str): The sparse layers' method; ``'dense'``: stock ``nn.Conv2d`` /
            ``nn.Linear`` with the same state-dict keys (a dense "model zoo" model).
    """

    def __init__(self, frozen_conv: bool = False, method: str = 'lbc',
                 data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        if method == 'dense':
            self.conv = nn.Conv2d(IN_CH, 8, 3, padding=1)
            self.fc = nn.Linear(8, 8)
        else:
            self.conv = NMSparseConv(IN_CH, 8, 3, padding=1, n=2, m=4,
                                     method=method)  # 144 groups
            self.fc = NMSparseLinear(8, 8, n=2, m=4, method=method)  # 16 groups
        self.head = nn.Linear(8, 1)
        self.frozen_conv = frozen_conv
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_conv:
            for param in self.conv.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze()
        return self

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs  # (B, 8, 4, 4)
        x = torch.relu(self.conv(x)).mean(dim=(2, 3))  # (B, 8)
        out = self.head(torch.relu(self.fc(x))).squeeze(1)  # (B,)
        if mode == 'loss':
            target = (torch.stack(data_samples)
                      if isinstance(data_samples, list) else data_samples)
            return dict(loss=((out - target)**2).mean())
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(out, data_samples)]
        return out


@DATASETS.register_module(force=True)
class LBCToyData(Dataset):
    """Deterministic regression data: ``size`` samples ``(8, 4, 4)`` -> scalar."""

    metainfo: dict = dict()

    def __init__(self, size: int = 24, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, IN_CH, 4, 4, generator=gen)
        weight = torch.randn(IN_CH * 16, generator=gen)
        self.y = torch.tanh(self.x.flatten(1) @ weight / 8)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.x[index], data_samples=self.y[index])


@METRICS.register_module(force=True)
class LBCToyMSE(BaseMetric):
    """Mean squared error of :class:`LBCToyNet` predictions."""

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            self.results.append(float((sample['pred'] - sample['target'])**2))

    def compute_metrics(self, results) -> dict:
        return dict(mse=sum(results) / max(1, len(results)))


@HOOKS.register_module(force=True)
class LBCToyDumpHook(Hook):
    """Save this rank's ``alive`` buffers to ``<work_dir>/alive_rank<r>.pth``."""

    priority = 'LOWEST'

    def after_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        state = {k: v.cpu() for k, v in model.state_dict().items()
                 if k.endswith(('.alive', '.scores'))}
        torch.save(state, osp.join(runner.work_dir, f'alive_rank{get_rank()}.pth'))


def toy_cfg(work_dir: str,
            by_epoch: bool = False,
            length: int = 12,
            hook: Optional[dict] = None,
            frozen_conv: bool = False,
            method: str = 'lbc',
            with_val: bool = False,
            checkpoint_interval: int = 0,
            decay_mult: float = 0.0,
            weight_decay: float = 1e-2,
            custom_hooks: Optional[list] = None) -> dict:
    """A complete Runner config around :class:`LBCToyNet` (24 samples, batch 4).

    Args:
        work_dir (str): Work dir.
        by_epoch (bool): Epoch loop of ``length`` epochs (6 iterations each), else
            iteration loop of ``length`` iterations.
        hook (dict, optional): LBCHook arguments; None: no LBCHook.
        frozen_conv (bool): See :class:`LBCToyNet`.
        method (str): See :class:`LBCToyNet`. Defaults to 'lbc'.
        with_val (bool): Add a validation loop (every 4 iterations / every epoch).
        checkpoint_interval (int): CheckpointHook interval; 0: only at the end.
        decay_mult (float): ``scores_decay_mult``.
        weight_decay (float): Base weight decay of SGD.
        custom_hooks (list, optional): Extra hooks after the LBCHook.
    """
    sampler = (dict(type='DefaultSampler', shuffle=True, seed=0) if by_epoch else
               dict(type='InfiniteSampler', shuffle=True, seed=0))
    loader = dict(dataset=dict(type='LBCToyData'), sampler=sampler, batch_size=4,
                  num_workers=0)
    hooks = [] if hook is None else [dict(type='LBCHook', **hook)]
    cfg = dict(
        work_dir=work_dir,
        experiment_name=f'lbc_toy_{uuid.uuid4().hex}',
        model=dict(type='LBCToyNet', frozen_conv=frozen_conv, method=method),
        train_dataloader=loader,
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=0.9,
                           weight_decay=weight_decay),
            constructor='LBCOptimWrapperConstructor',
            paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=decay_mult)),
        train_cfg=(dict(by_epoch=True, max_epochs=length, val_interval=1)
                   if by_epoch else
                   dict(by_epoch=False, max_iters=length, val_interval=4)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', by_epoch=by_epoch,
                            interval=checkpoint_interval or length)),
        custom_hooks=hooks + list(custom_hooks or []),
        log_processor=dict(by_epoch=by_epoch),
        randomness=dict(seed=0),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
    )
    if with_val:
        cfg.update(
            val_dataloader=dict(dataset=dict(type='LBCToyData', size=8),
                                sampler=dict(type='DefaultSampler', shuffle=False),
                                batch_size=4, num_workers=0),
            val_evaluator=dict(type='LBCToyMSE'),
            val_cfg=dict())
        cfg.update(test_dataloader=cfg['val_dataloader'],
                   test_evaluator=cfg['val_evaluator'], test_cfg=dict())
    return cfg


def write_config(path: str, cfg: dict) -> str:
    """Write a toy config as a Python config file importing this module.

    Args:
        path (str): Destination ``.py`` file.
        cfg (dict): A config from :func:`toy_cfg` (plain Python values).

    Returns:
        str: ``path``.
    """
    lines = ["custom_imports = dict(imports=['lbc_toy'], allow_failed_imports=False)"]
    lines += [f'{key} = {value!r}' for key, value in cfg.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def build_runner(cfg: dict):
    """``Runner.from_cfg`` of a toy config (a plain dict)."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    return Runner.from_cfg(Config(cfg))


def reset_mmengine_globals() -> None:
    """Drop the global instances a Runner leaves behind (as RunnerTestCase does)."""
    import logging

    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer
    logging.shutdown()
    MMLogger._instance_dict.clear()
    Visualizer._instance_dict.clear()
    DefaultScope._instance_dict.clear()
    MessageHub._instance_dict.clear()


def ranks_agree_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two gloo ranks running ``check_ranks_agree`` (LBCHook's) twice: after
    the same removal on both ranks, then after rank 1 changed one group of ``fc``.
    Writes what each check said to ``<out_dir>/rank<r>.txt``."""
    import torch.distributed as torch_dist

    from lbc_mm.hooks.lbc_checks import check_ranks_agree
    from lbc_mm.sparse_model import lbc_layers
    torch_dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                  rank=rank, world_size=2)
    results = []
    try:
        torch.manual_seed(0)
        model = LBCToyNet()
        # equal scores: ties -> the same on both ranks
        model.fc.sparsity.remove_candidates(3)
        layers = lbc_layers(model)
        for diverge in (False, True):
            if diverge and rank == 1:
                model.fc.alive[4] = model.fc.alive[4].flip(0)
            try:
                check_ranks_agree(layers)
                results.append('agree')
            except RuntimeError as err:
                results.append(str(err))
    finally:
        torch_dist.destroy_process_group()
        with open(osp.join(out_dir, f'rank{rank}.txt'), 'w') as f:
            f.write('\n'.join(results))
