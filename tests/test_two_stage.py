"""The two-stage path: an N:M ImageNet (mmpretrain) backbone becomes a detector's
(mmdet) backbone through the config mechanism, with its masks fixed.

Stage 1 trains a tiny mmpretrain ResNet-18 (16 base channels, 32 px images) with the
method under test; stage 2 takes the repo's two-stage config
(``configs/mmdet/faster-rcnn_r50-lbc-2of4-in1k-pre_fpn_1x_coco.py``), shrinks the
model to the same tiny ResNet, points ``init_cfg`` (Pretrained, ``prefix='backbone.'``)
at the stage-1 checkpoint and trains a few iterations on the embedded shapes data.
Every mask must come out as it went in.
"""
import importlib.util
import os
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.runner import Runner

from lbc_mm.layers import sparse_layers
from lbc_mm.sparse_model import nm_report
from lbc_mm.sparsity import magnitude_mask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from checkpoint_poison import poison  # noqa: E402

TWO_STAGE = os.path.join(REPO, 'configs', 'mmdet',
                         'faster-rcnn_r50-lbc-2of4-in1k-pre_fpn_1x_coco.py')
CLASSES = ('circle', 'rectangle', 'triangle')
TINY = dict(depth=18, stem_channels=16, base_channels=16)  # stage widths 16..128
MASK_KEYS = ('.alive', '.scores', '.asp_mask')


@pytest.fixture(autouse=True)
def _clean_globals():
    yield
    import logging

    from mmengine.logging import MessageHub, MMLogger
    from mmengine.visualization import Visualizer
    logging.shutdown()
    MMLogger._instance_dict.clear()
    Visualizer._instance_dict.clear()
    DefaultScope._instance_dict.clear()
    MessageHub._instance_dict.clear()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', os.path.join(REPO, 'tools', 'make_demo_data.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate(str(tmp_path_factory.mktemp('data')), image_size=64,
                        num_train=4, num_val=1, cls_image_size=32,
                        cls_train_per_class=2, cls_val_per_class=1)


@pytest.fixture(scope='module')
def stage1(tmp_path_factory, data):
    """``stage1(method)``: the stage-1 checkpoint of ``method``, trained once."""
    done = {}

    def get(method):
        if method not in done:
            work_dir = str(tmp_path_factory.mktemp(f'cls_{method}'))
            done[method] = _train_classifier(work_dir, f'{data}/cls', method)
        return done[method]

    return get


def _train_classifier(work_dir, data_root, method):
    """Stage 1: mmpretrain ResNet-18 (tiny) on 6 images, one epoch of 3 iterations;
    LBC removes candidates over the first half. Returns the checkpoint path."""
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=32),
                dict(type='PackInputs')]
    cfg = dict(
        default_scope='mmpretrain',
        work_dir=work_dir,
        experiment_name=f'two_stage_{uuid.uuid4().hex}',
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(num_classes=3, mean=[128.0] * 3, std=[64.0] * 3),
            backbone=dict(type='ResNet', out_indices=(3, ),
                          conv_cfg=dict(type='NMSparseConv', n=2, m=4,
                                        method=method), **TINY),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=128,
                      loss=dict(type='CrossEntropyLoss'))),
        train_dataloader=dict(
            batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='CustomDataset', data_root=data_root,
                         data_prefix='train', pipeline=pipeline)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
            constructor='LBCOptimWrapperConstructor'),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=([dict(type='LBCHook', t_i=0, t_f=0.5, plot=False)]
                      if method == 'lbc' else []),
        randomness=dict(seed=0),
        log_level='WARNING')
    Runner.from_cfg(Config(cfg)).train()
    return os.path.join(work_dir, 'epoch_1.pth')


def _detector_cfg(work_dir, data_root, checkpoint, method):
    """Stage 2: the repo's two-stage config, model shrunk to the tiny ResNet."""
    cfg = Config.fromfile(TWO_STAGE)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(64, 64), keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    cfg.merge_from_dict(dict(
        work_dir=work_dir,
        experiment_name=f'two_stage_det_{uuid.uuid4().hex}',
        log_level='WARNING',
        model=dict(
            backbone=dict(conv_cfg=dict(method=method),
                          init_cfg=dict(checkpoint=checkpoint), **TINY),
            neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
            rpn_head=dict(in_channels=32, feat_channels=32),
            roi_head=dict(
                bbox_roi_extractor=dict(out_channels=32),
                bbox_head=dict(in_channels=32, fc_out_channels=64,
                               num_classes=len(CLASSES))),
            train_cfg=dict(rcnn=dict(sampler=dict(num=32)))),
        train_dataloader=dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root, metainfo=dict(classes=CLASSES),
                         ann_file='annotations/instances_train.json',
                         data_prefix=dict(img='train/'), pipeline=train_pipeline)),
        train_cfg=dict(max_epochs=1, val_interval=10),
        optim_wrapper=dict(optimizer=dict(lr=0.005)),
        default_hooks=dict(logger=dict(interval=1)),
    ))
    # A constant lr (mmdet's 500-iteration warm-up would barely move the weights).
    for key in ('param_scheduler', 'val_dataloader', 'val_cfg', 'val_evaluator',
                'test_dataloader', 'test_cfg', 'test_evaluator'):
        cfg[key] = None
    if method != 'lbc':
        cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'LBCHook']
    else:
        cfg.custom_hooks = [dict(h, plot=False) if h['type'] == 'LBCHook' else h
                            for h in cfg.custom_hooks]
    return cfg


def _masks(state, prefix=''):
    return {k[len(prefix):]: v.clone() for k, v in state.items()
            if k.startswith(prefix) and k.endswith(MASK_KEYS)}


@pytest.mark.parametrize('method1, method2', [('lbc', 'lbc'), ('asp', 'asp'),
                                              ('srste', 'asp')])
def test_imagenet_backbone_masks_stay_fixed_in_detector(tmp_path, data, stage1,
                                                        method1, method2):
    """LBC -> LBC: alive and scores load and stay (scores frozen, no candidate
    reopened). ASP -> ASP: the asp_mask buffer loads and stays. SR-STE -> ASP: SR-STE
    keeps no mask, its last mask is the magnitude mask of its weights; an ASP layer
    takes exactly that at load and keeps it."""
    ckpt = stage1(method1)
    state = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    before = _masks(state, 'backbone.')
    if method1 == 'lbc':
        alive = {k: v for k, v in before.items() if k.endswith('.alive')}
        assert len(alive) == 19  # ResNet-18: 20 convs, the 3-channel stem dense
        for key, value in alive.items():
            assert (value.sum(dim=1) == 1).all(), key  # stage 1 ended N:M
    elif method1 == 'asp':
        assert len(before) == 19
    else:
        assert not before  # SR-STE stores no mask

    cfg = _detector_cfg(str(tmp_path / 'det'), f'{data}/coco/', ckpt, method2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    backbone = runner.model.backbone
    after = _masks(backbone.state_dict())
    if method1 == 'srste':
        assert len(after) == 19
        for name, layer in sparse_layers(backbone):
            want = magnitude_mask(state[f'backbone.{name}.weight'], 2, 4)
            assert torch.equal(after[f'{name}.asp_mask'], want), name
    else:
        assert after.keys() == before.keys()
        for key, value in before.items():
            assert torch.equal(after[key], value), key
    assert [r for r in nm_report(runner.model) if r['bad_groups']] == []
    # The detector trained (4 images, batch 2): an unfrozen backbone conv moved, and
    # the masks held.
    assert runner.iter == 2
    moved = backbone.layer4[0].conv1.weight.detach()
    assert not torch.equal(moved, state['backbone.layer4.0.conv1.weight'])
    if method2 == 'lbc':
        assert not any(layer.scores.requires_grad
                       for _, layer in sparse_layers(backbone))


@pytest.mark.parametrize('method1, method2, match', [
    ('lbc', 'srste', 'holds an LBC layer'),
    ('lbc', 'asp', 'holds an LBC layer'),
    ('asp', 'lbc', 'holds an ASP layer'),
    ('asp', 'srste', 'holds an ASP layer'),
])
def test_mask_a_method_would_drop_is_refused(tmp_path, data, stage1, method1, method2,
                                             match):
    """An ImageNet mask the detector's method cannot keep stops loading, naming the
    layer and saying what to use, instead of a warning and a different mask."""
    from mmengine.registry import MODELS
    cfg = _detector_cfg(str(tmp_path / 'det'), f'{data}/coco/', stage1(method1),
                        method2)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match=match) as err:
        model.init_weights()
    assert f"method='{method1}'" in str(err.value)
    assert 'layer1.0.conv1' in str(err.value)


def test_other_pattern_is_refused(tmp_path, data, stage1):
    from mmengine.registry import MODELS
    cfg = _detector_cfg(str(tmp_path / 'det'), f'{data}/coco/', stage1('lbc'), 'lbc')
    cfg.model.backbone.conv_cfg.m = 8
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    with pytest.raises(ValueError, match='another N:M pattern'):
        model.init_weights()


def test_resnet50_keys_line_up_between_mmpretrain_and_mmdet():
    """The two-stage config loads an mmpretrain ResNet-50 checkpoint into mmdet's
    ResNet-50 with prefix='backbone.' only: every key and shape must match."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS as CLS_MODELS
    conv_cfg = dict(type='NMSparseConv', n=2, m=4, method='lbc')
    cls_backbone = CLS_MODELS.build(dict(type='ResNet', depth=50, conv_cfg=conv_cfg))
    det_backbone = DET_MODELS.build(dict(type='ResNet', depth=50, conv_cfg=conv_cfg))
    cls_state, det_state = cls_backbone.state_dict(), det_backbone.state_dict()
    assert cls_state.keys() == det_state.keys()
    for key, value in cls_state.items():
        assert value.shape == det_state[key].shape, key
    assert sum(k.endswith('.alive') for k in det_state) == 52


# -- the backbone's init_cfg checkpoint cannot be used: one line from tools/train.py --
def _load_train_tool():
    spec = importlib.util.spec_from_file_location(
        'lbc_tools_train', os.path.join(REPO, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bad_backbone(ckpt, case, folder, marker):
    """``case``'s stage-1 checkpoint made unusable; returns its path."""
    path = str(folder / f'{case}.pth')
    if case == 'missing':
        return path
    if case == 'truncated':
        data = open(ckpt, 'rb').read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
        return path
    state = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    if case == 'malicious':
        return poison(path, marker, state)
    if case == 'dense':  # a dense ImageNet backbone: no LBC mask state
        state = {k: v for k, v in state.items() if not k.endswith(MASK_KEYS)}
    elif case == 'unfinished':  # one layer stopped before t_f: all candidates alive
        key = 'backbone.layer1.0.conv1.alive'
        state[key] = torch.ones_like(state[key])
    torch.save({'state_dict': state, 'meta': {}}, path)
    return path


@pytest.mark.parametrize('case, expected', [
    ('missing', 'checkpoint not found'),
    ('truncated', 'is corrupted (truncated or damaged zip archive'),
    ('malicious', 'GLOBAL posix.mkdir'),
    ('dense', 'LBCHook(require_finished=True): 19 of 19 LBC layers are not at one'),
    ('unfinished', 'LBCHook(require_finished=True): 1 of 19 LBC layers'),
    ('other_pattern', 'another N:M pattern'),
])
def test_unusable_backbone_is_one_line(tmp_path, data, stage1, capsys, monkeypatch,
                                       case, expected):
    """tools/train.py on the two-stage config: exit 1 with one ``error:`` line (was a
    17-40 line traceback) before the first iteration, and no code from the file."""
    train = _load_train_tool()
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args() sets it: keep it here
    marker = tmp_path / 'ran'
    ckpt = (stage1('lbc') if case == 'other_pattern' else
            _bad_backbone(stage1('lbc'), case, tmp_path, marker))
    cfg = _detector_cfg(str(tmp_path / 'det'), f'{data}/coco/', ckpt, 'lbc')
    if case == 'other_pattern':
        cfg.model.backbone.conv_cfg.m = 8
    config = str(tmp_path / 'det.py')
    cfg.dump(config)
    with pytest.raises(SystemExit) as exit_:
        train.main([config])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error')]
    assert len(errors) == 1 and 'Traceback' not in err, err[-3000:]
    assert expected in errors[0], errors[0]
    if case not in ('dense', 'unfinished'):  # the hook's line names no file
        assert ckpt in errors[0] or os.path.basename(ckpt) in errors[0], errors[0]
    assert not os.path.exists(marker)
    assert not list((tmp_path / 'det').rglob('*.pth'))  # nothing trained
