"""``RemovalSchedule``: LBCHook's progress measure and ``card(t)`` for a run.

``t_i`` / ``t_f`` are given in ``unit`` and converted to the measure's unit (epochs
or iterations) once, by :meth:`RemovalSchedule.resolve`; ``card_update='epoch'``
recomputes ``card`` once per epoch, at its start (the authors' code, docs/method.md
§10). Pure Python over :mod:`lbc_mm.sparsity`.
"""
import math
from typing import Optional

from ..sparsity import card, card_at_epoch_start

UNITS = ('fraction', 'epoch', 'iter')
CARD_UPDATES = ('iter', 'epoch')


class RemovalSchedule:
    """The candidate-removal schedule of a run (arguments as ``LBCHook``'s)."""

    def __init__(self, t_i: float = 0.0, t_f: float = 0.5, unit: str = 'fraction',
                 by_epoch: Optional[bool] = None, power: float = 3.0,
                 card_update: str = 'iter') -> None:
        for what, value, allowed in (('unit', unit, UNITS),
                                     ('card_update', card_update, CARD_UPDATES)):
            if value not in allowed:
                raise ValueError(f'LBCHook: {what} must be one of {allowed}, got '
                                 f'{value!r}')
        if not 0 <= t_i <= t_f:
            raise ValueError(f'LBCHook: need 0 <= t_i <= t_f, got t_i={t_i}, '
                             f't_f={t_f}')
        if unit == 'fraction' and t_f > 1:
            raise ValueError(f"LBCHook: with unit='fraction' t_f must be <= 1, got "
                             f'{t_f}')
        if not power > 0:
            raise ValueError(f'LBCHook: power must be positive, got {power}')
        self.t_i, self.t_f, self.unit = float(t_i), float(t_f), unit
        self.by_epoch, self.power = by_epoch, float(power)
        self.card_update = card_update
        # Resolved for a run by resolve().
        self.measure_epochs = self.loop_by_epoch = False
        self.iters_per_epoch = 1
        self.ti = self.tf = self.length = 0.0

    @property
    def scale(self) -> str:
        """The measure's unit, plural (``'epochs'`` or ``'iterations'``)."""
        return 'epochs' if self.measure_epochs else 'iterations'

    def resolve(self, loop_by_epoch: bool, iters_per_epoch: int,
                max_iters: int, key: str = 'custom_hooks.<i>') -> None:
        """Fix the measure and ``t_i`` / ``t_f`` in it for a run.

        Raises:
            ValueError: ``t_f`` lies after the end of training; the message names
                the ``--cfg-options`` fix for the hook's config ``key``.
        """
        self.loop_by_epoch = loop_by_epoch
        self.measure_epochs = (loop_by_epoch if self.by_epoch is None
                               else bool(self.by_epoch))
        self.iters_per_epoch = max(1, iters_per_epoch)
        self.length = (max_iters / self.iters_per_epoch
                       if self.measure_epochs else float(max_iters))
        factor = {
            'fraction': self.length,
            'epoch': 1.0 if self.measure_epochs else float(self.iters_per_epoch),
            'iter': 1.0 / self.iters_per_epoch if self.measure_epochs else 1.0,
        }[self.unit]
        self.ti, self.tf = self.t_i * factor, self.t_f * factor
        if self.tf > self.length * (1 + 1e-9):
            raise ValueError(
                f'LBCHook: t_f={self.t_f:g} ({self.unit}) = {self.tf:g} {self.scale} '
                f'is after the end of training ({self.length:g} {self.scale}): the '
                f'model would not end N:M; set it inside training, e.g. '
                f'--cfg-options {key}.t_f={self.length / factor / 2:g}')

    def progress(self, iteration: int, epoch: int, batch_idx: int) -> float:
        """Progress ``t`` after an iteration (0-based, just done): iterations done,
        or epochs done plus the fraction of the current one (``batch_idx``)."""
        if not self.measure_epochs:
            return float(iteration + 1)
        if self.loop_by_epoch:
            return epoch + (batch_idx + 1) / self.iters_per_epoch
        return (iteration + 1) / self.iters_per_epoch

    def card(self, t: float, num_candidates: int) -> int:
        """Candidates to keep per group after progress ``t``: ``card(t)`` (per
        iteration), or the count of the epoch that follows, recomputed at its
        start (per epoch)."""
        if self.card_update == 'iter':
            return card(t, num_candidates, self.ti, self.tf, self.power)
        epoch_length = 1.0 if self.measure_epochs else float(self.iters_per_epoch)
        # Epochs completed after this iteration = the 0-based epoch of the next
        # one (the small slack absorbs float division at the boundary).
        epochs_done = math.floor(t / epoch_length + 1e-9)
        return card_at_epoch_start(epochs_done, num_candidates, self.ti, self.tf,
                                   self.power, epoch_length)

    def describe(self) -> str:
        """``from t=.. to t=.. <scale> of <length> (power .., card recomputed ..)``."""
        return (f'from t={self.ti:g} to t={self.tf:g} {self.scale} of '
                f'{self.length:g} (power {self.power:g}, card recomputed every '
                f'{self.card_update})')
