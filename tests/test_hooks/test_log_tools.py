"""An LBC run's logs where OpenMMLab users read them: mmdet's and mmpretrain's
``analyze_logs.py`` parse its JSON log like a dense run's, and the visualizer
backends get the schedule plot and the per-layer scalars."""
import ast
import json
import os.path as osp
from collections import defaultdict

import pytest
from lbc_toy import build_runner, toy_cfg  # noqa: I100


@pytest.fixture(scope='module')
def lbc_run(tmp_path_factory):
    """A 2-epoch toy LBC run (6 iterations per epoch), logged every iteration."""
    work = tmp_path_factory.mktemp('lbc_run')
    runner = build_runner(toy_cfg(str(work), by_epoch=True, length=2,
                                  hook=dict(t_f=0.5)))
    runner.train()
    vis = osp.join(runner.log_dir, 'vis_data')
    json_log = osp.join(vis, osp.basename(runner.log_dir) + '.json')
    return runner, json_log, vis


def _mmdet_load_json_logs():
    """``load_json_logs`` of the analyze_logs.py mmdet's wheel ships (only the
    function: the module imports seaborn, which this environment lacks)."""
    mmdet = pytest.importorskip('mmdet')
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools',
                    'analyze_logs.py')
    if not osp.isfile(path):
        pytest.skip('mmdet ships no .mim/tools/analysis_tools/analyze_logs.py')
    tree = ast.parse(open(path).read())
    func = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
                and node.name == 'load_json_logs')
    namespace = dict(json=json, defaultdict=defaultdict)
    exec(compile(ast.Module([func], []), path, 'exec'), namespace)
    return namespace['load_json_logs']


def test_mmdet_analyze_logs_reads_the_training_lines(lbc_run):
    _, json_log, _ = lbc_run
    log_dict = _mmdet_load_json_logs()([json_log])[0]
    lines = [json.loads(line) for line in open(json_log)]
    train_lines = [line for line in lines if 'loss' in line]
    assert len(train_lines) == 12
    # plot_curve --keys loss / lbc_alive: one value per training line (the parser
    # files a line under the previous line's epoch: 7 + 5 lines)
    assert sorted(log_dict) == [1, 2]
    for key in ('loss', 'lbc_alive', 'lbc_sparsity', 'lbc_card', 'lr'):
        assert [len(log_dict[e][key]) for e in (1, 2)] == [
            len(log_dict[e]['step']) for e in (1, 2)], key
        assert sum(len(log_dict[e][key]) for e in (1, 2)) == 12, key
    assert log_dict[2]['lbc_sparsity'][-1] == pytest.approx(0.5)
    assert not any('/' in key for line in train_lines for key in line)


def test_mmpretrain_analyze_logs_reads_the_training_lines(lbc_run):
    load_json_log = pytest.importorskip('mmpretrain.utils').load_json_log
    _, json_log, _ = lbc_run
    train = load_json_log(json_log)['train']
    assert len(train) == 12
    assert all('lbc_alive' in line and 'loss' in line for line in train)


def test_visualizer_backends_get_the_plot_and_per_layer_scalars(lbc_run):
    runner, json_log, vis = lbc_run
    # the plot: in the work dir and, as an image, in the backends (LocalVisBackend
    # writes vis_image/<name>_<step>.png; TensorBoard and W&B get add_image alike)
    assert osp.isfile(osp.join(runner.work_dir, 'lbc_schedule.png'))
    assert osp.isfile(osp.join(vis, 'vis_image', 'lbc_schedule_12.png'))
    scalars = [json.loads(line) for line in open(osp.join(vis, 'scalars.json'))]
    per_layer = [s for s in scalars if 'lbc_layers/conv/alive' in s]
    assert per_layer[0]['lbc_layers/conv/alive'] == 6.0  # before training: C(4,2)
    last = per_layer[-1]
    assert last['step'] == 12
    for name in ('conv', 'fc'):
        assert last[f'lbc_layers/{name}/alive'] == 1.0
        assert last[f'lbc_layers/{name}/sparsity'] == pytest.approx(0.5)
        assert last[f'lbc_layers/{name}/margin_steps'] >= 0
    # not in the training log the log tools read
    assert 'lbc_layers/' not in open(json_log).read()

