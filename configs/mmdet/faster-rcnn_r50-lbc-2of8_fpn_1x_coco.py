# Faster R-CNN R50-FPN 1x COCO, ResNet-50 backbone trained 2:8 sparse with LBC.
#
# Paper target (docs/method.md, "Results"): COCO Faster R-CNN with a 2:8 backbone "above
# SR-STE" (no COCO numbers are given, none are claimed).
#
# Everything as in ./faster-rcnn_r50-lbc-2of4_fpn_1x_coco.py (removal window epochs
# 0-6 of 12, p=3, frozen_layers='learn', dense stem, neck and heads); only the pattern
# differs:
#   model.backbone.conv_cfg  n=2, m=8: C(8,2)=28 candidates per group of 8 weights.
_base_ = './faster-rcnn_r50-lbc-2of4_fpn_1x_coco.py'

model = dict(backbone=dict(conv_cfg=dict(n=2, m=8)))
