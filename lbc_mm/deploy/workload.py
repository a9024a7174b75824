"""What a benchmark runs: the model on its device and dtype, its input, and the
timed functions with their outputs checked against the dense model's."""
import copy
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from .timing import error_line, rel_error

__all__ = ['Workload', 'output_error']


class Workload:
    """The dense-with-zeros model on ``device`` in ``dtype`` (a detector's heads
    stay fp32 under autocast, as mmdet evaluates mixed precision), its random input
    (``img_size``, default 224, or ``det_shape`` ``(H, W)``) and timed functions."""

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

    def check_outputs(self, models: Dict[str, nn.Module],
                      log: Callable[[str], None]) -> Dict[str, dict]:
        """Each function's outputs on ``models`` vs the dense model's.

        Returns:
            dict: function -> ``{'fn', 'graph', 'note', 'checks': {key: relative
            error or error line}}`` (``fn``: the fallback where the dense model
            fails the function, ``note`` says so), or ``{'error'}`` when neither
            runs.
        """
        out, tensor_checks = {}, {}
        for fname, spec in self.functions().items():
            fn, note = spec['fn'], None
            with torch.no_grad():
                try:
                    ref = fn(self.model)
                except Exception as exc:  # noqa: BLE001
                    err = error_line(exc)
                    log(f'[bench] {fname} failed on the dense model: {err}')
                    if 'fallback' not in spec:
                        out[fname] = {'error': err}
                        continue
                    try:
                        fn, ref = spec['fallback'], spec['fallback'](self.model)
                    except Exception as exc2:  # noqa: BLE001
                        out[fname] = {'error': f'{err}; fallback: {error_line(exc2)}'}
                        continue
                    note = f'{spec["fallback_note"]}: {err}'
                checks = {}
                for key, model in models.items():
                    try:
                        checks[key] = output_error(fn(model), ref)
                    except Exception as exc:  # noqa: BLE001
                        checks[key] = error_line(exc)
                    if checks[key] is None:  # predict: its backbone+neck check
                        checks[key] = tensor_checks.get(key)
            tensor_checks.update({k: v for k, v in checks.items() if v is not None})
            out[fname] = dict(fn=fn, graph=spec['graph'], note=note, checks=checks)
        return out


def output_error(out, ref) -> Optional[float]:
    """:func:`rel_error` of outputs (tensors or sequences of them); None for
    others (a detector's ``predict``: its backbone+neck features are compared)."""
    if torch.is_tensor(out):
        return rel_error(out, ref)
    if isinstance(out, (list, tuple)) and out and all(torch.is_tensor(o) for o in out):
        return max(rel_error(o, r) for o, r in zip(out, ref))
    return None
