"""``NMSparsify``: swap a built model's Conv2d / Linear layers for N:M sparse ones.

Use it as the model of any mmdet / mmpretrain config::

    model = dict(type='NMSparsify', model=<original model cfg>, n=2, m=4,
                 method='lbc', include=['backbone.*'], exclude=['backbone.conv1'])

The swap happens at build time and reuses the original ``weight`` / ``bias``, so a
dense checkpoint loads into the sparse model (the new keys are simply missing).
Only layers whose type is exactly ``nn.Conv2d`` / ``nn.Linear`` or mmcv's
``Conv2d`` / ``Linear`` wrappers are swapped: subclasses with their own forward
(weight-standardised convs, ``MultiheadAttention.out_proj``) would lose it.
"""
import copy
import fnmatch
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import nn

from .layers import NMSparseConv, NMSparseLinear, divisibility_problem
from .sparse_model import set_submodule
from .sparsity import validate_pattern

__all__ = ['DEFAULT_EXCLUDE', 'DEFAULT_INCLUDE', 'NMSparsify', 'select_layers',
           'sparsify']

#: docs/method.md §8: the backbone is sparse; neck, heads and classifier
#: stay dense.
DEFAULT_INCLUDE = ('backbone.*', )
#: The stem (ResNet ``conv1``, ResNetV1d ``stem``) and the ViT patch embedding.
DEFAULT_EXCLUDE = ('backbone.conv1', 'backbone.stem', 'backbone.stem.*',
                   'backbone.patch_embed', 'backbone.patch_embed.*')


def _swappable_types() -> Dict[type, str]:
    """Layer types that are swapped, mapped to 'conv' or 'linear'."""
    types = {nn.Conv2d: 'conv', nn.Linear: 'linear'}
    try:
        from mmcv.cnn.bricks import wrappers
    except ImportError:  # pragma: no cover - mmcv is a dependency
        return types
    types.update({wrappers.Conv2d: 'conv', wrappers.Linear: 'linear'})
    return types


def _as_patterns(patterns: Union[None, str, Sequence[str]],
                 default: Sequence[str]) -> List[str]:
    if patterns is None:
        return list(default)
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_layers(model: nn.Module,
                  include: Union[None, str, Sequence[str]] = None,
                  exclude: Union[None, str, Sequence[str]] = None
                  ) -> List[Tuple[str, nn.Module]]:
    """``(name, layer)`` of the stock Conv2d / Linear layers :func:`sparsify` swaps
    (the include / exclude rule; a module shared by two parents under each name)."""
    include = _as_patterns(include, DEFAULT_INCLUDE)
    exclude = _as_patterns(exclude, DEFAULT_EXCLUDE)
    swappable = _swappable_types()
    return [(name, module)
            for name, module in model.named_modules(remove_duplicate=False)
            if type(module) in swappable and name  # '' is the model itself
            and _matches(name, include) and not _matches(name, exclude)]


def sparsify(model: nn.Module,
             n: int = 2,
             m: int = 4,
             method: str = 'lbc',
             include: Union[None, str, Sequence[str]] = None,
             exclude: Union[None, str, Sequence[str]] = None,
             strict: bool = False,
             **opts: Any) -> nn.Module:
    """Swap matching ``nn.Conv2d`` / ``nn.Linear`` layers for N:M sparse ones.

    Args:
        model (nn.Module): Model to change in place.
        n (int): Kept weights per group. Defaults to 2.
        m (int): Group size. Defaults to 4.
        method (str): ``'lbc'``, ``'srste'``, ``'ste'`` or ``'asp'``.
            Defaults to 'lbc'.
        include (str | Sequence[str], optional): fnmatch patterns of module names
            to make sparse. Defaults to :data:`DEFAULT_INCLUDE` (``backbone.*``).
        exclude (str | Sequence[str], optional): fnmatch patterns to keep dense,
            applied after ``include``. Defaults to :data:`DEFAULT_EXCLUDE` (stem,
            patch embedding). Pass ``[]`` to exclude nothing.
        strict (bool): Raise a ``ValueError`` for a matching layer whose input
            channels are not a multiple of ``m``; otherwise it stays dense (the
            original module is kept) and one log line names it. Defaults to False.
        **opts: Method options of the layers (e.g. ``srste_lambda``,
            ``tie_break``).

    Returns:
        nn.Module: ``model`` itself, with the swapped layers.
    """
    validate_pattern(n, m)
    include = _as_patterns(include, DEFAULT_INCLUDE)
    exclude = _as_patterns(exclude, DEFAULT_EXCLUDE)
    swapped: Dict[int, nn.Module] = {}
    dense = []
    for name, old in select_layers(model, include, exclude):
        problem = divisibility_problem(old.weight.shape, n, m)
        if problem:
            msg = f'{name}: {problem}'
            if strict:
                raise ValueError(msg)
            print_log(msg + '; it stays dense', logger='current')
            dense.append(name)
            continue
        if id(old) not in swapped:
            cls = NMSparseConv if isinstance(old, nn.Conv2d) else NMSparseLinear
            try:
                swapped[id(old)] = cls.from_dense(old, n, m, method, strict, **opts)
            except ValueError as err:
                raise ValueError(f'{name}: {err}') from err
            swapped[id(old)].layer_name = name
        set_submodule(model, name, swapped[id(old)])
    print_log(
        f'NMSparsify: {len(swapped)} layers made {n}:{m} {method}, '
        f'{len(dense)} kept dense (include={include}, exclude={exclude})',
        logger='current')
    return model


@MODELS.register_module(name='NMSparsify')
def NMSparsify(model: Union[dict, nn.Module],
               n: int = 2,
               m: int = 4,
               method: str = 'lbc',
               include: Union[None, str, Sequence[str]] = None,
               exclude: Union[None, str, Sequence[str]] = None,
               strict: bool = False,
               data_preprocessor: Optional[Union[dict, nn.Module]] = None,
               **opts: Any) -> nn.Module:
    """Registered model transform: build ``model`` and :func:`sparsify` it.

    Args:
        model (dict | nn.Module): The original model config (built with the
            registry of the current default scope) or a built model.
        n, m, method, include, exclude, strict: See :func:`sparsify`.
        **opts: See :func:`sparsify`.
        data_preprocessor (dict | nn.Module, optional): The Runner merges a
            top-level ``data_preprocessor`` into the model config; it is passed
            on to the inner model (``setdefault``). Defaults to None.

    Returns:
        nn.Module: The inner model object (its own class), made sparse.
    """
    if isinstance(model, dict):
        model = copy.deepcopy(model)
        if data_preprocessor is not None:
            model.setdefault('data_preprocessor', data_preprocessor)
        model = MODELS.build(model)
    elif not isinstance(model, nn.Module):
        raise TypeError(f'NMSparsify: model must be a config dict or an nn.Module, '
                        f'got {type(model).__name__}')
    return sparsify(model, n, m, method, include, exclude, strict, **opts)
