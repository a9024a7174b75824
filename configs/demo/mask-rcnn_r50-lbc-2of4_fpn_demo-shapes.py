# Demo: ../mask_rcnn_r50_lbc_2of4.py trained from scratch on generated shapes (128 px,
# data/demo/coco, 3 classes, init_cfg=None), 16 epochs, batch 4, lr 0.005, RoI sampler
# 64, LBCHook t_f=0.5 of training, seed 0; `make demo` runs it (./README.md).
_base_ = '../mask_rcnn_r50_lbc_2of4.py'

data_root = 'data/demo/coco/'
classes = ('circle', 'rectangle', 'triangle')
metainfo = dict(
    classes=classes, palette=[(215, 50, 50), (40, 160, 60), (50, 70, 210)])
image_size = (128, 128)
batch_size = 4
max_epochs = 16
lr = 0.02 * batch_size / 16
# Seeded: unseeded runs of this demo spread over bbox mAP 0.65-0.77 on one machine.
randomness = dict(seed=0)

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(
        bbox_head=dict(num_classes=len(classes)),
        mask_head=dict(num_classes=len(classes))),
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=lr), clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[int(max_epochs * 0.75), int(max_epochs * 0.9)],
        gamma=0.1),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(enable=False)

custom_hooks = [
    dict(h, t_i=0, t_f=0.5, unit='fraction') if h['type'] == 'LBCHook' else h
    for h in _base_.custom_hooks
]
default_hooks = dict(
    logger=dict(interval=4),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
