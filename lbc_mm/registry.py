"""``lbc_mm``-scoped child registries.

lbc_mm registers its modules in mmengine's root registries so that mmdet and mmpretrain
scopes both see them. Configs inherited through ``_base_ = 'lbc_mm::...'`` get
``_scope_='lbc_mm'`` on their top-level objects, and mmengine then builds them from the
``lbc_mm`` child of each root registry (importing ``lbc_mm.registry``). These children
hold nothing of their own: a lookup falls through to the root registry, then to the
registry of the run's own default scope (``mmdet`` / ``mmpretrain``), so a downstream
config may put an upstream type (``CustomDataset``, ``CocoDataset``) into any dict.
"""
from importlib import import_module
from typing import Optional, Type

from mmengine import registry as root
from mmengine.registry import DefaultScope, Registry

SCOPE = 'lbc_mm'

_ROOT_NAMES = (
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'STRATEGIES', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS',
    'METRICS', 'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS',
    'LOG_PROCESSORS', 'INFERENCERS', 'FUNCTIONS')


def _run_scope() -> Optional[str]:
    """The innermost default scope that is not ``lbc_mm`` (the run's own scope).

    While mmengine builds an ``_scope_='lbc_mm'`` object it pushes a temporary
    ``lbc_mm`` default scope; the one created before it is the run's.
    """
    for instance in reversed(list(DefaultScope._instance_dict.values())):
        if instance.scope_name != SCOPE:
            return instance.scope_name
    return None


class LBCScopeRegistry(Registry):
    """Child registry of scope ``lbc_mm`` that falls back to the run's scope."""

    def get(self, key: str) -> Optional[Type]:
        obj = super().get(key)
        if obj is not None or '.' in key:
            return obj
        scope = _run_scope()
        if scope is None:
            return None
        try:  # mmengine does the same before searching a scope's registry
            import_module(f'{scope}.registry')
        except ImportError:
            return None
        registry = self._get_root_registry()._search_child(scope)
        if registry is None or registry is self:
            return None
        return registry.get(key)


def _child(name: str) -> Registry:
    parent = getattr(root, name)
    existing = parent.children.get(SCOPE)
    # ``locations``: mmengine imports them before a lookup; without any it falls
    # back to ``lbc_mm.utils.register_all_modules`` and, finding none, warns that
    # "lbc_mm is not installed". Importing lbc_mm registers everything.
    return existing or LBCScopeRegistry(parent.name, parent=parent, scope=SCOPE,
                                        locations=[SCOPE])


globals().update({name: _child(name) for name in _ROOT_NAMES})
__all__ = ['LBCScopeRegistry', *_ROOT_NAMES]
