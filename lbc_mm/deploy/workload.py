"""What a benchmark runs: the model on its device and dtype, its input, the timed
functions, and the units (layers / MLPs) the plan switches between dense and 2:4."""
import copy
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from . import modules, plan
from .timing import rel_error

__all__ = ['Workload', 'find_units', 'output_error']


class Workload:
    """The model under test plus its input and the functions that are timed.

    Args:
        model (nn.Module): dense-with-zeros model (plain layers).
        scope (str): ``'mmdet'`` (a detector) or the classifier's scope.
        batch (int): batch size.
        dtype (torch.dtype): the model's dtype (a detector's heads stay fp32 and
            run under autocast, which is how mmdet evaluates mixed precision).
        device (torch.device): where it runs.
        img_size (int, optional): classifier input size (default 224).
        det_shape (Sequence[int]): detector input ``(H, W)``.
        channels_last (bool): run the model channels-last.
    """

    def __init__(self, model: nn.Module, scope: str, batch: int, dtype: torch.dtype,
                 device: torch.device, img_size: Optional[int],
                 det_shape: Sequence[int], channels_last: bool):
        self.dtype = dtype
        self.device = device
        model = model.to(device)
        self.is_det = scope == 'mmdet'
        if self.is_det:
            model.backbone.to(dtype)
            if getattr(model, 'neck', None) is not None:
                model.neck.to(dtype)
            h, w = det_shape
            self.x = torch.randn(batch, 3, h, w, device=device, dtype=dtype)
            from mmdet.structures import DetDataSample
            meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                        batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
            self.samples = [DetDataSample(metainfo=meta) for _ in range(batch)]
        else:
            model.to(dtype)
            size = img_size or 224
            self.x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.model = model.eval()

    def functions(self) -> Dict[str, Dict[str, object]]:
        """name -> ``{'fn': model -> output, 'graph': capturable}`` (a detector's
        ``predict`` also names a ``fallback``)."""
        if not self.is_det:
            return {'forward': {'fn': lambda mdl: mdl(self.x, mode='tensor'),
                                'graph': True}}
        dtype, dev = self.dtype, self.device.type
        amp = dtype != torch.float32  # fp32: the CPU dry run

        def backbone_neck(mdl):
            with torch.autocast(dev, dtype=dtype, enabled=amp, cache_enabled=False):
                return mdl.extract_feat(self.x)

        def predict(mdl):
            with torch.autocast(dev, dtype=dtype, enabled=amp, cache_enabled=False):
                return mdl.predict(self.x, copy.deepcopy(self.samples), rescale=False)

        def predict_fp32_heads(mdl):
            # fallback if a head op has no fp16 kernel: backbone+neck in `dtype`,
            # RPN / RoI heads in fp32 (the same for dense and 2:4)
            samples = copy.deepcopy(self.samples)
            with torch.autocast(dev, dtype=dtype, enabled=amp, cache_enabled=False):
                feats = mdl.extract_feat(self.x)
            feats = tuple(f.float() for f in feats)
            rpn = mdl.rpn_head.predict(feats, samples, rescale=False)
            return mdl.roi_head.predict(feats, rpn, samples, rescale=False)

        return {'backbone_neck': {'fn': backbone_neck, 'graph': True},
                'predict': {'fn': predict, 'graph': False,
                            'fallback': predict_fp32_heads,
                            'fallback_note': 'predict with fp32 RPN/RoI heads (the '
                                             'fp16-autocast predict failed)'}}

    def main_fn(self) -> Callable[[nn.Module], object]:
        """The function whose run records the sparse layers' input shapes."""
        return self.functions()['backbone_neck' if self.is_det else 'forward']['fn']


def output_error(out, ref) -> Optional[float]:
    """Relative error between outputs (tensor or sequence of tensors).

    None for outputs that are not tensors (a detector's ``predict`` results: NMS
    makes them discrete; the backbone+neck features are compared instead).
    """
    if torch.is_tensor(out):
        return rel_error(out, ref)
    if isinstance(out, (list, tuple)) and out and all(torch.is_tensor(o) for o in out):
        return max(rel_error(o, r) for o, r in zip(out, ref))
    return None


def find_units(model: nn.Module, layers: Sequence[str],
               inputs: Dict[str, dict]) -> Dict[str, Dict[str, object]]:
    """Units for the end-to-end plan and the per-layer table.

    Args:
        model (nn.Module): the model.
        layers (Sequence[str]): the sparse layers' names.
        inputs (dict): from :func:`lbc_mm.deploy.plan.record_inputs`.

    Returns:
        dict: ``{'units': {unit name: signature}, 'rows': {signature: {...}}}``;
        rows cover every sparse layer (incl. fc1/fc2 inside an MLP) and each MLP.
    """
    names: List[str] = list(layers)
    mlps = plan.find_mlps(model, names)
    in_mlp = {n for pair in mlps.values() for n in pair}
    units: Dict[str, str] = {}
    rows: Dict[str, Dict[str, object]] = {}
    for name in names + list(mlps):
        if name not in inputs:
            continue
        mod = model.get_submodule(name)
        sig = plan.signature(mod, inputs[name])
        kind = plan.unit_kind(mod)
        row = rows.setdefault(sig, {'signature': sig, 'kind': kind,
                                    'input_shape': inputs[name]['shape'],
                                    'layers': [], 'module': name})
        if kind == 'mlp':
            fc1, _act, fc2 = modules.match_mlp(mod)
            row['weight_shape'] = [list(fc1.weight.shape), list(fc2.weight.shape)]
        else:
            row['weight_shape'] = list(mod.weight.shape)
        row['layers'].append(name)
        if name in mlps or name not in in_mlp:
            units[name] = sig
    return {'units': units, 'rows': rows}
