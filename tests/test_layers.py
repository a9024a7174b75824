"""Tests of NMSparseConv / NMSparseLinear (lbc_mm/layers.py) on the real stack."""
import copy
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer
from mmengine.hub import get_config
from mmengine.registry import MODELS
from mmengine.runner import load_checkpoint, save_checkpoint
from torch import nn

import lbc_mm  # noqa: F401  (registers the layers)
from lbc_mm.layers import NMSparseConv, NMSparseLinear, sparse_layers
from lbc_mm.sparse_model import name_sparse_layers, nm_report
from lbc_mm.sparsity import magnitude_mask, to_groups


def model_nm_violations(model):
    """``(name, bad_groups, groups)`` of the layers :func:`nm_report` flags."""
    return [(row['layer'], row['bad_groups'], row['groups'])
            for row in nm_report(model) if row['bad_groups']]


def _train_scores(layer):
    """Give LBC scores distinct values (as training would)."""
    with torch.no_grad():
        layer.scores.add_(torch.rand(layer.scores.shape) * 0.1)


def test_build_conv_layer_positional_args():
    # mmcv's build_conv_layer calls layer(*args, **kwargs, **cfg).
    conv = build_conv_layer(dict(type='NMSparseConv', n=2, m=4), 8, 16, 3, 2, 1,
                            bias=False)
    assert type(conv) is NMSparseConv and isinstance(conv, nn.Conv2d)
    assert conv.stride == (2, 2) and conv.padding == (1, 1) and conv.bias is None
    assert (conv.n, conv.m, conv.method, conv.is_sparse) == (2, 4, 'lbc', True)
    assert conv.scores.shape == (16 * 8 * 9 // 4, 6)
    assert isinstance(conv.scores, nn.Parameter)
    assert conv.alive.dtype == torch.bool and conv.alive.all()
    assert set(conv.state_dict()) == {'weight', 'scores', 'alive'}
    linear = MODELS.build(dict(type='NMSparseLinear', in_features=8, out_features=3,
                               n=1, m=4, method='srste'))
    assert type(linear) is NMSparseLinear and linear.sparsity.srste_lambda == 2e-4
    assert set(linear.state_dict()) == {'weight', 'bias'}


@pytest.mark.parametrize('method', ['lbc', 'srste', 'ste', 'asp'])
@pytest.mark.parametrize('groups', [1, 2])
def test_conv_forward_is_conv_with_masked_weight(method, groups):
    torch.manual_seed(0)
    conv = NMSparseConv(8, 6, 3, padding=1, groups=groups, n=2, m=4, method=method)
    if method == 'lbc':
        _train_scores(conv)
        conv.sparsity.remove_candidates(1)
    x = torch.randn(2, 8, 6, 6)
    out = conv(x)
    mask = conv.get_mask()
    assert mask.dtype == torch.bool and mask.shape == conv.weight.shape
    assert (to_groups(mask, 4).sum(1) == 2).all()
    expected = F.conv2d(x, conv.weight * mask, conv.bias, padding=1, groups=groups)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert conv.weight.grad is not None
    assert model_nm_violations(conv) == []


def test_final_conv_mask_groups_along_input_channels():
    # weight[o, c, y, x] = c + 1: groups must be 4 consecutive input channels, and
    # with scores favouring the candidate {2, 3} the kept channels are 2,3 / 6,7.
    conv = NMSparseConv(8, 3, 3, n=2, m=4, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1., 9.).reshape(1, 8, 1, 1).expand(3, 8, 3, 3))
        conv.scores[:, 5] += 1.0  # candidate 5 = (2, 3)
    conv.sparsity.remove_candidates(1)
    assert (conv.sparsity.num_alive == 1).all()
    mask = conv.get_mask()
    kept = mask.nonzero()[:, 1].unique().tolist()
    assert kept == [2, 3, 6, 7]
    assert (mask.sum(dim=1) == 4).all()  # every (o, y, x): 2 of each 4 channels


def test_linear_lbc_and_scores_gradient():
    torch.manual_seed(0)
    lin = NMSparseLinear(16, 4, n=2, m=8)
    assert lin.scores.shape == (4 * 16 // 8, 28)
    x = torch.randn(3, 16)
    out = lin(x)
    torch.testing.assert_close(out, F.linear(x, lin.weight, lin.bias))  # starts dense
    out.square().sum().backward()
    assert lin.scores.grad.abs().sum() > 0


def test_remove_candidates_freeze_and_momentum_rezeroing():
    torch.manual_seed(0)
    conv = NMSparseConv(4, 4, 1, n=2, m=4)
    _train_scores(conv)
    conv.sparsity.remove_candidates(3)
    assert (conv.sparsity.num_alive == 3).all()
    assert (conv.scores[~conv.alive] == 0).all()
    with torch.no_grad():  # momentum moves a removed score
        conv.scores[~conv.alive] = 5.0
    conv.sparsity.remove_candidates(3)
    assert (conv.scores[~conv.alive] == 0).all()
    assert (conv.sparsity.num_alive == 3).all()
    conv.sparsity.remove_candidates(10)  # clipped, nothing comes back
    assert (conv.sparsity.num_alive == 3).all()
    conv.sparsity.remove_candidates(1)
    conv.sparsity.freeze_scores()
    assert not conv.scores.requires_grad
    conv(torch.randn(1, 4, 2, 2)).sum().backward()
    assert conv.scores.grad is None and conv.weight.grad is not None


def test_remove_candidates_names_layer_on_nan():
    conv = NMSparseConv(4, 4, 1, n=2, m=4)
    name_sparse_layers(nn.Sequential(conv))
    with torch.no_grad():
        conv.scores[0, 0] = float('nan')
    with pytest.raises(FloatingPointError,
                       match=r"NMSparseConv '0' weight \(4, 4, 1, 1\)"):
        conv.sparsity.remove_candidates(2)


def test_srste_gradient_in_layer():
    torch.manual_seed(0)
    lin = NMSparseLinear(8, 2, bias=False, n=2, m=4, method='srste', srste_lambda=0.1)
    x = torch.randn(5, 8)
    lin(x).sum().backward()
    mask = magnitude_mask(lin.weight, 2, 4)
    d_eff = torch.ones(5, 2).t() @ x  # dL/dW_eff
    expected = d_eff + 0.1 * (~mask) * lin.weight.detach()
    torch.testing.assert_close(lin.weight.grad, expected)
    ste = NMSparseLinear(8, 2, n=2, m=4, method='ste')
    assert ste.sparsity.srste_lambda == 0.0


def test_asp_mask_fixed_at_first_training_step():
    torch.manual_seed(0)
    conv = NMSparseConv(8, 4, 3, n=2, m=4, method='asp')
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    first = magnitude_mask(conv.weight, 2, 4)
    conv.train()
    x = torch.randn(2, 8, 5, 5)
    for step in range(3):
        opt.zero_grad()
        conv(x).sum().backward()
        opt.step()
        if step == 0:  # make the pruned weights the largest ones
            with torch.no_grad():
                conv.weight[~first] *= 1000.0
        assert torch.equal(conv.get_mask(), first)
    assert not torch.equal(magnitude_mask(conv.weight, 2, 4), first)
    assert torch.equal(conv.asp_mask, first)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * first, conv.bias))


def test_asp_mask_from_dense_checkpoint(tmp_path):
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(8, 4, 3))
    path = osp.join(str(tmp_path), 'dense.pth')
    save_checkpoint(dense.state_dict(), path)
    sparse = nn.Sequential(NMSparseConv(8, 4, 3, n=2, m=4, method='asp'))
    load_checkpoint(sparse, path, strict=True)  # no missing asp_mask
    expected = magnitude_mask(dense[0].weight, 2, 4)
    assert torch.equal(sparse[0].asp_mask, expected)
    sparse.train()
    sparse(torch.randn(1, 8, 4, 4))
    assert torch.equal(sparse[0].asp_mask, expected)
    # A sparse checkpoint's own asp_mask wins over the weight's magnitudes.
    state = sparse.state_dict()
    state['0.asp_mask'] = ~state['0.asp_mask']
    other = nn.Sequential(NMSparseConv(8, 4, 3, n=2, m=4, method='asp'))
    other.load_state_dict(state)
    assert torch.equal(other[0].get_mask(), ~expected)


def test_lbc_loads_dense_checkpoint_keeping_initial_scores(tmp_path):
    dense = nn.Sequential(nn.Conv2d(8, 4, 3), nn.Linear(4, 4))
    path = osp.join(str(tmp_path), 'dense.pth')
    save_checkpoint(dict(state_dict=dense.state_dict()), path)
    sparse = nn.Sequential(NMSparseConv(8, 4, 3), NMSparseLinear(4, 4))
    load_checkpoint(sparse, path, strict=False)
    assert torch.equal(sparse[0].weight, dense[0].weight)
    assert torch.equal(sparse[1].bias, dense[1].bias)
    assert (sparse[0].scores == 1 / 3).all() and sparse[0].alive.all()
    # A sparse checkpoint round-trips scores / alive.
    _train_scores(sparse[0])
    sparse[0].sparsity.remove_candidates(2)
    again = nn.Sequential(NMSparseConv(8, 4, 3), NMSparseLinear(4, 4))
    again.load_state_dict(torch.load(_save(sparse, tmp_path), weights_only=True))
    assert torch.equal(again[0].alive, sparse[0].alive)
    again[0].sparsity.remove_candidates(2)  # card cache rebuilt from alive after load
    assert torch.equal(again[0].scores, sparse[0].scores)
    again[0].sparsity.remove_candidates(1)
    assert (again[0].sparsity.num_alive == 1).all()


def _save(model, tmp_path):
    path = osp.join(str(tmp_path), 'sparse.pth')
    torch.save(model.state_dict(), path)
    return path


def test_dense_fallback_logs_and_strict_raises(log_lines):
    conv = build_conv_layer(dict(type='NMSparseConv', n=2, m=4), 3, 8, 7, 2, 3)
    assert not conv.is_sparse and not hasattr(conv, 'scores')
    assert any('(8, 3, 7, 7)' in line and 'stays dense' in line and '2:4' in line
               for line in log_lines)
    assert conv.get_mask().all()
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, 2, 3))
    conv.sparsity.remove_candidates(1)  # no-op
    assert list(sparse_layers(nn.Sequential(conv))) == []
    assert len(list(sparse_layers(nn.Sequential(conv), only_sparse=False))) == 1
    assert 'dense' in conv.describe()
    with pytest.raises(ValueError, match=r'\(8, 3, 7, 7\).*2:4'):
        NMSparseConv(3, 8, 7, n=2, m=4, strict=True)
    with pytest.raises(ValueError, match=r'\(4, 6\).*M=4'):
        NMSparseLinear(6, 4, strict=True)


@pytest.mark.parametrize('kwargs,match', [
    (dict(n=4, m=4), '4:4'),
    (dict(n=0, m=4), '0:4'),
    (dict(n=2, m=-4), '2:-4'),
    (dict(method='magic'), "unknown method 'magic'"),
    (dict(method='lbc', srste_lambda=0.1), 'srste_lambda'),
    (dict(method='ste', srste_lambda=0.1), 'STE'),
    (dict(method='srste', srste_lambda=-1.0), '>= 0'),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        NMSparseConv(8, 8, 3, **kwargs)
    assert 'NMSparseConv weight (8, 8, 3, 3)' in str(info.value)


def test_model_nm_violations_reports_layer():
    model = nn.Sequential(NMSparseLinear(8, 2, n=2, m=4),
                          NMSparseLinear(8, 2, n=2, m=4))
    model[1].sparsity.remove_candidates(1)
    # Layer 0 is still dense (card = C): every group has 4 non-zeros.
    assert model_nm_violations(model) == [('0', 4, 4)]
    assert name_sparse_layers(model) == 2 and model[1].layer_name == '1'


def test_nm_report_of_stock_layers():
    # Stock layers (after to_dense) are checked on their weights.
    model = nn.Module()
    model.a, model.b = nn.Linear(8, 1, bias=False), nn.Linear(8, 1, bias=False)
    model.c = nn.Conv2d(4, 2, 3, bias=False)
    with torch.no_grad():
        model.a.weight.copy_(torch.tensor([[1., 0., 2., 0., 0., 0., 0., 3.]]))
        model.b.weight.copy_(torch.tensor([[1., 1., 2., 0., 1., 1., 1., 1.]]))
        model.c.weight.zero_()
        model.c.weight[1, :3, 2, 2] = 1.0  # one group with 3 non-zeros
    rows = nm_report(model, {'a': (2, 4), 'b': (2, 4), 'c': (2, 4)})
    found = [(r['layer'], r['bad_groups'], r['groups'])
             for r in rows if r['bad_groups']]
    assert found == [('b', 2, 2), ('c', 1, 18)]
    assert rows[0]['pattern'] == '2:4' and rows[0]['sparsity'] == 0.625
    model.d = nn.Linear(6, 2)
    with pytest.raises(ValueError, match='layer d'):
        nm_report(model, {'d': (2, 4)})


@pytest.mark.parametrize('method', ['lbc', 'asp'])
def test_from_dense_and_to_dense(method):
    torch.manual_seed(0)
    dense = nn.Conv2d(8, 4, 3, stride=2, padding=1).eval()
    sparse = NMSparseConv.from_dense(dense, 2, 4, method)
    assert sparse.weight is dense.weight and sparse.bias is dense.bias
    assert not sparse.training and sparse.stride == (2, 2)
    if method == 'lbc':
        sparse.sparsity.keep_magnitude_candidates()
    back = sparse.to_dense()
    assert type(back) is nn.Conv2d and not back.training
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(back(x), sparse(x))
    assert nm_report(nn.Sequential(back), {'0': (2, 4)})[0]['bad_groups'] == 0
    linear = NMSparseLinear.from_dense(nn.Linear(8, 3, bias=False), 2, 4, method)
    assert type(linear.to_dense()) is nn.Linear and linear.bias is None


@pytest.mark.parametrize('method', ['lbc', 'srste', 'asp'])
def test_bf16_autocast_cpu(method):
    torch.manual_seed(0)
    model = nn.Sequential(NMSparseConv(8, 8, 3, padding=1, method=method),
                          nn.Flatten(), NMSparseLinear(8 * 16, 4, method=method))
    for _, layer in sparse_layers(model):
        if method == 'lbc':
            _train_scores(layer)
            layer.sparsity.remove_candidates(2)
    with torch.autocast('cpu', torch.bfloat16):
        out = model(torch.randn(2, 8, 4, 4))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32


def test_scores_shape_contract():
    for n, m in [(2, 4), (1, 4), (2, 8), (4, 8), (1, 16)]:
        conv = NMSparseConv(16, 2, (3, 1), n=n, m=m)
        assert conv.scores.shape == (conv.weight.numel() // m, math.comb(m, n))
        assert (conv.scores == 1 / math.comb(m - 1, n - 1)).all()


def _loss_sum(losses):
    total = 0
    for value in losses.values():
        if isinstance(value, torch.Tensor):
            total = total + value.sum()
        elif isinstance(value, (list, tuple)):
            total = total + sum(v.sum() for v in value)
    return total


def test_mmdet_mask_rcnn_conv_cfg_forward_backward():
    import mmdet.models  # noqa: F401
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import DefaultScope
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.conv_cfg = dict(type='NMSparseConv', n=2, m=4, method='lbc')
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
        names = [name for name, _ in sparse_layers(model)]
        # 16 bottlenecks x 3 convs + 4 downsample convs; stem (3 channels) dense.
        assert len(names) == 52 and all(n.startswith('backbone.') for n in names)
        assert isinstance(model.backbone.conv1, NMSparseConv)
        assert not model.backbone.conv1.is_sparse
        assert type(model.neck.lateral_convs[0].conv) is nn.Conv2d
        packed = demo_mm_inputs(batch_size=1, image_shapes=(3, 64, 64), num_items=[2],
                                num_classes=80, with_mask=True)
        data = model.data_preprocessor(packed, True)
        losses = model(**data, mode='loss')
    _loss_sum(losses).backward()
    layer3 = model.backbone.layer3[0].conv2
    assert layer3.scores.grad is not None and layer3.scores.grad.abs().sum() > 0
    # frozen_stages=1 turned off requires_grad of stage-1 scores too.
    assert not model.backbone.layer1[0].conv1.scores.requires_grad


def test_mmpretrain_resnet50_conv_cfg_forward_backward():
    import mmpretrain.models  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmpretrain.structures import DataSample
    cfg = get_config('mmpretrain::resnet/resnet50_8xb32_in1k.py')
    cfg.model.backbone.conv_cfg = dict(type='NMSparseConv', n=1, m=4, method='srste')
    cfg.model.head.num_classes = 10
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    names = [name for name, _ in sparse_layers(model)]
    assert len(names) == 52 and 'backbone.conv1' not in names
    assert type(model.head.fc) is nn.Linear
    samples = [DataSample().set_gt_label(1), DataSample().set_gt_label(2)]
    losses = model(torch.randn(2, 3, 32, 32), samples, mode='loss')
    _loss_sum(losses).backward()
    conv = model.backbone.layer4[2].conv3
    assert conv.weight.grad is not None and conv.method == 'srste'
    assert model_nm_violations(model) == []


@pytest.mark.parametrize('keep', [6, 3, 1])
@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_layer_gradients_equal_pure_function(keep, kind):
    """The layer's cached-mask fast path gives the gradients of docs/method.md §4."""
    from lbc_mm.sparsity import lbc_masked_weight
    torch.manual_seed(keep)
    layer = (NMSparseConv(8, 4, 3, padding=1) if kind == 'conv' else
             NMSparseLinear(8, 4))
    _train_scores(layer)
    layer.sparsity.remove_candidates(keep)
    x = torch.randn(2, 8, 4, 4) if kind == 'conv' else torch.randn(3, 8)
    layer(x).square().sum().backward()
    weight = layer.weight.detach().clone().requires_grad_()
    scores = layer.scores.detach().clone().requires_grad_()
    eff = lbc_masked_weight(weight, scores, layer.candidates, layer.alive)
    out = (F.conv2d(x, eff, layer.bias, padding=1) if kind == 'conv' else
           F.linear(x, eff, layer.bias))
    out.square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, weight.grad)
    torch.testing.assert_close(layer.scores.grad, scores.grad)
    assert (layer.scores.grad[~layer.alive] == 0).all()


@pytest.mark.parametrize('kind', ['conv', 'linear'])
def test_score_gradient_with_groups_at_different_cards(kind):
    """Groups at different cards (a hand-edited or partly loaded checkpoint), one
    group still at all C candidates: removed candidates get no score gradient."""
    from test_sparsity.reference import ref_grads
    torch.manual_seed(3)
    layer = (NMSparseConv(8, 4, 3, padding=1) if kind == 'conv' else
             NMSparseLinear(8, 4)).double()
    _train_scores(layer)
    num_g, num_c = layer.scores.shape
    cards = [num_c if g == 0 else 1 + g % num_c for g in range(num_g)]
    with torch.no_grad():
        for g, keep in enumerate(cards):
            order = torch.randperm(num_c)
            layer.alive[g] = False
            layer.alive[g, order[:keep]] = True
        layer.scores.mul_(layer.alive)
    assert layer.sparsity.current_card() == num_c and not layer.alive.all()
    x = (torch.randn(2, 8, 4, 4) if kind == 'conv' else torch.randn(3, 8)).double()
    weight_eff = layer.sparse_weight()
    weight_eff.retain_grad()
    out = (F.conv2d(x, weight_eff, layer.bias, padding=1) if kind == 'conv' else
           F.linear(x, weight_eff, layer.bias))
    out.square().sum().backward()
    ref_w, ref_s = ref_grads(layer.weight.detach(), weight_eff.grad,
                             layer.alive.tolist(), layer.n, layer.m)
    torch.testing.assert_close(layer.weight.grad, ref_w)
    torch.testing.assert_close(layer.scores.grad, ref_s)
    assert (layer.scores.grad[~layer.alive] == 0).all()
    assert (layer.scores.grad[0] != 0).any()  # the all-alive group does learn


def test_mask_cache_follows_alive_changes():
    torch.manual_seed(0)
    conv = NMSparseConv(8, 4, 1)
    x = torch.randn(1, 8, 2, 2)
    conv(x)  # caches the all-ones mask
    _train_scores(conv)
    conv.sparsity.remove_candidates(1)
    assert model_nm_violations(conv) == []
    mask = conv.get_mask()
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * mask, conv.bias))
    # Loading another layer's state changes alive in place: cache invalidated.
    other = NMSparseConv(8, 4, 1)
    other.load_state_dict(conv.state_dict())
    fresh = NMSparseConv(8, 4, 1)
    fresh(x)
    fresh.load_state_dict(conv.state_dict())
    torch.testing.assert_close(fresh(x), conv(x))
    # End state with the magnitude choice.
    fresh.sparsity.keep_magnitude_candidates()
    assert (fresh.sparsity.num_alive == 1).all()
    assert torch.equal(fresh.get_mask(), magnitude_mask(fresh.weight, 2, 4))
    torch.testing.assert_close(
        fresh(x), F.conv2d(x, fresh.weight * magnitude_mask(fresh.weight, 2, 4),
                           fresh.bias))
    assert (fresh.scores[~fresh.alive] == 0).all()
    assert (fresh.scores[fresh.alive] != 0).all()


def test_mask_cache_sees_direct_alive_updates():
    # e.g. LBCHook copying `alive` into an EMA model's layer.
    torch.manual_seed(0)
    src, dst = NMSparseLinear(8, 2), NMSparseLinear(8, 2)
    x = torch.randn(3, 8)
    dst(x)  # caches the all-alive mask
    _train_scores(src)
    src.sparsity.remove_candidates(1)
    with torch.no_grad():
        dst.alive.copy_(src.alive)
        dst.scores.masked_fill_(~dst.alive, 0.0)
    expected = F.linear(x, dst.weight * src.get_mask(), dst.bias)
    torch.testing.assert_close(dst(x), expected)
    dst(x).sum().backward()
    assert (dst.scores.grad[~dst.alive] == 0).all()


def test_scores_without_alive_in_checkpoint():
    torch.manual_seed(0)
    src = NMSparseLinear(8, 2)
    _train_scores(src)
    src.sparsity.remove_candidates(2)
    state = src.state_dict()
    del state['alive']
    dst = NMSparseLinear(8, 2)
    dst.load_state_dict(state)  # strict: alive is derived, not missing
    assert torch.equal(dst.alive, src.alive)
    assert torch.equal(dst.get_mask(), src.get_mask())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('method', ['lbc', 'srste', 'asp'])
def test_cuda_matches_cpu(method):
    torch.manual_seed(0)
    cpu = nn.Sequential(NMSparseConv(8, 8, 3, padding=1, method=method), nn.Flatten(),
                        NMSparseLinear(8 * 16, 4, method=method))
    for _, layer in sparse_layers(cpu):
        if method == 'lbc':
            _train_scores(layer)
            layer.sparsity.remove_candidates(2)
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(2, 8, 4, 4)
    cpu(x).square().sum().backward()
    gpu(x.cuda()).square().sum().backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-4, atol=1e-5,
                                   msg=name)
    for (_, a), (_, b) in zip(sparse_layers(cpu), sparse_layers(gpu)):
        assert torch.equal(a.get_mask(), b.get_mask().cpu())
        if method == 'lbc':
            a.sparsity.remove_candidates(1)
            b.sparsity.remove_candidates(1)
            assert torch.equal(a.alive, b.alive.cpu())
    with torch.autocast('cuda', torch.float16):
        out = gpu(x.cuda())
    assert out.dtype == torch.float16
