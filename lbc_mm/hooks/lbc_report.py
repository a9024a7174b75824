"""``LBCHook``'s numbers and plot, and its take-over of the layers."""
import logging
import os.path as osp
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

from ..visualization import add_figure, lbc_schedule_figure, write_figure

Layers = Sequence[Tuple[str, nn.Module]]

#: Tag prefix of the per-layer scalars (TensorBoard groups by the first ``/``).
LAYER_PREFIX = 'lbc_layers/'
#: Image name of the schedule plot in the visualizer backends.
PLOT_TAG = 'lbc_schedule'
#: Who drives the layers (``layer.sparsity.driver``, :class:`lbc_mm.methods.LBC`).
DRIVER = 'LBCHook'


def take_over(layers: Layers) -> None:
    """Mark ``layers`` as driven by an ``LBCHook`` (:meth:`LBC.check_driven`) and
    log how many the last load initialised from dense weights."""
    for _, layer in layers:
        layer.sparsity.driver = DRIVER
    count = sum(1 for _, layer in layers if layer.sparsity.loaded_dense)
    if count:
        print_log(f'LBCHook: initialised the LBC state of {count} layers from dense '
                  f'weights (initial scores, every candidate alive)',
                  logger='current')


class Statistics:
    """The hook's numbers, recomputed only when some layer's ``alive`` changed.

    :meth:`run`: ``alive`` (mean alive candidates per group), ``sparsity`` (share
    of masked weights), ``nm_layers`` (layers at one candidate) and ``card`` for
    the training log. :meth:`per_layer`: ``lbc_layers/<layer>/{alive,sparsity,
    margin_steps}`` for the visualizer backends only (52 layers would drown the
    text log); ``margin_steps``: the layer's last card step
    (:class:`~.lbc_settledness.SettlednessTracker`).
    """

    def __init__(self) -> None:
        self._cache: tuple = (None, {})

    def _counts(self, layers: Layers) -> Dict[str, Tuple[int, int, int, int, int]]:
        """Per layer: alive candidates, groups, max alive, kept weights, weights."""
        key = tuple((layer.alive._version, layer.alive.data_ptr())
                    for _, layer in layers)
        if self._cache[0] != key:
            counts = {}
            with torch.no_grad():
                for name, layer in layers:
                    alive, mask = layer.sparsity.num_alive, layer.get_mask()  # (G,)
                    counts[name] = (int(alive.sum()), alive.numel(), int(alive.max()),
                                    int(mask.sum()), mask.numel())
            self._cache = (key, counts)
        return self._cache[1]

    def run(self, layers: Layers, card_of: Callable[[int], int]) -> Dict[str, float]:
        """The ``lbc_*`` numbers (``card_{n}of{m}`` per pattern when the model mixes
        them; ``card_of(C)``: the schedule's)."""
        counts = self._counts(layers).values()
        alive, groups, _, kept, numel = (sum(col) for col in zip(*counts))
        stats = dict(alive=alive / groups, sparsity=1.0 - kept / numel,
                     nm_layers=float(sum(row[2] == 1 for row in counts)))
        patterns = {(layer.n, layer.m): layer.sparsity.num_candidates
                    for _, layer in layers}
        for (n, m), num_c in sorted(patterns.items()):
            key = 'card' if len(patterns) == 1 else f'card_{n}of{m}'
            stats[key] = float(card_of(num_c))
        return stats

    def per_layer(self, layers: Layers,
                  margins: Dict[str, Optional[float]]) -> Dict[str, float]:
        """The per-layer scalars (see the class docstring)."""
        out = {}
        for name, (alive, groups, _, kept, numel) in self._counts(layers).items():
            out[f'{LAYER_PREFIX}{name}/alive'] = alive / groups
            out[f'{LAYER_PREFIX}{name}/sparsity'] = 1.0 - kept / numel
        for name, margin in margins.items():
            if margin is not None:
                out[f'{LAYER_PREFIX}{name}/margin_steps'] = float(margin)
        return out


def publish_plot(runner, file_name: str, schedule, layers: Layers,
                 history: Sequence[Sequence[float]]) -> None:
    """Write the schedule plot to the work dir (a warning when it cannot) and give
    it to the visualizer backends."""
    patterns = sorted({(layer.n, layer.m, layer.sparsity.num_candidates)
                       for _, layer in layers})
    fig = lbc_schedule_figure(schedule, patterns, history)
    try:
        write_figure(fig, osp.join(runner.work_dir, file_name))
    except OSError as exc:
        print_log(f'LBCHook: could not write {exc.filename}: '
                  f'{exc.strerror or exc}', logger='current', level=logging.WARNING)
    add_figure(PLOT_TAG, fig, step=runner.iter, visualizer=runner.visualizer)
