"""FiniteCheckHook: stop training when the loss or the weights stop being finite.

A run whose learning rate explodes (or whose data holds a NaN) would otherwise go on
to the end with a NaN loss, write NaN weights into its checkpoints and exit 0. The
hook makes that a failure naming the iteration and, for weights, the tensors:

* after every training iteration it reads the loss the model returned (already a
  number: no extra pass over the model);
* every ``interval`` iterations, whenever the loss is not finite, before every
  checkpoint is written and at the end of training it scans the model's parameters
  and floating-point buffers (one reduction per tensor and a single device sync on
  the fast path). LBC ``scores`` are parameters, so the scan covers them too, and
  ``LBCHook`` leaves its own per-iteration scan of the scores to this hook when a
  run has one.

A run with an ``LBCHook`` but no ``FiniteCheckHook`` (a user's own config) is
guarded all the same: ``LBCHook`` then runs :func:`check_loss` after every iteration
and :func:`check_weights` before every checkpoint, and its end-of-training check
fails on non-finite weights.

Non-finite weights always make the next forward pass non-finite, so the loss check
stops such a run within one iteration; the periodic scan catches tensors that do not
enter the loss (LBC scores only matter when candidates are removed, and the removal
step refuses non-finite scores by itself).

It fails with ``FloatingPointError``, in every phase of an LBC run (before ``t_i``,
during candidate removal, after ``t_f``) and in dense or SR-STE / ASP runs alike.
"""
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
    return float(value)


#: The end of every divergence message: what to do about it.
FIX = 'training diverged (lower the learning rate, clip gradients or check the data)'


def where(runner, done: Optional[int] = None) -> str:
    """``'iteration 9 (epoch 1)'``: the iteration just done, 1-based, inside
    ``after_train_iter`` (where ``runner.iter`` is still that iteration's index);
    ``'iteration 24'`` for ``done``, a count of finished iterations (a checkpoint's
    ``meta['iter']``, or ``runner.iter`` after training)."""
    if done is not None:
        return f'iteration {done}'
    return f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})'


def saved_iter(checkpoint: dict) -> Optional[int]:
    """The iterations a checkpoint being saved holds (mmengine's ``meta['iter']``:
    ``runner.iter + 1`` in an iteration loop, ``runner.iter`` at an epoch's end)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    done = meta.get('iter') if isinstance(meta, dict) else None
    return done if isinstance(done, int) else None


def check_loss(runner, outputs: Optional[dict], owner: str = 'FiniteCheckHook') -> None:
    """Fail when the iteration's loss is not finite, naming the non-finite weights.

    Args:
        runner (Runner): The runner.
        outputs (dict, optional): What ``train_step`` returned (``after_train_iter``).
        owner (str): The hook named in the message.

    Raises:
        FloatingPointError: e.g. ``'LBCHook: non-finite loss (nan) at iteration 9
            (epoch 1); non-finite weights in 1 tensor: head.weight; training ...'``.
    """
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
    """Scan the model; fail naming the non-finite tensors.

    Args:
        runner (Runner): The runner.
        when (str): What the check precedes, for the message (e.g.
            ``'before saving a checkpoint'``); empty for none.
        owner (str): The hook named in the message.
        done (int, optional): Iterations finished (see :func:`where`); None
            inside ``after_train_iter``.

    Raises:
        FloatingPointError: naming the iteration and the tensors.
    """
    names = non_finite_tensors(runner.model)
    if names:
        at = f'{when} at' if when else 'at'
        raise FloatingPointError(
            f'{owner}: non-finite weights {at} {where(runner, done)} in '
            f'{describe_tensors(names)}; {FIX}')


@HOOKS.register_module()
class FiniteCheckHook(Hook):
    """Fail on a non-finite loss or non-finite weights, naming iteration and tensors.

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
