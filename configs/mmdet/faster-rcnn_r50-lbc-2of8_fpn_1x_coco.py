# Faster R-CNN R50-FPN 1x COCO, LBC 2:8 backbone; the rest as its _base_ (./README.md).
_base_ = './faster-rcnn_r50-lbc-2of4_fpn_1x_coco.py'

model = dict(backbone=dict(conv_cfg=dict(n=2, m=8)))
