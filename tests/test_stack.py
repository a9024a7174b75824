"""The OpenMMLab stack is real: compiled mmcv ops, mmdet and mmpretrain models."""
import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import DefaultScope, init_default_scope


def test_mmcv_ops_nms_and_roi_align_run_on_cpu():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    # Box 1 overlaps box 0 (IoU 0.68) and is suppressed; box 2 is far away.
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)

    feat = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])  # (batch index, x1, y1, x2, y2)
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=False)(
        feat, rois)
    assert out.shape == (1, 1, 2, 2)
    # The four quadrant averages of a linear ramp keep its ordering.
    q = out.flatten().tolist()
    assert q[0] < q[1] < q[2] < q[3]


def _build(cfg_path: str, scope: str):
    from mmengine.registry import MODELS
    cfg = get_config(cfg_path)  # resolves `pkg::path` to the installed package
    init_default_scope(scope)
    return MODELS.build(cfg.model)


@pytest.fixture(autouse=True)
def _fresh_scope():
    yield
    DefaultScope._instance_dict.clear()


def test_mmdet_mask_rcnn_builds_and_predicts():
    model = _build('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'mmdet')
    model.eval()
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(
        img_shape=(96, 128), ori_shape=(96, 128), scale_factor=(1.0, 1.0),
        pad_shape=(96, 128), batch_input_shape=(96, 128)))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)],
             data_samples=[sample]), False)
    with torch.no_grad():
        results = model(**data, mode='predict')
    assert len(results) == 1
    pred = results[0].pred_instances
    assert pred.bboxes.shape[-1] == 4
    assert pred.masks.shape[-2:] == (96, 128)


@pytest.mark.parametrize('cfg_path', [
    'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    'mmpretrain::deit/deit-small_4xb256_in1k.py',
])
def test_mmpretrain_classifiers_build_and_forward(cfg_path):
    model = _build(cfg_path, 'mmpretrain')
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224), mode='tensor')
    assert logits.shape == (1, 1000)
