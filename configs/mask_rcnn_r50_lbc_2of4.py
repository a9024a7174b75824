# The headline config: ./mmdet/mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py under a short name
# (Mask R-CNN R50-FPN 1x COCO, LBC 2:4 backbone; configs/mmdet/README.md).
_base_ = './mmdet/mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py'
