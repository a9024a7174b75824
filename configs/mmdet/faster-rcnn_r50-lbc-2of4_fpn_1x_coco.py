# Faster R-CNN R50-FPN 1x COCO, LBC 2:4 backbone (stem, neck, heads dense): LBCHook
# t_f=6 of 12 epochs, card_update='iter', frozen_layers='learn' (./README.md).
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(conv_cfg=dict(type='NMSparseConv', n=2, m=4, method='lbc')))

# LBC scores: own param groups, the weights' lr and weight decay (lbc_mm/optim.py).
optim_wrapper = dict(
    constructor='LBCOptimWrapperConstructor',
    paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=1.0))

custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(type='LBCHook', t_i=0, t_f=6, unit='epoch', power=3, frozen_layers='learn',
         card_update='iter'),
    dict(type='FiniteCheckHook', interval=50),
]
# FiniteCheckHook: stop on a non-finite loss or weights; checkpoints written atomically.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
