"""LBCOptimWrapperConstructor: the scores' own lr / weight decay, frozen scores kept."""
import logging

import pytest
import torch
from mmengine.logging import print_log
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from lbc_mm.layers import NMSparseConv, NMSparseLinear
from lbc_mm.optim import SCORES_GROUP_KEY


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv = NMSparseConv(8, 8, 3, n=2, m=4)
        self.backbone.bn = nn.BatchNorm2d(8)
        self.fc = NMSparseLinear(8, 4, n=2, m=4)


def _build(model, **paramwise):
    cfg = dict(type='LBCOptimWrapperConstructor',
               optim_wrapper_cfg=dict(optimizer=dict(
                   type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)),
               paramwise_cfg=paramwise or None)
    return OPTIM_WRAPPER_CONSTRUCTORS.build(cfg)(model)


def _group(optim_wrapper, param):
    return next(g for g in optim_wrapper.optimizer.param_groups
                if any(p is param for p in g['params']))


def test_defaults_scores_decay_like_weights():
    """Default: the weights' lr, momentum and weight decay (authors' code)."""
    model = Net()
    ow = _build(model)
    for layer in (model.backbone.conv, model.fc):
        group = _group(ow, layer.scores)
        assert group['lr'] == pytest.approx(0.1)
        assert group['weight_decay'] == pytest.approx(1e-4)
        assert group['momentum'] == pytest.approx(0.9)
        assert group[SCORES_GROUP_KEY] is True
        assert group['params'] == [layer.scores]
        weight_group = _group(ow, layer.weight)
        assert weight_group['weight_decay'] == pytest.approx(1e-4)
        assert SCORES_GROUP_KEY not in weight_group


def test_multipliers_override_other_custom_keys():
    model = Net()
    ow = _build(model, scores_lr_mult=0.5, scores_decay_mult=2.0,
                custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=0.0)})
    group = _group(ow, model.backbone.conv.scores)
    assert group['lr'] == pytest.approx(0.05)
    assert group['weight_decay'] == pytest.approx(2e-4)
    weight_group = _group(ow, model.backbone.conv.weight)  # custom key applies
    assert weight_group['lr'] == pytest.approx(0.01)
    assert weight_group['weight_decay'] == 0


def test_frozen_scores_are_in_the_optimizer_and_stay_frozen():
    model = Net()
    for p in model.backbone.conv.parameters():  # like mmdet frozen_stages
        p.requires_grad = False
    ow = _build(model)
    params = {id(p) for g in ow.optimizer.param_groups for p in g['params']}
    assert id(model.backbone.conv.scores) in params
    assert id(model.backbone.conv.weight) not in params  # mmengine's usual skip
    assert not model.backbone.conv.scores.requires_grad  # restored


def test_frozen_parameters_are_left_out_without_a_warning_each(log_lines):
    """mmdet's frozen stem and stage 1: mmengine's per-parameter build (needed for
    the scores' groups) warned '... is skipped since its requires_grad=False' for
    every frozen tensor (33 in Mask R-CNN); a dense run says nothing."""
    model = Net()
    for p in list(model.backbone.conv.parameters()) + list(
            model.backbone.bn.parameters()):
        p.requires_grad = False
    ow = _build(model)
    assert not [line for line in log_lines if 'requires_grad=False' in line]
    params = {id(p) for g in ow.optimizer.param_groups for p in g['params']}
    assert id(model.backbone.bn.weight) not in params  # still left out
    log_lines.clear()
    # the filter is gone after the build
    print_log('x is skipped since its requires_grad=False', logger='current',
              level=logging.WARNING)
    assert log_lines == ['x is skipped since its requires_grad=False']


def test_frozen_scores_learn_once_enabled():
    """The point of keeping them: switched on later, SGD updates them."""
    model = Net()
    model.backbone.conv.scores.requires_grad_(False)
    ow = _build(model)
    model.backbone.conv.scores.requires_grad_(True)
    before = model.backbone.conv.scores.detach().clone()
    out = model.fc(model.backbone.conv(torch.randn(2, 8, 5, 5)).mean((2, 3)))
    ow.update_params(out.square().sum())
    assert not torch.equal(before, model.backbone.conv.scores)


def test_negative_multiplier():
    with pytest.raises(ValueError, match='scores_lr_mult'):
        _build(Net(), scores_lr_mult=-1)


def test_scores_decay_mult_zero_is_the_lifetime_sum():
    model = Net()
    ow = _build(model, scores_decay_mult=0.0)
    assert _group(ow, model.fc.scores)['weight_decay'] == 0
    assert _group(ow, model.fc.weight)['weight_decay'] == pytest.approx(1e-4)


def _config_optimizer(rel):
    """Build a repo config's model (no pretrained weights) and its optim wrapper."""
    import os

    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'configs')
    cfg = Config.fromfile(os.path.join(root, rel))
    init_default_scope(cfg.default_scope)
    inner = cfg.model.get('model', cfg.model)
    inner.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    return cfg, model, build_optim_wrapper(model, cfg.optim_wrapper)


def test_resnet50_config_scores_get_sgd_decay_and_bn_none():
    """The ResNet-50 recipe: SGD, scores with weight decay 1e-4 and momentum 0.9
    like the conv weights; BatchNorm without decay (norm_decay_mult=0)."""
    cfg, model, ow = _config_optimizer('mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py')
    assert type(ow.optimizer).__name__ == 'SGD'
    conv = model.backbone.layer1[0].conv2
    scores, weight = _group(ow, conv.scores), _group(ow, conv.weight)
    assert scores[SCORES_GROUP_KEY] is True
    for key, value in (('weight_decay', 1e-4), ('momentum', 0.9), ('lr', 0.1)):
        assert scores[key] == pytest.approx(value), key
        assert weight[key] == pytest.approx(value), key
    bn = model.backbone.layer1[0].bn2
    for param in (bn.weight, bn.bias):
        assert _group(ow, param)['weight_decay'] == 0
    every = [p for g in ow.optimizer.param_groups for p in g['params']]
    num_scores = sum(1 for name, _ in model.named_parameters()
                     if name.endswith('.scores'))
    assert num_scores == 52
    assert sum(1 for g in ow.optimizer.param_groups if g.get(SCORES_GROUP_KEY)) == 52
    assert len(every) == len(list(model.parameters()))


def test_deit_config_scores_get_adamw_decay():
    """The DeiT-small recipe: AdamW, scores with weight decay 0.05 like the sparse
    linears' weights; norms, biases, cls_token and pos_embed without decay."""
    cfg, model, ow = _config_optimizer('mmpretrain/lbc-2of4_deit-small_4xb256_in1k.py')
    assert type(ow.optimizer).__name__ == 'AdamW'
    block = model.backbone.layers[0]
    qkv = block.attn.qkv
    scores, weight = _group(ow, qkv.scores), _group(ow, qkv.weight)
    assert scores[SCORES_GROUP_KEY] is True
    assert scores['weight_decay'] == pytest.approx(0.05)
    assert weight['weight_decay'] == pytest.approx(0.05)
    assert scores['lr'] == pytest.approx(weight['lr'])
    assert scores['betas'] == weight['betas']
    assert _group(ow, qkv.bias)['weight_decay'] == 0
    assert _group(ow, block.ln1.weight)['weight_decay'] == 0
    assert _group(ow, model.backbone.cls_token)['weight_decay'] == 0
