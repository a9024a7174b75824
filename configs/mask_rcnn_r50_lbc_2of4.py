# The headline config: Mask R-CNN R50-FPN 1x COCO with a 2:4 LBC ResNet-50 backbone.
#
#   python tools/train.py configs/mask_rcnn_r50_lbc_2of4.py
#
# It is ./mmdet/mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py under a short name; that file's
# header lists the hyper-parameters (pattern n=2 m=4, removal window epochs 0-6 of the
# 12-epoch schedule with p=3, frozen_layers='learn' for the frozen stem/stage 1, SGD lr
# 0.02 for 16 images). Paper target: COCO bbox/segm mAP above the SR-STE baseline
# (./mmdet/mask-rcnn_r50-srste-2of4_fpn_1x_coco.py); the paper gives no COCO
# numbers, so none are claimed.
_base_ = './mmdet/mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py'
