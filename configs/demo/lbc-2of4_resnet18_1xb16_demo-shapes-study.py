# Method study (tools/compare_methods.py): the demo recipe of its _base_ with a
# quarter-width ResNet-18, 32 px images (data/demo_study/cls), 6 epochs, batch 16,
# lr 0.1 x 16/256; LBCHook unchanged (./README.md).
_base_ = './lbc-2of4_resnet50_1xb8_demo-shapes.py'

data_root = 'data/demo_study/cls'
image_size = 32
batch_size = 16
max_epochs = 6

model = dict(
    backbone=dict(depth=18, stem_channels=16, base_channels=16),
    head=dict(in_channels=128))

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
train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.1 * batch_size / 256))
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
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
