"""FiniteCheckHook and the loss / weight checks ``LBCHook`` also runs."""
import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..sparse_model import describe_tensors, non_finite_tensors

__all__ = ['FiniteCheckHook', 'check_loss', 'check_weights', 'describe_tensors',
           'non_finite_tensors', 'saved_iter']


def _loss_value(runner, outputs: Optional[dict]) -> Optional[float]:
    """The iteration's total loss as a float, or None when the model gave none."""
    value = outputs.get('loss') if isinstance(outputs, dict) else None
    if value is None:
        hub = runner.message_hub
        if 'train/loss' not in hub.log_scalars:
            return None
        value = hub.get_scalar('train/loss').current()
    if isinstance(value, torch.Tensor):
        value = value.detach()
        value = value.float().sum() if value.numel() != 1 else value
    return float(value)


#: The end of every divergence message: what to do about it.
FIX = 'training diverged (lower the learning rate, clip gradients or check the data)'


def where(runner, done: Optional[int] = None) -> str:
    """``'iteration 9 (epoch 1)'`` (1-based, inside ``after_train_iter``), or
    ``'iteration 24'`` for ``done`` finished iterations."""
    if done is not None:
        return f'iteration {done}'
    return f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})'


def saved_iter(checkpoint: dict) -> Optional[int]:
    """The iterations a checkpoint being saved holds (mmengine's ``meta['iter']``)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    done = meta.get('iter') if isinstance(meta, dict) else None
    return done if isinstance(done, int) else None


def check_loss(runner, outputs: Optional[dict], owner: str = 'FiniteCheckHook') -> None:
    """``FloatingPointError`` when the iteration's loss (``outputs`` of
    ``train_step``) is not finite, naming ``owner`` and the non-finite weights."""
    loss = _loss_value(runner, outputs)
    if loss is None or math.isfinite(loss):
        return
    names = non_finite_tensors(runner.model)
    weights = (f'non-finite weights in {describe_tensors(names)}' if names else
               'all weights finite')
    raise FloatingPointError(f'{owner}: non-finite loss ({loss}) at {where(runner)}; '
                             f'{weights}; {FIX}')


def check_weights(runner, when: str = '', owner: str = 'FiniteCheckHook',
                  done: Optional[int] = None) -> None:
    """Scan the model; ``FloatingPointError`` naming ``owner``, ``when`` (e.g.
    ``'before saving a checkpoint'``), the iteration (:func:`where`) and the
    non-finite tensors."""
    names = non_finite_tensors(runner.model)
    if names:
        at = f'{when} at' if when else 'at'
        raise FloatingPointError(
            f'{owner}: non-finite weights {at} {where(runner, done)} in '
            f'{describe_tensors(names)}; {FIX}')


@HOOKS.register_module()
class FiniteCheckHook(Hook):
    """Fail on a non-finite loss or non-finite weights, naming iteration and tensors.

    A diverged run would otherwise go on with a NaN loss, write NaN weights into its
    checkpoints and exit 0. The hook reads the loss after every iteration (no extra
    pass) and scans the parameters and floating-point buffers (LBC scores
    included; one device sync on the fast path) every ``interval`` iterations,
    whenever the loss is not finite, before every checkpoint and at the end. It
    raises ``FloatingPointError`` in dense, LBC, SR-STE and ASP runs alike. An
    ``LBCHook`` without it runs the same loss and checkpoint checks itself.

    Args:
        interval (int): Scan the weights every this many iterations (besides
            whenever the loss is not finite, before every checkpoint and at the
            end of training). Defaults to 50.
    """

    # Before LBCHook (ABOVE_NORMAL) ranks scores, and before the EMA, logger and
    # checkpoint hooks of the same iteration.
    priority = 'HIGH'

    def __init__(self, interval: int = 50) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f'FiniteCheckHook: interval must be an integer >= 1, got '
                             f'{interval!r}')
        self.interval = interval

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Check the loss; scan the weights when it is bad or every ``interval``."""
        check_loss(runner, outputs)
        if self.every_n_train_iters(runner, self.interval):
            check_weights(runner, '')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Never write non-finite weights into a checkpoint."""
        check_weights(runner, 'before saving a checkpoint', done=saved_iter(checkpoint))

    def after_train(self, runner) -> None:
        """Scan once more: the last update may have broken the weights."""
        check_weights(runner, 'at the end of training', done=runner.iter)
