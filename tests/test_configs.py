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


def _header_chain(rel):
    """Comment text of a config and of the repo-local configs it inherits from."""
    path = os.path.join(CONFIG_ROOT, rel)
    with open(path) as f:
        text = f.read()
    comments = '\n'.join(line for line in text.splitlines() if line.startswith('#'))
    for base in re.findall(r"^_base_ = '(\.{1,2}/[^']+)'", text, re.M):
        comments += '\n' + _header_chain(
            os.path.relpath(os.path.join(os.path.dirname(path), base), CONFIG_ROOT))
    return comments


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
        # Every LBC config decays the scores like the weights (the authors' code).
        assert cfg.optim_wrapper.constructor == 'LBCOptimWrapperConstructor'
        assert cfg.optim_wrapper.get('paramwise_cfg', {}).get('scores_decay_mult',
                                                              1.0) == 1.0
        if hook.get('require_finished'):
            # Two-stage: masks loaded from a finished LBC checkpoint, no window.
            init = cfg.model.backbone.init_cfg
            assert (init.type, init.prefix) == ('Pretrained', 'backbone.')
            return
        # The header says which card stepping the config uses, and it is explicit.
        assert hook.card_update in ('iter', 'epoch')
        assert f"card_update='{hook.card_update}'" in _header_chain(rel)
        if hook.get('unit') == 'epoch':
            # The removal window ends inside the schedule, so the model ends N:M.
            assert 0 <= hook.t_i < hook.t_f < max_epochs
        else:
            assert hook.get('unit') == 'fraction' and 0 <= hook.t_i < hook.t_f < 1
        if cfg.default_scope == 'mmdet':
            assert hook.frozen_layers in ('learn', 'asp')
    else:
        assert not lbc_hooks, f'{method} needs no LBCHook'


@pytest.mark.parametrize('rel', [c for c in CONFIGS
                                 if not c.startswith('examples' + os.sep)])
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
    # ResNet-50: 49 convs + 4 downsample convs (ResNet-18: 17 + 3); the 7x7 stem
    # stays dense.
    assert len(backbone) == (20 if 'resnet18' in rel else 53)
    assert sparse == backbone - {'backbone.conv1'}
    stem = model.backbone.conv1
    assert isinstance(stem, NMSparseConv) and not stem.is_sparse
    assert stem.in_channels == 3
    if cfg.default_scope == 'mmdet':
        assert any(name.startswith('neck.') for name in dense)
        assert any(name.startswith('roi_head.') for name in dense)
    else:
        assert 'head.fc' in dense


def _lbc_hook(cfg):
    return next(h for h in cfg.custom_hooks if h['type'] == 'LBCHook')


@pytest.mark.parametrize(
    'rel', [c for c in CONFIGS if c.startswith('mmpretrain') and 'resnet50' in c
            and 'from-dense' not in c])
def test_resnet50_configs_follow_the_paper_recipe(rel):
    """docs/method.md §9: 120 epochs, SGD 0.9, lr 0.1 / 256, 5 warm-up epochs + cosine,
    explicit weight decay, label smoothing 0.1, t_i=0, t_f=60."""
    cfg = _load(rel)
    assert cfg.train_cfg.max_epochs == 120
    assert cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.auto_scale_lr.base_batch_size == 256
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == ('SGD', 0.1, 0.9, 1e-4)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 5)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == (
        'CosineAnnealingLR', 5, 120, 0.0)
    assert cfg.model.head.loss.type == 'LabelSmoothLoss'
    assert cfg.model.head.loss.label_smooth_val == 0.1
    # The authors' code: no weight decay on BatchNorm (every method, one recipe).
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    header = _header_chain(rel)
    assert 'none on BatchNorm' in header or 'no weight decay on BatchNorm' in header
    if rel.startswith(os.path.join('mmpretrain', 'lbc-')):
        hook = _lbc_hook(cfg)
        assert (hook.t_i, hook.t_f, hook.unit, hook.power) == (0, 60, 'epoch', 3)
        assert hook.card_update == 'epoch'  # the authors' stepping
        assert cfg.optim_wrapper.constructor == 'LBCOptimWrapperConstructor'
        assert cfg.optim_wrapper.paramwise_cfg.scores_decay_mult == 1.0
        assert 'scores_decay_mult=1.0' in header


def test_deit_config_keeps_the_deit_recipe():
    cfg = _load(os.path.join('mmpretrain', 'lbc-2of4_deit-small_4xb256_in1k.py'))
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.model.model.backbone.arch == 'deit-small'
    hook = _lbc_hook(cfg)
    # The authors' DeiT settings: t_f 200 of 300 epochs, p=4, card per epoch, EMA.
    assert (hook.t_i, hook.t_f, hook.unit, hook.power, hook.card_update) == (
        0, 200, 'epoch', 4, 'epoch')
    assert cfg.optim_wrapper.constructor == 'LBCOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.scores_decay_mult == 1.0
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    names = [h['type'] for h in cfg.custom_hooks]
    ema = next(h for h in cfg.custom_hooks if h['type'] == 'EMAHook')
    assert ema.momentum == pytest.approx(4e-5)
    assert names.index('LBCHook') < names.index('EMAHook')  # LBCHook acts first
    header = _header_chain(os.path.join('mmpretrain',
                                        'lbc-2of4_deit-small_4xb256_in1k.py'))
    for fact in ('t_f=200', 'p=4', "card_update='epoch'", 'EMAHook',
                 'scores_decay_mult=1.0'):
        assert fact in header, fact
    assert '80.1' not in header  # unverified, not claimed
    # The rest of the authors' DeiT recipe (mixed precision: --amp, CUDA only).
    assert cfg.model.model.backbone.drop_path_rate == 0.1
    assert cfg.optim_wrapper.clip_grad is None
    assert cfg.param_scheduler[0].end == 5 and cfg.param_scheduler[1].begin == 5
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    assert '--amp' in header


def _residual_bn_weights(rel):
    """The last BatchNorm weight of every residual block of the built, initialised
    ResNet (pretrained init dropped: no downloads)."""
    cfg = _load(rel)
    init_default_scope(cfg.default_scope)
    _drop_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return [block.norm3.weight if hasattr(block, 'norm3') else block.norm2.weight
            for name in model.backbone.res_layers
            for block in getattr(model.backbone, name)]


@pytest.mark.parametrize('rel', [
    os.path.join('mmpretrain', 'lbc-2of4_resnet50_8xb32_in1k.py'),
    os.path.join('mmpretrain', 'srste-2of4_resnet50_8xb32_in1k.py'),
])
def test_imagenet_resnet_residual_bn_not_zero_init(rel):
    """The authors' ResNet starts every BatchNorm at weight 1 (no zero_init_residual),
    so the last conv of each block gets gradient (and LBC score gradient) at once."""
    weights = _residual_bn_weights(rel)
    assert len(weights) == 16
    assert all(bool((w == 1).all()) for w in weights)


@pytest.mark.parametrize('rel', [
    os.path.join('demo', 'lbc-2of4_resnet50_1xb8_demo-shapes.py'),
    os.path.join('demo', 'lbc-2of4_resnet18_1xb16_demo-shapes-study.py'),
])
def test_demo_resnet_keeps_zero_init_residual(rel):
    """The demo and study keep mmpretrain's zero_init_residual (their measured numbers
    use it; configs/demo/README.md)."""
    weights = _residual_bn_weights(rel)
    assert len(weights) == (8 if 'resnet18' in rel else 16)
    assert all(bool((w == 0).all()) for w in weights)


@pytest.mark.parametrize(
    'rel', [c for c in CONFIGS if (c.startswith('mmdet') or c.startswith('mask_rcnn'))
            and 'from-dense' not in c])
def test_mmdet_removal_window_inside_the_1x_schedule(rel):
    cfg = _load(rel)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.model.backbone.frozen_stages == 1
    if 'lbc' in rel:
        hook = _lbc_hook(cfg)
        assert cfg.optim_wrapper.constructor == 'LBCOptimWrapperConstructor'
        if 'in1k-pre' in rel:  # two-stage: masks from an lbc_mm ImageNet run
            assert hook.require_finished is True
            init = cfg.model.backbone.init_cfg
            assert (init.type, init.prefix) == ('Pretrained', 'backbone.')
            assert init.checkpoint.endswith(
                'lbc-2of4_resnet50_8xb32_in1k/epoch_120.pth')
            assert cfg.model.backbone.conv_cfg.method == 'lbc'
            return
        assert (hook.t_i, hook.t_f, hook.unit, hook.frozen_layers) == (0, 6, 'epoch',
                                                                       'learn')
        assert hook.card_update == 'iter'


@pytest.mark.parametrize('rel, epochs, t_f, lr', [
    (os.path.join('mmdet', 'mask-rcnn_r50-lbc-2of4-from-dense_fpn_1x_coco.py'), 6, 3,
     0.01),
    (os.path.join('mmpretrain', 'lbc-2of4_resnet50-from-dense_8xb32_in1k.py'), 30, 15,
     0.01),
])
def test_from_dense_configs_fine_tune_a_model_zoo_checkpoint(rel, epochs, t_f, lr):
    """A short fine-tune of a dense model-zoo model: load_from its weights, removal
    over the first half, the lr lower than from scratch; every choice in the header."""
    cfg = _load(rel)
    assert cfg.load_from.startswith('https://download.openmmlab.com/')
    assert cfg.train_cfg.max_epochs == epochs
    hook = _lbc_hook(cfg)
    assert (hook.t_i, hook.t_f, hook.unit) == (0, t_f, 'epoch')
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.optim_wrapper.constructor == 'LBCOptimWrapperConstructor'
    assert any(h['type'] == 'FiniteCheckHook' for h in cfg.custom_hooks)
    header = _header_chain(rel)
    for choice in ('load_from', f'max_epochs={epochs}', f't_f={t_f}', 'lr 0.01'):
        assert choice in header, choice


def _patterns_by_part(rel):
    cfg = _load(rel)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    return {name: (mod.n, mod.m) for name, mod, sparse in _layers(model) if sparse}


def test_example_exclude_keeps_the_stem_and_layer4_dense():
    """configs/examples/README.md: NMSparsify + exclude around a dense Mask R-CNN."""
    sparse = _patterns_by_part(
        'examples/mask-rcnn_r50-lbc-2of4-dense-layer4_fpn_demo-shapes.py')
    assert len(sparse) == 52 - 10 and set(sparse.values()) == {(2, 4)}
    assert all(k.startswith(('backbone.layer1', 'backbone.layer2', 'backbone.layer3'))
               for k in sparse)


def test_example_nested_nmsparsify_mixes_2of4_backbone_and_2of8_neck():
    sparse = _patterns_by_part(
        'examples/mask-rcnn_r50-lbc-2of4-neck-2of8_fpn_demo-shapes.py')
    assert {p for k, p in sparse.items() if k.startswith('backbone.')} == {(2, 4)}
    assert {p for k, p in sparse.items() if k.startswith('neck.')} == {(2, 8)}
    assert len(sparse) == 52 + 8  # FPN: 4 lateral + 4 output convs
    assert not [k for k in sparse if k.startswith(('rpn_head', 'roi_head'))]
