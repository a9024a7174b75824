"""A loaded N:M model (:mod:`lbc_mm.deploy.models`) -> ONNX, TorchScript exporter.

Classifiers whole (``input`` -> ``logits``), detectors as backbone + neck (``input``
-> ``feat0..featK``; the heads are left to mmdeploy, docs/deploy.md). As with
mmdeploy the data preprocessor is not in the graph: feed normalised tensors.
"""
import copy
import glob
import io
import os
import warnings
from typing import List, Sequence, Tuple

import torch
from torch import nn

#: ONNX opset unless ``--opset`` says otherwise (TensorRT 8.6+, onnxruntime 1.14+).
DEFAULT_OPSET = 17
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


def default_shape(cfg, scope: str) -> Tuple[int, int]:
    """``(H, W)`` of the config's test pipeline (crop, else resize), detectors
    rounded up to a multiple of 32; 224x224 / 800x1344 when nothing says."""
    pipeline = cfg.get('test_pipeline') or \
        cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    shape = None
    for step in pipeline or []:
        size = step.get('crop_size') if step.get('type') == 'CenterCrop' else None
        if size is None and step.get('type') == 'Resize':
            size = step.get('scale')
        if size is not None:
            shape = (size, size) if isinstance(size, int) else (size[1], size[0])
            if step.get('type') == 'CenterCrop':
                break
    if shape is None:
        shape = (800, 1344) if scope == 'mmdet' else (224, 224)
    if scope == 'mmdet':
        shape = tuple(-(-int(s) // 32) * 32 for s in shape)
    return int(shape[0]), int(shape[1])


def find_images(paths: Sequence[str]) -> List[str]:
    """Image files named by ``paths`` (files, or folders searched recursively)."""
    found = []
    for p in paths:
        if os.path.isdir(p):
            found += sorted(f for f in glob.glob(os.path.join(p, '**', '*'),
                                                 recursive=True)
                            if f.lower().endswith(IMAGE_EXTS))
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise FileNotFoundError(f'image not found: {p}')
    if paths and not found:
        raise FileNotFoundError(f'no images ({"/".join(IMAGE_EXTS)}) in {list(paths)}')
    return found


def example_input(model: nn.Module, shape: Tuple[int, int], batch: int,
                  images: Sequence[str] = ()) -> Tuple[torch.Tensor, str]:
    """A normalised ``(batch, 3, H, W)`` input through the model's preprocessor
    (``images`` resized to ``shape``, else fixed-seed random ones) and a sentence
    saying where it came from."""
    import mmcv
    h, w = shape
    if images:
        # spread over the (sorted) list, so folders of classes all get a turn
        picked = [images[(i * len(images)) // batch] if batch <= len(images) else
                  images[i % len(images)] for i in range(batch)]
        raw = [torch.from_numpy(mmcv.imresize(mmcv.imread(p), (w, h))).permute(2, 0, 1)
               for p in picked]
        source = f'{batch} image(s) resized to {h}x{w}: ' + ', '.join(
            os.path.relpath(p) for p in picked[:3]) + (' ...' if batch > 3 else '')
    else:
        gen = torch.Generator().manual_seed(0)
        raw = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)
               for _ in range(batch)]
        source = f'{batch} fixed-seed random uint8 image(s) of {h}x{w} (no --images)'
    with torch.no_grad():
        x = model.data_preprocessor({'inputs': raw, 'data_samples': None},
                                    False)['inputs']
    return x.float().contiguous(), source


class ExportWrapper(nn.Module):
    """``input -> logits`` (classifier) or ``input -> FPN levels`` (detector)."""

    def __init__(self, model: nn.Module, part: str):
        super().__init__()
        self.model = model
        self.part = part

    def forward(self, x: torch.Tensor):
        if self.part == 'backbone+neck':
            return tuple(self.model.extract_feat(x))
        return self.model(x, mode='tensor')


def export_part(scope: str) -> str:
    """``'whole'`` for mmpretrain classifiers, ``'backbone+neck'`` for detectors."""
    return 'backbone+neck' if scope == 'mmdet' else 'whole'


def torch_outputs(wrapper: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    with torch.no_grad():
        out = wrapper(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def export_onnx(wrapper: nn.Module, x: torch.Tensor, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, dynamic_hw: bool = False):
    """Export with the TorchScript exporter (``dynamo=False``: node names keep the
    module scopes that map initializers to layers) -> an ``onnx.ModelProto`` that
    passed ``onnx.checker`` (full check). Folding BatchNorm scales the weights per
    output channel: zeros stay zeros (:mod:`~lbc_mm.deploy.onnx.check` verifies)."""
    import onnx
    outs = torch_outputs(wrapper, x)
    out_names = ['logits'] if len(outs) == 1 and wrapper.part == 'whole' else \
        [f'feat{i}' for i in range(len(outs))]
    axes = {}
    for name, t in [('input', x)] + list(zip(out_names, outs)):
        ax = {0: 'batch'} if dynamic_batch else {}
        if dynamic_hw and t.dim() == 4:
            ax.update({2: f'{name}_height', 3: f'{name}_width'})
        if ax:
            axes[name] = ax
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # legacy-exporter deprecation, tracer notes
        torch.onnx.export(wrapper.eval(), (x, ), buf, dynamo=False,
                          opset_version=opset, input_names=['input'],
                          output_names=out_names, dynamic_axes=axes or None)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx_fp16(wrapper: nn.Module, x: torch.Tensor, opset: int = DEFAULT_OPSET,
                     dynamic_batch: bool = False, dynamic_hw: bool = False):
    """``(proto, FP16 wrapper)``: the graph with FP16 weights and I/O (TensorRT 11
    is strongly typed), from an FP16 copy, so 2:4 is checked on what TensorRT
    reads."""
    half = copy.deepcopy(wrapper).half().eval()
    return export_onnx(half, x.half(), opset, dynamic_batch, dynamic_hw), half


def fp16_path(out: str) -> str:
    """``model.onnx`` -> ``model.fp16.onnx``."""
    root, ext = os.path.splitext(out)
    return f'{root}.fp16{ext or ".onnx"}'
