# Mask R-CNN R50-FPN 1x COCO, SR-STE 2:4 backbone (lambda_w 2e-4; 0 or method='ste'
# is plain STE), the baseline of the LBC 2:4 config (./README.md).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        conv_cfg=dict(
            type='NMSparseConv', n=2, m=4, method='srste', srste_lambda=2e-4)))

# FiniteCheckHook: stop on a non-finite loss or weights; checkpoints written atomically.
custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(type='FiniteCheckHook', interval=50)]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
