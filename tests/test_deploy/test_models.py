"""CPU tests of config resolution and benchmark model preparation."""
import os

import pytest
import torch

from lbc_mm.apis import resolve_config
from lbc_mm.deploy.models import prepare
from lbc_mm.deploy.report import e2e_markdown, layer_markdown, plot_layers, write_json
from lbc_mm.layers import NMSparseConv, NMSparseLinear
from lbc_mm.sparse_model import nm_report

TINY_CFG = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=512))
"""


def test_resolve_config_package_paths(tmp_path):
    path = resolve_config('mmpretrain::deit/deit-small_4xb256_in1k.py')
    assert os.path.isfile(path) and path.endswith('deit-small_4xb256_in1k.py')
    with pytest.raises(FileNotFoundError, match='not found'):
        resolve_config('mmpretrain::deit/nope.py')
    with pytest.raises(FileNotFoundError, match='not installed'):
        resolve_config('nosuchpkg_xyz::a/b.py')
    with pytest.raises(FileNotFoundError, match='config file not found'):
        resolve_config(str(tmp_path / 'missing.py'))


def test_prepare_magnitude_masks_are_2of4(tmp_path):
    cfg = tmp_path / 'tiny.py'
    cfg.write_text(TINY_CFG)
    prep = prepare(str(cfg), None)
    rows = nm_report(prep.model, prep.patterns)
    assert len(rows) == 19  # ResNet-18 convs minus the stem
    assert all(r['bad_groups'] == 0 and r['pattern'] == '2:4' for r in rows)
    assert all(abs(r['sparsity'] - 0.5) < 0.01 for r in rows)
    stem = prep.model.backbone.conv1.weight
    assert (stem == 0).float().mean() < 0.01  # the stem stays dense
    assert 'magnitude 2:4' in prep.source
    assert prep.kind == 'random' and prep.model_file is None


def test_prepare_densifies_config_sparse_layers(tmp_path):
    cfg = tmp_path / 'tiny_nm.py'
    cfg.write_text(TINY_CFG.replace(
        "backbone=dict(type='ResNet', depth=18,",
        "backbone=dict(type='ResNet', depth=18, "
        "conv_cfg=dict(type='NMSparseConv', n=2, m=4),"))
    prep = prepare(str(cfg), None)
    assert not any(isinstance(m, (NMSparseConv, NMSparseLinear))
                   for m in prep.model.modules())
    assert prep.rule.startswith('layers the config made sparse')
    assert len(prep.patterns) == 19
    assert all(r['bad_groups'] == 0 for r in nm_report(prep.model, prep.patterns))


def test_write_json_atomic_and_tables(tmp_path):
    out = tmp_path / 'r.json'
    write_json({'a': 1}, str(out))
    assert out.read_text().strip().startswith('{')
    assert os.listdir(tmp_path) == ['r.json']
    rows = [{'signature': 's', 'kind': 'linear', 'layers': ['l0', 'l1'],
             'weight_shape': [64, 64], 'input_shape': [8, 64],
             'timing': {'cuda_graph': {'dense': {'ms': 1.0}, 'cslt': {'ms': 0.5}}},
             'best': {'cuda_graph': ['cslt', 2.0], 'eager': ['mm', 0.5]}}]
    md = layer_markdown(rows, 'fp16')
    assert '| l0 (+1) | linear |' in md and '2.00x' in md and '0.50x' in md
    e2e = {'forward_cuda_graph': {
        'function': 'forward', 'mode': 'cuda_graph',
        'timing': {'dense': {'ms': 10.0}, 'all_sparse': {'ms': 12.0}},
        'auto_ms': 9.0, 'auto_speedup': 1.11, 'all_sparse_speedup': 0.83,
        'auto_layers_speedup': 1.11, 'auto_fallback_to_dense': False,
        'auto_sparse_units': 3, 'units': 5, 'check_summary': '1e-3'}}
    e2e['forward_cuda_graph']['timing']['auto'] = {'ms': 9.0}
    md = e2e_markdown('m', e2e)
    assert ('| m | forward | cuda_graph | 10.00 | 9.00 | 1.11x | 9.00 (1.11x) | '
            '12.00 | '
            '0.83x | 3/5 | 1e-3 |') in md
    e2e['forward_cuda_graph'].update(auto_fallback_to_dense=True, auto_ms=10.0,
                                     auto_speedup=1.0, auto_layers_speedup=0.9)
    assert '| 10.00 | 1.00x (fallback: dense) | 9.00 (0.90x) |' in \
        e2e_markdown('m', e2e)
    png = tmp_path / 'p.png'
    assert plot_layers([{'model_name': 'm', 'layers': {'fp16': rows}}], str(png))
    assert png.stat().st_size > 1000
    assert plot_layers([{'model_name': 'm', 'layers': {}}], str(tmp_path / 'q.png')) \
        is None
    assert sorted(os.listdir(tmp_path)) == ['p.png', 'r.json']


def test_magnitude_prep_keeps_weights_finite(tmp_path):
    cfg = tmp_path / 'tiny.py'
    cfg.write_text(TINY_CFG)
    model = prepare(str(cfg), None).model
    assert all(torch.isfinite(p).all() for p in model.parameters())
