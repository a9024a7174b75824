"""``lbc_mm``-scoped child registries.

lbc_mm registers its modules in mmengine's root registries so that mmdet and mmpretrain
scopes both see them. Configs inherited through ``_base_ = 'lbc_mm::...'`` get
``_scope_='lbc_mm'`` on their top-level objects, and mmengine then looks for an
``lbc_mm`` child of each root registry (importing ``lbc_mm.registry``). These children
are empty: a lookup falls through to the root registry.
"""
from mmengine import registry as root
from mmengine.registry import Registry

_ROOT_NAMES = (
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'STRATEGIES', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS',
    'METRICS', 'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS',
    'LOG_PROCESSORS', 'INFERENCERS', 'FUNCTIONS')


def _child(name: str) -> Registry:
    parent = getattr(root, name)
    existing = parent.children.get('lbc_mm')
    return existing or Registry(parent.name, parent=parent, scope='lbc_mm')


globals().update({name: _child(name) for name in _ROOT_NAMES})
__all__ = list(_ROOT_NAMES)
