"""Version shims for the OpenMMLab stack lbc_mm runs on.

Imported first by ``lbc_mm/__init__.py``. Each shim states the versions it covers and
why it exists (details: ``docs/platform.md``). All shims are
idempotent.

1. mmpretrain 1.2.0 + transformers >= 5: ``import mmpretrain.models`` dies with
   ``TypeError: NoneType takes no arguments`` (its BLIP language model), and
   ``import mmdet.models`` imports mmpretrain when present, so it dies too. We turn
   mmpretrain's multimodal models off (``WITH_MULTIMODAL = False``) before its models
   are imported. Classification and detection models are unaffected.
2. torch >= 2.6 loads checkpoints with ``weights_only=True`` by default; mmengine 0.10.7
   stores ``HistoryBuffer`` objects and numpy arrays/scalars in the message hub of every
   checkpoint, so ``--resume`` fails. We allow-list exactly those globals with
   ``torch.serialization.add_safe_globals``; weights-only loading stays on, so a
   checkpoint carrying any other pickled callable is still refused. Stock mmengine
   also pickles ``HistoryBuffer``'s class-wide statistics table, as
   ``getattr(HistoryBuffer, 'min' | 'max' | 'current' | 'mean')``: ``GLOBAL
   builtins.getattr`` resolves to :func:`history_buffer_getattr`, which allows
   those four lookups and refuses any other. A loaded buffer never changes the
   class-wide table (stock ``__setstate__`` merges the file's table into it), and
   lbc_mm saves buffers without it.
3. mmengine 0.10.7 resolves ``_base_ = 'pkg::dir/file.py'`` only for the packages in its
   hard-coded ``MODULE2PACKAGE`` and reads ``<pkg>/.mim/configs``: we add ``lbc_mm``,
   point mmengine at this package's directory (pkg_resources reports site-packages for
   PEP 660 editable installs), and register ``lbc_mm``-scoped child registries so
   objects in configs inherited through ``lbc_mm::`` still build.
4. setuptools' "pkg_resources is deprecated" warning, raised by mmengine's imports on
   every run, is filtered (that message only).
5. mmengine 0.10.7 loads every URL checkpoint (``http(s)://``, and ``torchvision://``,
   ``modelzoo://``, ``open-mmlab://``, ``mmcls://``, which resolve to URLs) with
   ``torch.hub.load_state_dict_from_url``, whose default is ``weights_only=False``:
   a file in the hub cache (``$TORCH_HOME/hub/checkpoints``) or behind a URL could
   run code when a config's ``init_cfg``, ``load_from`` or ``resume`` names it. Its
   ``load_url`` becomes :func:`lbc_mm.checkpoint_io.read_url_checkpoint`
   (weights-only), local files go through
   :func:`lbc_mm.checkpoint_io.read_checkpoint` (CRC-checked), and the other
   schemes (``s3://``, ``pavi://``, ``open-mmlab://`` names of local files), which
   call ``torch.load`` without ``weights_only`` (so
   ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` would turn it off), see a ``torch`` whose
   ``load`` always passes ``weights_only=True``. A refusal is one line naming the
   global; the config text a checkpoint stores is dropped on load
   (:func:`lbc_mm.checkpoint_io.drop_config_text`: mmengine's resume and
   inferencers run it as Python); an ``init_cfg`` ``Pretrained`` checkpoint that
   cannot be loaded into its module (missing, unreadable, refused, or holding
   another N:M pattern / method) raises ``CheckpointMismatchError``, which the
   tools print in one line.
"""
import functools
import importlib.metadata
import importlib.util
import os.path as osp
import pickle
import sys
import types
from typing import Callable, List, Optional

# The first transformers major version that breaks mmpretrain 1.2.0's multimodal models.
TRANSFORMERS_BREAKING_MAJOR = 5


def installed_version(dist_name: str) -> Optional[str]:
    """Version string of an installed distribution, or None (without importing it)."""
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


#: ``default_scope`` -> the lbc_mm extra that installs its library.
SCOPE_EXTRAS = {'mmdet': 'det', 'mmpretrain': 'cls'}


def missing_extra(scope: Optional[str]) -> Optional[str]:
    """``'pip install "lbc_mm[<extra>]" ...'`` when the library of a config's
    ``default_scope`` is not installed (mmdet and mmpretrain are extras), else None."""
    extra = SCOPE_EXTRAS.get(scope or '')
    if extra is None:
        return None
    try:
        if importlib.util.find_spec(scope) is not None:
            return None
    except (ImportError, ValueError):  # a broken or blocked install: missing too
        pass
    return f'pip install "lbc_mm[{extra}]" (or "lbc_mm[all]")'


def transformers_breaks_mmpretrain(version: Optional[str] = None) -> bool:
    """Whether this transformers version breaks ``import mmpretrain.models`` (1.2.0).

    Args:
        version (str, optional): Version to judge. Defaults to the installed one.
    """
    version = installed_version('transformers') if version is None else version
    if version is None:
        return False
    major = version.split('.')[0]
    return major.isdigit() and int(major) >= TRANSFORMERS_BREAKING_MAJOR


def disable_mmpretrain_multimodal_if_needed() -> bool:
    """Turn mmpretrain's multimodal models off when transformers is too new.

    Returns:
        bool: True when the multimodal models were turned off.
    """
    if importlib.util.find_spec('mmpretrain') is None:
        return False
    if not transformers_breaks_mmpretrain():
        return False
    # ``mmpretrain.models``/``datasets`` copy the flag at import time
    # (``from ...dependency import WITH_MULTIMODAL``): it must be set before them.
    late = [m for m in ('mmpretrain.models', 'mmpretrain.datasets')
            if m in sys.modules]
    import mmpretrain.utils.dependency as dependency
    dependency.WITH_MULTIMODAL = False
    if late:
        import warnings
        warnings.warn(
            f'lbc_mm was imported after {late}; with transformers '
            f'{installed_version("transformers")} mmpretrain needs lbc_mm (or '
            'lbc_mm.compat) imported first to turn its multimodal models off.')
    return True


def mmengine_checkpoint_globals() -> List[object]:
    """Exactly the non-tensor globals mmengine 0.10.7 checkpoints contain.

    ``message_hub`` holds ``HistoryBuffer`` objects (numpy arrays of logged scalars)
    and numpy scalars in ``runtime_info``; numpy's reconstruct helpers and dtypes
    rebuild those arrays.
    """
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
    ``getattr(HistoryBuffer, name)`` for a name in :data:`HISTORY_BUFFER_STATISTICS`.

    Raises:
        pickle.UnpicklingError: any other lookup (``getattr(HistoryBuffer,
            '__init__')``, or on any other object).
    """
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


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint globals for weights-only ``torch.load``.

    Returns:
        bool: False on a torch without ``add_safe_globals`` (< 2.4), where loading
        is not weights-only by default and nothing is needed.
    """
    import torch.serialization
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    HistoryBuffer.__setstate__ = _history_buffer_setstate
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return False
    torch.serialization.add_safe_globals(
        mmengine_checkpoint_globals() + [(history_buffer_getattr, 'builtins.getattr')])
    return True


def register_config_prefix() -> None:
    """Make ``_base_ = 'lbc_mm::dir/file.py'`` resolve to this package's configs.

    The logic lives in the top-level ``lbc_mm_config_hook`` module, which the
    installed ``.pth`` file also uses for scripts that parse configs before
    importing lbc_mm.
    """
    from mmengine.config import config as config_module

    import lbc_mm_config_hook
    lbc_mm_config_hook.register(config_module)


def silence_pkg_resources_deprecation() -> None:
    """mmengine 0.10.7 imports ``pkg_resources`` (setuptools < 81 keeps it); the
    deprecation warning it triggers on every run concerns mmengine, not the user."""
    import warnings
    warnings.filterwarnings(
        'ignore', message='pkg_resources is deprecated', category=UserWarning)


def _one_line_refusal(loader: Callable) -> Callable:
    """A mmengine scheme loader whose weights-only refusal is one line and whose
    checkpoints come without the config text mmengine would run
    (:func:`lbc_mm.checkpoint_io.drop_config_text`)."""
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
    ``weights_only=True`` (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns weights-only
    loading off only where a call passes no ``weights_only``, as mmengine's s3 /
    pavi / open-mmlab loaders do); everything else is torch's."""

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

    init.lbc_mm_weights_only = True
    return init


def weights_only_mmengine_loading() -> bool:
    """Make every checkpoint mmengine loads weights-only, refusals one line.

    Returns:
        bool: False when already done (idempotent).
    """
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.runner import checkpoint as mm_checkpoint
    from mmengine.utils import dl_utils

    from .checkpoint_io import read_url_checkpoint
    loaders = mm_checkpoint.CheckpointLoader
    if getattr(loaders._schemes.get(''), 'lbc_mm_weights_only', False):
        return False
    # ``load_from_http`` (which torchvision://, open-mmlab://, mmcls:// call by its
    # module-level name) downloads with this ``load_url``.
    mm_checkpoint.load_url = read_url_checkpoint
    mm_checkpoint.torch = _WeightsOnlyTorch(mm_checkpoint.torch)
    dl_utils.load_url = dl_utils.hub.load_url = read_url_checkpoint
    for prefix, loader in list(loaders._schemes.items()):
        new = load_from_local if prefix == '' else loader
        loaders.register_scheme(prefix, _one_line_refusal(new), force=True)
    PretrainedInit.__call__ = _pretrained_call(PretrainedInit.__call__)
    return True


silence_pkg_resources_deprecation()
disable_mmpretrain_multimodal_if_needed()
allow_mmengine_checkpoints()
register_config_prefix()
weights_only_mmengine_loading()
