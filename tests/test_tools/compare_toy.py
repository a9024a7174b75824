"""A tiny model whose sparse layers come from its config, for compare_methods tests.

``CMToyNet(conv_cfg=dict(type='NMSparseConv', n=2, m=4, method='lbc'))`` builds its
conv through mmcv's ``build_conv_layer`` (``conv_cfg=None``: a plain ``Conv2d``), like
an mmpretrain / mmdet backbone, and its hidden linear from ``linear_cfg``. Data and
metric are lbc_toy's (``LBCToyData``, ``LBCToyMSE``).
"""
import copy
import uuid
from typing import Optional

import lbc_toy  # noqa: F401  (registers LBCToyData / LBCToyMSE)
from lbc_toy import IN_CH, LBCToyNet
from mmcv.cnn import build_conv_layer
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import nn


@MODELS.register_module(force=True)
class CMToyNet(BaseModel):
    """Conv (``conv_cfg``) + linear (``linear_cfg``) + dense head."""

    def __init__(self, conv_cfg: Optional[dict] = None,
                 linear_cfg: Optional[dict] = None, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.conv = build_conv_layer(conv_cfg, IN_CH, 8, 3, padding=1)
        cfg = copy.deepcopy(linear_cfg or dict(type='Linear'))
        cfg.update(in_features=8, out_features=8)
        self.fc = MODELS.build(cfg)
        self.head = nn.Linear(8, 1)

    # Same layers and data as LBCToyNet, so the same forward / loss / predict.
    forward = LBCToyNet.forward


def cm_cfg(work_dir: str, iters: int = 8, hook: Optional[dict] = None) -> dict:
    """A Runner config: iteration loop, LBC 2:4 layers, LBCHook, validation."""
    loader = dict(dataset=dict(type='LBCToyData'), batch_size=4, num_workers=0,
                  sampler=dict(type='InfiniteSampler', shuffle=True))
    val_loader = dict(dataset=dict(type='LBCToyData', size=8), batch_size=4,
                      num_workers=0, sampler=dict(type='DefaultSampler',
                                                  shuffle=False))
    return dict(
        work_dir=work_dir,
        experiment_name=f'cm_toy_{uuid.uuid4().hex}',
        model=dict(type='CMToyNet',
                   conv_cfg=dict(type='NMSparseConv', n=2, m=4, method='lbc'),
                   linear_cfg=dict(type='NMSparseLinear', n=2, m=4, method='lbc')),
        train_dataloader=loader,
        val_dataloader=val_loader,
        val_evaluator=dict(type='LBCToyMSE'),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9,
                                          weight_decay=1e-3),
                           constructor='LBCOptimWrapperConstructor'),
        train_cfg=dict(by_epoch=False, max_iters=iters, val_interval=iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=iters)),
        custom_hooks=[dict(type='LBCHook', **(hook or dict(t_f=0.5)))],
        log_processor=dict(by_epoch=False),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
    )


def write_cm_config(path: str, cfg: dict) -> str:
    lines = ["custom_imports = dict(imports=['compare_toy'], "
             'allow_failed_imports=False)']
    lines += [f'{key} = {value!r}' for key, value in cfg.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path
