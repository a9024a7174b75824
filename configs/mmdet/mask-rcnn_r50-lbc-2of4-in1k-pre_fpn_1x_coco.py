# Mask R-CNN R50-FPN 1x COCO on a 2:4 LBC ResNet-50 trained on ImageNet by lbc_mm
# (the two-stage path): the backbone's masks come from the ImageNet run and stay
# fixed; COCO training only trains weights (compare
# ./mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py, which learns the masks on COCO from a
# dense ImageNet backbone).
#
# Stage 1, the checkpoint this config loads:
#   python tools/train.py configs/mmpretrain/lbc-2of4_resnet50_8xb32_in1k.py
#   -> work_dirs/lbc-2of4_resnet50_8xb32_in1k/epoch_120.pth, an mmpretrain
#   ImageClassifier checkpoint whose state_dict holds backbone.* (weights, BatchNorm,
#   and every sparse conv's `scores` and `alive`) and head.fc.*. No conversion is
#   needed: mmpretrain's and mmdet's ResNet name their modules alike (conv1/bn1,
#   layer1..layer4, convK/bnK, downsample.0/1), so init_cfg Pretrained with
#   prefix='backbone.' loads every backbone key and drops the classifier. Point
#   model.backbone.init_cfg.checkpoint elsewhere for another run; its pattern and
#   method must match conv_cfg (a mismatch stops loading with the layer named).
#
# Hyper-parameters a user changes:
#   model.backbone.conv_cfg  n=2, m=4, method='lbc', the ImageNet run's. Stem (Cin=3)
#                            dense; neck and heads dense.
#   model.backbone.init_cfg  the stage-1 checkpoint (above).
#   LBCHook                  require_finished=True: every LBC layer must load at one
#                            candidate per group (a finished run, t_f reached), else
#                            training stops naming the layers. Its scores freeze at
#                            once, no candidate is ever reopened, and LBCHook checks
#                            the model is exactly 2:4 at the end. The removal
#                            window arguments do not apply (nothing is left to
#                            remove).
#   optim_wrapper            mmdet's 1x schedule: SGD lr 0.02 (16 images), momentum
#                            0.9, weight decay 1e-4; frozen stem and stage 1
#                            (frozen_stages=1) as in mmdet.
# SR-STE / ASP backbones: an ImageNet ASP checkpoint loads into method='asp' layers
# (its asp_mask buffer is the fixed mask); an SR-STE checkpoint has no stored mask (it
# is the N largest |w| of the current weights), so load it into method='asp' layers to
# fix its final mask, or into method='srste' to keep SR-STE training (the mask may
# then change). A checkpoint whose mask a layer's method would drop (LBC scores/alive
# into 'srste'/'ste'/'asp', asp_mask into 'lbc'/'srste'/'ste') stops loading with an
# error naming the layer.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

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
# FiniteCheckHook: stop on a non-finite loss (every iteration) or non-finite weights
# (every 50 iterations); AtomicCheckpointHook: checkpoints written atomically.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
