"""Optimizer settings of the LBC scores (:class:`LBCOptimWrapperConstructor`)."""
import logging
from typing import Optional

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from .model_wrappers import lbc_scores

#: Param-group flag set on the scores' groups.
SCORES_GROUP_KEY = 'lbc_scores'
#: mmengine's per-parameter warning for frozen parameters, which the per-parameter
#: build (needed for the scores' groups) prints for every frozen stage's tensor.
FROZEN_SKIP = 'is skipped since its requires_grad=False'


class _DropFrozenSkips(logging.Filter):
    """Drop :data:`FROZEN_SKIP` records: frozen parameters are left out of the
    optimizer as in a dense run, where mmengine builds one group and says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return FROZEN_SKIP not in record.getMessage()


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LBCOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` plus the scores' own lr / weight decay.

    The Runner builds the optimizer before any hook runs, so the scores' settings
    live in the optimizer config::

        optim_wrapper = dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
            constructor='LBCOptimWrapperConstructor',
            paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=1.0))

    Every LBC ``scores`` parameter gets its own param group (flagged
    ``lbc_scores=True`` for ``LBCHook``'s audit) with ``lr = base_lr *
    scores_lr_mult`` and ``weight_decay = base_wd * scores_decay_mult``, whatever
    other ``custom_keys`` say; the defaults follow the authors' code
    (docs/method.md §10). Scores frozen at build time (mmdet's ``frozen_stages``)
    are in the optimizer too; mmengine's constructor would skip them.

    Args:
        optim_wrapper_cfg (dict): As for ``DefaultOptimWrapperConstructor``.
        paramwise_cfg (dict, optional): As for ``DefaultOptimWrapperConstructor``,
            plus ``scores_lr_mult`` (float, defaults to 1.0) and
            ``scores_decay_mult`` (float, defaults to 1.0: the weights' decay).
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        self.scores_lr_mult = float(paramwise_cfg.pop('scores_lr_mult', 1.0))
        self.scores_decay_mult = float(paramwise_cfg.pop('scores_decay_mult', 1.0))
        if self.scores_lr_mult < 0 or self.scores_decay_mult < 0:
            raise ValueError(f'scores_lr_mult ({self.scores_lr_mult}) and '
                             f'scores_decay_mult ({self.scores_decay_mult}) must be '
                             f'>= 0')
        # A non-empty paramwise_cfg makes the parent build one group per parameter.
        paramwise_cfg.setdefault('custom_keys', {})
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optim wrapper; see the class docstring for the scores."""
        scores = lbc_scores(model.module if hasattr(model, 'module') else model)
        frozen = [p for p in scores if not p.requires_grad]
        for param in frozen:  # the parent skips parameters without grad
            param.requires_grad_(True)
        logger, quiet = MMLogger.get_current_instance(), _DropFrozenSkips()
        logger.addFilter(quiet)
        try:
            optim_wrapper = super().__call__(model)
        finally:
            logger.removeFilter(quiet)
            for param in frozen:
                param.requires_grad_(False)
        ids = {id(p) for p in scores}
        for group in optim_wrapper.optimizer.param_groups:
            if not any(id(p) in ids for p in group['params']):
                continue
            group['lr'] = (group['lr'] if self.base_lr is None else
                           self.base_lr) * self.scores_lr_mult
            if self.base_wd is not None:
                group['weight_decay'] = self.base_wd * self.scores_decay_mult
            elif 'weight_decay' in group:
                group['weight_decay'] = group['weight_decay'] * self.scores_decay_mult
            group[SCORES_GROUP_KEY] = True
        return optim_wrapper
