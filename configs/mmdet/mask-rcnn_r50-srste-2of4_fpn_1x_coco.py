# Mask R-CNN R50-FPN 1x COCO, ResNet-50 backbone 2:4 sparse with SR-STE (baseline).
#
# The baseline LBC is compared with (Zhou et al., ICLR 2021; docs/method.md
# "Baselines"): every forward keeps the 2 largest |w| of each group of 4;
# backward dW = dW_eff + lambda_w * (1 - mask) * W. Compare its bbox/segm mAP with
# ./mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py (the paper reports LBC above SR-STE on COCO,
# with no numbers given here, so none are claimed).
#
# Hyper-parameters a user changes:
#   model.backbone.conv_cfg  n=2, m=4, method='srste', srste_lambda=2e-4 (the SR-STE
#                            paper's lambda_w; 0 or method='ste' gives plain STE). The
#                            7x7 stem (Cin=3) stays dense; neck and heads stay dense.
#                            The mask is sparse from the first iteration (no removal
#                            window, no LBCHook); frozen stem/stage 1 (frozen_stages=1)
#                            simply keep the magnitude mask of their frozen weights.
#   optim_wrapper            mmdet 1x: SGD lr 0.02 (16 images), momentum 0.9, weight
#                            decay 1e-4, 12 epochs, lr steps at 8 and 11.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        conv_cfg=dict(
            type='NMSparseConv', n=2, m=4, method='srste', srste_lambda=2e-4)))

# Stop on a non-finite loss or weights (loss every iteration, weights every 50) and
# write checkpoints atomically (lbc_mm/hooks: FiniteCheckHook, AtomicCheckpointHook).
custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(type='FiniteCheckHook', interval=50)]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
