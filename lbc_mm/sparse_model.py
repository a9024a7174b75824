"""Model-level helpers over lbc_mm's sparse layers (one place each): the LBC
layers, layer names, sub-module swaps, the N:M report (training end check, export,
deploy) and the non-finite tensors. Imports only layers, methods and sparsity, so
hooks, export and deploy can all use it.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.model import is_model_wrapper
from torch import nn

from .layers import SparseLayer, sparse_layers
from .methods import LBC
from .sparsity import count_nm_violations

__all__ = ['describe_tensors', 'lbc_layers', 'name_sparse_layers', 'nm_report',
           'non_finite_tensors', 'set_submodule']


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def lbc_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, layer)`` for the sparse LBC layers of a (possibly wrapped) model."""
    model = _unwrap(model)
    return [(name, layer) for name, layer in sparse_layers(model)
            if isinstance(layer.sparsity, LBC)]


def name_sparse_layers(model: nn.Module) -> int:
    """Set ``layer_name`` of every N:M layer (dense fallbacks included), so their
    messages name them; returns the count."""
    model = _unwrap(model)
    count = 0
    for name, layer in sparse_layers(model, only_sparse=False):
        layer.layer_name = name
        count += 1
    return count


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the sub-module called ``name`` (dotted path) by ``module``."""
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def nm_report(model: nn.Module,
              layers: Optional[Dict[str, Tuple[int, int]]] = None
              ) -> List[Dict[str, Any]]:
    """The N:M report of a model: one row per layer that must be N:M.

    A sparse layer is checked on its mask, any other (a stock layer after
    ``to_dense``) on its weight.

    Args:
        model (nn.Module): The model (wrappers are unwrapped).
        layers (dict[str, tuple[int, int]], optional): name -> ``(n, m)`` of the
            layers to check. Defaults to None: every sparse layer, its own pattern.

    Returns:
        list[dict]: per layer ``layer`` (name), ``shape``, ``pattern`` (``'n:m'``),
        ``bad_groups`` (more than ``n`` kept), ``groups`` and ``sparsity``.

    Raises:
        ValueError: A layer's weight cannot hold the pattern (names the layer).
    """
    model = _unwrap(model)
    if layers is None:
        layers = {name: (layer.n, layer.m) for name, layer in sparse_layers(model)}
    rows = []
    with torch.no_grad():
        for name, (n, m) in layers.items():
            mod = model.get_submodule(name)
            kept = mod.get_mask() if isinstance(mod, SparseLayer) else mod.weight
            try:
                bad, total = count_nm_violations(kept, n, m)
            except ValueError as err:
                raise ValueError(f'layer {name}: {err} (pattern {n}:{m})') from err
            rows.append({'layer': name, 'shape': list(kept.shape),
                         'pattern': f'{n}:{m}', 'bad_groups': bad, 'groups': total,
                         'sparsity': float((kept == 0).float().mean())})
    return rows


#: Tensors named in the message (the count names the rest).
MAX_NAMED = 5


def non_finite_tensors(model: nn.Module) -> List[str]:
    """Dotted names of the parameters and float buffers holding NaN or inf."""
    model = _unwrap(model)
    tensors = [(name, t) for name, t in model.named_parameters()]
    tensors += [(name, t) for name, t in model.named_buffers()
                if t.is_floating_point()]
    tensors = [(name, t) for name, t in tensors if t.numel()]
    if not tensors:
        return []
    with torch.no_grad():
        # Fast path: NaN / inf propagate through a sum; one sync for the model.
        sums = torch.stack([t.detach().sum(dtype=torch.float32).to(tensors[0][1].device)
                            for _, t in tensors])
        suspects = (~torch.isfinite(sums)).nonzero().flatten().tolist()
        # A suspect may only be huge-but-finite (its sum overflowed): look closer.
        return [tensors[i][0] for i in suspects
                if not bool(torch.isfinite(tensors[i][1].detach()).all())]


def describe_tensors(names: List[str]) -> str:
    """``'3 tensors: a.weight, b.bias, c.scores'`` (at most ``MAX_NAMED`` named)."""
    shown = ', '.join(names[:MAX_NAMED])
    more = f' and {len(names) - MAX_NAMED} more' if len(names) > MAX_NAMED else ''
    return f'{len(names)} tensor{"s" if len(names) != 1 else ""}: {shown}{more}'
