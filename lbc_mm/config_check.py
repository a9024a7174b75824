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
* what a method's registration requires (:attr:`SparsityMethod.requires
  <lbc_mm.methods.SparsityMethod.requires>`; LBC: an ``LBCHook`` and the scores'
  optimizer constructor): a config with the hook and an ``optim_wrapper`` names
  the constructor (or another of its own: the optimizer is built before any hook
  runs, so only the constructor can give the scores their settings). The tools do
  not add it behind the config's back, so a config trains the same under mmdet's
  and mmpretrain's own ``tools/train.py``;
* (training) a config with LBC layers lists an ``LBCHook``: a child config's
  ``custom_hooks`` replaces its base's list, and without the hook the run would end
  dense. The layers also refuse to train in an mmengine run without one
  (:meth:`lbc_mm.methods.LBC.check_driven`), for the entry points that
  never call this check (mmdet's and mmpretrain's own ``tools/train.py``).
"""
import difflib
import inspect
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from .compat import missing_extra
from .hooks import FiniteCheckHook, LBCHook
from .layers import NMSparseConv, NMSparseLinear
from .methods import METHODS, check_sparsity_args, option_names
from .sparse_config import node_method, sparse_nodes, type_name
from .transforms import NMSparsify

#: Layer types (config ``type`` names) whose arguments are checked.
LAYERS = {cls.__name__: cls for cls in (NMSparseConv, NMSparseLinear)}
#: Hooks whose ``custom_hooks`` arguments are checked.
HOOKS = {'LBCHook': LBCHook, 'FiniteCheckHook': FiniteCheckHook}
#: Keys mmengine itself takes from a config dict of a layer / hook.
META_KEYS = ('type', '_scope_')
HOOK_META_KEYS = META_KEYS + ('priority', )
#: ``optim_wrapper.constructor`` values that mean mmengine's default constructor.
DEFAULT_CONSTRUCTORS = (None, 'DefaultOptimWrapperConstructor')


class ConfigError(ValueError):
    """A wrong lbc_mm setting in a config; ``key`` is its ``--cfg-options`` key."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f'config error: {key}: {problem}; {fix}')


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
    name = type_name(cfg)
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
    name = type_name(cfg)
    hook = HOOKS[name]
    _unknown(key, cfg, list(_parameters(hook.__init__)), HOOK_META_KEYS, name)
    args = {k: v for k, v in cfg.items() if k not in HOOK_META_KEYS}
    try:
        hook(**args)  # the constructor only validates and stores its arguments
    except ValueError as err:
        raise ConfigError(key, str(err), 'set valid values there') from None


def _hooks(cfg, hook: str) -> List[dict]:
    return [h for h in cfg.get('custom_hooks', None) or []
            if isinstance(h, dict) and type_name(h) == hook]


def check_optim_constructor(cfg) -> None:
    """A config with a method's hook (``LBCHook``) must not build its optimizer
    with the default constructor: it needs the method's (the registration says
    which).

    Raises:
        ConfigError: Naming ``optim_wrapper.constructor`` and the fix.
    """
    optim_wrapper = cfg.get('optim_wrapper', None)
    if not isinstance(optim_wrapper, dict):
        return
    constructor = optim_wrapper.get('constructor', None)
    if constructor is not None:
        constructor = type_name(dict(type=constructor))
    for cls in METHODS.values():
        req = cls.requires
        if (req is not None and _hooks(cfg, req.hook)
                and constructor in DEFAULT_CONSTRUCTORS):
            raise ConfigError(
                'optim_wrapper.constructor',
                f"a config with an {req.hook} needs the {cls.label} scores' "
                f'optimizer settings',
                f"add constructor='{req.constructor}' to optim_wrapper in the "
                f'config')


def check_hook_present(cfg) -> None:
    """A config with layers of a method that requires a hook (LBC: ``LBCHook``)
    must list it in ``custom_hooks``.

    mmengine replaces lists: a child config that sets its own ``custom_hooks``
    drops its base's ``LBCHook``, and the run would end dense without a word.

    Raises:
        ConfigError: Naming ``custom_hooks``, the layers' key and the fix.
    """
    for key, node in sparse_nodes(cfg.get('model', None)):
        method = node_method(node)
        req = METHODS[method].requires if method in METHODS else None
        if req is None or _hooks(cfg, req.hook):
            continue
        raise ConfigError(
            'custom_hooks',
            f'{key} makes {METHODS[method].label} layers but no {req.hook} '
            f"{req.duty}, so {req.without} (a child config's custom_hooks replaces "
            f"its base's list, dropping the {req.hook})",
            f"add dict(type='{req.hook}', ...) to custom_hooks")


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
    for key, item in sparse_nodes(cfg.get('model', None)):
        check_layer_cfg(key, item)
    for i, hook in enumerate(cfg.get('custom_hooks', None) or []):
        if isinstance(hook, dict) and type_name(hook) in HOOKS:
            check_hook_cfg(f'custom_hooks.{i}', hook)
    check_optim_constructor(cfg)
    if training:
        check_hook_present(cfg)


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
