"""Start from a dense checkpoint: dense weights load into LBC layers as a normal
event (one line, no missing-key warnings for the LBC state), a fine-tune through
the config's ``load_from`` ends exactly N:M, and a real mismatch still fails."""
import glob
import logging
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch
from lbc_toy import build_runner, reset_mmengine_globals, toy_cfg  # noqa: I100
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import load_state_dict
from mmpretrain.models import ResNet

from lbc_mm.layers import sparse_layers
from lbc_mm.sparsity import init_scores

INIT_LINE = 'LBCHook: initialised the LBC state of 2 layers from dense weights'


def _log_text(runner) -> str:
    return open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()


def test_fine_tune_a_dense_checkpoint_through_load_from(tmp_path):
    # 1. A trained dense model (stock Conv2d / Linear, the LBC model's keys).
    dense = build_runner(toy_cfg(str(tmp_path / 'dense'), method='dense'))
    dense.train()
    ckpt = str(tmp_path / 'dense' / 'iter_12.pth')
    assert not any(k.endswith(('.scores', '.alive'))
                   for k in dense.model.state_dict())
    reset_mmengine_globals()

    # 2. The LBC fine-tune: the config's load_from, an LBCHook, 12 iterations.
    cfg = toy_cfg(str(tmp_path / 'lbc'), hook=dict(t_f=0.5))
    cfg.update(load_from=ckpt, log_level='INFO')
    runner = build_runner(cfg)
    runner.train()
    text = _log_text(runner)
    assert f'Load checkpoint from {ckpt}' in text and INIT_LINE in text
    assert 'missing keys' not in text
    assert 'end-of-training checks passed: 2 LBC layers exactly 2:4' in text
    for _, layer in sparse_layers(runner.model):
        assert (layer.sparsity.num_alive == 1).all()  # exactly N:M


def _resnet18(conv_cfg=None):
    return ResNet(depth=18, conv_cfg=conv_cfg)


def _load_warnings(model, state):
    logger = MMLogger.get_current_instance()
    records = []

    class _Collect(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    handler = _Collect()
    logger.addHandler(handler)
    try:
        load_state_dict(model, state, strict=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    return '\n'.join(records)


def test_dense_resnet_loads_into_lbc_layers_without_missing_keys():
    """mmpretrain's ResNet-18 dense weights into its LBC twin (mmengine's loader,
    as load_from and init_cfg=Pretrained use it)."""
    dense = _resnet18()
    lbc = _resnet18(dict(type='NMSparseConv', n=2, m=4, method='lbc'))
    layers = list(sparse_layers(lbc))
    assert len(layers) == 19  # every conv but the 3-channel stem
    with torch.no_grad():  # removed candidates and trained scores, to be reset
        for _, layer in layers:
            layer.scores.add_(1.0)
            layer.sparsity.remove_candidates(2)
    warnings = _load_warnings(lbc, dense.state_dict())
    assert 'missing keys' not in warnings, warnings
    for name, layer in layers:
        assert layer.sparsity.loaded_dense and bool(layer.alive.all()), name
        torch.testing.assert_close(layer.weight, dense.get_submodule(name).weight)
        assert torch.equal(layer.scores, init_scores(layer.scores.shape[0], 2, 4))
    # An LBC checkpoint is no dense load.
    _load_warnings(lbc, lbc.state_dict())
    assert not any(layer.sparsity.loaded_dense for _, layer in layers)


def test_a_real_mismatch_still_fails():
    lbc = _resnet18(dict(type='NMSparseConv', n=2, m=4, method='lbc'))
    # another model: ResNet-50's layer1.0.conv1 is 1x1, ResNet-18's 3x3
    other = ResNet(depth=50).state_dict()
    with pytest.raises(ValueError, match=r"loading layer1\.0\.conv1\.: dense "
                       r'checkpoint weight has shape \(64, 64, 1, 1\), this layer '
                       r'needs \(64, 64, 3, 3\) \(another model\?\)'):
        _load_warnings(lbc, other)
    # keys of something else entirely: the LBC state stays a missing key
    warnings = _load_warnings(lbc, {'head.fc.weight': torch.zeros(2, 2)})
    assert 'missing keys' in warnings and 'layer1.0.conv1.scores' in warnings


# -- a checkpoint stock mmpretrain wrote (lbc_mm never imported) (issue 22 item 1) --
@pytest.fixture(scope='module')
def stock(tmp_path_factory):
    from stock_mmpretrain import stock_checkpoint
    return stock_checkpoint(str(tmp_path_factory.mktemp('stock')))


def _tool(name, *args, cwd):
    from lbc_toy import REPO, subprocess_env
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', f'{name}.py'),
                           *map(str, args)], cwd=str(cwd), env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)


def test_stock_checkpoint_pickles_history_buffer_getattr(stock):
    """Control: stock mmengine pickles ``getattr(HistoryBuffer, 'min')`` & co."""
    with zipfile.ZipFile(stock['checkpoint']) as archive:
        pickled = archive.read(next(n for n in archive.namelist()
                                    if n.endswith('data.pkl')))
    assert b'getattr' in pickled and b'HistoryBuffer' in pickled
    assert b'current' in pickled


def test_fine_tune_a_checkpoint_stock_mmpretrain_wrote(stock, tmp_path):
    """The from-dense path (``load_from``) through tools/train.py: rc 0, the dense
    weights start the LBC state, the run ends exactly 2:4."""
    from stock_mmpretrain import STUDY_CONFIG
    data = stock['data']
    config = tmp_path / 'from_dense.py'
    config.write_text(
        f'_base_ = {STUDY_CONFIG!r}\n'
        f'load_from = {stock["checkpoint"]!r}\n'
        f'train_dataloader = dict(batch_size=4, dataset=dict(data_root={data!r}))\n'
        f'val_dataloader = dict(batch_size=4, dataset=dict(data_root={data!r}))\n'
        'test_dataloader = val_dataloader\n'
        'train_cfg = dict(max_epochs=2, val_interval=2)\n'
        "log_level = 'INFO'\n")
    proc = _tool('train', config, '--work-dir', tmp_path / 'work', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'initialised the LBC state of 19 layers from dense weights' in proc.stdout
    assert 'end-of-training checks passed: 19 LBC layers exactly 2:4' in proc.stdout


def test_resume_test_and_init_cfg_of_a_checkpoint_stock_mmpretrain_wrote(
        stock, tmp_path):
    """--resume (the whole message hub), tools/test.py, init_cfg Pretrained and the
    readers of convert / get_flops / export (read_any_checkpoint)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    from mmpretrain.registry import MODELS

    from lbc_mm.checkpoint_io import read_any_checkpoint
    for read in (read_any_checkpoint, CheckpointLoader.load_checkpoint):
        assert 'backbone.conv1.weight' in read(stock['checkpoint'])['state_dict']
    backbone = MODELS.build(dict(
        type='ResNet', depth=18, stem_channels=16, base_channels=16, init_cfg=dict(
            type='Pretrained', checkpoint=stock['checkpoint'], prefix='backbone.')))
    backbone.init_weights()
    work = tmp_path / 'work'
    shutil.copytree(stock['work'], work)
    proc = _tool('train', stock['config'], '--work-dir', work, '--resume',
                 '--cfg-options', 'train_cfg.max_epochs=2', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (work / 'epoch_2.pth').is_file()
