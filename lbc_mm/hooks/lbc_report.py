"""Where ``LBCHook``'s pictures and numbers go, and what it says about the layers it
takes over.

* :func:`take_over`: mark the LBC layers as driven by the hook (an LBC layer refuses
  to train in a Runner without one: :meth:`lbc_mm.methods.LBC.check_driven`)
  and say in one line how many a dense checkpoint initialised;
* :class:`Statistics`: the ``lbc_*`` numbers of the training log, and per-layer
  alive candidates, sparsity and settledness as scalars for mmengine's visualizer
  backends (TensorBoard, W&B, ``vis_data/scalars.json``) only: 52 layers would
  drown the text / JSON training log;
* :func:`publish_plot`: ``lbc_schedule.png`` in the work dir and, as an image, in
  every visualizer backend.
"""
import logging
import os.path as osp
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

from ..visualization import add_figure, lbc_schedule_figure, write_figure
from .lbc_settledness import mask_statistics

Layers = Sequence[Tuple[str, nn.Module]]

#: Tag prefix of the per-layer scalars (TensorBoard groups by the first ``/``).
LAYER_PREFIX = 'lbc_layers/'
#: Image name of the schedule plot in the visualizer backends.
PLOT_TAG = 'lbc_schedule'
#: Who drives the layers (``layer.sparsity.driver``, :class:`lbc_mm.methods.LBC`).
DRIVER = 'LBCHook'


def take_over(layers: Layers) -> int:
    """Mark ``layers`` as driven by an ``LBCHook`` (they may then train) and log
    how many of them the last load initialised from dense weights.

    Returns:
        int: That number (no line when 0).
    """
    for _, layer in layers:
        layer.sparsity.driver = DRIVER
    count = sum(1 for _, layer in layers if layer.sparsity.loaded_dense)
    if count:
        print_log(f'LBCHook: initialised the LBC state of {count} layers from dense '
                  f'weights (initial scores, every candidate alive)',
                  logger='current')
    return count


class Statistics:
    """The hook's numbers, recomputed only when some layer's ``alive`` changed.

    :meth:`run`: :func:`mask_statistics` and ``card`` for the message hub (the
    ``lbc_*`` keys of the training log). :meth:`per_layer`:
    ``lbc_layers/<layer>/{alive,sparsity,margin_steps}`` for the visualizer
    backends only: mean alive candidates per group, fraction of masked weights,
    and the median decision margin of the layer's last card step in score steps
    (:class:`~.lbc_settledness.SettlednessTracker`).
    """

    def __init__(self) -> None:
        self._cache: Dict[str, tuple] = {}

    def _cached(self, what: str, layers: Layers, compute) -> dict:
        key = tuple((layer.alive._version, layer.alive.data_ptr())
                    for _, layer in layers)
        if what not in self._cache or self._cache[what][0] != key:
            with torch.no_grad():
                self._cache[what] = (key, compute())
        return dict(self._cache[what][1])

    def run(self, layers: Layers, card_of: Callable[[int], int]) -> Dict[str, float]:
        """``alive``, ``sparsity``, ``nm_layers`` and ``card`` (``card_{n}of{m}``
        per pattern when the model mixes them; ``card_of(C)``: the schedule's)."""
        stats = self._cached('run', layers, lambda: mask_statistics(layers))
        patterns = {(layer.n, layer.m): layer.sparsity.num_candidates
                    for _, layer in layers}
        for (n, m), num_c in sorted(patterns.items()):
            key = 'card' if len(patterns) == 1 else f'card_{n}of{m}'
            stats[key] = float(card_of(num_c))
        return stats

    def per_layer(self, layers: Layers,
                  margins: Dict[str, Optional[float]]) -> Dict[str, float]:
        """The per-layer scalars (see the class docstring)."""

        def compute():
            out = {}
            for name, layer in layers:
                out[f'{LAYER_PREFIX}{name}/alive'] = float(
                    layer.sparsity.num_alive.float().mean())
                out[f'{LAYER_PREFIX}{name}/sparsity'] = 1.0 - float(
                    layer.get_mask().float().mean())
            return out

        out = self._cached('per_layer', layers, compute)
        for name, margin in margins.items():
            if margin is not None:
                out[f'{LAYER_PREFIX}{name}/margin_steps'] = float(margin)
        return out


def publish_plot(runner, file_name: str, schedule, layers: Layers,
                 history: Sequence[Sequence[float]]) -> None:
    """Write the schedule plot to the work dir and give it to the visualizer.

    A file that cannot be written (full disk, read-only dir) is a warning: the
    run still ends.
    """
    patterns = sorted({(layer.n, layer.m, layer.sparsity.num_candidates)
                       for _, layer in layers})
    fig = lbc_schedule_figure(schedule, patterns, history)
    try:
        write_figure(fig, osp.join(runner.work_dir, file_name))
    except OSError as exc:
        print_log(f'LBCHook: could not write {exc.filename}: '
                  f'{exc.strerror or exc}', logger='current', level=logging.WARNING)
    add_figure(PLOT_TAG, fig, step=runner.iter, visualizer=runner.visualizer)
