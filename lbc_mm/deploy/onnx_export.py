"""Converted N:M model file -> PyTorch model -> ONNX (TorchScript exporter, pinned).

The model file is what ``tools/convert.py`` writes (docs/export_format.md): the stock
``.pth`` or the compressed ``.nm.pth``. Its ``meta['lbc_mm_export']['sparse_layers']``
names the N:M layers; they are checked N:M before anything is exported.

What is exported:

- mmpretrain classifiers: the whole model, ``input`` (normalised NCHW) -> ``logits``;
- mmdet detectors: backbone + neck (``extract_feat``), ``input`` -> ``feat0..featK``.
  Every N:M layer lives there; the heads (RPN / RoI, NMS) are left to mmdeploy
  (docs/deploy.md says why).

The data preprocessor (mean / std, BGR -> RGB) is not part of the graph, as with
mmdeploy: the caller feeds normalised tensors.
"""
import glob
import io
import os
import warnings
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..apis import (
    CheckpointMismatchError,
    build_model,
    load_config,
    read_checkpoint,
    state_dict_of,
)
from ..export.bake import SPARSE_ONLY_KEYS, NotNMError, densify_model, nm_violations
from ..export.compressed import FORMAT, decompress_state_dict
from ..export.convert import parse_pattern
from ..layers import sparse_layers

#: ONNX opset used unless ``--opset`` says otherwise (TensorRT 8.6+ and onnxruntime
#: 1.14+ read it).
DEFAULT_OPSET = 17
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp')


class NotConvertedError(ValueError):
    """The model file is not one that ``tools/convert.py`` wrote."""


def read_model_file(path: str) -> Tuple[Dict[str, torch.Tensor], Dict, str]:
    """Read a converted model file.

    Returns:
        tuple: stock state dict (dense with zeros), ``meta``, and the file kind
        (``'stock'`` or ``'compressed'``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: not a weights-only loadable file.
        NotConvertedError: a training checkpoint, or a file without the export
            record ``meta['lbc_mm_export']``.
    """
    ckpt = read_checkpoint(path)
    if ckpt.get('format') == FORMAT:
        sd, kind = decompress_state_dict(ckpt), 'compressed'
    else:
        sd, kind = state_dict_of(ckpt), 'stock'
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    training = [k for k in sd if k.rsplit('.', 1)[-1] in SPARSE_ONLY_KEYS]
    if training:
        raise NotConvertedError(
            f'{path} is a training checkpoint (it holds {training[0]}), not a '
            f'converted model: run tools/convert.py CONFIG {path} OUT first and '
            'export OUT')
    if not isinstance(meta.get('lbc_mm_export'), dict):
        raise NotConvertedError(
            f'{path} has no lbc_mm export record (meta.lbc_mm_export), so nothing '
            'says which layers are N:M: run tools/convert.py CONFIG CHECKPOINT OUT '
            'on the trained checkpoint first and export OUT')
    return sd, meta, kind


def _load_strict(model: nn.Module, sd: Dict[str, torch.Tensor], path: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f'{len(v)} {what} ({", ".join(v[:2])})' for what, v in
                 (('missing keys', missing), ('unexpected keys', unexpected),
                  ('shape mismatches', shapes)) if v]
        raise CheckpointMismatchError(
            f'model file {path} does not match the config: {"; ".join(parts)}')
    model.load_state_dict(sd, strict=True)


def load_converted(config: str, path: str) -> Dict[str, object]:
    """Config + converted model file -> eval model with plain layers, N:M checked.

    CONFIG may be the lbc_mm training config (its sparse layers are turned into
    stock ones first) or the stock upstream config.

    Returns:
        dict: ``model``, ``scope``, ``cfg``, ``patterns`` (layer -> ``(n, m)``),
        ``kind`` (file kind), ``meta``.

    Raises:
        NotNMError: a layer the export record names is not N:M (nothing exported).
        ValueError: see :func:`read_model_file`; the file does not fit the config.
    """
    sd, meta, kind = read_model_file(path)
    cfg = load_config(config)
    model, scope = build_model(cfg)
    if any(True for _ in sparse_layers(model, only_sparse=False)):
        densify_model(model)
    _load_strict(model, sd, path)
    listed = meta['lbc_mm_export'].get('sparse_layers') or {}
    patterns = {name: parse_pattern(p) for name, p in listed.items()}
    if not patterns:
        raise NotConvertedError(f'{path}: its export record lists no N:M sparse '
                                'layers, so there is nothing sparse to deploy')
    modules = dict(model.named_modules())
    for name in patterns:
        if not isinstance(modules.get(name), (nn.Conv2d, nn.Linear)):
            raise CheckpointMismatchError(
                f'model file {path} lists sparse layer {name}, which is not a '
                f'Conv2d / Linear of the model built from {config}')
    bad = nm_violations(model, patterns)
    if bad:
        raise NotNMError(bad)
    return dict(model=model.eval(), scope=scope, cfg=cfg, patterns=patterns,
                kind=kind, meta=meta)


def random_2of4(config: str) -> Dict[str, object]:
    """Random-init model with magnitude 2:4 masks (for timing TensorRT only)."""
    from .models import prepare
    got = prepare(config, None)
    return dict(model=got['model'], scope=got['scope'], cfg=got['cfg'],
                patterns=got['layers'], kind='random', meta={})


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
    """A normalised ``(batch, 3, H, W)`` input through the model's preprocessor.

    Images are resized to ``shape`` (cycled to fill the batch); without images a
    fixed-seed uint8 image stands in.

    Returns:
        tuple: the tensor and a sentence saying where it came from.
    """
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
    """Export with the TorchScript exporter (``dynamo=False``) and check the model.

    The TorchScript exporter keeps each node's module scope in its name (which maps
    initializers back to layers) and takes ``dynamic_axes``. In eval mode it folds
    BatchNorm into the preceding conv (``W * s`` per output channel): zeros stay
    zeros, which :mod:`lbc_mm.deploy.onnx_check` verifies.

    Returns:
        onnx.ModelProto: passed ``onnx.checker.check_model(full_check=True)``.
    """
    import onnx
    outs = torch_outputs(wrapper, x)
    out_names = ['logits'] if len(outs) == 1 and wrapper.part == 'whole' else \
        [f'feat{i}' for i in range(len(outs))]
    axes = {}
    for name, t in [('input', x)] + list(zip(out_names, outs)):
        ax = {}
        if dynamic_batch:
            ax[0] = 'batch'
        if dynamic_hw and t.dim() == 4:
            ax.update({2: f'{name}_height', 3: f'{name}_width'})
        if ax:
            axes[name] = ax
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # legacy-exporter deprecation, tracer notes
        torch.onnx.export(wrapper.eval(), (x, ), buf, dynamo=False,
                          opset_version=opset, input_names=['input'],
                          output_names=out_names, dynamic_axes=axes or None,
                          do_constant_folding=True,
                          training=torch.onnx.TrainingMode.EVAL)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto
