"""Build the model a benchmark times: config -> model -> dense-with-zeros 2:4 weights.

Which layers are sparse follows docs/method.md §8: the layers the config made sparse
(``NMSparseConv`` / ``NMSparseLinear`` with ``is_sparse``), or, for a stock config,
every ``Conv2d`` / ``Linear`` of the backbone whose reduction size ``in/groups`` is a
multiple of M (which leaves the ResNet stem and the ViT patch embedding dense; necks
and heads stay dense).
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..export.build import build_model, load_config, resolve_config
from ..sparsity.patterns import count_nm_violations, magnitude_mask

__all__ = ['apply_magnitude_masks', 'build_model', 'check_nm', 'is_nm_layer',
           'load_config', 'prepare', 'resolve_config', 'sparse_layer_names']


def is_nm_layer(mod: nn.Module) -> bool:
    """True for lbc_mm's sparse layers (they carry ``get_mask`` and ``is_sparse``)."""
    return hasattr(mod, 'get_mask') and hasattr(mod, 'is_sparse')


def reduction_size(mod: nn.Module) -> int:
    """``in_features`` of a Linear, ``in_channels / groups`` of a Conv2d."""
    if isinstance(mod, nn.Linear):
        return mod.in_features
    return mod.in_channels // mod.groups


def sparse_layer_names(model: nn.Module, n: int = 2,
                       m: int = 4) -> Tuple[Dict[str, Tuple[int, int]], str]:
    """The layers that are N:M sparse in ``model`` (docs/method.md §8).

    Returns:
        tuple[dict[str, tuple[int, int]], str]: name -> ``(n, m)``, and how the
        layers were picked.
    """
    nm = {name: (int(mod.n), int(mod.m)) for name, mod in model.named_modules()
          if is_nm_layer(mod) and mod.is_sparse}
    if nm:
        return nm, 'layers the config made sparse (NMSparseConv / NMSparseLinear)'
    names = {}
    for name, mod in model.named_modules():
        if not name.startswith('backbone.'):
            continue
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and reduction_size(mod) % m == 0:
            names[name] = (n, m)
    return names, ('docs/method.md §8 default: backbone Conv2d/Linear with in/groups '
                   f'% {m} == 0 (stem / patch embedding, neck and head dense)')


def apply_magnitude_masks(model: nn.Module,
                          layers: Dict[str, Tuple[int, int]]) -> None:
    """``W := W * magnitude_mask(W, n, m)`` on the named layers (in place)."""
    with torch.no_grad():
        for name, (n, m) in layers.items():
            mod = model.get_submodule(name)
            mod.weight.mul_(magnitude_mask(mod.weight, n, m).to(mod.weight.dtype))


def check_nm(model: nn.Module,
             layers: Dict[str, Tuple[int, int]]) -> List[Dict[str, object]]:
    """Per layer: shape, pattern and groups that break it (dense-with-zeros model)."""
    rows = []
    for name, (n, m) in layers.items():
        w = model.get_submodule(name).weight.detach()
        bad, total = count_nm_violations(w, n, m)
        rows.append({'layer': name, 'shape': list(w.shape), 'pattern': f'{n}:{m}',
                     'bad_groups': int(bad), 'groups': int(total),
                     'sparsity': float((w == 0).float().mean())})
    return rows


def prepare(config: str, checkpoint: Optional[str], n: int = 2, m: int = 4,
            score_thr: Optional[float] = 0.0, device: str = 'cpu'):
    """Config (+ checkpoint) -> dense-with-zeros model with its sparse layers.

    Args:
        config (str): config path or ``pkg::path``.
        checkpoint (str, optional): trained lbc_mm checkpoint; without one the
            sparse layers get magnitude 2:4 masks of their (random-init) weights.
        n, m (int): pattern for the magnitude masks. Defaults to 2:4.
        score_thr (float, optional): detector ``test_cfg.rcnn.score_thr`` override
            so a random-init detector still sends boxes through its mask head.
        device (str): where the masks are computed and the model ends up.

    Returns:
        dict: ``model`` (on ``device``, eval, plain Conv2d/Linear), ``scope``,
        ``layers`` (name -> ``(n, m)``), ``scope_rule``, ``weights`` (a sentence),
        ``nm_check`` rows, ``cfg``.
    """
    cfg = load_config(config)
    if score_thr is not None and 'test_cfg' in cfg.model and \
            cfg.model.test_cfg.get('rcnn') is not None:
        cfg.model.test_cfg.rcnn.score_thr = score_thr
    model, scope = build_model(cfg)
    layers, rule = sparse_layer_names(model, n, m)
    if checkpoint is not None:
        from ..export import densify_model, load_checkpoint_into
        load_checkpoint_into(model, checkpoint)
        densify_model(model)
        weights = f'trained weights from {checkpoint} (masks baked in)'
    else:
        if any(is_nm_layer(mod) for mod in model.modules()):
            from ..export import densify_model
            densify_model(model)
        layers = {name: (n, m) for name in layers}
        model.to(device)
        apply_magnitude_masks(model, layers)
        weights = (f'random-init weights with magnitude {n}:{m} masks (no checkpoint '
                   'given; timing does not depend on the values)')
    model.to(device)
    rows = check_nm(model, layers)
    return dict(model=model.eval(), scope=scope, layers=layers, scope_rule=rule,
                weights=weights, nm_check=rows, cfg=cfg)
