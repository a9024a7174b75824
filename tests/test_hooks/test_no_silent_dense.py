"""No silent dense run: LBC layers that compute gradients in an mmengine run without
an LBCHook stop it at the first iteration, in train or eval mode (frozen stages),
whatever the entry point; lbc_mm's tools say so before building it.

The usual cause: a child config sets its own ``custom_hooks``, which replaces the
base's list (mmengine replaces lists), so the base's LBCHook is gone.
"""
import glob
import importlib.util
import os.path as osp
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
from lbc_toy import (  # noqa: I100
    REPO,
    LBCToyNet,
    build_runner,
    subprocess_env,
    toy_cfg,
    write_config,
)
from mmengine.config import Config
from mmengine.runner import Runner

from lbc_mm.config_check import find_config_error

MESSAGE = (r"NMSparseConv weight \(8, 8, 3, 3\) 2:4 lbc trains in an mmengine run "
           r"without an LBCHook, so its candidates would never be removed and the run "
           r"would end dense; the usual cause: a child config's custom_hooks replaces "
           r"its base's list")


def _child_config(tmp_path) -> str:
    """A base toy config with an LBCHook and a child that sets its own hooks."""
    base = toy_cfg(str(tmp_path / 'work'), hook=dict(t_f=0.5))
    write_config(str(tmp_path / 'base.py'), base)
    child = tmp_path / 'child.py'
    child.write_text(textwrap.dedent("""
        _base_ = './base.py'
        custom_hooks = [dict(type='EmptyCacheHook')]
    """))
    return str(child)


def test_runner_built_in_python_fails_at_the_first_iteration(tmp_path):
    runner = build_runner(toy_cfg(str(tmp_path), hook=None))
    with pytest.raises(RuntimeError, match=MESSAGE) as info:
        runner.train()
    assert '\n' not in str(info.value)
    assert runner.iter == 0  # inside the first iteration: nothing trained
    assert not glob.glob(osp.join(str(tmp_path), '*.pth'))


def test_runner_from_cfg_of_a_child_config_fails(tmp_path):
    """``Runner.from_cfg(cfg).train()``: what mmdet's and mmpretrain's
    ``tools/train.py`` do (run themselves below when their wheels ship them)."""
    cfg = Config.fromfile(_child_config(tmp_path))
    assert [h['type'] for h in cfg.custom_hooks] == ['EmptyCacheHook']
    with pytest.raises(RuntimeError, match=MESSAGE):
        Runner.from_cfg(cfg).train()


def _upstream_train_script(package: str):
    mod = pytest.importorskip(package)
    path = osp.join(osp.dirname(mod.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(path):
        pytest.skip(f'{package} ships no .mim/tools/train.py')
    return path


@pytest.mark.parametrize('package', ['mmdet', 'mmpretrain'])
def test_upstream_train_tool_fails(tmp_path, monkeypatch, package):
    """The library's own ``tools/train.py`` (as its wheel ships it), in process."""
    script = _upstream_train_script(package)
    child = _child_config(tmp_path)
    argv = [script, child, '--work-dir', str(tmp_path / 'work')]
    if package == 'mmpretrain':  # it sets persistent_workers; the toy has no workers
        argv.append('--no-persistent-workers')
    monkeypatch.setattr(sys, 'argv', argv)
    with pytest.raises(RuntimeError, match=MESSAGE):
        runpy.run_path(script, run_name='__main__')


def test_frozen_stages_under_upstream_train_tool_fail(tmp_path):
    """ResNet puts frozen stages in eval mode: with ``frozen_stages=4`` every LBC
    layer forwards in eval mode, and a child config without the LBCHook still
    stops, in one line, under mmpretrain's own ``tools/train.py`` (a process that
    imports lbc_mm only through ``custom_imports``)."""
    from PIL import Image
    script = _upstream_train_script('mmpretrain')
    for label in ('a', 'b'):
        (tmp_path / 'data' / label).mkdir(parents=True)
        for i in range(2):
            Image.new('RGB', (16, 16), (60 * i, 9, 200)).save(
                str(tmp_path / 'data' / label / f'{i}.png'))
    conv = dict(type='NMSparseConv', n=2, m=4)
    base = dict(
        custom_imports=dict(imports=['lbc_mm'], allow_failed_imports=False),
        default_scope='mmpretrain',
        model=dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                          frozen_stages=4, conv_cfg=conv),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
                      loss=dict(type='CrossEntropyLoss'))),
        data_preprocessor=dict(num_classes=2, mean=[0, 0, 0], std=[1, 1, 1]),
        train_dataloader=dict(
            batch_size=2, num_workers=0,
            dataset=dict(type='CustomDataset', data_root=str(tmp_path / 'data'),
                         pipeline=[dict(type='LoadImageFromFile'),
                                   dict(type='PackInputs')]),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01),
                           constructor='LBCOptimWrapperConstructor'),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        custom_hooks=[dict(type='LBCHook', t_f=0.5)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        log_level='WARNING')
    with open(tmp_path / 'base.py', 'w') as f:
        f.write('\n'.join(f'{key} = {value!r}' for key, value in base.items()))
    (tmp_path / 'child.py').write_text(
        "_base_ = './base.py'\ncustom_hooks = [dict(type='EmptyCacheHook')]\n")
    proc = subprocess.run(
        [sys.executable, script, str(tmp_path / 'child.py'), '--work-dir',
         str(tmp_path / 'work'), '--no-persistent-workers'],
        capture_output=True, text=True, env=subprocess_env(), cwd=str(tmp_path),
        timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('RuntimeError: NMSparseConv '), proc.stderr[-2000:]
    assert 'trains in an mmengine run without an LBCHook' in last
    assert not glob.glob(str(tmp_path / 'work' / '*.pth'))


def test_lbc_mm_train_tool_refuses_the_config_before_the_runner(tmp_path, capsys):
    """lbc_mm's tools/train.py: one line, exit 2, nothing built (no work dir)."""
    spec = importlib.util.spec_from_file_location(
        'lbc_tools_train', osp.join(REPO, 'tools', 'train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    cfg_path = tmp_path / 'child.py'
    cfg_path.write_text(textwrap.dedent(f"""
        _base_ = '{REPO}/configs/mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py'
        custom_hooks = [dict(type='EmptyCacheHook')]
        work_dir = '{tmp_path / "work"}'
    """))
    with pytest.raises(SystemExit) as info:
        train.main([str(cfg_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        'config error: custom_hooks: model.backbone.conv_cfg makes LBC layers but no '
        'LBCHook removes their candidates, so the run would end dense (a child '
        "config's custom_hooks replaces its base's list, dropping the LBCHook); add "
        "dict(type='LBCHook', ...) to custom_hooks")
    assert not (tmp_path / 'work').exists()


def test_config_check_names_the_lbc_layers():
    cfg = Config(dict(model=dict(type='NMSparsify', model=dict(type='X'), n=2, m=4),
                      custom_hooks=[]))
    assert find_config_error(cfg).startswith(
        'config error: custom_hooks: model makes LBC layers but no LBCHook')
    assert find_config_error(cfg, training=False) is None  # tools/test.py
    cfg.model.method = 'srste'  # SR-STE / ASP / STE need no hook
    assert find_config_error(cfg) is None


def test_layers_outside_a_runner_train_as_told():
    """A hand-written loop (or a unit test) drives the removal itself."""
    model = LBCToyNet()
    model.train()
    out = model(torch.randn(2, 8, 4, 4))
    out.sum().backward()
    assert model.conv.scores.grad is not None
    assert model.conv.sparsity.driver is None


def test_finished_layers_and_other_methods_need_no_hook(tmp_path):
    """SR-STE layers train without an LBCHook; so do LBC layers already N:M."""
    build_runner(toy_cfg(str(tmp_path / 'srste'), hook=None, method='srste')).train()
    runner = build_runner(toy_cfg(str(tmp_path / 'nm'), hook=None))
    for module in (runner.model.conv, runner.model.fc):
        module.sparsity.remove_candidates(1)
    runner.train()
