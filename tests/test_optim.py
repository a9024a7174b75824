"""LBCOptimWrapperConstructor: the scores' own lr / weight decay, frozen scores kept."""
import pytest
import torch
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


def test_defaults_no_decay_on_scores():
    model = Net()
    ow = _build(model)
    for layer in (model.backbone.conv, model.fc):
        group = _group(ow, layer.scores)
        assert group['lr'] == pytest.approx(0.1)
        assert group['weight_decay'] == 0
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
