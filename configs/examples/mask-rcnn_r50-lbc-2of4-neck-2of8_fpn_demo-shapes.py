# Mixed patterns: backbone 2:4 and FPN neck 2:8 by nested NMSparsify transforms (each
# swaps the plain convs its `include` matches; the inner one keeps its default
# exclude, the stem). One LBCHook drives every LBC layer, whatever its pattern.
# card_update='iter' and the rest as the demo (../demo/README.md, ./README.md).
_base_ = '../demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py'

model = dict(
    _delete_=True,  # the base's model becomes the inner model
    type='NMSparsify',
    n=2,
    m=8,
    method='lbc',
    include=['neck.*'],
    exclude=[],
    model=dict(
        type='NMSparsify',
        n=2,
        m=4,
        method='lbc',
        include=['backbone.*'],
        # the demo's model with its backbone dense again (conv_cfg=None)
        model=dict(_base_.model,
                   backbone=dict(_base_.model.backbone, conv_cfg=None))))
