"""Cost of an N:M model as it is deployed: parameters, MACs, sparse share, size
(``tools/get_flops.py``; docs/user_guides/convert.md).

The model is first turned into the deployed one (``densify_model``: no LBC
``scores``, which mmengine's ``get_model_complexity_info`` would count as
parameters); then, per Conv2d / Linear, dense and N:M-effective parameters and MACs
(an N:M layer keeps ``N / M`` of both; biases stay) and bytes dense vs compressed
(docs/export_format.md). MACs come from forward hooks on Conv2d / Linear for one
input; other operations (attention products, RoIAlign, norms...) are not counted,
and detector heads run on the proposals a random input produces.
"""
import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from .apis import build_model, load_checkpoint_into, load_config
from .checkpoint_io import read_checkpoint
from .export.bake import densify_model
from .export.compressed import FORMAT, index_bits
from .sparse_model import lbc_layers, nm_report

Patterns = Dict[str, Tuple[int, int]]


def effective_count(count: int, n: int, m: int) -> int:
    """Weights (or multiply-adds) left of ``count`` under N:M: ``count * n / m``
    (exact: an N:M layer's counts are multiples of ``m``)."""
    return count * n // m


def compressed_weight_nbytes(numel: int, n: int, m: int, element_size: int) -> int:
    """Bytes of one N:M weight in the compressed format: the kept values plus
    ``index_bits(m)`` bits per kept value, packed (docs/export_format.md)."""
    kept = numel // m * n
    return kept * element_size + math.ceil(kept * index_bits(m) / 8)


def layer_macs(model: nn.Module, run: Callable[[], object]) -> Dict[str, int]:
    """Multiply-adds of every Conv2d / Linear during ``run()`` (no grad): module
    name -> output numel x weights per output, summed over calls (never called: 0).
    """
    names = {mod: name for name, mod in model.named_modules()
             if isinstance(mod, (nn.Conv2d, nn.Linear))}
    macs = dict.fromkeys(names.values(), 0)

    def hook(mod, _inputs, output):  # weights per output: in / groups x kernel
        macs[names[mod]] += output.numel() * math.prod(mod.weight.shape[1:])

    handles = [mod.register_forward_hook(hook) for mod in names]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return macs


def sample_forward(model: nn.Module, scope: str, shape: Tuple[int, int],
                   seed: int = 0) -> Callable[[], object]:
    """One forward of ``model`` on a random ``1 x 3 x H x W`` input (``mode='tensor'``;
    detectors get one data sample with that image shape)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(1, 3, *shape, generator=gen)
    samples = None
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        h, w = shape
        samples = [DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))]
    return lambda: model(inputs, samples, mode='tensor')


def model_cost(model: nn.Module, patterns: Patterns, macs: Dict[str, int],
               training_params: int = 0) -> Dict:
    """Per-layer ``rows`` and ``totals`` of a deployed model (stock layers) with
    N:M layers ``patterns`` (name -> ``(n, m)``) and ``macs`` (:func:`layer_macs`);
    ``training_params``: the training model's LBC ``scores`` elements (apart)."""
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        w = mod.weight
        bias = mod.bias.numel() if mod.bias is not None else 0
        bias_bytes = bias * w.element_size()
        row = {'layer': name, 'type': type(mod).__name__, 'shape': list(w.shape),
               'pattern': 'dense', 'params': w.numel() + bias,
               'macs': macs.get(name, 0), 'bytes': w.numel() * w.element_size()
               + bias_bytes}
        if name in patterns:
            n, m = patterns[name]
            row['pattern'] = f'{n}:{m}'
            row['params_nm'] = effective_count(w.numel(), n, m) + bias
            row['macs_nm'] = effective_count(row['macs'], n, m)
            row['bytes_nm'] = compressed_weight_nbytes(
                w.numel(), n, m, w.element_size()) + bias_bytes
        else:
            row.update(params_nm=row['params'], macs_nm=row['macs'],
                       bytes_nm=row['bytes'])
        rows.append(row)
    sparse = [r for r in rows if r['pattern'] != 'dense']
    params = sum(p.numel() for p in model.parameters())
    state_bytes = sum(t.numel() * t.element_size()
                      for t in model.state_dict().values())
    saved = {key: sum(r[key] - r[f'{key}_nm'] for r in sparse)
             for key in ('params', 'macs', 'bytes')}
    macs_total = sum(r['macs'] for r in rows)
    totals = {
        'nm_layers': len(sparse), 'layers': len(rows),
        'params': params, 'params_nm': params - saved['params'],
        'macs': macs_total, 'macs_nm': macs_total - saved['macs'],
        'bytes': state_bytes, 'bytes_nm': state_bytes - saved['bytes'],
        'sparse_params': sum(r['params'] for r in sparse),
        'sparse_macs': sum(r['macs'] for r in sparse),
        'training_params': training_params}
    totals['sparse_params_share'] = totals['sparse_params'] / max(params, 1)
    totals['sparse_macs_share'] = totals['sparse_macs'] / max(macs_total, 1)
    return {'rows': rows, 'totals': totals}


def _is_converted(ckpt: Dict) -> bool:
    meta = ckpt.get('meta')
    return ckpt.get('format') == FORMAT or (
        isinstance(meta, dict) and isinstance(meta.get('lbc_mm_export'), dict))


def cost_report(config: str, checkpoint: Optional[str] = None,
                shape: Optional[Tuple[int, int]] = None) -> Dict:
    """Cost report of a config (random init: the counts do not depend on the
    weights), a training checkpoint (loaded strictly) or a converted model file
    (the stock config works too), for an input ``shape`` ``(H, W)`` (default
    ``(800, 1344)`` for mmdet, else ``(224, 224)``): :func:`model_cost`'s plus
    ``source``, ``shape``, ``scope``, ``config`` and ``nm_exact`` (N:M layers whose
    weights are N:M now)."""
    training_params = 0
    if checkpoint is not None and _is_converted(read_checkpoint(checkpoint)):
        from .deploy.models import load_converted  # converted: deploy's loader
        loaded = load_converted(config, checkpoint, check=False)
        model, scope, patterns = loaded.model, loaded.scope, loaded.patterns
        cfg, source = loaded.cfg, f'converted model file {checkpoint}'
        nm_rows = loaded.nm_rows  # deploy's loader checked N:M as it read the file
    else:
        cfg = load_config(config)
        model, scope = build_model(cfg)
        if checkpoint is not None:
            load_checkpoint_into(model, checkpoint)
            source = f'training checkpoint {checkpoint}'
        else:
            source = f'config {config} (random init)'
        training_params = sum(layer.scores.numel() for _, layer in lbc_layers(model))
        patterns = densify_model(model)
        nm_rows = nm_report(model, patterns)
    if shape is None:
        shape = (800, 1344) if scope == 'mmdet' else (224, 224)
    macs = layer_macs(model, sample_forward(model.eval(), scope, shape))
    report = model_cost(model, patterns, macs, training_params)
    report.update(source=source, shape=list(shape), scope=scope,
                  config=getattr(cfg, 'filename', config),
                  nm_exact=sum(not row['bad_groups'] for row in nm_rows))
    return report


def _si(count: int) -> str:
    """``44_030_000`` -> ``'44.03 M'`` (K / M / G, as mmengine prints sizes)."""
    for div, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(count) >= div:
            return f'{count / div:.2f} {unit}'
    return str(count)


def format_report(report: Dict, all_layers: bool = False) -> str:
    """Markdown table (N:M layers, or every Conv2d / Linear) and the totals."""
    lines = ['| layer | pattern | shape | params | params N:M | MACs | MACs N:M | '
             'bytes | bytes compressed |', '| --- ' * 9 + '|']
    for r in report['rows']:
        if all_layers or r['pattern'] != 'dense':
            lines.append(
                f'| {r["layer"]} | {r["pattern"]} | {tuple(r["shape"])} | '
                f'{r["params"]} | {r["params_nm"]} | {r["macs"]} | {r["macs_nm"]} | '
                f'{r["bytes"]} | {r["bytes_nm"]} |')
    t = report['totals']
    h, w = report['shape']
    lines += [
        '',
        f'{report["source"]}; input 1x3x{h}x{w}',
        f'N:M layers: {t["nm_layers"]} of {t["layers"]} Conv2d/Linear '
        f'({report["nm_exact"]} exactly N:M now)',
        f'params: {_si(t["params"])} dense, {_si(t["params_nm"])} N:M-effective; '
        f'{t["sparse_params_share"]:.1%} of the parameters are in N:M layers',
        f'MACs (Conv2d/Linear): {_si(t["macs"])} dense, {_si(t["macs_nm"])} '
        f'N:M-effective; {t["sparse_macs_share"]:.1%} of them in N:M layers',
        f'size (state dict): {t["bytes"] / 2**20:.1f} MiB dense, '
        f'{t["bytes_nm"] / 2**20:.1f} MiB compressed N:M '
        f'({t["bytes_nm"] / max(t["bytes"], 1):.1%})']
    if t['training_params']:
        lines.append(f'not counted: {_si(t["training_params"])} LBC scores (training '
                     'state, dropped by tools/convert.py; mmengine\'s '
                     'get_model_complexity_info counts them as parameters)')
    return '\n'.join(lines)
