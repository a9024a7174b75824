# Faster R-CNN R50-FPN 1x COCO on the backbone of an lbc_mm ImageNet LBC 2:4 run
# (init_cfg, prefix 'backbone.'): masks loaded and fixed, LBCHook
# require_finished=True, only weights train (./README.md, "Two-stage").
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

imagenet_checkpoint = 'work_dirs/lbc-2of4_resnet50_8xb32_in1k/epoch_120.pth'

model = dict(
    backbone=dict(
        conv_cfg=dict(type='NMSparseConv', n=2, m=4, method='lbc'),
        init_cfg=dict(
            type='Pretrained', prefix='backbone.',
            checkpoint=imagenet_checkpoint)))

optim_wrapper = dict(constructor='LBCOptimWrapperConstructor')

custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(type='LBCHook', require_finished=True, frozen_layers='learn'),
    dict(type='FiniteCheckHook', interval=50),
]
# FiniteCheckHook: stop on a non-finite loss or weights; checkpoints written atomically.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
