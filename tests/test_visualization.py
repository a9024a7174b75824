"""lbc_mm.visualization: figures reach mmengine's visualizer backends, in a Runner
(``LBCHook``'s plot: tests/test_hooks/test_log_tools.py) and outside one (the method
study's chart)."""
import os.path as osp

import numpy as np
from matplotlib.figure import Figure
from mmengine.config import Config

from lbc_mm.visualization import add_figure_for_config, figure_to_rgb


def _figure():
    fig = Figure(figsize=(2, 1))
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    return fig


def test_figure_to_rgb():
    rgb = figure_to_rgb(_figure())
    assert rgb.shape == (100, 200, 3) and rgb.dtype == np.uint8


def test_study_chart_reaches_the_config_backends(tmp_path):
    cfg = Config(dict(visualizer=dict(
        type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])))
    add_figure_for_config(cfg, str(tmp_path), 'compare_methods', _figure())
    png = tmp_path / 'vis_data' / 'vis_image' / 'compare_methods_0.png'
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # no visualizer in the config: mmengine's default (LocalVisBackend)
    add_figure_for_config(Config(dict()), str(tmp_path / 'd'), 'study', _figure(), 3)
    assert osp.isfile(tmp_path / 'd' / 'vis_data' / 'vis_image' / 'study_3.png')
