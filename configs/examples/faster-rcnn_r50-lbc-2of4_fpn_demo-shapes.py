# Boxes only on the demo data: the demo's Mask R-CNN without its mask branch is a
# Faster R-CNN (mask_head=None, no masks loaded, bbox metric). What `tools/test.py
# --tta` needs: mmdet's DetTTAModel merges boxes, not masks (./README.md).
# card_update='iter' and the rest as the demo (../demo/README.md).
_base_ = '../demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py'

model = dict(roi_head=dict(mask_roi_extractor=None, mask_head=None))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=_base_.image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=_base_.image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
