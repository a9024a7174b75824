"""lbc_mm-scoped registries: objects tagged ``_scope_='lbc_mm'`` (configs inherited
through ``lbc_mm::``) build lbc_mm types and the run's upstream types alike."""
import pytest
from mmengine.registry import DATASETS, HOOKS, MODELS, DefaultScope, init_default_scope

from lbc_mm.registry import LBCScopeRegistry


@pytest.fixture(autouse=True)
def _fresh_scope():
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()


def test_children_exist_for_every_root_registry():
    for registry in (MODELS, HOOKS, DATASETS):
        assert isinstance(registry.children['lbc_mm'], LBCScopeRegistry)


def test_lbc_mm_scoped_object_finds_lbc_mm_types():
    init_default_scope('mmpretrain')
    hook = HOOKS.build(dict(type='LBCHook', _scope_='lbc_mm'))
    assert type(hook).__name__ == 'LBCHook'


@pytest.mark.parametrize('scope,type_name', [('mmpretrain', 'ResNet'),
                                             ('mmdet', 'ResNet')])
def test_lbc_mm_scoped_object_falls_back_to_the_run_scope(scope, type_name):
    init_default_scope(scope)
    model = MODELS.build(dict(type=type_name, depth=18, _scope_='lbc_mm'))
    assert type(model).__module__.startswith(scope)


def test_unknown_type_still_fails_clearly():
    init_default_scope('mmpretrain')
    with pytest.raises(KeyError, match='NoSuchModel'):
        MODELS.build(dict(type='NoSuchModel', _scope_='lbc_mm'))


def test_no_false_not_installed_warning(log_lines):
    """An ``_scope_='lbc_mm'`` lookup imports the registries' locations; without
    any, mmengine fell back to ``lbc_mm.utils`` and warned 'lbc_mm is not
    installed and its modules will not be registered'."""
    from lbc_mm import registry as lbc_registry
    init_default_scope('mmpretrain')
    for name in ('MODELS', 'HOOKS'):
        getattr(lbc_registry, name)._imported = False  # as in a fresh process
    HOOKS.build(dict(type='LBCHook', _scope_='lbc_mm'))
    MODELS.build(dict(type='ResNet', depth=18, _scope_='lbc_mm'))
    assert not [line for line in log_lines if 'not installed' in line], log_lines



def test_stock_linear_is_buildable_by_name():
    # The study's dense runs turn NMSparseLinear configs into type='Linear'.
    from torch import nn

    import lbc_mm  # noqa: F401  (registers it)
    layer = MODELS.build(dict(type='Linear', in_features=8, out_features=2))
    assert type(layer) is nn.Linear
