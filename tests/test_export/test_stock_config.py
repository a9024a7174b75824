"""The stock config export_checkpoint writes next to OUT.pth: no lbc_mm left in it,
and the pair runs under mmdet's init_detector / DetInferencer without lbc_mm."""
import json
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from lbc_mm.apis import build_model, load_config
from lbc_mm.export import export_checkpoint
from lbc_mm.export.convert import lbc_mm_types, stock_config
from lbc_mm.layers import sparse_layers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_DET = os.path.join(REPO, 'configs', 'demo',
                        'mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py')
DEIT = os.path.join(REPO, 'configs', 'mmpretrain', 'lbc-2of4_deit-small_4xb256_in1k.py')
# The demo Mask R-CNN through the lbc_mm:: prefix, shrunk to a ResNet-18 at 16-128 ch.
TINY_DET = """
_base_ = 'lbc_mm::demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py'
model = dict(
    backbone=dict(depth=18, stem_channels=16, base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(in_channels=32, conv_out_channels=32)))
"""


def _walk(node, path='cfg'):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}[{i}]')


def test_detector_config_loses_every_lbc_mm_part_and_keeps_the_rest():
    cfg = load_config(DEMO_DET)
    stock = stock_config(cfg)
    types = lbc_mm_types()
    assert {'NMSparseConv', 'LBCHook', 'FiniteCheckHook', 'AtomicCheckpointHook',
            'LBCOptimWrapperConstructor'} <= set(types)
    left = [(p, n.get('type'), n.get('_scope_')) for p, n in _walk(stock)
            if n.get('type') in types or n.get('_scope_') == 'lbc_mm']
    assert not left, left
    assert stock['model']['backbone']['conv_cfg'] is None
    assert 'custom_imports' not in stock and stock['custom_hooks'] == []
    assert stock['default_hooks']['checkpoint']['type'] == 'CheckpointHook'
    assert 'constructor' not in stock['optim_wrapper']
    assert stock['optim_wrapper']['clip_grad'] == cfg.optim_wrapper.clip_grad
    assert stock['test_dataloader'] == cfg.to_dict()['test_dataloader']
    assert stock['model']['roi_head'] == cfg.to_dict()['model']['roi_head']
    assert stock['load_from'] is None


def test_nmsparsify_becomes_the_model_it_wraps():
    cfg = load_config(DEIT)
    stock = stock_config(cfg)
    assert cfg.model.type == 'NMSparsify'
    inner = cfg.to_dict()['model']['model']
    assert stock['model'] == inner  # _scope_='mmpretrain' (its base) included
    assert [h['type'] for h in stock['custom_hooks']] == ['EMAHook']


def test_another_lbc_mm_type_is_one_line_naming_its_key():
    cfg = Config(dict(default_scope='mmdet', model=dict(type='MaskRCNN'),
                      extra=dict(type='LBCDistributedDataParallel')))
    with pytest.raises(ValueError, match=r'cfg\.extra\.type=.LBCDistributedDataPar'):
        stock_config(cfg)


def test_detector_pair_runs_under_init_detector_and_det_inferencer(tmp_path):
    cfg_path = tmp_path / 'tiny_det.py'
    cfg_path.write_text(TINY_DET)
    torch.manual_seed(0)
    model, _ = build_model(load_config(str(cfg_path)))
    for _, layer in sparse_layers(model):
        with torch.no_grad():
            layer.scores.uniform_(0.1, 1.0)
        layer.sparsity.remove_candidates(1)
    ckpt = str(tmp_path / 'epoch_1.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = str(tmp_path / 'export' / 'model.pth')
    os.makedirs(os.path.dirname(out))
    report = export_checkpoint(str(cfg_path), ckpt, out)
    assert report['config_out'] == str(tmp_path / 'export' / 'model.py')
    assert sorted(os.listdir(tmp_path / 'export')) == ['model.nm.pth', 'model.pth',
                                                       'model.py']
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / 'x.pt')
    code = f"""
import sys, numpy as np, torch
from mmdet.apis import DetInferencer, inference_detector, init_detector
cfg, pth = {report['config_out']!r}, {out!r}
model = init_detector(cfg, pth, device='cpu')
img = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype('uint8')
result = inference_detector(model, img)
inferencer = DetInferencer(model=cfg, weights=pth, device='cpu', show_progress=False)
preds = inferencer(img, return_vis=False)['predictions']
with torch.no_grad():
    feats = model.extract_feat(torch.load({str(tmp_path / 'x.pt')!r}))
torch.save([f for f in feats], {str(tmp_path / 'feats.pt')!r})
assert 'lbc_mm' not in sys.modules, 'lbc_mm was imported'
print(len(preds), type(result).__name__)
"""
    env = dict(os.environ, LBC_MM_NO_CONFIG_HOOK='1', OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].split() == ['1', 'DetDataSample']
    with torch.no_grad():
        ref = model.eval().extract_feat(x)
    got = torch.load(tmp_path / 'feats.pt', weights_only=True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_refuses_a_stock_config_path_that_is_the_training_config(tiny, tmp_path):
    cfg = tmp_path / 'sparse.py'
    cfg.write_text(open(tiny['sparse']).read())
    with pytest.raises(ValueError, match='stock config .* is the same file as the '
                       'input CONFIG'):
        export_checkpoint(str(cfg), tiny['ckpt'], str(tmp_path / 'sparse.pth'))
    assert sorted(os.listdir(tmp_path)) == ['sparse.py']
    json.dumps(stock_config(load_config(str(cfg))))  # plain values only
