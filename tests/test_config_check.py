"""lbc_mm.config_check: lbc_mm's own config mistakes are one line naming the key and
the fix (exit 2 from the tools), found before the Runner is built."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
from lbc_toy import toy_cfg, write_config
from mmengine.config import Config

from lbc_mm.config_check import check_config, find_config_error

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOY_DIR = osp.join(REPO, 'tests', 'test_hooks')  # on subprocesses' PYTHONPATH


def _cfg(conv_cfg=None, hooks=None, model=None):
    conv = dict(type='NMSparseConv', n=2, m=4, method='lbc')
    conv.update(conv_cfg or {})
    return Config(dict(
        model=model or dict(type='ImageClassifier',
                            backbone=dict(type='ResNet', depth=18, conv_cfg=conv)),
        custom_hooks=[dict(type='EMAHook'),
                      dict(dict(type='LBCHook', t_i=0, t_f=0.5), **(hooks or {}))]))


@pytest.mark.parametrize('conv_cfg, hooks, key, words', [
    (dict(n=4, m=4), None, 'model.backbone.conv_cfg', 'N must be smaller than M'),
    (dict(m=0), None, 'model.backbone.conv_cfg', 'N and M must be positive'),
    (dict(method='lcb'), None, 'model.backbone.conv_cfg', "unknown method 'lcb'"),
    (dict(mthod='lbc'), None, 'model.backbone.conv_cfg.mthod', "'method'"),
    (dict(method='lbc', srste_lambda=1e-4), None, 'model.backbone.conv_cfg',
     'srste_lambda does not apply'),
    (None, dict(t_ff=3), 'custom_hooks.1.t_ff', "did you mean 't_f'"),
    (None, dict(t_i=0.6), 'custom_hooks.1', 't_i <= t_f'),
    (None, dict(power=0), 'custom_hooks.1', 'power must be positive'),
    (None, dict(unit='epochs'), 'custom_hooks.1', 'unit must be one of'),
])
def test_mistakes_are_one_line_naming_the_key(conv_cfg, hooks, key, words):
    message = find_config_error(_cfg(conv_cfg, hooks))
    assert message is not None and '\n' not in message
    assert message.startswith(f'config error: {key}: '), message
    assert words in message


def test_nmsparsify_and_scoped_types():
    model = dict(type='NMSparsify', model=dict(type='ImageClassifier'), n=2, m=4,
                 method='srste', srste_lambda=1e-4, include=['backbone.*'])
    assert find_config_error(_cfg(model=model)) is None
    model.update(srste_lamda=1e-4)
    message = find_config_error(_cfg(model=model))
    assert message.startswith('config error: model.srste_lamda: NMSparsify has no '
                              "option 'srste_lamda'; did you mean 'srste_lambda'?")
    cfg = Config(dict(model=dict(type='X', head=dict(
        type='lbc_mm.NMSparseLinear', n=3, m=2))))
    assert 'model.head: NMSparseLinear: N:M pattern 3:2' in find_config_error(cfg)


def test_good_settings_pass():
    check_config(_cfg(dict(n=1, m=16, method='asp'), dict(priority='LOW', power=2)))
    check_config(Config(dict(model=dict(type='X'))))  # nothing of lbc_mm


def test_repository_configs_pass():
    configs = [p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                                    recursive=True) if '_base_' not in p]
    assert configs
    for path in configs:
        assert find_config_error(Config.fromfile(path)) is None, path


def test_train_tool_says_one_line_and_exits_2(tmp_path):
    """Before the Runner is built: one stderr line, exit 2, no work dir."""
    cfg = toy_cfg(str(tmp_path / 'work'), hook=dict(t_f=0.5, pwer=3))
    config = write_config(str(tmp_path / 'cfg.py'), cfg)
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join([REPO, TOY_DIR] + (
        [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
                           '--cfg-options', 'custom_hooks.0.t_i=0.1'],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == (
        "config error: custom_hooks.0.pwer: LBCHook has no option 'pwer'; did you "
        "mean 'power'?")
    assert not (tmp_path / 'work').exists()


def test_lbc_hook_needs_the_scores_constructor():
    """An LBCHook config must name the scores' optimizer constructor itself: the
    tools do not add it, so the config trains the same under mmdet's own tools."""
    cfg = _cfg()
    cfg.optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
    message = find_config_error(cfg)
    assert message is not None and '\n' not in message
    assert message.startswith('config error: optim_wrapper.constructor: '), message
    assert "constructor='LBCOptimWrapperConstructor'" in message
    for default in ('DefaultOptimWrapperConstructor',
                    'mmengine.DefaultOptimWrapperConstructor'):
        cfg.optim_wrapper.constructor = default
        assert find_config_error(cfg).startswith(
            'config error: optim_wrapper.constructor: ')
    for given in ('LBCOptimWrapperConstructor', 'lbc_mm.LBCOptimWrapperConstructor',
                  'MyOwnConstructor'):
        cfg.optim_wrapper.constructor = given
        assert find_config_error(cfg) is None
    # no LBCHook (SR-STE, ASP, dense): the default constructor is fine
    cfg = _cfg(dict(method='srste'))
    cfg.custom_hooks = [dict(type='EMAHook')]
    cfg.optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
    assert find_config_error(cfg) is None


def test_train_tool_refuses_lbc_config_without_constructor(tmp_path):
    """tools/train.py no longer rewrites the constructor: one line, exit 2."""
    cfg = toy_cfg(str(tmp_path / 'work'), hook=dict(t_f=0.5))
    cfg['optim_wrapper'].pop('constructor')
    config = write_config(str(tmp_path / 'cfg.py'), cfg)
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join([REPO, TOY_DIR] + (
        [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'), config],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith('config error: optim_wrapper.constructor: ')
    assert not (tmp_path / 'work').exists()
