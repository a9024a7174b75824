# Mask R-CNN R50-FPN 1x COCO, ResNet-50 backbone trained 2:4 sparse with LBC.
#
# Paper target (docs/method.md, "Results"): COCO Mask R-CNN with a 2:4 backbone "above
# SR-STE" (compare with ./mask-rcnn_r50-srste-2of4_fpn_1x_coco.py; the paper's text
# gives no COCO numbers here, so none are claimed).
#
# Hyper-parameters a user changes:
#   model.backbone.conv_cfg  dict(type='NMSparseConv', n=2, m=4, method='lbc'):
#                            the N:M pattern of every backbone conv. The 7x7 stem
#                            (Cin=3, not a multiple of m) stays dense (one log line).
#                            Neck (FPN) and heads stay dense (docs/method.md §8); give
#                            them conv_cfg=dict(type='NMSparseConv', ...) to sparsify.
#   LBCHook t_i / t_f        removal window: candidates are removed from epoch 0
#                            (t_i) to epoch 6 (t_f) of the 12-epoch schedule (half of
#                            training, the paper's default), power p=3; epochs 6-12
#                            (including the lr steps at 8 and 11) train the weights
#                            under the final, fixed 2:4 masks. card_update='iter':
#                            card is lowered after every iteration (lbc_mm's
#                            default; 'epoch' recomputes it once per epoch like the
#                            authors' ImageNet code, which in a 6-epoch window
#                            removes candidates in 6 big steps).
#   LBCHook frozen_layers    'learn': mmdet freezes the stem and stage 1
#                            (frozen_stages=1), which also turns off the scores'
#                            gradients there; LBCHook keeps the scores of those frozen
#                            layers learning so they end 2:4 with a learned choice
#                            (their weights stay frozen). 'asp' gives them the
#                            magnitude mask instead.
#   optim_wrapper            mmdet's 1x schedule: SGD lr 0.02 (16 images), momentum
#                            0.9, weight decay 1e-4; the LBC scores get their own
#                            param groups (LBCOptimWrapperConstructor:
#                            scores_lr_mult=1.0, scores_decay_mult=1.0: the weights'
#                            lr, momentum and weight decay, as the authors' ImageNet
#                            code; decay makes a score a recent, not a lifetime, sum
#                            of its gradient).
#   model.backbone.init_cfg  mmdet default: dense torchvision ImageNet ResNet-50
#                            (the scores start uniform, so training starts dense).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

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
