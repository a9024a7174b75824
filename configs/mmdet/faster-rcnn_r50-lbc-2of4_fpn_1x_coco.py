# Faster R-CNN R50-FPN 1x COCO, ResNet-50 backbone trained 2:4 sparse with LBC.
#
# Paper target (docs/method.md, "Results"): COCO Faster R-CNN with a 2:4 backbone "above
# SR-STE" (no COCO numbers are given, none are claimed).
#
# Hyper-parameters a user changes:
#   model.backbone.conv_cfg  dict(type='NMSparseConv', n=2, m=4, method='lbc'):
#                            every backbone conv; the 7x7 stem (Cin=3) stays dense with
#                            a log line; neck and heads stay dense (docs/method.md §8).
#   LBCHook t_i / t_f        removal window epochs 0 -> 6 of the 12-epoch schedule
#                            (half of training), p=3; epochs 6-12 (lr steps at 8 and
#                            11) train the weights under the fixed 2:4 masks.
#                            card_update='iter': card is lowered after every
#                            iteration (lbc_mm's default; 'epoch' recomputes it once
#                            per epoch like the authors' ImageNet code, which in a
#                            6-epoch window removes candidates in 6 big steps).
#   LBCHook frozen_layers    'learn': the stem and stage 1 are frozen by mmdet
#                            (frozen_stages=1); LBCHook keeps their scores learning so
#                            they end 2:4 with a learned choice ('asp': magnitude mask).
#   optim_wrapper            mmdet 1x: SGD lr 0.02 (16 images), momentum 0.9, weight
#                            decay 1e-4; scores: the weights' lr, momentum and weight
#                            decay (LBCOptimWrapperConstructor, scores_decay_mult=1.0,
#                            as the authors' ImageNet code): decay makes a score a
#                            recent, not a lifetime, sum of its gradient.
#   model.backbone.init_cfg  mmdet default: dense torchvision ImageNet ResNet-50.
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
# FiniteCheckHook: stop on a non-finite loss (every iteration) or non-finite weights
# (every 50 iterations); AtomicCheckpointHook: checkpoints written atomically.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
