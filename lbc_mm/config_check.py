"""Check the lbc_mm parts of a config before anything is built.

A wrong ``n`` / ``m``, an unknown method, a misspelt layer option or a wrong hook
argument would otherwise surface deep in a traceback; the tools call
:func:`exit_on_config_error` after merging the command line: one line naming the
config key (in ``--cfg-options`` form) and the fix, exit 2.

Nothing is restated: the layers' argument rules are
:func:`lbc_mm.methods.check_sparsity_args`, option names come from the method
registry and the layers', the transform's and the hooks' signatures, hook values from
the hook's own constructor, and what a method needs beside its layers (LBC: an
``LBCHook`` and the scores' optimizer constructor) from its registration
(:class:`lbc_mm.methods.Requirements`). The tools do not add what a config lacks, so
a config trains the same under mmdet's and mmpretrain's own ``tools/train.py``.
"""
import difflib
import inspect
from typing import Callable, Dict, List, Optional, Tuple

from .apis import missing_library
from .hooks import FiniteCheckHook, LBCHook
from .layers import NMSparseConv, NMSparseLinear
from .methods import METHODS, check_sparsity_args, option_names
from .sparse_config import node_method, sparse_nodes, type_name
from .tool_exit import fail
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
#: ``default_scope`` -> the lbc_mm extra that installs its library.
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


def check_layer_cfg(key: str, cfg: dict) -> None:
    """Check one ``NMSparseConv`` / ``NMSparseLinear`` / ``NMSparsify`` dict;
    ``ConfigError`` naming the key and the fix."""
    name = type_name(cfg)
    params = _parameters(LAYERS[name].__init__ if name in LAYERS else NMSparsify)
    _unknown(key, cfg, list(params) + list(option_names()), META_KEYS, name)
    args = {arg: cfg.get(arg, params[arg].default) for arg in ('n', 'm', 'method')}
    options = {opt: cfg[opt] for opt in option_names() if opt in cfg}
    try:
        check_sparsity_args(**args, **options)
    except ValueError as err:
        raise ConfigError(key, f'{name}: {err}',
                          f'set valid values there (0 < N < M; method one of '
                          f'{", ".join(METHODS)}, each with its own options: '
                          f'lbc_mm.methods)') from None


def check_hook_cfg(key: str, cfg: dict) -> None:
    """Check one ``LBCHook`` / ``FiniteCheckHook`` dict of ``custom_hooks``;
    ``ConfigError`` naming the key and the fix."""
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
    """A config with a method's hook (``LBCHook``) needs the method's optimizer
    constructor (the optimizer is built before any hook runs)."""
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
    must list it in ``custom_hooks``: a child config's list replaces its base's, and
    the run would end dense without a word. (The layers also refuse to train
    without it, :meth:`lbc_mm.methods.LBC.check_driven`, for entry points that never
    call this check.)"""
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
    """Check the lbc_mm parts of a (merged) config; ``ConfigError`` for the first
    problem. ``training``: it is about to train (LBC layers need an ``LBCHook``)."""
    scope = cfg.get('default_scope', None)
    missing = missing_library(scope)  # mmdet / mmpretrain are extras
    if missing is not None:
        raise ConfigError('default_scope', *missing)
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
        fail(message, 2)
