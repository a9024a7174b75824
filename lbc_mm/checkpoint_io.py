"""Reading checkpoints, weights-only, from any address: the one reader every stage uses.

A local file is CRC-checked (``torch.load`` does not) and loaded with
``weights_only=True`` (:func:`read_checkpoint`); a URL (``http(s)://``, and mmengine's
``torchvision://``, ``open-mmlab://``, ``mmcls://`` names) is downloaded once into the
torch hub cache and read the same way (:func:`read_url_checkpoint`; ``lbc_mm.compat``
routes mmengine's loaders through these). A refusal is one line naming the global
(:func:`refusal_line`); the config text mmengine stores is dropped
(:func:`drop_config_text`). Imports no other lbc_mm module; whether a checkpoint fits
a model is :mod:`lbc_mm.apis`.
"""
import os
import pickle
import re
import urllib.error
import zipfile
import zlib
from typing import Dict, Optional
from urllib.parse import urlparse

import torch

__all__ = ['CheckpointMismatchError', 'drop_config_text', 'read_any_checkpoint',
           'read_checkpoint', 'read_url_checkpoint', 'refusal_line', 'verify_archive']


class CheckpointMismatchError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupted or refused, or its
    keys / shapes do not fit the model built from the config."""


def verify_archive(path: str, where: str) -> None:
    """Check that ``path`` is a torch checkpoint and the CRC of every entry of a zip
    one (bit rot or a bad copy would otherwise load silently wrong weights; legacy
    pickles are left to ``torch.load``). ``where``: how messages name the file.

    Raises:
        CheckpointMismatchError: empty, not a zip / pickle, an entry does not match
            its CRC (naming it), or the archive is truncated / broken.
    """
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head:
        raise CheckpointMismatchError(f'checkpoint {where} is empty')
    if head[:1] == b'\x80':  # legacy pickle
        return
    if head != b'PK\x03\x04':
        raise CheckpointMismatchError(
            f'{where} is not a torch checkpoint (neither a zip archive nor a pickle)')
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
    """One line saying why weights-only loading refused ``path``: the global that
    torch's message hides in its last lines, without its ``weights_only=False``
    advice (arbitrary code execution)."""
    text = str(exc)
    found = re.search(r'GLOBAL [\w.]+(\([^)]*\))?', text)
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
    """``torch.load(path, weights_only=True)`` of a CRC-checked local file
    (:func:`verify_archive`), config text dropped, with one-line errors. ``where``:
    how messages name it (e.g. its URL and cache file); ``map_location`` defaults
    to CPU. Import lbc_mm first (``lbc_mm.compat`` allow-lists mmengine's globals).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: corrupted, not a loadable (weights-only)
            checkpoint, or refused (the message names the global it pickles).
    """
    where = path if where is None else where
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {where}')
    try:
        verify_archive(path, where)
        ckpt = torch.load(path, map_location=map_location or 'cpu',
                          weights_only=True)
    except CheckpointMismatchError:
        raise
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
    return drop_config_text(ckpt)


def drop_config_text(ckpt):
    """``ckpt`` without (removed in place) the config text mmengine stores in it,
    which ``Runner.resume`` and inferencers built without a config run as Python."""
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    hub = ckpt.get('message_hub') if isinstance(ckpt, dict) else None
    info = hub.get('runtime_info') if isinstance(hub, dict) else None
    for holder, key in ((meta, 'config'), (meta, 'cfg'), (info, 'cfg')):
        if isinstance(holder, dict):
            holder.pop(key, None)
    return ckpt


def read_url_checkpoint(url: str, model_dir: Optional[str] = None,
                        map_location=None, progress: bool = True,
                        check_hash: bool = False, file_name: Optional[str] = None,
                        **_ignored) -> Dict[str, object]:
    """``torch.hub.load_state_dict_from_url`` (mmengine's ``load_url``: the same
    cache file, downloaded if absent) read by :func:`read_checkpoint`, whose lines
    name the URL and the cache file; a failed download is one line too. Always
    weights-only (other keyword arguments, ``weights_only`` among them, are
    ignored)."""
    from torch.hub import HASH_REGEX, download_url_to_file, get_dir
    model_dir = model_dir or os.path.join(get_dir(), 'checkpoints')
    cached = os.path.join(model_dir, file_name or os.path.basename(urlparse(url).path))
    if not os.path.exists(cached):
        found = HASH_REGEX.search(os.path.basename(cached)) if check_hash else None
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
    return read_checkpoint(cached, f'{url} (cached as {cached})', map_location)


def read_any_checkpoint(path: str) -> Dict[str, object]:
    """A checkpoint from a local path or any address mmengine's ``CheckpointLoader``
    knows (``http(s)://``, ``torchvision://``, ``s3://`` ...), weights-only."""
    if '://' not in path:
        return read_checkpoint(path)
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'checkpoint {path} is not a dict')
    return ckpt
