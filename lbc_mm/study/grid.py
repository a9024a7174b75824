"""The method study's runs: the grid and the config of each run.

Each run is the user's config with only the sparse layers' ``method`` / ``n`` /
``m``, the ``LBCHook`` and the seed changed (:func:`rewrite_config`).
"""
import ast
from typing import Any, List, Optional, Sequence, Tuple

from ..methods import METHODS as SPARSE_METHODS
from ..methods import driver_hooks, option_names
from ..sparse_config import LAYER_TYPES, TRANSFORM_TYPE, type_name
from ..sparsity.patterns import parse_pattern

#: The study's methods: dense and every registered sparse method.
METHODS = ('dense', ) + tuple(SPARSE_METHODS)
#: What the dense switch drops from a sparse layer config.
SPARSE_KEYS = ('n', 'm', 'method', 'strict') + option_names()
#: ``optim_wrapper.constructor`` values that mean mmengine's default constructor.
DEFAULT_CONSTRUCTORS = (None, 'DefaultOptimWrapperConstructor')


def _set_sparse(node: dict, method: str, n: int, m: int) -> None:
    """Switch a sparse layer / transform config to ``method``: the config's values
    of that method's options stay, other methods' options go, fixed ones are set
    (STE: ``srste_lambda=0``)."""
    node['n'], node['m'], node['method'] = n, m, method
    cls = SPARSE_METHODS[method]
    for key in option_names():
        if key not in cls.options:
            node.pop(key, None)
    node.update(cls.fixed_options)


def _rewrite_node(node: Any, method: str, n: int, m: int, found: List[str],
                  where: str) -> Any:
    """Rewrite the sparse layer configs under ``node``; return the new node."""
    if isinstance(node, (list, tuple)):
        return type(node)(_rewrite_node(v, method, n, m, found, f'{where}.{i}')
                          for i, v in enumerate(node))
    if not isinstance(node, dict):
        return node
    kind = type_name(node)
    if kind != TRANSFORM_TYPE and kind not in LAYER_TYPES:
        for key in node:
            node[key] = _rewrite_node(node[key], method, n, m, found, f'{where}.{key}')
        return node
    found.append(where)
    if kind == TRANSFORM_TYPE:
        node['model'] = _rewrite_node(node['model'], method, n, m, found,
                                      f'{where}.model')
    if method != 'dense':
        _set_sparse(node, method, n, m)
        return node
    if kind == TRANSFORM_TYPE:  # dense: the wrapped model itself
        return node['model']
    if where.endswith('conv_cfg'):  # dense: mmcv's default conv
        return None
    return dict({k: v for k, v in node.items() if k not in SPARSE_KEYS},
                type=LAYER_TYPES[kind])


def parse_arm(arm: str) -> Tuple[str, dict]:
    """A study arm: a method, for LBC with ``LBCHook`` options after ``+``.

    ``'lbc+t_f=0.05+noise_margin=2'`` -> ``('lbc', {'t_f': 0.05, 'noise_margin':
    2, 'unit': 'fraction', 't_i': 0})``: an arm's ``t_f`` is a fraction of the run
    from ``t_i = 0`` unless the arm names ``unit`` / ``t_i``.

    Raises:
        ValueError: Unknown method, options on another method, a bad item.
    """
    method, *items = arm.split('+')
    if method != 'dense' and method not in SPARSE_METHODS:  # registered since too
        raise ValueError(f'unknown method {method!r}, expected one of {METHODS}')
    if items and (method == 'dense' or SPARSE_METHODS[method].requires is None):
        raise ValueError(f'{arm!r}: only a method driven by a hook (lbc) takes '
                         'options (its hook\'s arguments)')
    options = {}
    for item in items:
        key, sep, text = item.partition('=')
        if not sep or not key.isidentifier():
            raise ValueError(f'{arm!r}: expected +key=value, got {item!r}')
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    if 't_f' in options:
        options.setdefault('unit', 'fraction')
        options.setdefault('t_i', 0)
    return method, options


def with_windows(arms: List[str], windows: Sequence[float]) -> List[str]:
    """Every arm of a gradual method (LBC) without its own ``t_f`` once per removal
    window (``+t_f=W``, a fraction of the run); other arms as they are."""
    out: List[str] = []
    for arm in arms:
        method, options = parse_arm(arm)
        if method == 'dense' or not SPARSE_METHODS[method].gradual or 't_f' in options:
            out.append(arm)
        else:
            out += [f'{arm}+t_f={w:g}' for w in windows]
    return out


def rewrite_config(cfg, method: str, pattern: Optional[Tuple[int, int]],
                   seed: int) -> List[str]:
    """Make ``cfg`` (an mmengine ``Config``, in place) one run of the study:
    ``method`` (one of :data:`METHODS` or an LBC arm, :func:`parse_arm`), ``pattern``
    ``(n, m)`` (ignored for dense) and ``seed``; the config paths of the sparse
    layer configs it rewrote. ``ValueError``: unknown method, no sparse layer config.
    """
    method, hook_options = parse_arm(method)
    n, m = pattern or (0, 0)
    found: List[str] = []
    model = _rewrite_node(cfg.model.to_dict(), method, n, m, found, 'model')
    if not found:
        raise ValueError(
            'the config has no sparse layer config to switch: expected '
            "conv_cfg=dict(type='NMSparseConv', ...), an NMSparseLinear layer or "
            "model=dict(type='NMSparsify', ...)")
    cfg.model = model
    hooks = [h.to_dict() for h in cfg.get('custom_hooks', None) or []]
    # What the method's registration requires (LBC: its hook and the scores'
    # optimizer constructor); a dense / SR-STE config switched to LBC lacks both.
    req = SPARSE_METHODS[method].requires if method != 'dense' else None
    hooks = [h for h in hooks if type_name(h) not in driver_hooks()
             or req is not None and type_name(h) == req.hook]
    if req is not None:
        if not any(type_name(h) == req.hook for h in hooks):
            hooks.append(dict(type=req.hook))
        for hook in hooks:  # the arm's options (parse_arm) go to the method's hook
            if type_name(hook) == req.hook:
                hook.update(hook_options)
        optim_wrapper = cfg.get('optim_wrapper', None)
        if optim_wrapper is not None and optim_wrapper.get(
                'constructor', None) in DEFAULT_CONSTRUCTORS:
            optim_wrapper['constructor'] = req.constructor
    cfg.custom_hooks = hooks
    cfg.randomness = dict(cfg.get('randomness', None) or {}, seed=seed)
    return found


def parse_patterns(text: str) -> List[Tuple[int, int]]:
    """``'2:4,1:4'`` -> ``[(2, 4), (1, 4)]``; ``ValueError`` naming a bad item."""
    return [parse_pattern(item)
            for item in filter(None, (s.strip() for s in text.split(',')))]


def pattern_name(pattern: Optional[Tuple[int, int]]) -> str:
    return 'dense' if pattern is None else f'{pattern[0]}:{pattern[1]}'


def run_name(method: str, pattern: Optional[Tuple[int, int]], seed: int) -> str:
    if method == 'dense':
        return f'dense_seed{seed}'
    return f'{method}_{pattern[0]}of{pattern[1]}_seed{seed}'


def grid(methods: Sequence[str], patterns: Sequence[Tuple[int, int]],
         seeds: Sequence[int]) -> List[Tuple[str, Optional[Tuple[int, int]], int]]:
    """Every run: dense once per seed, the sparse methods per pattern and seed;
    seed-major, so a partial study already compares every cell."""
    return [(method, pattern, seed) for seed in seeds for method in methods
            for pattern in ([None] if method == 'dense' else patterns)]
