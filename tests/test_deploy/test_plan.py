"""CPU tests of the deploy plan: scope, recorded shapes, units, auto choice, swap."""
import copy

import pytest
import torch
from mmengine.config import Config

from lbc_mm.apis import build_model
from lbc_mm.deploy import plan as P
from lbc_mm.deploy.models import magnitude_sparse
from lbc_mm.sparse_model import nm_report

TINY_VIT = dict(
    default_scope='mmpretrain',
    model=dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer',
                      arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                                feedforward_channels=128),
                      img_size=32, patch_size=8),
        neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=64)))

TINY_RESNET = dict(
    default_scope='mmpretrain',
    model=dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=512)))


@pytest.fixture(scope='module')
def vit():
    torch.manual_seed(0)
    model, scope = build_model(Config(copy.deepcopy(TINY_VIT)))
    assert scope == 'mmpretrain'
    layers, _ = magnitude_sparse(model)
    return model, layers


def test_vit_scope_is_qkv_proj_fc1_fc2(vit):
    model, layers = vit
    kinds = sorted({name.rsplit('.', 1)[-1] if not name.endswith('.0.0') else 'fc1'
                    for name in layers})
    # qkv, proj, fc1 (ffn.layers.0.0), fc2 (ffn.layers.1) of 2 blocks; patch
    # embedding (Cin 3) and head stay dense
    assert len(layers) == 8
    assert kinds == ['1', 'fc1', 'proj', 'qkv']
    assert not any('patch_embed' in n or n.startswith('head') for n in layers)
    assert all(r['bad_groups'] == 0 for r in nm_report(model, layers))


def test_resnet_scope_skips_stem_and_fc():
    model, _ = build_model(Config(copy.deepcopy(TINY_RESNET)))
    layers, rule = magnitude_sparse(model)
    assert 'backbone.conv1' not in layers  # the 7x7 stem, Cin = 3
    assert 'backbone.layer1.0.conv1' in layers
    assert 'backbone.layer2.0.downsample.0' in layers
    assert not any(n.startswith('head') for n in layers)
    assert '§8' in rule


def test_record_inputs_and_units(vit):
    model, layers = vit
    x = torch.randn(3, 3, 32, 32)
    names = list(layers)
    mlps = P.find_mlps(model, names)
    assert sorted(mlps) == ['backbone.layers.0.ffn.layers',
                            'backbone.layers.1.ffn.layers']
    inputs = P.record_inputs(model, names + list(mlps),
                             lambda: model(x, mode='tensor'))
    tokens = 3 * (16 + 1)  # batch x (patches + cls token)
    qkv = inputs['backbone.layers.0.attn.qkv']
    assert qkv['shape'] == [3, 17, 64] and tokens == 51
    assert inputs['backbone.layers.0.ffn.layers.1']['shape'] == [3, 17, 128]
    uu = P.find_units(model, layers, lambda: model(x, mode='tensor'))
    assert uu['inputs'] == inputs
    # units: 2 MLPs + qkv and proj of each block; fc1/fc2 run inside the MLPs
    assert len(uu['units']) == 6
    assert not any(u.endswith('.0.0') for u in uu['units'])
    # identical layers of the two blocks share a signature (timed once)
    sigs = {row['kind']: len(row['layers']) for row in uu['rows'].values()}
    assert sigs['mlp'] == 2 and len(uu['rows']) == 5


def test_apply_plan_dense_fm_is_the_same_model(vit):
    model, layers = vit
    x = torch.randn(2, 3, 32, 32)
    uu = P.find_units(model, layers, lambda: model(x, mode='tensor'))
    choice = {sig: ('dense+dense' if row['kind'] == 'mlp' else 'dense_fm')
              for sig, row in uu['rows'].items()}
    dep = copy.deepcopy(model)
    installed = P.apply_plan(dep, uu['units'], choice)
    assert len(installed) == 6
    assert type(dep.get_submodule('backbone.layers.0.ffn.layers')).__name__ == \
        'FeatureMajorMLP'
    with torch.no_grad():
        torch.testing.assert_close(dep(x, mode='tensor'), model(x, mode='tensor'),
                                   rtol=1e-4, atol=1e-5)


def test_choose_uses_margin_and_mode():
    results = {
        'a': P.UnitTiming(best={'cuda_graph': ['cslt', 1.20], 'eager': ['mm', 0.4]}),
        'b': P.UnitTiming(best={'cuda_graph': ['mm', 1.01], 'eager': [None, None]}),
        'c': P.UnitTiming(unsupported='3x3 conv'),
    }
    assert P.choose(results, 'cuda_graph', 0.03) == {'a': 'cslt', 'b': None, 'c': None}
    assert P.choose(results, 'cuda_graph', 0.0) == {'a': 'cslt', 'b': 'mm', 'c': None}
    assert P.choose(results, 'eager', 0.0) == {'a': None, 'b': None, 'c': None}


def test_signature_separates_shapes():
    lin = torch.nn.Linear(8, 8)
    a = P.signature(lin, {'shape': [4, 8], 'channels_last': False})
    b = P.signature(lin, {'shape': [5, 8], 'channels_last': False})
    assert a != b
    same = {'shape': [4, 8], 'channels_last': False}
    assert a == P.signature(copy.deepcopy(lin), same)


def test_allowed_variants_filter_candidates():
    lin = torch.nn.Linear(64, 64)
    seq = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                            torch.nn.Dropout()), torch.nn.Linear(128, 64),
        torch.nn.Dropout())
    assert set(P._variants(lin, False)) == {'mm', 'cslt', 'cslt_t'}
    only = dict(allowed_variants=['cslt'])
    assert set(P._variants(lin, False, **only)) == {'cslt'}
    assert set(P._variants(lin, True, **only)) == {'dense_fm', 'cslt'}
    assert set(P._variants(seq, False, **only)) == {'cslt+cslt', 'dense+cslt'}
    assert P._variants(torch.nn.Conv2d(8, 8, 3), False, **only) == {}
    assert P._variants(lin, False, allowed_variants=[]) == {} and \
        not P.allowed('mm+dense', [])
    assert P.allowed('dense+dense', [])


def test_conv1x1_tries_transposed_cuslt_only_on_channels_last_input():
    """Channels-last input is token-major: 'cslt_t' reads it without a copy, so a 1x1
    conv there tries it (it was dropped for every conv); NCHW input still skips it
    ('cslt_t' would equal 'cslt')."""
    conv = torch.nn.Conv2d(8, 16, 1)
    assert set(P._variants(conv, False, channels_last=True)) == {'mm', 'cslt',
                                                                 'cslt_t'}
    assert set(P._variants(conv, False, channels_last=False)) == {'mm', 'cslt'}
    # time_unit passes the recorded memory format on (on CPU every 2:4 variant
    # fails to build, and says so per variant)
    for cl, expect in ((True, {'mm', 'cslt', 'cslt_t'}), (False, {'mm', 'cslt'})):
        res = P.time_unit(conv, {'shape': [2, 8, 4, 4], 'channels_last': cl},
                          torch.float32, torch.device('cpu'))
        assert set(res.check) == expect
    assert 'cslt_t' in P._variants(conv, True)  # build_unit can build a JSON's pick


def test_unit_timing_json_row_and_best():
    # a crashed timing is a row with its error line; no best variant
    crashed = P.UnitTiming(error='RuntimeError: boom')
    assert crashed.to_dict() == {'check': {}, 'timing': {}, 'best': {},
                                 'error': 'RuntimeError: boom'}
    assert crashed.best_in('eager') == (None, None)
    ok = P.UnitTiming(best={'eager': ['mm', 1.5]})
    assert ok.best_in('eager') == ('mm', 1.5) and 'unsupported' not in ok.to_dict()
