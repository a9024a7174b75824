"""Check the lbc_mm parts of a config before anything is built.

Without this a wrong ``n`` / ``m``, an unknown method, a misspelt layer option or a
wrong ``LBCHook`` argument surfaces as the last line of a 17-63 line traceback from
deep inside the model or hook construction. The tools call
:func:`exit_on_config_error` right after merging the command line, so the user gets
one line naming the config key (in ``--cfg-options`` form) and the fix, exit 2.

The rules are not written twice: the sparse layers' argument rules are
:func:`lbc_mm.methods.check_sparsity_args` (the layers call it too), the option names
come from the method registry and the layers', the transform's and the hooks'
signatures, and a hook's
argument values are checked by its own constructor (which only validates and
stores them).

What is checked:

* every dict in ``model`` whose ``type`` is ``NMSparseConv`` / ``NMSparseLinear``
  (e.g. ``model.backbone.conv_cfg``) or ``NMSparsify``: unknown options, and
  ``n`` / ``m`` / ``method`` / ``srste_lambda``;
* every ``custom_hooks`` entry of type ``LBCHook`` or ``FiniteCheckHook``: unknown
  arguments, and the values the hook's constructor refuses;
* a config with an ``LBCHook`` and an ``optim_wrapper`` names
  ``constructor='LBCOptimWrapperConstructor'`` (or another constructor of its own):
  the optimizer is built before any hook runs, so only the constructor can give the
  scores their settings (:mod:`lbc_mm.optim`). The tools do not add it behind the
  config's back, so a config trains the same under mmdet's and mmpretrain's own
  ``tools/train.py``;
* (training) a config with LBC layers lists an ``LBCHook``: a child config's
  ``custom_hooks`` replaces its base's list, and without the hook the run would end
  dense. The layers also refuse to train in a Runner without one
  (:meth:`lbc_mm.methods.LBC.check_driven`), for the entry points that
  never call this check (mmdet's and mmpretrain's own ``tools/train.py``).
"""
import difflib
import inspect
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .compat import missing_extra
from .hooks import FiniteCheckHook, LBCHook
from .layers import NMSparseConv, NMSparseLinear
from .methods import METHODS, check_sparsity_args, option_names
from .transforms import NMSparsify

#: Layer types (config ``type`` names) whose arguments are checked.
LAYERS = {'NMSparseConv': NMSparseConv, 'NMSparseLinear': NMSparseLinear}
#: Hooks whose ``custom_hooks`` arguments are checked.
HOOKS = {'LBCHook': LBCHook, 'FiniteCheckHook': FiniteCheckHook}
#: Keys mmengine itself takes from a config dict of a layer / hook.
META_KEYS = ('type', '_scope_')
HOOK_META_KEYS = META_KEYS + ('priority', )
#: Optimizer constructor an ``LBCHook`` config needs (:mod:`lbc_mm.optim`).
LBC_CONSTRUCTOR = 'LBCOptimWrapperConstructor'
#: ``optim_wrapper.constructor`` values that mean mmengine's default constructor.
DEFAULT_CONSTRUCTORS = (None, 'DefaultOptimWrapperConstructor')


class ConfigError(ValueError):
    """A wrong lbc_mm setting in a config; ``key`` is its ``--cfg-options`` key."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f'config error: {key}: {problem}; {fix}')


def _type_name(cfg: dict) -> Optional[str]:
    """The registered name of ``cfg['type']`` without a scope (``'lbc_mm.X'``)."""
    kind = cfg.get('type', None)
    if isinstance(kind, type) or callable(kind):
        return getattr(kind, '__name__', None)
    if isinstance(kind, str):
        return kind.rsplit('.', 1)[-1].rsplit('::', 1)[-1]
    return None


def _walk(obj: Any, key: str) -> Iterator[Tuple[str, dict]]:
    """``(dotted key, dict)`` for every dict inside ``obj`` (lists by index)."""
    if isinstance(obj, dict):
        yield key, obj
        for name, value in obj.items():
            yield from _walk(value, f'{key}.{name}' if key else str(name))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk(value, f'{key}.{i}')


def _parameters(func: Callable) -> Dict[str, inspect.Parameter]:
    params = dict(inspect.signature(func).parameters)
    params.pop('self', None)
    return {name: p for name, p in params.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _unknown(key: str, cfg: dict, allowed: List[str], meta: Tuple[str, ...],
             what: str) -> None:
    for name in cfg:
        if name in meta or name in allowed:
            continue
        close = difflib.get_close_matches(str(name), allowed, n=1)
        fix = (f'did you mean {close[0]!r}?' if close else
               f'remove it; {what} takes {", ".join(allowed)}')
        raise ConfigError(f'{key}.{name}', f'{what} has no option {name!r}', fix)


def _layer_options() -> List[str]:
    """Keyword options of the sparse layers: ``n``, ``m``, ``method``, ``strict``
    and every registered method's options (``srste_lambda``, ``tie_break`` ...)."""
    params = _parameters(NMSparseConv.__init__)
    return [name for name, p in params.items() if p.kind == p.KEYWORD_ONLY
            ] + list(option_names())


def _check_sparse_args(key: str, cfg: dict, defaults: Dict[str, Any],
                       what: str) -> None:
    args = {name: cfg.get(name, defaults[name]) for name in ('n', 'm', 'method')}
    options = {name: cfg[name] for name in option_names() if name in cfg}
    try:
        check_sparsity_args(**args, **options)
    except ValueError as err:
        raise ConfigError(key, f'{what}: {err}',
                          f'set valid values there (0 < N < M; method one of '
                          f'{", ".join(METHODS)}, each with its own options: '
                          f'lbc_mm.methods)') from None


def check_layer_cfg(key: str, cfg: dict) -> None:
    """Check one ``NMSparseConv`` / ``NMSparseLinear`` / ``NMSparsify`` dict.

    Raises:
        ConfigError: Naming the key and the fix.
    """
    name = _type_name(cfg)
    if name in LAYERS:
        params = _parameters(LAYERS[name].__init__)
        _unknown(key, cfg, list(params) + list(option_names()), META_KEYS, name)
    else:
        params = _parameters(NMSparsify)
        # NMSparsify passes its other keyword options on to the layers.
        extra = [opt for opt in _layer_options() if opt not in params]
        _unknown(key, cfg, list(params) + extra, META_KEYS, name)
        params.update(_parameters(NMSparseConv.__init__))
    defaults = {n: p.default for n, p in params.items()}
    _check_sparse_args(key, cfg, defaults, name)


def check_hook_cfg(key: str, cfg: dict) -> None:
    """Check one ``LBCHook`` / ``FiniteCheckHook`` dict of ``custom_hooks``.

    Raises:
        ConfigError: Naming the key and the fix.
    """
    name = _type_name(cfg)
    hook = HOOKS[name]
    _unknown(key, cfg, list(_parameters(hook.__init__)), HOOK_META_KEYS, name)
    args = {k: v for k, v in cfg.items() if k not in HOOK_META_KEYS}
    try:
        hook(**args)  # the constructor only validates and stores its arguments
    except ValueError as err:
        raise ConfigError(key, str(err), 'set valid values there') from None


def check_optim_constructor(cfg) -> None:
    """An ``LBCHook`` config must not build its optimizer with the default constructor.

    Raises:
        ConfigError: Naming ``optim_wrapper.constructor`` and the fix.
    """
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if isinstance(h, dict) and _type_name(h) == 'LBCHook']
    optim_wrapper = cfg.get('optim_wrapper', None)
    if not hooks or not isinstance(optim_wrapper, dict):
        return
    constructor = optim_wrapper.get('constructor', None)
    if constructor is not None:
        constructor = _type_name(dict(type=constructor))
    if constructor in DEFAULT_CONSTRUCTORS:
        raise ConfigError(
            'optim_wrapper.constructor',
            "a config with an LBCHook needs the LBC scores' optimizer settings",
            f"add constructor='{LBC_CONSTRUCTOR}' to optim_wrapper in the config")


def _lbc_layer_key(cfg) -> Optional[str]:
    """The key of the first ``method='lbc'`` layer / transform dict in ``model``."""
    for key, item in _walk(cfg.get('model', None), 'model'):
        name = _type_name(item)
        if name in LAYERS or name == 'NMSparsify':
            params = _parameters(LAYERS[name].__init__ if name in LAYERS
                                 else NMSparsify)
            if item.get('method', params['method'].default) == 'lbc':
                return key
    return None


def check_lbc_hook_present(cfg) -> None:
    """A config with LBC layers must list an ``LBCHook`` in ``custom_hooks``.

    mmengine replaces lists: a child config that sets its own ``custom_hooks``
    drops its base's ``LBCHook``, and the run would end dense without a word.

    Raises:
        ConfigError: Naming ``custom_hooks``, the LBC layers' key and the fix.
    """
    key = _lbc_layer_key(cfg)
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if isinstance(h, dict) and _type_name(h) == 'LBCHook']
    if key is None or hooks:
        return
    raise ConfigError(
        'custom_hooks',
        f"{key} makes LBC layers but no LBCHook removes their candidates, so the "
        f"run would end dense (a child config's custom_hooks replaces its base's "
        f'list, dropping the LBCHook)',
        "add dict(type='LBCHook', ...) to custom_hooks")


def check_config(cfg, training: bool = True) -> None:
    """Check the lbc_mm parts of a (merged) config.

    Args:
        cfg (Config | dict): The config.
        training (bool): The config is about to train (LBC layers need an
            ``LBCHook``). Defaults to True.

    Raises:
        ConfigError: The first problem, naming its key and the fix.
    """
    scope = cfg.get('default_scope', None)
    fix = missing_extra(scope)  # mmdet / mmpretrain are extras
    if fix is not None:
        raise ConfigError('default_scope', f'{scope!r} needs {scope}, which is not '
                          'installed', fix)
    for key, item in _walk(cfg.get('model', None), 'model'):
        if _type_name(item) in LAYERS or _type_name(item) == 'NMSparsify':
            check_layer_cfg(key, item)
    for i, hook in enumerate(cfg.get('custom_hooks', None) or []):
        if isinstance(hook, dict) and _type_name(hook) in HOOKS:
            check_hook_cfg(f'custom_hooks.{i}', hook)
    check_optim_constructor(cfg)
    if training:
        check_lbc_hook_present(cfg)


def find_config_error(cfg, training: bool = True) -> Optional[str]:
    """The one-line message of :func:`check_config`, or None when all is well."""
    try:
        check_config(cfg, training)
    except ConfigError as err:
        return str(err)
    return None


def exit_on_config_error(cfg, training: bool = True) -> None:
    """Print the config's first lbc_mm problem on stderr and exit 2 (tools;
    ``training=False`` for testing: no ``LBCHook`` needed)."""
    message = find_config_error(cfg, training)
    if message is not None:
        print(message, file=sys.stderr)
        raise SystemExit(2)
