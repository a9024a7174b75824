"""LBCHook: drives the LBC candidate-removal schedule during training (docs/method.md
§5-§8; what it does when: docs/architecture.md).

The hook decides *when*; the schedule is :mod:`.lbc_schedule`, the state changes the
layers' own methods, the checks and log lines :mod:`.lbc_checks`, the settledness
measures :mod:`.lbc_settledness`, the numbers and plot :mod:`.lbc_report`. The
``lbc_*`` log keys hold no ``/``: mmdet's and mmpretrain's ``analyze_logs.py`` take
such keys for val metrics.
"""
import logging
from typing import Dict, List, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop
from torch import nn

from ..sparse_model import lbc_layers, name_sparse_layers
from .finite_check import FiniteCheckHook, check_loss, check_weights, saved_iter
from .lbc_checks import (
    check_finished,
    check_finite,
    check_has_lbc_layers,
    check_optimizer,
    check_ranks_agree,
    end_of_training_check,
    log_card_step,
    log_dense_fallbacks,
    log_frozen_layers,
    log_settledness,
    log_start,
    sync_ema,
)
from .lbc_report import Statistics, publish_plot, take_over
from .lbc_schedule import RemovalSchedule
from .lbc_settledness import SettlednessTracker

#: File written to the work dir at the end of training.
PLOT_NAME = 'lbc_schedule.png'
#: Checkpoint key of the hook's own state.
CKPT_KEY = 'lbc_hook'
#: Message-hub key prefix (the log processor strips ``train/``: ``lbc_alive``...).
LOG_PREFIX = 'train/lbc_'
FROZEN_MODES = ('learn', 'asp')
DIAG_KEYS = ('agree_mag', 'margin_steps', 'score_spread', 'tied', 'unmoved')


def _config_key(runner) -> str:
    """``custom_hooks.<i>``: where the run's config lists its ``LBCHook``."""
    hooks = (getattr(runner, 'cfg', None) or {}).get('custom_hooks', None) or []
    for i, hook in enumerate(hooks):
        if isinstance(hook, dict) and str(hook.get('type')).endswith('LBCHook'):
            return f'custom_hooks.{i}'
    return 'custom_hooks.<i>'


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
        frozen_layers (str): What LBC layers with frozen weights do: ``'learn'``
            (their scores keep learning) or ``'asp'`` (they take the magnitude
            mask at once), docs/method.md §8. Defaults to ``'learn'``.
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
        noise_margin (float): ``k >= 0``. 0 (the authors' rule): only exactly
            equal scores are ties. ``k > 0``: a removal decision whose score gap is
            within ``k`` times the noise (how far noise alone moved two of the
            layer's scores apart so far, :meth:`SettlednessTracker.noise`) is
            taken by weight magnitude instead (docs/training_cost.md). Defaults
            to 0.
    """

    priority = 'ABOVE_NORMAL'  # before EMAHook, LoggerHook and CheckpointHook
    #: Groups sampled per layer for the settledness measures.
    DIAG_SAMPLE = 4096
    #: Below this many iterations' worth of score movement a choice is "unsettled".
    UNSETTLED_STEPS = 3.0

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
                 require_finished: bool = False,
                 noise_margin: float = 0.0) -> None:
        self.schedule = RemovalSchedule(t_i, t_f, unit, by_epoch, power, card_update)
        if frozen_layers not in FROZEN_MODES:
            raise ValueError(f'LBCHook: frozen_layers must be one of {FROZEN_MODES}, '
                             f'got {frozen_layers!r}')
        if log_interval is not None and log_interval < 1:
            raise ValueError(f'LBCHook: log_interval must be >= 1, got {log_interval}')
        self.frozen_layers, self.plot = frozen_layers, plot
        self.log_interval = log_interval
        self.require_finished = bool(require_finished)
        if not noise_margin >= 0:
            raise ValueError(f'LBCHook: noise_margin must be >= 0, got {noise_margin}')
        self.noise_margin = float(noise_margin)
        # Resolved at before_train.
        self._layers: List[Tuple[str, nn.Module]] = []
        self._finished: set = set()  # names of layers at one candidate per group
        self._relearn: List[Tuple[str, nn.Module]] = []  # frozen, scores learn
        self._scan_scores = True  # False when a FiniteCheckHook checks the run
        self._interval = 50
        self._applied: Dict[str, Optional[int]] = {}  # last card applied per layer
        # (t, mean alive per group, sparsity); kept across resume for the plot.
        self.history: List[List[float]] = []
        self._settled = SettlednessTracker(self.DIAG_SAMPLE)
        self._stats = Statistics()
        #: The last card step's measures (:meth:`SettlednessTracker.after_removal`
        #: plus ``iter`` and ``t``).
        self.diagnostics: Dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------
    def before_train(self, runner) -> None:
        """Find the LBC layers, resolve the schedule, handle frozen layers."""
        name_sparse_layers(runner.model)  # every message of a layer names it
        self._layers = lbc_layers(runner.model)
        check_has_lbc_layers(self._layers)
        take_over(self._layers)  # the layers may train now
        log_dense_fallbacks(runner.model)
        self.schedule.resolve(isinstance(runner.train_loop, EpochBasedTrainLoop),
                              len(runner.train_dataloader), runner.max_iters,
                              _config_key(runner))
        self._interval = self.log_interval or next(
            (h.interval for h in runner.hooks if isinstance(h, LoggerHook)), 50)
        self._finished, self._applied = set(), {}
        for name, layer in self._layers:
            if layer.sparsity.current_card() == 1:  # finished before a resume
                self._finish(name, layer)
        if self.require_finished:
            check_finished(self._layers, self._finished)
        self._setup_frozen_layers()
        check_optimizer(runner.optim_wrapper, [
            (name, layer) for name, layer in self._layers
            if name not in self._finished])
        self._scan_scores = not any(
            isinstance(hook, FiniteCheckHook) for hook in runner.hooks)
        if runner.iter == 0 and not self.history:
            self._record(runner, 0.0)
        log_start(self._layers, self.schedule, self._finished)

    def _finish(self, name: str, layer: nn.Module) -> None:
        layer.sparsity.freeze_scores()
        self._finished.add(name)
        self._applied[name] = 1

    def _setup_frozen_layers(self) -> None:
        frozen = [(name, layer) for name, layer in self._layers
                  if not layer.weight.requires_grad and name not in self._finished]
        self._relearn = []
        for name, layer in frozen:
            if self.frozen_layers == 'asp' and bool(
                    (layer.sparsity.num_alive == layer.sparsity.num_candidates).all()):
                layer.sparsity.keep_magnitude_candidates()
                self._finish(name, layer)
            else:
                layer.sparsity.unfreeze_scores()
                self._relearn.append((name, layer))
        log_frozen_layers([name for name, _ in frozen], self.frozen_layers,
                          [name for name, _ in self._relearn])

    # -- every iteration ------------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Switch frozen layers' scores back on (``model.train()`` re-freezes)."""
        for name, layer in self._relearn:
            if name not in self._finished:
                layer.sparsity.unfreeze_scores()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Remove candidates down to ``card(t)``, freeze at 1, log."""
        if self._scan_scores:  # no FiniteCheckHook: a NaN loss stops the run here
            check_loss(runner, outputs, 'LBCHook')
        t = self.schedule.progress(runner.iter, runner.epoch, batch_idx)
        active = [(name, layer) for name, layer in self._layers
                  if name not in self._finished]
        if active:
            if self._scan_scores:
                check_finite(active, runner.iter + 1, runner.epoch + 1)
            self._settled.measure_steps(active)
            for name, layer in active:
                keep = self.schedule.card(t, layer.sparsity.num_candidates)
                self._settled.before_removal(name, layer, keep)
                try:
                    margin = (self.noise_margin * self._settled.noise(name)
                              if self.noise_margin else None)  # near-ties: |w|
                    layer.sparsity.remove_candidates(keep, margin)
                except FloatingPointError as err:
                    raise FloatingPointError(
                        f'LBCHook: iteration {runner.iter + 1}, layer {name}: '
                        f'{err}') from err
                self._applied[name] = keep
                if keep == 1:
                    self._finish(name, layer)
            diag = self._settled.after_removal(active, self._finished, self._layers)
            if diag is not None:
                self.diagnostics = dict(diag, iter=float(runner.iter + 1), t=float(t))
                self._log_diagnostics(runner)
                log_card_step(self.diagnostics, sorted(
                    {self._applied.get(name) or 0 for name, _ in self._layers},
                    reverse=True))
            if len(self._finished) == len(self._layers):
                print_log(f'LBCHook: every LBC layer is N:M after iteration '
                          f'{runner.iter + 1} (t={t:g}); scores frozen',
                          logger='current')
        if (self.every_n_inner_iters(batch_idx, self._interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)
                or self.is_last_train_iter(runner)):
            self._record(runner, t)

    # -- statistics and logging -----------------------------------------------
    def _record(self, runner, t: float) -> None:
        stats = self._stats.run(self._layers,
                                lambda num_c: self.schedule.card(t, num_c))
        for key, value in stats.items():
            runner.message_hub.update_scalar(LOG_PREFIX + key, value)
        self.history.append([float(t), stats['alive'], stats['sparsity']])
        runner.visualizer.add_scalars(  # per layer: the backends only
            self._stats.per_layer(self._layers, self._settled.layer_margins),
            step=runner.iter + 1)

    def _log_diagnostics(self, runner) -> None:
        for key in DIAG_KEYS:
            if key in self.diagnostics:
                runner.message_hub.update_scalar(LOG_PREFIX + key,
                                                 self.diagnostics[key])

    # -- EMA and checkpoints --------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        """Sync the EMA model before ``EMAHook`` swaps it in."""
        sync_ema(runner.hooks)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Sync the EMA model and save the hook's history."""
        if self._scan_scores:  # no FiniteCheckHook: no NaN weights on disk
            check_weights(runner, 'before saving a checkpoint', 'LBCHook',
                          saved_iter(checkpoint))
        sync_ema(runner.hooks)
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
        sync_ema(runner.hooks)
        if self.diagnostics:
            self._log_diagnostics(runner)
            log_settledness(self.diagnostics, self.UNSETTLED_STEPS, self._layers)
        if self.plot and is_main_process():
            publish_plot(runner, PLOT_NAME, self.schedule, self._layers, self.history)
        check_ranks_agree(self._layers)  # collective: every rank gets here
        end_of_training_check(runner.model, runner.hooks, self._layers)
