"""Version shims for the OpenMMLab stack lbc_mm runs on (details: docs/platform.md).

Imported first by ``lbc_mm/__init__.py``; every shim is idempotent.

1. mmpretrain 1.2.0 + transformers >= 5: ``import mmpretrain.models`` (and so
   ``mmdet.models``) dies in its BLIP model; its multimodal models are turned off.
2. mmengine 0.10.7 checkpoints hold ``HistoryBuffer`` and numpy objects, which
   weights-only ``torch.load`` refuses: exactly those globals are allow-listed, and
   ``GLOBAL builtins.getattr`` resolves to :func:`history_buffer_getattr` (only the
   four statistics lookups stock mmengine pickles). A loaded buffer never changes the
   class-wide statistics table, and lbc_mm saves buffers without it.
3. ``_base_ = 'lbc_mm::dir/file.py'`` resolves to this package's configs.
4. setuptools' "pkg_resources is deprecated" warning (mmengine's imports) is filtered.
5. Every checkpoint mmengine loads (``load_from``, ``resume``, ``init_cfg``, any
   scheme) is weights-only, even under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``: URLs
   through :func:`lbc_mm.checkpoint_io.read_url_checkpoint`, local files through
   :func:`lbc_mm.checkpoint_io.read_checkpoint` (CRC-checked), other schemes see a
   ``torch.load`` that always passes ``weights_only=True``. A refusal is one line
   naming the global, the config text a checkpoint stores is dropped (mmengine runs
   it as Python), and a ``Pretrained`` ``init_cfg`` that cannot be loaded is one
   ``CheckpointMismatchError`` line.
"""
import functools
import importlib.metadata
import importlib.util
import os.path as osp
import pickle
import sys
import types
import warnings
from typing import Callable, List, Optional

# The first transformers major version that breaks mmpretrain 1.2.0's multimodal models.
TRANSFORMERS_BREAKING_MAJOR = 5


def installed_version(dist_name: str) -> Optional[str]:
    """Version string of an installed distribution, or None (without importing it)."""
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def transformers_breaks_mmpretrain(version: Optional[str] = None) -> bool:
    """Whether this transformers version (default: the installed one) breaks
    ``import mmpretrain.models`` (1.2.0)."""
    version = installed_version('transformers') if version is None else version
    if version is None:
        return False
    major = version.split('.')[0]
    return major.isdigit() and int(major) >= TRANSFORMERS_BREAKING_MAJOR


def disable_mmpretrain_multimodal_if_needed() -> None:
    """Turn mmpretrain's multimodal models off when transformers is too new."""
    if (importlib.util.find_spec('mmpretrain') is None
            or not transformers_breaks_mmpretrain()):
        return
    # ``mmpretrain.models``/``datasets`` copy the flag at import time
    # (``from ...dependency import WITH_MULTIMODAL``): it must be set before them.
    late = [m for m in ('mmpretrain.models', 'mmpretrain.datasets')
            if m in sys.modules]
    import mmpretrain.utils.dependency as dependency
    dependency.WITH_MULTIMODAL = False
    if late:
        warnings.warn(
            f'lbc_mm was imported after {late}; with transformers '
            f'{installed_version("transformers")} mmpretrain needs lbc_mm (or '
            'lbc_mm.compat) imported first to turn its multimodal models off.')


def mmengine_checkpoint_globals() -> List[object]:
    """Exactly the non-tensor globals mmengine 0.10.7 checkpoints contain: the
    message hub's ``HistoryBuffer`` objects (numpy arrays) and numpy scalars."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
        np.int8, np.uint8, np.bool_)]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar,
            *dtype_classes]


#: The ``HistoryBuffer`` methods stock mmengine pickles (its class-wide statistics
#: table, ``_statistics_methods``), each as ``getattr(HistoryBuffer, name)``.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(*args):
    """``GLOBAL builtins.getattr`` as weights-only loading resolves it: only
    ``getattr(HistoryBuffer, name)`` for a name in :data:`HISTORY_BUFFER_STATISTICS`;
    any other lookup raises ``pickle.UnpicklingError``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if (len(args) == 2 and args[0] is HistoryBuffer
            and args[1] in HISTORY_BUFFER_STATISTICS):
        return getattr(HistoryBuffer, args[1])
    shown = ', '.join(getattr(a, '__qualname__', None) or repr(a)[:60] for a in args)
    raise pickle.UnpicklingError(
        f'GLOBAL getattr({shown}) is not allowed: only getattr(HistoryBuffer, '
        f'{"|".join(HISTORY_BUFFER_STATISTICS)})')


def _history_buffer_getstate(self) -> dict:
    """State of a ``HistoryBuffer`` without its class-wide statistics methods."""
    state = self.__dict__.copy()
    state.pop('statistics_methods', None)
    return state


def _history_buffer_setstate(self, state: dict) -> None:
    """Stock ``__setstate__`` merges the file's statistics table into the class-wide
    one (every buffer of the process): the file's table is ignored."""
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f'HistoryBuffer state is a {type(state).__name__}'
                                     ', not a dict')
    self.__dict__.update((k, v) for k, v in state.items() if k != 'statistics_methods')
    self._set_default_statistics()


def allow_mmengine_checkpoints() -> None:
    """Allow-list mmengine's checkpoint globals for weights-only ``torch.load``."""
    import torch.serialization
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    HistoryBuffer.__setstate__ = _history_buffer_setstate
    torch.serialization.add_safe_globals(
        mmengine_checkpoint_globals() + [(history_buffer_getattr, 'builtins.getattr')])


def register_config_prefix() -> None:
    """Make ``_base_ = 'lbc_mm::dir/file.py'`` resolve to this package's configs
    (the top-level ``lbc_mm_config_hook``, which the installed ``.pth`` also runs)."""
    from mmengine.config import config as config_module

    import lbc_mm_config_hook
    lbc_mm_config_hook.register(config_module)


def _one_line_refusal(loader: Callable) -> Callable:
    """A mmengine scheme loader whose weights-only refusal is one line and whose
    checkpoints come without config text."""
    from .checkpoint_io import CheckpointMismatchError, drop_config_text, refusal_line

    @functools.wraps(loader)  # keeps ``load_from_<scheme>``: mmengine logs the name
    def load(filename, map_location=None, *args, **kwargs):
        try:
            return drop_config_text(loader(filename, map_location, *args, **kwargs))
        except pickle.UnpicklingError as exc:
            raise CheckpointMismatchError(refusal_line(filename, exc)) from None

    load.lbc_mm_weights_only = True
    return load


class _WeightsOnlyTorch(types.ModuleType):
    """``torch`` as mmengine's checkpoint module sees it: ``load`` always passes
    ``weights_only=True`` (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only acts where a
    call passes none, as mmengine's s3 / pavi / open-mmlab loaders do)."""

    def __init__(self, torch_module) -> None:
        super().__init__('torch')
        self._torch = torch_module

    def __getattr__(self, name: str):
        return getattr(self._torch, name)

    def load(self, f, map_location=None, **kwargs):
        kwargs['weights_only'] = True
        return self._torch.load(f, map_location=map_location, **kwargs)


def load_from_local(filename: str, map_location=None) -> dict:
    """mmengine's local scheme, as :func:`lbc_mm.checkpoint_io.read_checkpoint`."""
    from .checkpoint_io import read_checkpoint
    return read_checkpoint(osp.expanduser(filename), map_location=map_location)


def _pretrained_call(call: Callable) -> Callable:
    """``PretrainedInit.__call__`` whose failures are one
    ``CheckpointMismatchError`` line naming the checkpoint and the module."""
    from .checkpoint_io import CheckpointMismatchError

    @functools.wraps(call)
    def init(self, module):
        try:
            return call(self, module)
        except CheckpointMismatchError:
            raise  # names the file and the problem already
        except (OSError, ValueError, RuntimeError, KeyError, AssertionError) as exc:
            detail = (f'no checkpoint named {exc.args[0]!r}' if isinstance(
                exc, KeyError) and exc.args else str(exc).strip().splitlines()[0]
                if str(exc).strip() else type(exc).__name__)
            prefix = f" (prefix '{self.prefix}')" if self.prefix else ''
            raise CheckpointMismatchError(
                f'init_cfg Pretrained checkpoint {self.checkpoint}{prefix} into '
                f'{type(module).__name__}: {detail}') from exc

    return init


def weights_only_mmengine_loading() -> None:
    """Make every checkpoint mmengine loads weights-only, refusals one line."""
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.runner import checkpoint as mm_checkpoint
    from mmengine.utils import dl_utils

    from .checkpoint_io import read_url_checkpoint
    loaders = mm_checkpoint.CheckpointLoader
    if getattr(loaders._schemes.get(''), 'lbc_mm_weights_only', False):
        return
    # ``load_from_http`` (which torchvision://, open-mmlab://, mmcls:// call by its
    # module-level name) downloads with this ``load_url``.
    mm_checkpoint.load_url = read_url_checkpoint
    mm_checkpoint.torch = _WeightsOnlyTorch(mm_checkpoint.torch)
    dl_utils.load_url = dl_utils.hub.load_url = read_url_checkpoint
    for prefix, loader in list(loaders._schemes.items()):
        new = load_from_local if prefix == '' else loader
        loaders.register_scheme(prefix, _one_line_refusal(new), force=True)
    PretrainedInit.__call__ = _pretrained_call(PretrainedInit.__call__)


# mmengine 0.10.7 imports ``pkg_resources``; the warning concerns it, not the user.
warnings.filterwarnings(
    'ignore', message='pkg_resources is deprecated', category=UserWarning)
disable_mmpretrain_multimodal_if_needed()
allow_mmengine_checkpoints()
register_config_prefix()
weights_only_mmengine_loading()
