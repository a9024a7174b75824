"""Config -> model -> checkpoint loading, shared by export and deploy.

Configs may be repo paths or ``pkg::dir/file.py`` (read from ``<pkg>/.mim/configs``,
like mmengine does, but without needing ``pkg_resources`` at run time).
"""
import importlib
import importlib.util
import os
from typing import Dict, Tuple

import torch
from torch import nn


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys / shapes do not fit the model built from the config."""


def resolve_config(path: str) -> str:
    """Turn ``'mmpretrain::deit/x.py'`` into the file shipped in that package.

    Args:
        path (str): repo config path or ``pkg::rel/path.py``.

    Returns:
        str: a path that exists.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    if '::' in path:
        pkg, rel = path.split('::', 1)
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f'config {path}: package {pkg!r} is not installed')
        root = list(spec.submodule_search_locations)[0]
        candidates = [os.path.join(root, '.mim', 'configs', rel)]
        if pkg == 'lbc_mm':
            candidates.append(os.path.join(os.path.dirname(root), 'configs', rel))
        for cand in candidates:
            if os.path.isfile(cand):
                return cand
        raise FileNotFoundError(f'config {path}: not found at {candidates[0]}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    return path


def load_config(path: str):
    """Load an mmengine ``Config`` and import what it needs (``custom_imports``)."""
    from mmengine.config import Config
    cfg = Config.fromfile(resolve_config(path))
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg['custom_imports'])
    return cfg


def build_model(cfg) -> Tuple[nn.Module, str]:
    """Build ``cfg.model`` in its library's registry (CPU, eval mode).

    Returns:
        tuple[nn.Module, str]: the model and its scope (``'mmpretrain'`` /
        ``'mmdet'``).
    """
    scope = cfg.get('default_scope', None)
    if scope is None:
        kind = str(cfg.model.get('type', '')).lower()
        scope = 'mmdet' if ('rcnn' in kind or 'detector' in kind) else 'mmpretrain'
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=True)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(cfg.model)
    return model.eval(), scope


def read_checkpoint(path: str) -> Dict[str, object]:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Import lbc_mm first: its compat module allow-lists the mmengine globals that
    mmengine checkpoints contain.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: not a loadable (weights-only) checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001  (unpickling / zip errors: one line)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        raise CheckpointMismatchError(
            f'cannot read checkpoint {path}: {type(exc).__name__}: {first}') from exc
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'checkpoint {path} is not a dict')
    return ckpt


def state_dict_of(ckpt: Dict[str, object]) -> Dict[str, torch.Tensor]:
    """The weights of an mmengine checkpoint (``state_dict``), ``module.`` removed."""
    sd = ckpt.get('state_dict', ckpt)
    if not isinstance(sd, dict):
        raise CheckpointMismatchError('checkpoint has no state_dict')
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    return sd


def _examples(keys, limit=3) -> str:
    keys = sorted(keys)
    more = f', ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_checkpoint_into(model: nn.Module, path: str) -> Dict[str, object]:
    """Load a checkpoint into ``model`` strictly.

    Returns:
        dict: the whole checkpoint (``meta`` etc.).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: missing / unexpected keys or shape mismatches,
            summarised on one line.
    """
    ckpt = read_checkpoint(path)
    sd = state_dict_of(ckpt)
    own = model.state_dict()
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shapes = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(sd))
              if torch.is_tensor(sd[k]) and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys ({_examples(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys ({_examples(unexpected)})')
        if shapes:
            parts.append(f'{len(shapes)} shape mismatches ({"; ".join(shapes[:2])})')
        raise CheckpointMismatchError(
            f'checkpoint {path} does not match the config: ' + '; '.join(parts))
    model.load_state_dict(sd, strict=True)
    return ckpt
