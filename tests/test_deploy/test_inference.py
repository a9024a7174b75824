"""lbc_mm.deploy.accelerate: 2:4 units swapped into a loaded model (CPU: the refusal,
and the swapping with dense feature-major GEMMs standing in for the 2:4 kernels)."""
import copy
import json

import pytest
import torch
from mmengine.config import Config

from lbc_mm.apis import build_model
from lbc_mm.deploy import AccelerateError, accelerate
from lbc_mm.deploy.inference import two_of_four_layers
from lbc_mm.deploy.kernels import sparse_support
from lbc_mm.deploy.models import magnitude_sparse

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


@pytest.fixture(scope='module')
def vit():
    torch.manual_seed(0)
    model, _ = build_model(Config(copy.deepcopy(TINY_VIT)))
    layers, _ = magnitude_sparse(model)  # what a converted 2:4 model holds
    return model.eval(), layers


@pytest.mark.skipif(sparse_support()[0], reason='a 2:4-capable GPU is present')
def test_cpu_refuses_in_one_line(vit):
    with pytest.raises(AccelerateError) as exc:
        accelerate(copy.deepcopy(vit[0]), {})
    assert '\n' not in str(exc.value) and 'needs an Ampere-or-newer CUDA GPU' in \
        str(exc.value)


def test_layers_are_found_from_the_weights(vit):
    model, layers = vit
    assert sorted(two_of_four_layers(model)) == sorted(layers)  # 8 linears
    assert two_of_four_layers(build_model(Config(copy.deepcopy(TINY_VIT)))[0]) == []


def test_auto_swaps_units_and_keeps_outputs(vit):
    model, _ = vit
    x = torch.randn(2, 3, 32, 32)
    dep = copy.deepcopy(model)
    installed = accelerate(dep, 'auto', run=lambda: dep(x, mode='tensor'),
                           margin=-1.0, stand_in=True)
    # 2 blocks x (qkv, proj, MLP)
    assert len(installed) == 6 and 'backbone.layers.0.ffn.layers' in installed
    assert type(dep.get_submodule('backbone.layers.0.attn.qkv')).__name__ == '_Unit'
    with torch.no_grad():
        torch.testing.assert_close(dep(x, mode='tensor'), model(x, mode='tensor'),
                                   rtol=1e-4, atol=1e-5)
    with pytest.raises(AccelerateError, match='needs run='):
        accelerate(copy.deepcopy(model), 'auto', stand_in=True)


def test_benchmark_json_plan(vit, tmp_path):
    model, _ = vit
    plan = {'backbone.layers.1.attn.proj': 'cslt',
            'backbone.layers.0.ffn.layers': 'cslt_t+cslt'}
    path = tmp_path / 'bench.json'
    path.write_text(json.dumps({'plans': {'auto_eager': plan}, 'end_to_end': {}}))
    dep = copy.deepcopy(model)
    assert accelerate(dep, str(path), stand_in=True) == {
        'backbone.layers.1.attn.proj': 'dense_fm',
        'backbone.layers.0.ffn.layers': 'dense+dense'}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dep(x, mode='tensor'), model(x, mode='tensor'),
                                   rtol=1e-4, atol=1e-5)
    # end to end, auto lost to dense in that mode: nothing is swapped
    path.write_text(json.dumps({'plans': {'auto_eager': plan}, 'end_to_end': {
        'forward_eager': {'mode': 'eager', 'auto_fallback_to_dense': True}}}))
    assert accelerate(copy.deepcopy(model), str(path), stand_in=True) == {}
    with pytest.raises(AccelerateError, match='not 2:4 units of this model'):
        accelerate(copy.deepcopy(model), {'head.layers.head': 'cslt'},
                   stand_in=True)


@pytest.mark.gpu
@pytest.mark.skipif(not sparse_support()[0], reason=sparse_support()[1] or 'sm80+')
def test_gpu_auto_matches_dense_within_fp16_tolerance(vit):
    """On a 2:4-capable GPU: every unit forced sparse (margin -1), fp32 model around
    fp16 2:4 units, outputs equal to the dense model within fp16 tolerance."""
    model = copy.deepcopy(vit[0]).cuda()
    x = torch.randn(4, 3, 32, 32, device='cuda')
    with torch.no_grad():
        ref = model(x, mode='tensor')
    installed = accelerate(model, 'auto', run=lambda: model(x, mode='tensor'),
                           margin=-1.0)
    assert installed and all(v not in ('dense_fm', 'dense+dense')
                             for v in installed.values())
    with torch.no_grad():
        got = model(x, mode='tensor')
    assert (got - ref).abs().max() <= 2e-2 * ref.abs().max()
