"""Config -> model -> checkpoint: the one place every stage loads them (mmdet's
``mmdet.apis`` is the precedent). Imports only :mod:`lbc_mm.checkpoint_io`, so every
layer may import it.

Configs may be repo paths or ``pkg::dir/file.py`` (``<pkg>/.mim/configs``, as mmengine
reads them, without ``pkg_resources``). Checkpoints are read by
:mod:`lbc_mm.checkpoint_io`, checked against the model built from the config
(:func:`check_checkpoint`) and loaded strictly (:func:`load_checkpoint_into`).
"""
import importlib
import importlib.util
import os
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .checkpoint_io import CheckpointMismatchError, read_any_checkpoint

__all__ = ['build_model', 'check_checkpoint', 'checkpoint_mismatch',
           'load_checkpoint_into', 'load_config', 'missing_library', 'resolve_config',
           'state_dict_of']


def resolve_config(path: str) -> str:
    """The existing file of a repo config path or ``pkg::rel/path.py`` (the file
    shipped in that package); ``FileNotFoundError`` when there is none."""
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
    """The mmengine ``Config`` of a repo path or ``pkg::rel/path.py`` (``fromfile``
    imports its ``custom_imports``)."""
    from mmengine.config import Config
    return Config.fromfile(resolve_config(path))


#: The config scopes whose library is an extra of lbc_mm (setup.py), by extra name.
SCOPE_EXTRAS = {'mmdet': 'det', 'mmpretrain': 'cls'}


def missing_library(scope: Optional[str]) -> Optional[Tuple[str, str]]:
    """``(problem, fix)`` when the library of a config's ``default_scope`` is an
    extra that is not installed: ``"'mmdet' needs mmdet, which is not installed"``,
    ``'pip install "lbc_mm[det]" ...'``; else None."""
    extra = SCOPE_EXTRAS.get(scope or '')
    if extra is None:
        return None
    try:
        if importlib.util.find_spec(scope) is not None:
            return None
    except (ImportError, ValueError):  # a broken or blocked install: missing too
        pass
    return (f'{scope!r} needs {scope}, which is not installed',
            f'pip install "lbc_mm[{extra}]" (or "lbc_mm[all]")')


def build_model(cfg) -> Tuple[nn.Module, str]:
    """``(model, scope)``: ``cfg.model`` built (CPU, eval mode) in the registry of
    the config's ``default_scope`` (``ValueError`` when it sets none). Import lbc_mm
    first when the config uses its types."""
    scope = cfg.get('default_scope', None)
    if not scope:
        name = getattr(cfg, 'filename', None)
        raise ValueError(f'config {name + " " if name else ""}sets no default_scope '
                         "(add e.g. default_scope = 'mmdet' or 'mmpretrain')")
    missing = missing_library(scope)
    if missing is not None:
        raise ValueError(f'config {getattr(cfg, "filename", "")}: {"; ".join(missing)}')
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
    own, sd = model.state_dict(), state_dict
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shapes = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(sd))
              if torch.is_tensor(sd[k]) and sd[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing keys ({_examples(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys ({_examples(unexpected)})')
    if shapes:
        parts.append(f'{len(shapes)} shape mismatches ({"; ".join(shapes[:2])})')
    return '; '.join(parts) or None


def check_checkpoint(model: nn.Module, path: str, allow_partial: bool = False
                     ) -> Tuple[Dict[str, object], Optional[str]]:
    """Read ``path`` (a file or an address,
    :func:`lbc_mm.checkpoint_io.read_any_checkpoint`) and check it fits ``model``
    (unwrapped): the one check every tool runs before it uses a checkpoint.

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
    """Load a checkpoint into ``model`` strictly (:func:`check_checkpoint` first);
    return the whole checkpoint (``meta`` etc.)."""
    ckpt, _ = check_checkpoint(model, path)
    model.load_state_dict(state_dict_of(ckpt), strict=True)
    return ckpt
