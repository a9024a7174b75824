"""Config -> model -> checkpoint: the one place every stage loads them.

Used by export (``tools/convert.py``), deploy (``tools/benchmark.py``,
``tools/export_onnx.py``), ``tools/test.py`` / ``tools/train.py --resume`` (through
``lbc_mm.cli``) and the benchmarks / studies (mmdet's ``mmdet.apis`` is the
precedent). It imports no other lbc_mm module, so every layer may import it.

Configs may be repo paths or ``pkg::dir/file.py`` (read from ``<pkg>/.mim/configs``,
like mmengine does, but without needing ``pkg_resources`` at run time).

Checkpoints are read weights-only, whatever their address: a local file with
:func:`read_checkpoint`; a URL (``http(s)://``, and mmengine's ``torchvision://``,
``open-mmlab://``, ``mmcls://`` names, which resolve to URLs) is downloaded once into
the torch hub cache and that file is read the same way (:func:`read_url_checkpoint`;
``lbc_mm.compat`` routes mmengine's loaders, and so ``load_from``, ``resume`` and
``init_cfg``, through these). A file that pickles anything but tensors, plain
containers and mmengine's checkpoint objects is refused in one line naming the global.
"""
import importlib
import importlib.util
import os
import pickle
import re
import urllib.error
import zipfile
import zlib
from typing import Dict, Optional, Tuple
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = ['CheckpointMismatchError', 'build_model', 'check_checkpoint',
           'checkpoint_mismatch', 'download_checkpoint', 'load_checkpoint_into',
           'load_config', 'read_any_checkpoint', 'read_checkpoint',
           'read_url_checkpoint', 'resolve_config', 'state_dict_of',
           'verify_archive']


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


def verify_archive(path: str, where: Optional[str] = None) -> None:
    """Check the CRC of every entry of a (zip-format) torch checkpoint.

    ``torch.load`` does not check CRCs: a checkpoint whose stored bytes changed on
    disk (bit rot, a bad copy) loads silently wrong weights. Files in torch's
    legacy (non-zip) format are left to ``torch.load``.

    Args:
        path (str): the file.
        where (str, optional): how messages name it. Defaults to ``path``.

    Raises:
        CheckpointMismatchError: an entry's bytes do not match its CRC (naming
            the entry), or the archive is truncated / broken.
    """
    where = path if where is None else where
    with open(path, 'rb') as f:
        if f.read(4) != b'PK\x03\x04':
            return  # legacy format, or not an archive at all: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise CheckpointMismatchError(
            f'checkpoint {where} is corrupted (truncated or damaged zip archive: '
            f'{exc})') from None
    if bad is not None:
        raise CheckpointMismatchError(
            f'checkpoint {where} is corrupted: entry {bad} does not match its CRC '
            f'(the file changed after it was written); use another copy')


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ''


def refusal_line(path: str, exc: pickle.UnpicklingError) -> str:
    """One line saying why weights-only loading refused ``path`` (any name of it).

    torch's message suggests ``weights_only=False`` (arbitrary code execution) and
    hides the offending global in its last lines: keep the global, drop the advice.
    """
    text = str(exc)
    found = re.search(r'GLOBAL [\w.]+', text)
    if found:
        return (f'checkpoint {path} refused: it pickles {found.group(0)}, which '
                f'weights-only loading does not allow (lbc_mm loads tensors, plain '
                f'containers and the objects mmengine checkpoints hold, nothing '
                f'else); do not load this file unless you know where it comes from')
    detail = text.split('WeightsUnpickler error:', 1)[-1].strip()
    detail = _first_line(detail) if 'weights_only' not in _first_line(detail) else ''
    return (f'checkpoint {path} refused: not a weights-only loadable checkpoint'
            + (f' ({detail})' if detail else ''))


def read_checkpoint(path: str, where: Optional[str] = None,
                    map_location=None) -> Dict[str, object]:
    """``torch.load(path, weights_only=True)`` with one-line errors.

    Import lbc_mm first: its compat module allow-lists the mmengine globals that
    mmengine checkpoints contain. The archive's CRCs are verified first
    (:func:`verify_archive`).

    Args:
        path (str): local file.
        where (str, optional): how messages name it (e.g. its URL and cache
            file). Defaults to ``path``.
        map_location: as :func:`torch.load`. Defaults to None (CPU).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: corrupted, not a loadable (weights-only)
            checkpoint, or refused (the message names the global it pickles).
    """
    where = path if where is None else where
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {where}')
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
        if not head:
            raise CheckpointMismatchError(f'checkpoint {where} is empty')
        if head != b'PK\x03\x04' and head[:1] != b'\x80':  # zip / legacy pickle
            raise CheckpointMismatchError(
                f'{where} is not a torch checkpoint (neither a zip archive nor a '
                f'pickle)')
        verify_archive(path, where)
    except OSError as exc:
        raise CheckpointMismatchError(
            f'cannot read checkpoint {where}: {exc.strerror or exc}') from None
    try:
        ckpt = torch.load(path, map_location=map_location or 'cpu',
                          weights_only=True)
    except OSError as exc:
        raise CheckpointMismatchError(
            f'cannot read checkpoint {where}: {exc.strerror or exc}') from None
    except pickle.UnpicklingError as exc:  # weights-only refusal, or not a pickle
        raise CheckpointMismatchError(refusal_line(where, exc)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as exc:
        # the zip reader, or a legacy-format pickle cut short / malformed
        raise CheckpointMismatchError(
            f'cannot read checkpoint {where}: {type(exc).__name__}: '
            f'{_first_line(exc)}') from None
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'checkpoint {where} is not a dict')
    return ckpt


def download_checkpoint(url: str, model_dir: Optional[str] = None,
                        file_name: Optional[str] = None, progress: bool = True,
                        check_hash: bool = False) -> str:
    """The local copy of ``url`` in the torch hub cache, downloaded if absent.

    Where ``torch.hub.load_state_dict_from_url`` keeps it: ``model_dir`` or
    ``<TORCH_HOME>/hub/checkpoints``, named after the URL's file (or
    ``file_name``); the download goes to a temporary file first.

    Raises:
        CheckpointMismatchError: the download failed (one line with the reason).
    """
    from torch.hub import HASH_REGEX, download_url_to_file, get_dir
    model_dir = model_dir or os.path.join(get_dir(), 'checkpoints')
    name = file_name or os.path.basename(urlparse(url).path)
    cached = os.path.join(model_dir, name)
    if os.path.exists(cached):
        return cached
    found = HASH_REGEX.search(name) if check_hash else None
    try:
        os.makedirs(model_dir, exist_ok=True)
        download_url_to_file(url, cached, found.group(1) if found else None,
                             progress=progress)
    except (OSError, RuntimeError) as exc:  # URLError / HTTPError are OSErrors
        reason = (str(exc) if isinstance(exc, urllib.error.HTTPError) else
                  exc.reason if isinstance(exc, urllib.error.URLError) else
                  exc.strerror or _first_line(exc))
        raise CheckpointMismatchError(
            f'cannot download checkpoint {url} to {cached}: {reason}') from None
    return cached


def read_url_checkpoint(url: str, model_dir: Optional[str] = None,
                        map_location=None, progress: bool = True,
                        check_hash: bool = False, file_name: Optional[str] = None,
                        **_ignored) -> Dict[str, object]:
    """``torch.hub.load_state_dict_from_url`` (mmengine's ``load_url``), but
    weights-only with :func:`read_checkpoint`'s one-line errors, which name the URL
    and the cache file. Other keyword arguments (``weights_only``) are ignored:
    it is always weights-only."""
    cached = download_checkpoint(url, model_dir, file_name, progress, check_hash)
    return read_checkpoint(cached, f'{url} (cached as {cached})', map_location)


def read_any_checkpoint(path: str) -> Dict[str, object]:
    """A checkpoint from a local path or any address mmengine knows (``http(s)://``,
    ``torchvision://``, ``open-mmlab://``, ``s3://`` ...), weights-only.

    Addresses go through mmengine's ``CheckpointLoader``, which ``lbc_mm.compat``
    makes weights-only (URLs: :func:`read_url_checkpoint`).
    """
    if '://' not in path:
        return read_checkpoint(path)
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
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
    :func:`read_any_checkpoint`) and check it fits ``model``.

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
