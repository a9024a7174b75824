"""Plots of lbc_mm runs (matplotlib's Agg backend): ``LBCHook``'s schedule figure,
written as a PNG atomically and given to mmengine's visualizer backends
(``vis_data/vis_image/``, TensorBoard, W&B), in a Runner or outside one.
"""
from typing import Sequence, Tuple

import numpy as np

from .io import atomic_write


def write_figure(fig, path: str) -> None:
    """Save a matplotlib figure to ``path`` as a PNG, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))


def figure_to_rgb(fig) -> np.ndarray:
    """The figure rendered (at its dpi) as an ``(H, W, 3)`` uint8 RGB array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def add_figure(name: str, fig, step: int = 0, visualizer=None) -> bool:
    """Give a figure to mmengine's visualizer backends as the image ``name`` at
    ``step``; ``visualizer`` defaults to the current instance (the last Runner's).
    Returns whether a visualizer got the image (False: there is none)."""
    if visualizer is None:
        from mmengine.visualization import Visualizer
        if not Visualizer._instance_dict:
            return False
        visualizer = Visualizer.get_current_instance()
    visualizer.add_image(name, figure_to_rgb(fig), step=step)
    return True


def add_figure_for_config(cfg, save_dir: str, name: str, fig, step: int = 0) -> None:
    """Give a figure to the visualizer backends a config names (``cfg.visualizer``,
    default a ``LocalVisBackend``), outside a Runner: they write under
    ``<save_dir>/vis_data`` (the study chart: its runs ran in other processes)."""
    import uuid

    from mmengine.registry import VISUALIZERS, init_default_scope
    if cfg.get('default_scope', None):
        init_default_scope(cfg.default_scope)
    vis_cfg = dict(cfg.get('visualizer', None) or dict(
        type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]))
    vis_cfg.update(name=f'{name}_{uuid.uuid4().hex}', save_dir=save_dir)
    visualizer = VISUALIZERS.build(vis_cfg)
    try:
        add_figure(name, fig, step, visualizer)
    finally:
        visualizer.close()


def lbc_schedule_figure(schedule, patterns: Sequence[Tuple[int, int, int]],
                        history: Sequence[Sequence[float]]):
    """``LBCHook``'s ``lbc_schedule.png`` (a matplotlib ``Figure``): ``card(t)``
    of the run's resolved ``schedule`` per ``(n, m, C)`` of ``patterns`` with the
    measured mean alive candidates per group, and the LBC layers' measured sparsity
    against each target; ``history``: ``(t, mean alive, sparsity)`` rows."""
    from matplotlib.figure import Figure

    unit = 'epoch' if schedule.measure_epochs else 'iteration'

    fig = Figure(figsize=(7, 6))
    ax_card, ax_sparse = fig.subplots(2, 1, sharex=True)
    ts = [schedule.length * i / 400 for i in range(401)]
    for n, m, num_c in patterns:
        ax_card.plot(ts, [schedule.card(t, num_c) for t in ts],
                     label=f'card(t), {n}:{m} (C={num_c})')
        ax_sparse.axhline(1 - n / m, linestyle='--', color='grey',
                          label=f'{n}:{m} target {1 - n / m:.0%}')
    if history:
        hist_t, hist_alive, hist_sparse = zip(*history)
        ax_card.plot(hist_t, hist_alive, 'o', markersize=3,
                     label='measured: mean alive per group')
        ax_sparse.plot(hist_t, hist_sparse, 'o-', markersize=3,
                       label='measured weight sparsity')
    ax_card.set_ylabel('alive candidates per group')
    ax_card.set_title(f'LBC removal schedule (t_i={schedule.ti:g}, '
                      f't_f={schedule.tf:g} {unit}s, p={schedule.power:g}, card per '
                      f'{schedule.card_update})')
    ax_sparse.set_ylabel('sparsity of LBC layers')
    ax_sparse.set_xlabel(unit + 's')
    for ax in (ax_card, ax_sparse):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
