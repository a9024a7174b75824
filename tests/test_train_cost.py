"""lbc_mm.train_cost: the training-FLOPs convention, by hand on one Linear layer."""
import itertools
import math

import pytest
from torch import nn

from lbc_mm.cost import layer_macs
from lbc_mm.hooks.lbc_schedule import RemovalSchedule
from lbc_mm.train_cost import (
    card_counts,
    layer_densities,
    step_cost_lines,
    step_flops,
    training_cost,
    union_density,
)


def _one_linear():
    """Linear(8 -> 4), one sample: 4 outputs x 8 inputs = 32 MACs."""
    import torch
    layer = nn.Linear(8, 4)
    macs = layer_macs(layer, lambda: layer(torch.zeros(1, 8)))
    return {'': macs['']}


def test_layer_macs_of_one_linear():
    assert _one_linear() == {'': 32}


@pytest.mark.parametrize('n,m', [(1, 4), (2, 4), (2, 5), (3, 5)])
def test_union_density_is_the_mean_over_every_alive_set(n, m):
    cands = list(itertools.combinations(range(m), n))
    for k in range(1, len(cands) + 1):
        covered = [len(set().union(*subset)) / m
                   for subset in itertools.combinations(cands, k)]
        assert union_density(k, n, m) == pytest.approx(sum(covered) / len(covered))
    assert union_density(1, n, m) == pytest.approx(n / m)
    assert union_density(len(cands), n, m) == 1


def test_densities_per_method():
    assert layer_densities('dense', 2, 4) == (1, 1, 1)
    assert layer_densities('srste', 2, 4) == (0.5, 0.5, 1)
    assert layer_densities('ste', 1, 4) == (0.25, 0.25, 1)
    assert layer_densities('asp', 2, 4) == (0.5, 0.5, 0.5)
    assert layer_densities('lbc', 2, 4) == (0.5, 0.5, 0.5)  # end state
    assert layer_densities('lbc', 2, 4, alive=2) == (0.8, 0.8, 0.8)  # 1 - 3/15
    with pytest.raises(ValueError, match='unknown method'):
        layer_densities('magic', 2, 4)


def test_step_flops_by_hand():
    macs, patterns = _one_linear(), {'': (2, 4)}
    # batch 2: one GEMM = 2 FLOPs x 2 samples x 32 MACs = 128 FLOPs dense.
    assert step_flops(macs, patterns, 'dense', 2) == dict(
        forward=128, backward_act=128, backward_weight=128, total=384)
    assert step_flops(macs, patterns, 'srste', 2) == dict(
        forward=64, backward_act=64, backward_weight=128, total=256)
    assert step_flops(macs, patterns, 'asp', 2)['total'] == 192
    assert step_flops(macs, {}, 'srste', 2)['total'] == 384  # not N:M: dense


def test_lbc_run_by_hand():
    # t_f = 4 iterations of 10, p = 3, C(4, 2) = 6: after iteration 1 (t=1) card =
    # 1 + ceil(5 * 0.75**3) = 4, t=2: 1 + ceil(0.625) = 2, t=3: 2, t=4: 1.
    sched = RemovalSchedule(0, 4, unit='iter')
    sched.resolve(False, 10, 10)
    counts = card_counts(sched.card, lambda i: sched.progress(i, 0, i), 10, 6)
    assert counts == {6: 1, 4: 1, 2: 2, 1: 6}
    cost = training_cost(_one_linear(), {'': (2, 4)}, 'lbc', 2, 10, cards={6: counts})
    # Densities 1, 1, 0.8, 0.8, then 0.5 x 6: 6.6 dense iterations of 384 FLOPs.
    assert cost['flops'] == pytest.approx(384 * 6.6)
    assert cost['flops_dense'] == 3840
    assert cost['relative'] == pytest.approx(0.66)
    assert cost['step_first'] == 384 and cost['step_last'] == 192
    assert cost['forward'] == pytest.approx(128 * 6.6)


def test_fixed_mask_methods_over_a_run():
    macs, patterns = _one_linear(), {'': (1, 4)}
    srste = training_cost(macs, patterns, 'srste', 2, 10)
    # forward and backward-act at 1/4, weights dense: (0.25 + 0.25 + 1) / 3.
    assert srste['relative'] == pytest.approx(0.5)
    asp = training_cost(macs, patterns, 'asp', 2, 10)
    assert asp['relative'] == pytest.approx(0.25)
    late = training_cost(macs, patterns, 'asp', 2, 10, dense_iters=4)  # ASP of a
    # dense-trained model: 4 dense iterations, then its mask
    assert late['relative'] == pytest.approx(0.4 + 0.6 * 0.25)
    assert training_cost(macs, {}, 'dense', 2, 10)['relative'] == 1
    with pytest.raises(ValueError, match='lbc needs the card counts'):
        training_cost(macs, patterns, 'lbc', 2, 10)


def test_one_pattern_is_n_over_m_for_1_of_m():
    for k in range(1, 17):
        assert union_density(k, 1, 16) == pytest.approx(k / 16)
    assert math.comb(16, 1) == 16


class _Net(nn.Module):
    """One N:M Linear(8 -> 4) behind an mmpretrain-style ``mode='tensor'`` forward."""

    def __init__(self, method):
        super().__init__()
        from lbc_mm.layers import NMSparseLinear
        self.fc = NMSparseLinear(8, 4, n=2, m=4, method=method)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.fc(inputs.flatten(1)[:, :8])


def test_step_cost_lines_of_a_model_as_built():
    # 32 MACs per sample, batch 2: 384 FLOPs dense per step (see above).
    lines = step_cost_lines(_Net('lbc'), 'mmpretrain', (2, 2), 'lbc', 2)
    assert lines == [
        'lbc (start, all candidates alive): training step 0.000 GFLOPs (forward '
        '0.000, backward activations 0.000, backward weights 0.000; '
        'docs/training_cost.md)',
        'lbc (end, N:M): training step 0.000 GFLOPs (forward 0.000, backward '
        'activations 0.000, backward weights 0.000; docs/training_cost.md)']
    net = _Net('srste').train()
    [line] = step_cost_lines(net, 'mmpretrain', (2, 2), 'srste', 2 * 10**6,
                             label='srste 2:4')
    # 2e6 samples: forward 64e6 FLOPs, weights 128e6.
    assert line.startswith('srste 2:4: training step 0.256 GFLOPs (forward 0.064, '
                           'backward activations 0.064, backward weights 0.128')
    assert net.training  # the model itself is left as it was
