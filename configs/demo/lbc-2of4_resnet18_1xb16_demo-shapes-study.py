# Method-study recipe: the demo classification recipe
# (./lbc-2of4_resnet50_1xb8_demo-shapes.py) made cheap enough to train 39 times on a
# 2-core CPU (tools/compare_methods.py: dense, LBC, SR-STE, STE, ASP x 2:4, 1:4, 2:8 x
# 3 seeds). Differences from that recipe:
#   model        ResNet-18 at a quarter width (stem and base channels 16: 16-128 ch.,
#                0.7 M parameters, 128-d head) instead of ResNet-50
#   data         data/demo_study/cls: the same generator with 100 train / 40 val images
#                per class at 32 px (tools/make_demo_data.py data/demo_study
#                --cls-train-per-class 100 --cls-val-per-class 40 --cls-image-size 32)
#   schedule     6 epochs, batch 16 (19 iterations per epoch), lr 0.1 x 16/256
#   LBCHook      unchanged: t_i=0 -> t_f=0.5 of training (a 57-iteration removal
#                window), p=3, card lowered after every iteration
# Everything else (SGD momentum 0.9, weight decay 1e-4 with the scores decayed like
# the weights, no BatchNorm decay, label smoothing, grad clipping) is inherited.
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
