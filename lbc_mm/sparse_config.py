"""The sparse parts of a config: the one list of their types and the one walker.

:mod:`lbc_mm.config_check`, the method study (:mod:`lbc_mm.study.grid`), the export
(:mod:`lbc_mm.export.convert`) and ``tools/benchmark_train.py`` find a config's
sparse layer / transform dicts here. Plain dicts only: nothing is built.
"""
from typing import Any, Iterator, Optional, Tuple

__all__ = ['DEFAULT_METHOD', 'LAYER_TYPES', 'TRANSFORM_TYPE', 'node_method',
           'sparse_nodes', 'type_name', 'walk']

#: Sparse layer types (:mod:`lbc_mm.layers`) -> their stock twins, by config name.
LAYER_TYPES = {'NMSparseConv': 'Conv2d', 'NMSparseLinear': 'Linear'}
#: The model transform (:class:`lbc_mm.transforms.NMSparsify`).
TRANSFORM_TYPE = 'NMSparsify'
#: ``method`` of a sparse layer / transform config that does not name one.
DEFAULT_METHOD = 'lbc'


def type_name(node: dict) -> Optional[str]:
    """The registered name of ``node['type']`` without a scope (``'lbc_mm.X'``,
    ``'lbc_mm::X'``) or a class's name; None when it has none."""
    kind = node.get('type', None)
    if isinstance(kind, str):
        return kind.rsplit('.', 1)[-1].rsplit('::', 1)[-1]
    return getattr(kind, '__name__', None) if callable(kind) else None


def walk(obj: Any, key: str = '') -> Iterator[Tuple[str, dict]]:
    """``(dotted key, dict)`` for every dict inside ``obj`` (lists by index)."""
    if isinstance(obj, dict):
        yield key, obj
        for name, value in obj.items():
            yield from walk(value, f'{key}.{name}' if key else str(name))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from walk(value, f'{key}.{i}')


def sparse_nodes(obj: Any, key: str = 'model') -> Iterator[Tuple[str, dict]]:
    """``(dotted key, dict)`` of every sparse layer / transform config in ``obj``."""
    for where, node in walk(obj, key):
        if type_name(node) in LAYER_TYPES or type_name(node) == TRANSFORM_TYPE:
            yield where, node


def node_method(node: dict) -> str:
    """The sparsity method a sparse layer / transform config asks for."""
    return node.get('method', None) or DEFAULT_METHOD
