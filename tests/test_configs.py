"""Every config under configs/ loads, builds, and has the documented sparse layers.

mmdet: backbone sparse except the 7x7 stem (Cin=3); neck and heads dense.
mmpretrain ResNet: backbone sparse except the stem; fc classifier dense.
DeiT: qkv / proj / fc1 / fc2 of every block sparse; patch embedding and head dense.
No forwards here: building Mask R-CNN takes about a second.
"""
import glob
import os
import re

import pytest
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from lbc_mm.layers import NMSparseConv, NMSparseLinear

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_ROOT = os.path.join(REPO, 'configs')
CONFIGS = sorted(
    os.path.relpath(p, CONFIG_ROOT)
    for p in glob.glob(os.path.join(CONFIG_ROOT, '**', '*.py'), recursive=True)
    if '_base_' not in os.path.relpath(p, CONFIG_ROOT).split(os.sep))
# method-NofM in the file name: 'lbc-2of4', 'srste-2of4', 'mask_rcnn_r50_lbc_2of4'.
NAME_RE = re.compile(r'(lbc|srste|ste|asp)[-_](\d+)of(\d+)')
DEIT_SPARSE = re.compile(r'backbone\.layers\.\d+\.(attn\.qkv|attn\.proj|'
                         r'ffn\.layers\.0\.0|ffn\.layers\.1)$')


def _load(rel):
    return Config.fromfile(os.path.join(CONFIG_ROOT, rel))


def _pattern(rel):
    match = NAME_RE.search(os.path.basename(rel))
    assert match, f'{rel}: file name does not state method and NofM'
    return match.group(1), int(match.group(2)), int(match.group(3))


def _drop_pretrained(model_cfg):
    """No downloads: remove pretrained init of the (possibly wrapped) model."""
    inner = model_cfg.get('model', model_cfg)
    if 'backbone' in inner:
        inner.backbone.init_cfg = None
    inner.pop('init_cfg', None)


def _layers(model):
    """(name, module, is_sparse) of every conv / linear layer."""
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            sparse = isinstance(mod, (NMSparseConv, NMSparseLinear)) and mod.is_sparse
            yield name, mod, sparse


def test_configs_found():
    names = set(CONFIGS)
    assert 'mask_rcnn_r50_lbc_2of4.py' in names
    assert len([c for c in names if c.startswith('mmdet' + os.sep)]) >= 5
    assert len([c for c in names if c.startswith('mmpretrain' + os.sep)]) >= 8
    assert len([c for c in names if c.startswith('demo' + os.sep)]) >= 2
    assert not [c for c in names if ':' in c]


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_loads_with_custom_imports(rel):
    cfg = _load(rel)
    assert cfg.custom_imports == dict(imports=['lbc_mm'], allow_failed_imports=False)
    assert cfg.default_scope in ('mmdet', 'mmpretrain')
    method, n, m = _pattern(rel)
    lbc_hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'LBCHook']
    if method == 'lbc':
        assert len(lbc_hooks) == 1, 'an LBC config needs exactly one LBCHook'
        hook = lbc_hooks[0]
        max_epochs = cfg.train_cfg.max_epochs
        if hook.get('unit') == 'epoch':
            # The removal window ends inside the schedule, so the model ends N:M.
            assert 0 <= hook.t_i < hook.t_f < max_epochs
        else:
            assert hook.get('unit') == 'fraction' and 0 <= hook.t_i < hook.t_f < 1
        if cfg.default_scope == 'mmdet':
            assert hook.frozen_layers in ('learn', 'asp')
    else:
        assert not lbc_hooks, f'{method} needs no LBCHook'


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_builds_with_documented_sparsity(rel):
    cfg = _load(rel)
    init_default_scope(cfg.default_scope)
    _drop_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    method, n, m = _pattern(rel)
    layers = list(_layers(model))
    sparse = {name for name, _, s in layers if s}
    dense = {name for name, _, s in layers if not s}
    assert sparse, 'no sparse layer at all'
    for name, mod, s in layers:
        if s:
            assert (mod.n, mod.m, mod.method) == (n, m, method), name

    if 'deit' in rel:
        assert sparse == {name for name, _, _ in layers if DEIT_SPARSE.search(name)}
        assert len(sparse) == 12 * 4
        assert 'backbone.patch_embed.projection' in dense
        assert 'head.layers.head' in dense
        return
    backbone = {name for name, _, _ in layers if name.startswith('backbone.')}
    # ResNet-50: 49 convs + 4 downsample convs; the 7x7 stem stays dense.
    assert len(backbone) == 53
    assert sparse == backbone - {'backbone.conv1'}
    stem = model.backbone.conv1
    assert isinstance(stem, NMSparseConv) and not stem.is_sparse
    assert stem.in_channels == 3
    if cfg.default_scope == 'mmdet':
        assert any(name.startswith('neck.') for name in dense)
        assert any(name.startswith('roi_head.') for name in dense)
    else:
        assert 'head.fc' in dense
