"""Tests of the NMSparsify model transform (lbc_mm/transforms.py)."""
import os.path as osp

import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint, save_checkpoint
from torch import nn

import lbc_mm  # noqa: F401  (registers NMSparsify)
from lbc_mm.layers import NMSparseConv, NMSparseLinear, sparse_layers
from lbc_mm.transforms import sparsify


class _Toy(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv1 = nn.Conv2d(3, 8, 3)  # stem: not divisible, excluded
        self.backbone.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1),
                                             nn.Conv2d(8, 6, 1))
        self.backbone.odd = nn.Conv2d(6, 4, 1)  # 6 input channels
        self.backbone.attn = nn.MultiheadAttention(8, 2)  # out_proj: Linear subclass
        self.head = nn.Module()
        self.head.fc = nn.Linear(8, 2)


def test_sparsify_defaults_keep_stem_head_and_odd_layers_dense(log_lines):
    model = _Toy()
    weight = model.backbone.layer1[0].weight
    keys = set(model.state_dict())
    out = sparsify(model, 2, 4, 'lbc')
    assert out is model
    names = [name for name, _ in sparse_layers(model)]
    assert names == ['backbone.layer1.0', 'backbone.layer1.1']
    assert model.backbone.layer1[0].weight is weight  # same Parameter object
    assert model.backbone.layer1[0].layer_name == 'backbone.layer1.0'
    assert type(model.backbone.conv1) is nn.Conv2d
    assert type(model.backbone.odd) is nn.Conv2d
    assert type(model.head.fc) is nn.Linear
    assert type(model.backbone.attn.out_proj) is not NMSparseLinear
    assert any(line.startswith('backbone.odd:') and '(4, 6, 1, 1)' in line
               for line in log_lines)
    new_keys = set(model.state_dict())
    assert keys <= new_keys
    assert {k.rsplit('.', 1)[1] for k in new_keys - keys} == {'scores', 'alive'}


def test_sparsify_include_exclude_and_options():
    model = sparsify(_Toy(), 1, 4, 'srste', include=['*'], exclude=['*.conv1'],
                     srste_lambda=0.5)
    layers = dict(sparse_layers(model))
    assert set(layers) == {'backbone.layer1.0', 'backbone.layer1.1', 'head.fc'}
    assert all(layer.method == 'srste' and layer.sparsity.srste_lambda == 0.5
               and layer.n == 1
               for layer in layers.values())
    model = sparsify(_Toy(), 2, 4, 'asp', include='backbone.layer1.1', exclude=[])
    assert list(dict(sparse_layers(model))) == ['backbone.layer1.1']


def test_sparsify_strict_and_bad_input():
    with pytest.raises(ValueError, match=r'backbone.odd.*\(4, 6, 1, 1\).*2:4'):
        sparsify(_Toy(), 2, 4, strict=True)
    with pytest.raises(ValueError, match='4:4'):
        sparsify(_Toy(), 4, 4)
    with pytest.raises(ValueError, match="backbone.layer1.0: .*unknown method 'x'"):
        sparsify(_Toy(), 2, 4, 'x')
    with pytest.raises(TypeError, match='config dict or an nn.Module'):
        MODELS.build(dict(type='NMSparsify', model=3))


def _resnet18_cfg():
    cfg = get_config('mmpretrain::resnet/resnet50_8xb32_in1k.py')
    cfg.model.backbone.depth = 18
    cfg.model.head.in_channels = 512
    cfg.model.head.num_classes = 10
    return cfg


def _build(model_cfg, scope='mmpretrain', **kwargs):
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(dict(type='NMSparsify', model=model_cfg, **kwargs))


def test_resnet_transform_loads_dense_checkpoint(tmp_path):
    import mmpretrain.models  # noqa: F401
    from mmpretrain.models import ImageClassifier
    cfg = _resnet18_cfg()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dense = MODELS.build(cfg.model)
    path = osp.join(str(tmp_path), 'dense.pth')
    save_checkpoint(dict(state_dict=dense.state_dict()), path)

    model = _build(cfg.model, n=2, m=4, method='lbc',
                   data_preprocessor=cfg.data_preprocessor)
    assert type(model) is ImageClassifier
    torch.testing.assert_close(model.data_preprocessor.mean.flatten(),
                               torch.tensor(cfg.data_preprocessor.mean))
    names = [name for name, _ in sparse_layers(model)]
    assert len(names) == 19  # 8 blocks x 2 convs + 3 downsample convs
    assert 'backbone.conv1' not in names and type(model.backbone.conv1) is nn.Conv2d
    assert type(model.head.fc) is nn.Linear
    assert set(dense.state_dict()) <= set(model.state_dict())

    load_checkpoint(model, path, strict=False)
    for key, value in dense.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    for _, layer in sparse_layers(model):
        assert (layer.scores == 1 / 3).all() and layer.alive.all()

    # init_cfg=Pretrained (what `load_from`-less configs use) works the same way.
    cfg.model.init_cfg = dict(type='Pretrained', checkpoint=path)
    model = _build(cfg.model, method='asp')
    model.init_weights()
    conv = model.backbone.layer2[0].conv1
    assert torch.equal(conv.weight, dense.backbone.layer2[0].conv1.weight)
    assert conv.sparsity.mask_fixed and torch.equal(conv.get_mask(), conv.asp_mask)


def test_deit_small_transform_forward_backward():
    import mmpretrain.models  # noqa: F401
    from mmpretrain.structures import DataSample
    cfg = get_config('mmpretrain::deit/deit-small_4xb256_in1k.py')
    cfg.model.backbone.img_size = 32
    cfg.model.head.num_classes = 10
    cfg.model.pop('train_cfg')  # no Mixup / CutMix batch augments
    model = _build(cfg.model, n=2, m=4, data_preprocessor=cfg.data_preprocessor)
    model.init_weights()
    sparse = dict(sparse_layers(model))
    suffixes = {name.split('.', 3)[3] for name in sparse}
    assert suffixes == {'attn.qkv', 'attn.proj', 'ffn.layers.0.0', 'ffn.layers.1'}
    assert len(sparse) == 4 * 12
    assert type(model.backbone.patch_embed.projection) is nn.Conv2d
    assert type(model.head.layers.head) is nn.Linear
    assert all(isinstance(layer, NMSparseLinear) for layer in sparse.values())

    for layer in sparse.values():  # as if the run were past t_f
        with torch.no_grad():
            layer.scores.add_(torch.rand(layer.scores.shape))
        layer.sparsity.remove_candidates(1)
    samples = [DataSample().set_gt_label(3), DataSample().set_gt_label(7)]
    losses = model(torch.randn(2, 3, 32, 32), samples, mode='loss')
    loss = sum(losses.values())
    loss.backward()
    qkv = model.backbone.layers[0].attn.qkv
    assert qkv.weight.grad is not None and qkv.scores.grad is not None
    assert model.backbone.patch_embed.projection.weight.grad is not None


def test_conv_cfg_layers_are_not_swapped_again():
    model = nn.Sequential()
    model.backbone = nn.Sequential(NMSparseConv(8, 8, 1))
    sparsify(model, 2, 4)
    assert isinstance(model.backbone[0], NMSparseConv)
    assert len(list(sparse_layers(model))) == 1


def test_found_from_downstream_registries():
    """mmdet / mmpretrain registries fall back to the root registry."""
    import mmdet.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS as CLS_MODELS
    backbone = dict(type='ResNet', depth=18, out_indices=(3, ))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = CLS_MODELS.build(dict(
            type='NMSparsify', model=dict(type='ImageClassifier', backbone=backbone),
            n=1, m=4, method='ste'))
    assert type(model).__name__ == 'ImageClassifier'
    assert {layer.method for _, layer in sparse_layers(model)} == {'ste'}
    with DefaultScope.overwrite_default_scope('mmdet'):
        conv = DET_MODELS.build(dict(type='NMSparseConv', in_channels=8,
                                     out_channels=4, kernel_size=1))
    assert isinstance(conv, NMSparseConv)


def test_shared_module_is_swapped_everywhere():
    model = nn.Module()
    model.backbone = nn.Module()
    shared = nn.Linear(8, 4)
    model.backbone.a = shared
    model.backbone.b = shared
    sparsify(model, 2, 4)
    assert model.backbone.a is model.backbone.b
    assert isinstance(model.backbone.a, NMSparseLinear)
    assert model.backbone.a.weight is shared.weight
