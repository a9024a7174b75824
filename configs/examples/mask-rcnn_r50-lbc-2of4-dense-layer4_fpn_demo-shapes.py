# Keep chosen layers dense in a detector: NMSparsify wraps the dense model and
# `exclude` names what stays dense (here the stem and all of layer4). On COCO, inherit
# mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py instead and drop the conv_cfg line.
# card_update='iter' and the rest as the demo (../demo/README.md, ./README.md).
_base_ = '../demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py'

model = dict(
    _delete_=True,  # the base's model becomes NMSparsify's inner model
    type='NMSparsify',
    # the demo's model with its backbone dense again (conv_cfg=None: plain convs)
    model=dict(_base_.model, backbone=dict(_base_.model.backbone, conv_cfg=None)),
    n=2,
    m=4,
    method='lbc',
    include=['backbone.*'],
    exclude=['backbone.conv1', 'backbone.layer4.*'])
