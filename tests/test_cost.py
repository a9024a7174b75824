"""lbc_mm.cost / tools/get_flops.py: parameters, MACs, sparse share and compressed
size of the deployed model, checked by hand on tiny models."""
import functools
import json
import os.path as osp
import runpy

import pytest
import torch
from test_export.conftest import tiny  # noqa: F401  (the fixture)
from torch import nn

from lbc_mm.apis import build_model, load_config
from lbc_mm.cost import (
    compressed_weight_nbytes,
    cost_report,
    effective_count,
    format_report,
    layer_macs,
    model_cost,
)
from lbc_mm.export import compress_weight, export_checkpoint
from lbc_mm.export.compressed import layer_sizes
from lbc_mm.layers import sparse_layers
from lbc_mm.sparsity import magnitude_mask

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _toy():
    """Conv2d(4 -> 8, 3x3, bias) on 5x5, pooled, Linear(8 -> 4)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def test_counts_by_hand():
    model = _toy()
    x = torch.randn(1, 4, 5, 5)
    macs = layer_macs(model, lambda: model(x))
    # conv: 8x5x5 outputs x (4 x 3 x 3) taps; linear: 4 outputs x 8 inputs
    assert macs == {'0': 200 * 36, '3': 32}
    cost = model_cost(model, {'0': (2, 4)}, macs, training_params=432)
    conv, fc = cost['rows']
    assert conv == {'layer': '0', 'type': 'Conv2d', 'shape': [8, 4, 3, 3],
                    'pattern': '2:4', 'params': 288 + 8, 'params_nm': 144 + 8,
                    'macs': 7200, 'macs_nm': 3600, 'bytes': 296 * 4,
                    # 144 kept fp32 values + 144 x 2-bit indices + the bias
                    'bytes_nm': 144 * 4 + 36 + 8 * 4}
    assert fc['pattern'] == 'dense' and fc['params'] == fc['params_nm'] == 36
    t = cost['totals']
    assert (t['params'], t['params_nm']) == (332, 188)
    assert (t['macs'], t['macs_nm']) == (7232, 3632)
    assert t['sparse_params_share'] == pytest.approx(296 / 332)
    assert t['sparse_macs_share'] == pytest.approx(7200 / 7232)
    assert (t['bytes'], t['bytes_nm']) == (332 * 4, 332 * 4 - (1184 - 644))
    assert t['training_params'] == 432 and t['nm_layers'] == 1


@pytest.mark.parametrize('n,m,numel', [(2, 4, 288), (1, 4, 64), (2, 8, 256),
                                       (1, 16, 512), (4, 8, 64)])
def test_compressed_size_is_the_export_format(n, m, numel):
    weight = torch.randn(numel // 16, 16)
    entry = compress_weight(weight * magnitude_mask(weight, n, m), n, m)
    assert compressed_weight_nbytes(numel, n, m, 4) == layer_sizes(entry)[1]
    assert effective_count(numel, n, m) == entry['values'].numel()


def test_a_linear_used_twice_counts_twice():
    fc = nn.Linear(4, 4)
    assert layer_macs(fc, lambda: fc(fc(torch.randn(3, 4)))) == {'': 2 * 3 * 16}


def test_scores_are_not_parameters_of_the_deployed_model(tiny):  # noqa: F811
    report = cost_report(tiny['sparse'], shape=(32, 32))
    stock, _ = build_model(load_config(tiny['stock']))
    sparse, _ = build_model(load_config(tiny['sparse']))
    scores = sum(layer.scores.numel() for _, layer in sparse_layers(sparse))
    t = report['totals']
    assert t['params'] == sum(p.numel() for p in stock.parameters())
    assert t['training_params'] == scores > 0
    # what mmengine's complexity counter (mmdet's get_flops.py) reports as params
    assert sum(p.numel() for p in sparse.parameters()) == t['params'] + scores
    assert t['nm_layers'] == 20 and report['nm_exact'] == 0  # random init: dense
    assert 'not counted' in format_report(report)


def test_conv_macs_match_mmengines_flop_counter(tiny):  # noqa: F811
    from mmengine.analysis import FlopAnalyzer
    report = cost_report(tiny['stock'], shape=(32, 32))
    model, _ = build_model(load_config(tiny['stock']))
    model.forward = functools.partial(model.forward, mode='tensor')
    by_module = FlopAnalyzer(model, (torch.randn(1, 3, 32, 32),)) \
        .unsupported_ops_warnings(False).uncalled_modules_warnings(False).by_module()
    rows = {r['layer']: r['macs'] for r in report['rows']}
    # stem (64 ch., stride 4 with the max-pool) -> 8x8; layer1.0.conv1 64 -> 16, 3x3
    assert rows['backbone.layer1.0.conv1'] == 16 * 8 * 8 * 64 * 9
    assert all(rows[name] == by_module[name] for name in rows), rows


def test_checkpoint_and_converted_file_give_the_same_report(tiny, tmp_path):  # noqa: F811,E501
    out = str(tmp_path / 'model.pth')
    export_checkpoint(tiny['sparse'], tiny['ckpt'], out)
    ckpt = cost_report(tiny['sparse'], tiny['ckpt'], shape=(32, 32))
    conv = cost_report(tiny['sparse'], str(tmp_path / 'model.nm.pth'), shape=(32, 32))
    assert ckpt['rows'] == conv['rows'] and ckpt['nm_exact'] == conv['nm_exact'] == 20
    # the stock config convert wrote next to the file serves as well
    stock = cost_report(str(tmp_path / 'model.py'), out, shape=(32, 32))
    assert stock['rows'] == conv['rows']
    assert conv['source'].startswith('converted model file')
    assert ckpt['totals']['training_params'] > 0 == conv['totals']['training_params']
    # the compressed size is what convert wrote (tensor bytes)
    t = conv['totals']
    sparse = [r for r in conv['rows'] if r['pattern'] == '2:4']
    assert len(sparse) == 20 and t['sparse_params_share'] > 0.9


def test_tool_prints_and_writes_json(tiny, tmp_path, capsys):  # noqa: F811
    tool = runpy.run_path(osp.join(REPO, 'tools', 'get_flops.py'))
    path = str(tmp_path / 'cost.json')
    assert tool['main']([tiny['sparse'], tiny['ckpt'], '--shape', '32',
                         '--json', path]) == 0
    out = capsys.readouterr().out
    assert out.count('| 2:4 |') == 20 and 'N:M layers: 20 of 22' in out
    assert 'of the parameters are in N:M layers' in out
    assert json.load(open(path))['shape'] == [32, 32]
    assert tool['main']([tiny['sparse'], str(tmp_path / 'missing.pth')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: checkpoint not found') and err.count('\n') == 1


def test_detector_runs_rpn_and_roi_heads_on_one_data_sample(tmp_path):
    from test_export.test_stock_config import TINY_DET
    cfg = tmp_path / 'tiny_det.py'
    cfg.write_text(TINY_DET)
    report = cost_report(str(cfg), shape=(64, 96))
    rows = {r['layer']: r for r in report['rows']}
    assert report['scope'] == 'mmdet' and report['shape'] == [64, 96]
    # 16 block convs + 3 downsamples of the ResNet-18 backbone; stem, neck, heads dense
    assert report['totals']['nm_layers'] == 19
    assert rows['backbone.layer1.0.conv1']['macs'] == 16 * 16 * 24 * 16 * 9
    assert rows['roi_head.bbox_head.shared_fcs.0']['macs'] > 0  # on the proposals
    assert rows['rpn_head.rpn_conv']['pattern'] == 'dense'
