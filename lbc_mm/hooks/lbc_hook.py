"""LBCHook: drives the LBC candidate-removal schedule during training.

Zhang, Lin et al., "Learning Best Combination for Efficient N:M Sparsity", NeurIPS
2022 (arXiv 2206.06662); docs/method.md §5-§8. The math lives in
:mod:`lbc_mm.sparsity` (``card``, ``removal_step``); the layers own their state
(``scores``, ``alive``); this hook only decides *when*:

* after every training iteration it computes the progress ``t`` and calls
  ``remove_candidates(card(t))`` on every sparse LBC layer; at card 1 it freezes the
  layer's scores (no gradient, hence no momentum and no weight decay from then on);
* alive scores that are not finite stop training, naming the layer and iteration
  (checked every iteration, unless the run has a :class:`FiniteCheckHook`, whose
  periodic scan of the parameters covers the scores; a removal step refuses
  non-finite scores in any case);
* it logs ``lbc/alive`` (mean alive candidates per group), ``lbc/card`` (the
  schedule), ``lbc/sparsity`` (fraction of masked weights in LBC layers) and
  ``lbc/nm_layers`` (layers already exactly N:M) through the message hub, so the text
  log and every visualizer backend (TensorBoard) show them;
* at every card step (and once more at the end) it logs how settled the choice is
  (:mod:`lbc_mm.sparsity.diagnostics`, on a fixed sample of groups per layer):
  ``lbc/margin_steps``, the median gap between the lowest kept and the highest
  removed alive score in units of the RMS per-iteration score change (below
  ``UNSETTLED_STEPS`` = 3 the end-of-training line says the window was short),
  ``lbc/agree_mag``, the fraction of groups whose best candidate is the magnitude
  choice (chance: 1/C), ``lbc/tied``, the fraction of decisions taken on exactly
  equal scores (scores that barely moved from their initial value), and
  ``lbc/score_spread``, the spread of alive scores in a group relative to their
  initial value;
* at ``after_train`` it checks that the model (and an ``EMAHook``'s EMA model) is
  exactly N:M and that all DDP ranks chose the same candidates, failing loudly with
  the offending layers, and writes ``<work_dir>/lbc_schedule.png``.

Progress ``t``: with an epoch-based measure (``by_epoch=True``, the default for
``EpochBasedTrainLoop``) ``t = epoch + (batch_idx + 1) / len(train_dataloader)``
after an iteration, i.e. completed epochs plus the fraction of the current epoch
done; with an iteration measure ``t`` = iterations done. ``t_i`` / ``t_f`` are given
in ``unit`` ('epoch', 'iter', or 'fraction' of the whole run) and converted to the
measure's unit once, at ``before_train``.

When ``card`` changes (``card_update``): ``'iter'`` (default) recomputes ``card(t)``
after every iteration, so candidates go one or a few at a time; ``'epoch'`` is the LBC
authors' released code: ``card`` is recomputed once per epoch, at its start, and every
removal step of that epoch uses it (nothing is removed during the first epoch, then
several candidates go at each epoch start). Both agree at epoch boundaries.

Fine-tuning a finished LBC model (two-stage: an ImageNet backbone loaded into a
detector): layers that load at one candidate per group are finished at
``before_train``; their scores freeze and no removal step or option ever brings a
removed candidate back (``alive`` only loses entries). ``require_finished=True`` makes
that a requirement: a layer loaded with more than one candidate in some group stops
training at ``before_train``, naming it (the checkpoint was not a finished LBC run,
or did not load).

Frozen layers (docs/method.md §8): mmdet's ``frozen_stages`` turns ``requires_grad``
off on every parameter of the stem and stage 1 - scores included - and turns it off
again at every ``model.train()``. A sparse LBC layer whose weight does not require
gradients at ``before_train`` is "frozen" and follows ``frozen_layers``:

* ``'learn'`` (default): its scores keep learning (``requires_grad`` is switched back
  on before every iteration) and follow the same schedule. LBC's criterion is the
  task loss, which is as meaningful for fixed (pretrained) weights as for trained
  ones: the layer ends with the candidates that hurt the loss least, at the cost of
  the scores' backward through those layers.
* ``'asp'``: it takes the magnitude (ASP) mask at once (candidates removed down to
  the one equal to the N largest ``|w|`` of each group) and its scores freeze. Free,
  deterministic, and the usual choice when those weights are never retrained.

EMA (``EMAHook``): the EMA model shares the trained model's candidate choice. Its
``alive`` buffers are copied from the trained model (averaging a set of candidates is
meaningless, and with ``update_buffers=True`` mmengine would leave the bool buffers
untouched) and its scores of removed candidates are set to exactly 0, before every
validation, before every checkpoint and at the end of training. Its weights are
averaged as usual; the mask is applied on top, so the EMA model ends exactly N:M too.

Resume: ``scores`` and ``alive`` are in the model's state dict and the optimizer
state in the checkpoint; the hook's own state (the history behind the plot) goes into
``checkpoint['lbc_hook']``. Layers already at one candidate per group are frozen again
at ``before_train``, so a resumed run continues exactly like an uninterrupted one.

The scores' own lr / weight decay come from the optimizer config, see
:mod:`lbc_mm.optim` (the optimizer is built before hooks run).
"""
import logging
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_gather, get_world_size, is_main_process
from mmengine.hooks import EMAHook, Hook, LoggerHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop
from torch import Tensor, nn

from ..export.io import atomic_write
from ..layers import sparse_layers
from ..optim import SCORES_GROUP_KEY
from ..sparsity import (candidate_matrix, card, card_at_epoch_start, magnitude_mask,
                        to_groups)
from .finite_check import FiniteCheckHook
from ..sparsity import diagnostics

#: File written to the work dir at the end of training.
PLOT_NAME = 'lbc_schedule.png'
#: Checkpoint key of the hook's own state.
CKPT_KEY = 'lbc_hook'
#: Message-hub key prefix (the log processor strips ``train/``).
LOG_PREFIX = 'train/lbc/'
UNITS = ('fraction', 'epoch', 'iter')
FROZEN_MODES = ('learn', 'asp')
CARD_UPDATES = ('iter', 'epoch')


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def lbc_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, layer)`` for the sparse LBC layers of a (possibly wrapped) model."""
    return [(name, layer) for name, layer in sparse_layers(_unwrap(model))
            if layer.method == 'lbc']


def nm_problems(model: nn.Module, prefix: str = '') -> List[str]:
    """Describe every sparse LBC layer that is not exactly N:M.

    Exactly N:M means one alive candidate per group, so the mask keeps exactly ``n``
    of every ``m`` weights of every group.

    Args:
        model (nn.Module): The model (wrappers are unwrapped).
        prefix (str): Put before each layer name (e.g. ``'EMA model: '``).

    Returns:
        list[str]: One line per offending layer; empty when all are exact.
    """
    lines = []
    with torch.no_grad():
        for name, layer in lbc_layers(model):
            alive = layer.num_alive  # (G,)
            kept = to_groups(layer.get_mask(), layer.m).sum(dim=1)  # (G,)
            bad_alive = int((alive != 1).sum())
            bad_mask = int((kept != layer.n).sum())
            if bad_alive or bad_mask:
                lines.append(
                    f'{prefix}{name} ({layer.n}:{layer.m}, weight '
                    f'{tuple(layer.weight.shape)}): {bad_alive} of {alive.numel()} '
                    f'groups have more than one alive candidate (up to '
                    f'{int(alive.max())}), {bad_mask} groups do not keep exactly '
                    f'{layer.n} of {layer.m} weights')
    return lines


def alive_checksum(alive: Tensor) -> Tensor:
    """Order-sensitive float64 checksum of a bool ``alive`` buffer (exact < 2**53)."""
    flat = alive.flatten().to(torch.float64)  # (G*C,)
    index = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    return torch.stack([flat.sum(), flat @ index])  # (2,)


@HOOKS.register_module()
class LBCHook(Hook):
    """Drive the LBC removal schedule, freeze, log and check N:M.

    Args:
        t_i (float): Start of candidate removal, in ``unit``. Defaults to 0.
        t_f (float): End of removal (card 1 from then on), in ``unit``. Defaults
            to 0.5 (with ``unit='fraction'``: half of the run, the paper's default).
        unit (str): Unit of ``t_i`` / ``t_f``: ``'fraction'`` of the run,
            ``'epoch'`` or ``'iter'``. Defaults to ``'fraction'``.
        by_epoch (bool, optional): Measure progress in (fractional) epochs rather
            than iterations. Defaults to None: follow the train loop.
        power (float): Exponent ``p`` of the schedule. Defaults to 3 (paper).
        frozen_layers (str): What layers with frozen weights do: ``'learn'`` or
            ``'asp'`` (see the module docstring). Defaults to ``'learn'``.
        plot (bool): Write ``lbc_schedule.png`` to the work dir at the end of
            training. Defaults to True.
        log_interval (int, optional): Compute and log the statistics every this
            many iterations (and at epoch ends). Defaults to None: the
            ``LoggerHook`` interval.
        card_update (str): ``'iter'``: recompute ``card`` after every iteration;
            ``'epoch'``: once per epoch, at its start (the authors' code).
            Defaults to ``'iter'``.
        require_finished (bool): Every LBC layer must already be at one
            candidate per group at ``before_train`` (fine-tuning a finished LBC
            checkpoint with its masks fixed). Defaults to False.
    """

    priority = 'ABOVE_NORMAL'  # before EMAHook, LoggerHook and CheckpointHook

    def __init__(self,
                 t_i: float = 0.0,
                 t_f: float = 0.5,
                 unit: str = 'fraction',
                 by_epoch: Optional[bool] = None,
                 power: float = 3.0,
                 frozen_layers: str = 'learn',
                 plot: bool = True,
                 log_interval: Optional[int] = None,
                 card_update: str = 'iter',
                 require_finished: bool = False) -> None:
        if unit not in UNITS:
            raise ValueError(f'LBCHook: unit must be one of {UNITS}, got {unit!r}')
        if not 0 <= t_i <= t_f:
            raise ValueError(f'LBCHook: need 0 <= t_i <= t_f, got t_i={t_i}, '
                             f't_f={t_f}')
        if unit == 'fraction' and t_f > 1:
            raise ValueError(f"LBCHook: with unit='fraction' t_f must be <= 1, got "
                             f'{t_f}')
        if not power > 0:
            raise ValueError(f'LBCHook: power must be positive, got {power}')
        if frozen_layers not in FROZEN_MODES:
            raise ValueError(f'LBCHook: frozen_layers must be one of {FROZEN_MODES}, '
                             f'got {frozen_layers!r}')
        if log_interval is not None and log_interval < 1:
            raise ValueError(f'LBCHook: log_interval must be >= 1, got {log_interval}')
        if card_update not in CARD_UPDATES:
            raise ValueError(f'LBCHook: card_update must be one of {CARD_UPDATES}, '
                             f'got {card_update!r}')
        self.card_update = card_update
        self.require_finished = bool(require_finished)
        self.t_i = float(t_i)
        self.t_f = float(t_f)
        self.unit = unit
        self.by_epoch = by_epoch
        self.power = float(power)
        self.frozen_layers = frozen_layers
        self.plot = plot
        self.log_interval = log_interval
        # Resolved at before_train.
        self._layers: List[Tuple[str, nn.Module]] = []
        self._finished: set = set()  # names of layers at one candidate per group
        self._relearn: List[Tuple[str, nn.Module]] = []  # frozen, scores learn
        self._scan_scores = True  # False when a FiniteCheckHook scans them
        self._measure_epochs = False
        self._loop_by_epoch = False
        self._iters_per_epoch = 1
        self._ti = self._tf = self._length = 0.0
        self._interval = 50
        # Last card applied per layer (None: unknown) and the statistics cache.
        self._applied: Dict[str, Optional[int]] = {}
        self._stats_cache: Optional[tuple] = None
        # (t, mean alive per group, sparsity); kept across resume for the plot.
        self.history: List[List[float]] = []
        # Settledness diagnostics (see _diag_* below): sampled score snapshots,
        # per-layer sums of squared per-iteration steps, the last card step's values.
        self._diag_prev: Dict[str, Tuple[Tensor, Tensor]] = {}
        self._diag_idx: Dict[str, Tensor] = {}
        self._diag_steps: Dict[str, List[float]] = {}
        self._diag_pending: List[Tensor] = []
        self._diag_ties = [0, 0]  # decisions on exactly equal scores, decisions
        self._diag_spread: List[Tuple[float, int]] = []
        self.diagnostics: Dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------
    def before_train(self, runner) -> None:
        """Find the LBC layers, resolve the schedule, handle frozen layers."""
        self._layers = lbc_layers(runner.model)
        if not self._layers:
            raise RuntimeError(
                "LBCHook: the model has no sparse LBC layer (NMSparseConv / "
                "NMSparseLinear with method='lbc' and in-channels divisible by M); "
                'check conv_cfg / the NMSparsify transform in the config')
        self._log_dense_fallbacks(runner.model)
        self._resolve_schedule(runner)
        self._finished = set()
        self._applied = {}
        self._stats_cache = None
        for name, layer in self._layers:
            if int(layer.num_alive.max()) == 1:  # finished before a resume
                layer.freeze_scores()
                self._finished.add(name)
                self._applied[name] = 1
        if self.require_finished:
            self._check_finished()
        self._setup_frozen_layers(runner)
        self._check_optimizer(runner)
        self._scan_scores = not any(
            isinstance(hook, FiniteCheckHook) for hook in runner.hooks)
        if runner.iter == 0 and not self.history:
            self._record(runner, 0.0)
        scale = 'epochs' if self._measure_epochs else 'iterations'
        groups = sum(layer.num_alive.numel() for _, layer in self._layers)
        print_log(
            f'LBCHook: {len(self._layers)} LBC layers ({groups} groups); candidates '
            f'removed from t={self._ti:g} to t={self._tf:g} {scale} of '
            f'{self._length:g} (power {self.power:g}, card recomputed every '
            f'{self.card_update}); {len(self._finished)} layers already N:M',
            logger='current')

    @staticmethod
    def _log_dense_fallbacks(model: nn.Module) -> None:
        """Name the sparse-typed layers that stayed dense (Cin not divisible by M).

        The layer logs its shape when built; only the model knows its name.
        """
        dense = [f'{name} {tuple(layer.weight.shape)} ({layer.n}:{layer.m})'
                 for name, layer in sparse_layers(model, only_sparse=False)
                 if not layer.is_sparse]
        if dense:
            print_log(f'LBCHook: {len(dense)} layer(s) stay dense, input channels '
                      f'not divisible by M: {", ".join(dense)}', logger='current')

    def _resolve_schedule(self, runner) -> None:
        self._loop_by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
        self._measure_epochs = (self._loop_by_epoch
                                if self.by_epoch is None else bool(self.by_epoch))
        self._iters_per_epoch = max(1, len(runner.train_dataloader))
        max_iters = runner.max_iters
        self._length = (max_iters / self._iters_per_epoch
                        if self._measure_epochs else float(max_iters))
        factor = {
            'fraction': self._length,
            'epoch': 1.0 if self._measure_epochs else float(self._iters_per_epoch),
            'iter': 1.0 / self._iters_per_epoch if self._measure_epochs else 1.0,
        }[self.unit]
        self._ti, self._tf = self.t_i * factor, self.t_f * factor
        if self._tf > self._length * (1 + 1e-9):
            scale = 'epochs' if self._measure_epochs else 'iterations'
            raise ValueError(
                f'LBCHook: t_f={self.t_f:g} ({self.unit}) = {self._tf:g} {scale} is '
                f'after the end of training ({self._length:g} {scale}): the model '
                f'would not end N:M')
        logger_hooks = [h for h in runner.hooks if isinstance(h, LoggerHook)]
        self._interval = self.log_interval or (
            logger_hooks[0].interval if logger_hooks else 50)

    def _setup_frozen_layers(self, runner) -> None:
        frozen = [(name, layer) for name, layer in self._layers
                  if not layer.weight.requires_grad and name not in self._finished]
        self._relearn = []
        if not frozen:
            return
        for name, layer in frozen:
            fresh = bool(layer.alive.all())
            if self.frozen_layers == 'asp' and fresh:
                self._assign_magnitude_candidate(layer)
                layer.freeze_scores()
                self._finished.add(name)
                self._applied[name] = 1
            else:
                if self.frozen_layers == 'asp':
                    print_log(
                        f'LBCHook: frozen layer {name} has already removed '
                        f"candidates (resumed from a 'learn' run?); its scores "
                        f'keep learning', logger='current', level=logging.WARNING)
                layer.scores.requires_grad_(True)
                self._relearn.append((name, layer))
        names = ', '.join(name for name, _ in frozen)
        what = ('take the magnitude (ASP) mask' if self.frozen_layers == 'asp' else
                'keep learning their scores')
        print_log(f'LBCHook: {len(frozen)} LBC layers have frozen weights and '
                  f"{what} (frozen_layers='{self.frozen_layers}'): {names}",
                  logger='current')

    @staticmethod
    def _assign_magnitude_candidate(layer: nn.Module) -> None:
        """Remove every candidate but the magnitude (ASP) mask of each group."""
        with torch.no_grad():
            keep = to_groups(magnitude_mask(layer.weight, layer.n, layer.m),
                             layer.m).to(layer.scores.dtype)  # (G, m), n ones per row
            cands = candidate_matrix(layer.n, layer.m, dtype=layer.scores.dtype,
                                     device=layer.scores.device)  # (C, m)
            match = (keep @ cands.t()) == layer.n  # (G, C), one True per row
            # Rank the magnitude candidate first; remove_candidates keeps it.
            layer.scores.copy_(match.to(layer.scores.dtype))
        layer.remove_candidates(1)

    def _check_optimizer(self, runner) -> None:
        optim_wrapper = runner.optim_wrapper
        wrappers = (list(optim_wrapper.values()) if hasattr(optim_wrapper, 'values')
                    else [optim_wrapper])
        group_of: Dict[int, dict] = {}
        for wrapper in wrappers:
            for group in wrapper.optimizer.param_groups:
                for param in group['params']:
                    group_of[id(param)] = group
        learning = [(name, layer) for name, layer in self._layers
                    if name not in self._finished]
        missing = [name for name, layer in learning if id(layer.scores) not in group_of]
        if missing:
            raise RuntimeError(
                f'LBCHook: the scores of {len(missing)} LBC layers are not in the '
                f'optimizer (first: {missing[0]}), so they could never learn; build '
                f"it with optim_wrapper.constructor='LBCOptimWrapperConstructor' "
                f'(mmengine skips parameters frozen at build time when a '
                f'paramwise_cfg is given)')
        decayed = [name for name, layer in learning
                   if not group_of[id(layer.scores)].get(SCORES_GROUP_KEY)
                   and group_of[id(layer.scores)].get('weight_decay', 0)]
        if decayed:
            print_log(
                f'LBCHook: the scores of {len(decayed)} LBC layers are under weight '
                f'decay set by the generic param-group rules (custom_keys, '
                f"multipliers); use optim_wrapper.constructor="
                f"'LBCOptimWrapperConstructor' to set it with scores_decay_mult",
                logger='current',
                level=logging.WARNING)

    # -- every iteration ------------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Switch frozen layers' scores back on (``model.train()`` re-freezes)."""
        for name, layer in self._relearn:
            if name not in self._finished:
                layer.scores.requires_grad_(True)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Remove candidates down to ``card(t)``, freeze at 1, log."""
        t = self.progress(runner, batch_idx)
        active = [(name, layer) for name, layer in self._layers
                  if name not in self._finished]
        if active:
            if self._scan_scores:
                self._check_finite(runner, active)
            self._diag_measure_steps(active)
            for name, layer in active:
                keep = self.schedule_card(t, layer.scores.shape[1])
                self._diag_before_removal(name, layer, keep)
                try:
                    layer.remove_candidates(keep)
                except FloatingPointError as err:
                    raise FloatingPointError(
                        f'LBCHook: iteration {runner.iter + 1}, layer {name}: '
                        f'{err}') from err
                self._applied[name] = keep
                if keep == 1:
                    layer.freeze_scores()
                    self._finished.add(name)
            self._diag_after_removal(runner, t, active)
            if len(self._finished) == len(self._layers):
                print_log(f'LBCHook: every LBC layer is N:M after iteration '
                          f'{runner.iter + 1} (t={t:g}); scores frozen',
                          logger='current')
        if (self.every_n_inner_iters(batch_idx, self._interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)
                or self.is_last_train_iter(runner)):
            self._record(runner, t)

    def schedule_card(self, t: float, num_candidates: int) -> int:
        """Candidates to keep per group after progress ``t`` (``card_update``).

        Args:
            t (float): Progress after an iteration, in the measure's unit
                (see :meth:`progress`).
            num_candidates (int): ``C`` of the layer's pattern.

        Returns:
            int: ``card(t)`` (per iteration), or the count of the epoch that
            follows, recomputed at its start (per epoch).
        """
        if self.card_update == 'iter':
            return card(t, num_candidates, self._ti, self._tf, self.power)
        epoch_length = 1.0 if self._measure_epochs else float(self._iters_per_epoch)
        # Epochs completed after this iteration = the 0-based epoch of the next
        # one (the small slack absorbs float division at the boundary).
        epochs_done = math.floor(t / epoch_length + 1e-9)
        return card_at_epoch_start(epochs_done, num_candidates, self._ti, self._tf,
                                   self.power, epoch_length)

    def _check_finished(self) -> None:
        """``require_finished``: every LBC layer loaded at one candidate."""
        unfinished = [f'{name} (up to {int(layer.num_alive.max())} of '
                      f'{layer.scores.shape[1]} candidates alive)'
                      for name, layer in self._layers if name not in self._finished]
        if unfinished:
            raise RuntimeError(
                f'LBCHook(require_finished=True): {len(unfinished)} of '
                f'{len(self._layers)} LBC layers are not at one candidate per group, '
                f'so their masks are not those of a finished LBC run (was the '
                f'checkpoint loaded, e.g. through init_cfg=dict(type=\'Pretrained\', '
                f'prefix=\'backbone.\', ...), and did its run reach t_f?): '
                + ', '.join(unfinished))

    def progress(self, runner, batch_idx: int) -> float:
        """Training progress ``t`` after the current iteration.

        Args:
            runner (Runner): The runner.
            batch_idx (int): Index of the batch just trained (in the epoch for
                epoch loops, the global iteration for iteration loops).

        Returns:
            float: Fractional epochs done, or iterations done.
        """
        if not self._measure_epochs:
            return float(runner.iter + 1)
        if self._loop_by_epoch:
            return runner.epoch + (batch_idx + 1) / self._iters_per_epoch
        return (runner.iter + 1) / self._iters_per_epoch

    @staticmethod
    def _check_finite(runner, active: Sequence[Tuple[str, nn.Module]]) -> None:
        with torch.no_grad():
            # Fast path: one reduction per layer, one sync (NaN / inf propagate).
            total = torch.stack([layer.scores.sum() for _, layer in active]).sum()
            if bool(torch.isfinite(total)):
                return
            ok = [bool((torch.isfinite(layer.scores) | ~layer.alive).all())
                  for _, layer in active]
            bad = [name for (name, _), good in zip(active, ok) if not good]
        if not bad:  # finite but huge scores overflowed the sum
            return
        raise FloatingPointError(
            f'LBCHook: non-finite LBC scores at iteration {runner.iter + 1} (epoch '
            f'{runner.epoch + 1}) in {len(bad)} layers: {", ".join(bad)}; training '
            f'diverged (lower the learning rate, clip gradients or check the data)')

    # -- statistics and logging -----------------------------------------------
    def statistics(self, t: float) -> Dict[str, float]:
        """Current LBC statistics (what is logged under ``lbc/``).

        Args:
            t (float): Progress, for the ``card`` entries.

        Returns:
            dict: ``alive`` (mean alive candidates per group), ``sparsity``
            (fraction of masked weights in LBC layers), ``nm_layers`` (layers with
            one candidate per group) and ``card`` (schedule; ``card_{n}of{m}`` per
            pattern when the model mixes patterns).
        """
        # The masks only change when a removal step lowers some layer's card:
        # the full pass over the masks runs again only then.
        key = tuple(self._applied.get(name) for name, _ in self._layers)
        if self._stats_cache is None or self._stats_cache[0] != key or None in key:
            self._stats_cache = (key, self._measure())
        stats = dict(self._stats_cache[1])
        patterns = {(layer.n, layer.m): layer.scores.shape[1]
                    for _, layer in self._layers}
        for (n, m), num_c in sorted(patterns.items()):
            key = 'card' if len(patterns) == 1 else f'card_{n}of{m}'
            stats[key] = float(self.schedule_card(t, num_c))
        return stats

    def _measure(self) -> Dict[str, float]:
        alive_sum = groups = kept = numel = nm_layers = 0
        with torch.no_grad():
            for _, layer in self._layers:
                alive = layer.num_alive  # (G,)
                alive_sum += int(alive.sum())
                groups += alive.numel()
                nm_layers += int(int(alive.max()) == 1)
                mask = layer.get_mask()
                kept += int(mask.sum())
                numel += mask.numel()
        return dict(alive=alive_sum / groups, sparsity=1.0 - kept / numel,
                    nm_layers=float(nm_layers))

    def _record(self, runner, t: float) -> None:
        stats = self.statistics(t)
        for key, value in stats.items():
            runner.message_hub.update_scalar(LOG_PREFIX + key, value)
        self.history.append([float(t), stats['alive'], stats['sparsity']])

    # -- settledness diagnostics ----------------------------------------------
    # At every card step: the decision margin (gap between the lowest kept and
    # the highest removed alive score) in units of the RMS per-iteration score
    # change, the score spread, and how often the best alive candidate is the
    # magnitude choice; all measured on a fixed, evenly spaced sample of up to
    # DIAG_SAMPLE groups per layer (cheap next to an iteration). Math in
    # lbc_mm.sparsity.diagnostics.
    DIAG_SAMPLE = 4096
    #: Below this many iterations' worth of score movement a choice is "unsettled".
    UNSETTLED_STEPS = 3.0

    def _diag_rows(self, name: str, layer: nn.Module) -> Tensor:
        """The sampled group indices of a layer (fixed for the run)."""
        idx = self._diag_idx.get(name)
        if idx is None or idx.device != layer.scores.device:
            num_g = layer.scores.shape[0]
            stride = max(1, num_g // self.DIAG_SAMPLE)
            idx = torch.arange(0, num_g, stride,
                               device=layer.scores.device)[:self.DIAG_SAMPLE]
            self._diag_idx[name] = idx
        return idx

    def _diag_measure_steps(self, active: Sequence[Tuple[str, nn.Module]]) -> None:
        with torch.no_grad():
            for name, layer in active:
                prev = self._diag_prev.get(name)
                if prev is None:
                    continue
                idx, before = prev
                step = diagnostics.score_step_rms(before, layer.scores[idx],
                                                  layer.alive[idx])
                acc = self._diag_steps.setdefault(name, [0.0, 0])
                acc[0] = acc[0] + step * step  # stays on the device until used
                acc[1] += 1

    def _diag_before_removal(self, name: str, layer: nn.Module, keep: int) -> None:
        if keep >= layer._current_card():
            return
        with torch.no_grad():
            idx = self._diag_rows(name, layer)
            scores, alive = layer.scores[idx], layer.alive[idx]
            acc = self._diag_steps.get(name)
            step = float(acc[0] / acc[1])**0.5 if acc and acc[1] else 0.0
            margins = diagnostics.decision_margin(scores, alive, keep)
            self._diag_ties[0] += int((margins == 0).sum())
            self._diag_ties[1] += margins.numel()
            if step > 0:
                self._diag_pending.append((margins / step).float().cpu())
            init = 1.0 / float(layer.scores.shape[1] * layer.n / layer.m)
            self._diag_spread.append(
                (diagnostics.score_spread(scores, alive) / init,
                 layer.scores.shape[0]))

    def _diag_after_removal(self, runner, t: float,
                            active: Sequence[Tuple[str, nn.Module]]) -> None:
        with torch.no_grad():
            if self._diag_spread:
                self._diag_log_step(runner, t)
            for name, layer in active:
                if name in self._finished:
                    self._diag_prev.pop(name, None)
                    continue
                idx = self._diag_rows(name, layer)
                self._diag_prev[name] = (idx, layer.scores.detach()[idx].clone())

    def _diag_log_step(self, runner, t: float) -> None:
        agree = total = 0.0
        for name, layer in self._layers:
            num_g = layer.scores.shape[0]
            idx = self._diag_rows(name, layer)
            agree += num_g * diagnostics.magnitude_agreement(
                to_groups(layer.weight.detach(), layer.m)[idx], layer.scores[idx],
                layer.alive[idx], layer.candidates)
            total += num_g
        spread = (sum(s * g for s, g in self._diag_spread) /
                  sum(g for _, g in self._diag_spread))
        margin = (diagnostics.settledness(torch.cat(self._diag_pending), 1.0)
                  if self._diag_pending else None)
        tied = self._diag_ties[0] / max(1, self._diag_ties[1])
        self._diag_pending, self._diag_spread = [], []
        self._diag_ties = [0, 0]
        chance = sorted({1.0 / layer.scores.shape[1] for _, layer in self._layers})
        self.diagnostics = dict(agree_mag=agree / total, score_spread=spread,
                                tied=tied, chance_agree=chance[0],
                                iter=float(runner.iter + 1), t=float(t))
        if margin is not None:
            self.diagnostics['margin_steps'] = margin
        cards = sorted({self._applied.get(name) or 0 for name, _ in self._layers},
                       reverse=True)
        for key in ('agree_mag', 'margin_steps', 'score_spread', 'tied'):
            if key in self.diagnostics:
                runner.message_hub.update_scalar(LOG_PREFIX + key,
                                                 self.diagnostics[key])
        print_log(
            f'LBCHook: card step at iteration {runner.iter + 1} (t={t:g}), card '
            f'{"/".join(str(c) for c in cards)}: decision margin '
            + (f'{margin:.3g}' if margin is not None else 'n/a')
            + f' score steps (median gap kept-vs-removed / RMS per-iteration score '
            f'change), {tied:.1%} of the decisions on exactly equal scores (lower '
            f'candidate index wins); best candidate = magnitude choice in {agree / total:.1%} '
            f'of groups (chance {chance[0]:.1%}); score spread {spread:.3g} x init',
            logger='current')

    def _diag_final(self, runner) -> None:
        diag = self.diagnostics
        if not diag:
            return
        for key in ('agree_mag', 'margin_steps', 'score_spread', 'tied'):
            if key in diag:
                runner.message_hub.update_scalar(LOG_PREFIX + key, diag[key])
        margin = diag.get('margin_steps')
        verdict = ''
        if ((margin is not None and margin < self.UNSETTLED_STEPS)
                or diag['tied'] >= 0.5):
            verdict = (f'; a margin below {self.UNSETTLED_STEPS:g} or half the '
                       f'decisions on ties: the final choice rests on a few '
                       f'iterations of score movement; a longer removal window (t_f) '
                       f'or a larger score lr (scores_lr_mult) gives the scores more '
                       f'gradient to decide on')
        print_log(
            f'LBCHook: settledness of the last card step (iteration '
            f'{int(diag["iter"])}): decision margin '
            + (f'{margin:.3g}' if margin is not None else 'n/a')
            + f' score steps ({diag["tied"]:.1%} of the decisions on exactly equal '
            f'scores), kept = magnitude choice in {diag["agree_mag"]:.1%} '
            f'of groups (chance {diag["chance_agree"]:.1%}), score spread '
            f'{diag["score_spread"]:.3g} x init' + verdict, logger='current',
            level=logging.WARNING if verdict else logging.INFO)

    # -- EMA ------------------------------------------------------------------
    @staticmethod
    def sync_ema(runner) -> int:
        """Give every ``EMAHook``'s EMA model the trained model's candidates.

        Returns:
            int: Number of EMA layers synchronised.
        """
        count = 0
        for hook in runner.hooks:
            if not isinstance(hook, EMAHook) or not hasattr(hook, 'ema_model'):
                continue
            src = dict(lbc_layers(hook.src_model))
            with torch.no_grad():
                for name, ema_layer in lbc_layers(hook.ema_model.module):
                    if name in src:
                        alive = src[name].alive.to(ema_layer.alive.device)
                        ema_layer.alive.copy_(alive)
                        ema_layer.scores.masked_fill_(~ema_layer.alive, 0.0)
                        count += 1
        return count

    def before_val_epoch(self, runner) -> None:
        """Sync the EMA model before ``EMAHook`` swaps it in."""
        self.sync_ema(runner)

    # -- checkpoints ----------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Sync the EMA model and save the hook's history."""
        self.sync_ema(runner)
        checkpoint[CKPT_KEY] = dict(history=[list(row) for row in self.history])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the history when resuming (the model state is in the weights)."""
        if not runner._resume:
            return
        if CKPT_KEY in checkpoint:
            self.history = [list(row) for row in checkpoint[CKPT_KEY]['history']]
        else:
            print_log(f'LBCHook: no {CKPT_KEY!r} in the checkpoint; the schedule '
                      f'plot starts at the resume point', logger='current',
                      level=logging.WARNING)

    # -- end of training ------------------------------------------------------
    def after_train(self, runner) -> None:
        """Write the plot, then check equal masks on all ranks and N:M."""
        self.sync_ema(runner)
        self._diag_final(runner)
        if self.plot and is_main_process():
            try:
                self.write_plot(osp.join(runner.work_dir, PLOT_NAME))
            except OSError as exc:  # full disk, read-only dir: the run still ends
                print_log(f'LBCHook: could not write {exc.filename}: '
                          f'{exc.strerror or exc}', logger='current',
                          level=logging.WARNING)
        self.check_ranks_agree(runner)  # collective: every rank gets here
        problems = nm_problems(runner.model)
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                problems += nm_problems(hook.ema_model.module, prefix='EMA model: ')
        if problems:
            raise RuntimeError(
                'LBCHook: training ended but the model is not exactly N:M '
                f'({len(problems)} layers):\n  ' + '\n  '.join(problems))
        print_log(self.passed_line(runner), logger='current')

    def passed_line(self, runner) -> str:
        """The line logged when the end-of-training checks pass."""
        patterns = sorted({(layer.n, layer.m) for _, layer in self._layers})
        exact = ', '.join(f'{n}:{m}' for n, m in patterns)
        ema = (' (EMA model too)' if any(
            isinstance(h, EMAHook) and hasattr(h, 'ema_model') for h in runner.hooks)
            else '')
        world = get_world_size()
        ranks = (f'all {world} ranks chose the same candidates' if world > 1 else
                 'one process, no ranks to compare')
        return (f'LBCHook: end-of-training checks passed: {len(self._layers)} LBC '
                f'layers exactly {exact}{ema}; {ranks}')

    def check_ranks_agree(self, runner) -> None:
        """Fail when DDP ranks kept different candidates (no-op on one process)."""
        if get_world_size() == 1:
            return
        mine = torch.stack([alive_checksum(layer.alive)
                            for _, layer in self._layers])  # (L, 2)
        gathered = all_gather(mine)
        differ = [name for i, (name, _) in enumerate(self._layers)
                  if any(not torch.equal(g[i].cpu(), gathered[0][i].cpu())
                         for g in gathered[1:])]
        if differ:
            raise RuntimeError(
                f'LBCHook: DDP ranks kept different candidates in {len(differ)} '
                f'layers: {", ".join(differ)}')

    def write_plot(self, path: str) -> None:
        """Write the schedule and the measured sparsity as a PNG, atomically.

        Args:
            path (str): Destination file.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        unit = 'epoch' if self._measure_epochs else 'iteration'
        fig = Figure(figsize=(7, 6))
        FigureCanvasAgg(fig)
        ax_card, ax_sparse = fig.subplots(2, 1, sharex=True)
        steps = 400
        ts = [self._length * i / steps for i in range(steps + 1)]
        patterns = sorted({(layer.n, layer.m, layer.scores.shape[1])
                           for _, layer in self._layers})
        for n, m, num_c in patterns:
            ax_card.plot(ts, [self.schedule_card(t, num_c) for t in ts],
                         label=f'card(t), {n}:{m} (C={num_c})')
            ax_sparse.axhline(1 - n / m, linestyle='--', color='grey',
                              label=f'{n}:{m} target {1 - n / m:.0%}')
        if self.history:
            hist_t, hist_alive, hist_sparse = zip(*self.history)
            ax_card.plot(hist_t, hist_alive, 'o', markersize=3,
                         label='measured: mean alive per group')
            ax_sparse.plot(hist_t, hist_sparse, 'o-', markersize=3,
                           label='measured weight sparsity')
        ax_card.set_ylabel('alive candidates per group')
        ax_card.set_title(f'LBC removal schedule (t_i={self._ti:g}, '
                          f't_f={self._tf:g} {unit}s, p={self.power:g}, card per '
                          f'{self.card_update})')
        ax_sparse.set_ylabel('sparsity of LBC layers')
        ax_sparse.set_xlabel(unit + 's')
        for ax in (ax_card, ax_sparse):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
