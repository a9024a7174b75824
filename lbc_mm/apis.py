"""Config -> model -> checkpoint: the one place every stage loads them.

Used by export (``tools/convert.py``), deploy (``tools/benchmark.py``,
``tools/export_onnx.py``), ``tools/test.py`` / ``tools/train.py --resume`` (through
``lbc_mm.cli``) and the benchmarks / studies (mmdet's ``mmdet.apis`` is the
precedent). It imports only :mod:`lbc_mm.checkpoint_io` (which imports no lbc_mm
module), so every layer may import it.

Configs may be repo paths or ``pkg::dir/file.py`` (read from ``<pkg>/.mim/configs``,
like mmengine does, but without needing ``pkg_resources`` at run time).

Checkpoints are read weights-only and CRC-checked, from a local file or any address
mmengine knows, by :mod:`lbc_mm.checkpoint_io`; here they are checked against the
model built from the config (:func:`check_checkpoint`) and loaded strictly
(:func:`load_checkpoint_into`).
"""
import importlib
import importlib.util
import os
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .checkpoint_io import CheckpointMismatchError, read_any_checkpoint

__all__ = ['build_model', 'check_checkpoint', 'checkpoint_mismatch',
           'load_checkpoint_into', 'load_config', 'resolve_config', 'state_dict_of']


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
    """Build ``cfg.model`` in the registry of the config's ``default_scope``
    (CPU, eval mode). Import lbc_mm first when the config uses its types.

    Returns:
        tuple[nn.Module, str]: the model and its scope (``'mmpretrain'`` /
        ``'mmdet'``).

    Raises:
        ValueError: the config sets no ``default_scope``.
    """
    scope = cfg.get('default_scope', None)
    if not scope:
        raise ValueError(
            f'config {getattr(cfg, "filename", None) or ""} sets no default_scope '
            f"(add e.g. default_scope = 'mmdet' or 'mmpretrain')".replace('config  ',
                                                                         'config '))
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=True)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model = registry.build(cfg.model)
    return model.eval(), scope


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


def checkpoint_mismatch(model: nn.Module, state_dict: Dict[str, object]
                        ) -> Optional[str]:
    """What keeps ``state_dict`` from loading strictly into ``model``, on one line
    (the first missing / unexpected / mis-shaped keys), or None when it fits."""
    own = model.state_dict()
    sd = state_dict
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shapes = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(sd))
              if torch.is_tensor(sd[k]) and sd[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing keys ({_examples(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys ({_examples(unexpected)})')
    if shapes:
        parts.append(f'{len(shapes)} shape mismatches ({"; ".join(shapes[:2])})')
    return '; '.join(parts)


def check_checkpoint(model: nn.Module, path: str, allow_partial: bool = False
                     ) -> Tuple[Dict[str, object], Optional[str]]:
    """Read ``path`` (CRC-checked, weights-only; a local file or an address, see
    :func:`lbc_mm.checkpoint_io.read_any_checkpoint`) and check it fits ``model``.

    The one check every tool runs before it uses a checkpoint (``tools/test.py``,
    ``tools/convert.py``, ``tools/benchmark.py``, ``tools/train.py --resume``).

    Args:
        model (nn.Module): the model built from the config (unwrapped).
        path (str): checkpoint file or address.
        allow_partial (bool): return the mismatch instead of raising.

    Returns:
        tuple[dict, str | None]: the checkpoint, and the mismatch line when
        ``allow_partial`` and it does not fit (else None).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: unreadable, corrupted or refused file; or (unless
            ``allow_partial``) missing / unexpected keys or shape mismatches.
    """
    ckpt = read_any_checkpoint(path)
    problem = checkpoint_mismatch(model, state_dict_of(ckpt))
    if problem is not None:
        problem = f'checkpoint {path} does not match the config: {problem}'
        if not allow_partial:
            raise CheckpointMismatchError(problem)
    return ckpt, problem


def load_checkpoint_into(model: nn.Module, path: str) -> Dict[str, object]:
    """Load a checkpoint into ``model`` strictly (:func:`check_checkpoint` first).

    Returns:
        dict: the whole checkpoint (``meta`` etc.).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: see :func:`check_checkpoint`.
    """
    ckpt, _ = check_checkpoint(model, path)
    model.load_state_dict(state_dict_of(ckpt), strict=True)
    return ckpt
