"""The sparsity-method registry (lbc_mm/methods/) and its one-way failure."""
import pytest
import torch
from mmengine.config import Config

import lbc_mm  # noqa: F401  (registers the layers)
from lbc_mm.config_check import find_config_error
from lbc_mm.layers import NMSparseConv, NMSparseLinear
from lbc_mm.methods import (
    LBC,
    METHODS,
    SparsityMethod,
    UnsupportedOperation,
    method_class,
    option_names,
    register_method,
)
from lbc_mm.sparsity import magnitude_mask
from lbc_mm.study import rewrite_config

#: The LBC operations of the method object, with their arguments.
LBC_OPERATIONS = [('remove_candidates', (1, )), ('keep_magnitude_candidates', ()),
                  ('freeze_scores', ()), ('unfreeze_scores', ()),
                  ('alive_checksum', ()), ('current_card', ())]


def test_registry_lists_every_method_once_in_order():
    assert tuple(METHODS) == ('lbc', 'srste', 'ste', 'asp')
    assert option_names() == ('tie_break', 'srste_lambda')
    for name, cls in METHODS.items():
        assert cls.name == name and issubclass(cls, SparsityMethod)
    with pytest.raises(ValueError, match="unknown method 'sr-ste'"):
        method_class('sr-ste')


@pytest.mark.parametrize('method, keys', [
    ('lbc', ['weight', 'bias', 'scores', 'alive']),
    ('srste', ['weight', 'bias']),
    ('ste', ['weight', 'bias']),
    ('asp', ['weight', 'bias', 'asp_mask']),
])
def test_method_state_lives_on_the_layer_under_its_checkpoint_names(method, keys):
    layer = NMSparseLinear(8, 2, method=method)
    assert list(layer.state_dict()) == keys
    assert layer.method == method and isinstance(layer.sparsity, METHODS[method])
    # The parameters the optimizer sees: the layer's own, scores registered last.
    names = [n for n, _ in layer.named_parameters()]
    assert names == (['weight', 'bias', 'scores'] if method == 'lbc' else
                     ['weight', 'bias'])


@pytest.mark.parametrize('method', ['srste', 'ste', 'asp'])
@pytest.mark.parametrize('operation, args', LBC_OPERATIONS)
def test_lbc_operation_on_another_method_fails_one_way(method, operation, args):
    conv = NMSparseConv(8, 4, 3, method=method)
    conv.layer_name = 'backbone.conv1'
    with pytest.raises(UnsupportedOperation) as info:
        getattr(conv.sparsity, operation)(*args)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith("NMSparseConv 'backbone.conv1' weight (4, 8, 3, 3)")
    assert f"{operation} is an operation of method 'lbc', not of {method!r}" in message


@pytest.mark.parametrize('prop', ['num_alive', 'num_candidates'])
def test_lbc_properties_on_another_method_fail_the_same_way(prop):
    layer = NMSparseLinear(8, 2, method='srste')
    with pytest.raises(UnsupportedOperation, match=f"{prop} is an operation of "
                       f"method 'lbc', not of 'srste'"):
        getattr(layer.sparsity, prop)
    assert not hasattr(layer.sparsity, prop)  # an AttributeError: duck typing works


def test_asp_operation_on_lbc_fails_one_way():
    layer = NMSparseLinear(8, 2)
    with pytest.raises(UnsupportedOperation,
                       match="set_asp_mask is an operation of method 'asp', not of "
                       "'lbc'"):
        layer.sparsity.set_asp_mask()


def test_lbc_state_read_through_named_properties():
    layer = NMSparseConv(8, 4, 3, n=4, m=8)
    lbc = layer.sparsity
    assert lbc.layer is layer  # bound once
    assert lbc.num_candidates == 70 and layer.num_groups == 4 * 8 * 9 // 8
    assert lbc.current_card() == 70
    lbc.freeze_scores()
    assert not layer.scores.requires_grad
    lbc.unfreeze_scores()
    assert layer.scores.requires_grad
    lbc.remove_candidates(1)
    assert lbc.current_card() == 1 and (lbc.num_alive == 1).all()


def test_dense_fallback_keeps_the_method_and_its_one_way_failure():
    conv = NMSparseConv(3, 8, 3, method='lbc')  # 3 input channels: stays dense
    assert not conv.is_sparse and conv.sparsity.num_alive is None
    conv.sparsity.remove_candidates(1)  # nothing to remove: a no-op, as before
    with pytest.raises(UnsupportedOperation):
        NMSparseConv(3, 8, 3, method='asp').sparsity.remove_candidates(1)


@pytest.mark.parametrize('method, options, words', [
    ('asp', dict(tie_break='index'),
     "tie_break does not apply to method 'asp'; it takes no option"),
    ('srste', dict(tie_break='index'),
     "tie_break does not apply to method 'srste'; it takes srste_lambda"),
    ('lbc', dict(srste_lambda=1e-4),
     "srste_lambda does not apply to method 'lbc'; it takes tie_break"),
    ('lbc', dict(tie_break='random'), "unknown tie_break 'random'"),
])
def test_options_belong_to_their_method(method, options, words):
    with pytest.raises(ValueError, match=words):
        NMSparseLinear(8, 2, method=method, **options)
    cfg = Config(dict(model=dict(type='X', head=dict(
        type='NMSparseLinear', method=method, **options))))
    assert words in find_config_error(cfg, training=False)


def test_study_switch_takes_each_methods_options_from_the_registry():
    conv = dict(type='NMSparseConv', n=2, m=4, method='lbc', tie_break='index')
    base = dict(model=dict(type='ImageClassifier',
                           backbone=dict(type='ResNet', depth=18, conv_cfg=conv)),
                custom_hooks=[dict(type='LBCHook')])
    expected = {
        'lbc': dict(tie_break='index'),  # the config's own value stays
        'srste': {},  # another method's option goes; the default applies
        'ste': dict(srste_lambda=0.0),  # the option STE fixes
        'asp': {},
    }
    for method, options in expected.items():
        cfg = Config(base)
        rewrite_config(cfg, method, (1, 4), seed=0)
        got = dict(cfg.model.backbone.conv_cfg)
        assert got == dict(type='NMSparseConv', n=1, m=4, method=method, **options)
        assert find_config_error(cfg, training=False) is None
    cfg = Config(base)
    rewrite_config(cfg, 'dense', None, seed=0)
    assert 'conv_cfg' not in cfg.model.backbone or cfg.model.backbone.conv_cfg is None


def test_a_registered_method_plugs_into_layers_and_config_check():

    class FirstN(SparsityMethod):
        """Keeps the first n weights of every group (a fixed mask, for the test)."""
        name, label = 'first_n', 'first-N'
        options = {'scale': 1.0}

        def mask(self):
            layer = self.layer
            keep = torch.zeros(layer.m, dtype=torch.bool)
            keep[:layer.n] = True
            groups = keep.repeat(layer.num_groups, 1)  # (G, m)
            return groups.reshape(layer.weight.shape[0], -1)

        def masked_weight(self):
            return self.layer.weight * self.mask() * self.scale

    register_method(FirstN)
    try:
        layer = NMSparseLinear(8, 2, method='first_n', scale=2.0)
        x = torch.randn(3, 8)
        expected = torch.nn.functional.linear(
            x, layer.weight * layer.get_mask() * 2.0, layer.bias)
        torch.testing.assert_close(layer(x), expected)
        assert layer.get_mask().sum() == 2 * 4 and 'scale' in option_names()
        with pytest.raises(UnsupportedOperation, match="'lbc', not of 'first_n'"):
            layer.sparsity.remove_candidates(1)
        cfg = Config(dict(model=dict(type='X', head=dict(
            type='NMSparseLinear', method='first_n', scale=0.5))))
        assert find_config_error(cfg, training=False) is None
        with pytest.raises(KeyError, match='already registered'):
            register_method(FirstN)
    finally:
        METHODS.pop('first_n')
    assert 'scale' not in option_names()


def test_lbc_magnitude_end_state_through_the_method_object():
    torch.manual_seed(0)
    layer = NMSparseLinear(8, 4)
    assert isinstance(layer.sparsity, LBC) and layer.sparsity.tie_break == 'magnitude'
    layer.sparsity.keep_magnitude_candidates()
    assert torch.equal(layer.get_mask(), magnitude_mask(layer.weight, 2, 4))


def test_requirements_are_registered_once_and_read_everywhere():
    """A method's "needs a hook and an optimizer constructor" lives in its
    registration: config_check, the study's switch and the hook's audit read it."""
    from lbc_mm.hooks import lbc_checks
    from lbc_mm.methods import Requirements, driver_hooks

    assert LBC.requires == Requirements(
        hook='LBCHook', constructor='LBCOptimWrapperConstructor',
        duty='removes their candidates', without='the run would end dense')
    assert driver_hooks() == ('LBCHook', )

    class Driven(SparsityMethod):
        name, label = 'driven', 'Driven'
        requires = Requirements(hook='DrivenHook', constructor='DrivenConstructor',
                                duty='drives them', without='nothing happens')

        def mask(self):
            return torch.ones_like(self.layer.weight, dtype=torch.bool)

        def masked_weight(self):
            return self.layer.weight

    register_method(Driven)
    try:
        cfg = Config(dict(model=dict(type='X', head=dict(
            type='NMSparseLinear', method='driven')), custom_hooks=[]))
        assert find_config_error(cfg) == (
            'config error: custom_hooks: model.head makes Driven layers but no '
            "DrivenHook drives them, so nothing happens (a child config's "
            "custom_hooks replaces its base's list, dropping the DrivenHook); add "
            "dict(type='DrivenHook', ...) to custom_hooks")
        study = Config(dict(
            model=dict(type='X', head=dict(type='NMSparseLinear', method='lbc')),
            custom_hooks=[dict(type='LBCHook')],
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))))
        rewrite_config(study, 'driven', (2, 4), seed=0)
        assert [h['type'] for h in study.custom_hooks] == ['DrivenHook']
        assert study.optim_wrapper.constructor == 'DrivenConstructor'
        assert driver_hooks() == ('LBCHook', 'DrivenHook')
    finally:
        METHODS.pop('driven')
    # The hook's optimizer audit names the registered constructor.
    layer = NMSparseLinear(8, 2)
    optim = torch.optim.SGD([layer.weight], lr=0.1)

    class Wrapper:
        optimizer = optim

    with pytest.raises(RuntimeError, match="constructor='LBCOptimWrapperConstructor'"):
        lbc_checks.check_optimizer(Wrapper(), [('fc', layer)])


def test_the_layer_types_are_listed_once():
    from lbc_mm.layers import SparseLayer
    from lbc_mm.sparse_config import LAYER_TYPES
    assert [cls.__name__ for cls in SparseLayer] == list(LAYER_TYPES)
