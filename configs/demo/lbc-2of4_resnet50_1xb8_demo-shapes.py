# Demo: ../mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py on generated shapes (64 px,
# data/demo/cls); data, image size, schedule (4 epochs, batch 8, grad clip 5) and
# LBCHook t_f=0.5 of training with card_update='iter' change; zero_init_residual=True
# (mmpretrain's) is kept (./README.md). Used as a base by the downstream test.
_base_ = '../mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py'

data_root = 'data/demo/cls'
num_classes = 3
image_size = 64
batch_size = 8
max_epochs = 4

model = dict(
    backbone=dict(zero_init_residual=True),
    head=dict(num_classes=num_classes, topk=(1, )))
data_preprocessor = dict(num_classes=num_classes)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size)),
    dict(type='PackInputs'),
]
# The datasets replace mmpretrain's ImageNet ones (_delete_): `_scope_` keeps them in
# mmpretrain's registry when this file is inherited as 'lbc_mm::demo/...' (mmengine
# puts such a base file's new objects in the 'lbc_mm' scope).
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        _scope_='mmpretrain',
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        _scope_='mmpretrain',
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=0.1 * batch_size / 256), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 1,
        eta_min=0.0,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(enable=False)

custom_hooks = [
    dict(h, t_i=0, t_f=0.5, unit='fraction', card_update='iter')
    if h['type'] == 'LBCHook' else h
    for h in _base_.custom_hooks
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
