"""Ties of LBC scores (issue 18): ``removal_step``'s magnitude tie-break, the
layers' ``tie_break`` option and the settledness measures of unmoved groups."""
import logging
import math

import pytest
import torch
from mmengine.logging import MMLogger

from lbc_mm.hooks.lbc_checks import log_settledness
from lbc_mm.hooks.lbc_settledness import SettlednessTracker
from lbc_mm.layers import NMSparseLinear
from lbc_mm.sparsity import (
    TIE_BREAKS,
    candidate_magnitude,
    candidate_matrix,
    card,
    magnitude_mask,
    removal_step,
)
from lbc_mm.sparsity.diagnostics import unmoved_groups

from .reference import ref_remove


def test_candidate_magnitude_sums_abs_weight_over_each_candidate():
    gen = torch.Generator().manual_seed(0)
    groups = torch.randn(5, 4, generator=gen)  # (G, m)
    cand = candidate_matrix(2, 4)  # (6, 4)
    got = candidate_magnitude(groups, cand)
    for g in range(5):
        for c in range(6):
            want = sum(abs(float(groups[g, j])) for j in range(4) if cand[c, j])
            assert got[g, c].item() == pytest.approx(want)
    with pytest.raises(ValueError, match='do not match'):
        candidate_magnitude(groups[:, :3], cand)


def test_exact_ties_keep_the_larger_magnitude_then_the_lower_index():
    scores = torch.tensor([[1.0, 1.0, 1.0, 2.0], [0.5, 0.5, 0.5, 0.5]])
    alive = torch.ones(2, 4, dtype=torch.bool)
    mag = torch.tensor([[1.0, 3.0, 2.0, 0.0], [2.0, 2.0, 7.0, 1.0]],
                       dtype=torch.float64)
    removal_step(scores, alive, 2, mag)
    # Row 0: 2.0 wins on score, candidate 1 on magnitude among the tied 1.0s.
    # Row 1: candidate 2 on magnitude, then 0 before 1 (equal magnitude: index).
    assert alive.tolist() == [[False, True, False, True], [True, False, True, False]]
    assert scores.tolist() == [[0.0, 1.0, 0.0, 2.0], [0.5, 0.0, 0.5, 0.0]]
    with pytest.raises(ValueError, match='magnitude'):
        removal_step(scores, alive, 1, mag[:, :3])


@pytest.mark.parametrize('keep', [1, 2, 3, 5])
def test_magnitude_only_decides_exact_ties(keep):
    """Scores on a coarse grid (many ties): both modes match the plain-loop
    reference; where the boundary is not tied the two modes are bit-identical."""
    gen = torch.Generator().manual_seed(keep)
    num_g, num_c = 200, 6
    scores = torch.randint(0, 3, (num_g, num_c), generator=gen).float()
    alive = torch.rand(num_g, num_c, generator=gen) < 0.8
    alive[:, 0] = True
    mag = torch.rand(num_g, num_c, generator=gen, dtype=torch.float64)
    out = {}
    for mode, key in (('index', None), ('magnitude', mag)):
        s, a = scores.clone(), alive.clone()
        removal_step(s, a, keep, key)
        ref_s, ref_a = scores.tolist(), alive.tolist()
        ref_remove(ref_s, ref_a, keep, None if key is None else key.tolist())
        assert a.tolist() == ref_a and s.tolist() == ref_s, mode
        out[mode] = (s, a)
    keys = scores.masked_fill(~alive, float('-inf'))
    top = torch.sort(keys, dim=1, descending=True).values
    affected = alive.sum(1) > keep
    untied = ~affected | (top[:, keep - 1] != top[:, min(keep, num_c - 1)])
    assert untied.any() and (~untied).any()  # the data has both cases
    assert torch.equal(out['index'][1][untied], out['magnitude'][1][untied])
    assert torch.equal(out['index'][0][untied], out['magnitude'][0][untied])


def test_distinct_scores_ignore_magnitude():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(500, 6, generator=gen)
    alive = torch.ones(500, 6, dtype=torch.bool)
    mag = torch.rand(500, 6, generator=gen, dtype=torch.float64)
    for keep in (5, 3, 2, 1):
        s2, a2 = scores.clone(), alive.clone()
        removal_step(scores, alive, keep)
        removal_step(s2, a2, keep, mag)
        assert torch.equal(alive, a2) and torch.equal(scores, s2)


@pytest.mark.parametrize('tie_break', TIE_BREAKS)
def test_layer_without_score_gradient_ends_with_the_tie_break_choice(tie_break):
    """Zero inputs: the scores (and weights) get exactly zero gradient, only
    weight decay moves them, uniformly. 'magnitude' ends with the magnitude mask,
    'index' with candidate 0 in every group."""
    torch.manual_seed(0)
    layer = NMSparseLinear(16, 8, n=2, m=4, tie_break=tie_break)
    num_c = layer.scores.shape[1]
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9,
                          weight_decay=1e-2)
    steps = 6
    for it in range(1, steps + 1):
        opt.zero_grad()
        layer(torch.zeros(4, 16)).sum().backward()
        assert (layer.scores.grad == 0).all()
        opt.step()
        layer.sparsity.remove_candidates(card(it, num_c, 0, steps))
    assert (layer.sparsity.num_alive == 1).all()
    magnitude = magnitude_mask(layer.weight.detach(), 2, 4)
    if tie_break == 'magnitude':
        assert torch.equal(layer.get_mask(), magnitude)
    else:
        assert layer.alive[:, 0].all()
        assert not torch.equal(layer.get_mask(), magnitude)  # the test tells apart


def test_layer_rejects_unknown_tie_break():
    with pytest.raises(ValueError, match='tie_break'):
        NMSparseLinear(16, 8, tie_break='random')


def test_unmoved_groups_are_counted_apart_from_small_margins():
    torch.manual_seed(0)
    layer = NMSparseLinear(16, 8, n=2, m=4)  # 32 groups
    unmoved_rows = torch.arange(32) % 2 == 0
    tracker = SettlednessTracker(sample=64)
    named = [('fc', layer)]
    assert tracker.after_removal(named, set(), named) is None  # snapshot
    with torch.no_grad():  # one "iteration": odd groups get distinct scores
        layer.scores[~unmoved_rows] += 0.01 * torch.randn(16, 6)
    assert torch.equal(unmoved_groups(layer.scores, layer.alive), unmoved_rows)
    tracker.measure_steps(named)
    tracker.before_removal('fc', layer, 3)
    layer.sparsity.remove_candidates(3)
    diag = tracker.after_removal(named, set(), named)
    assert diag['unmoved'] == pytest.approx(0.5)
    assert diag['tied'] == pytest.approx(0.5)  # random margins are > 0
    assert diag['margin_steps'] > 0  # the moved groups only


def _settledness_lines(diag, layers=()) -> list:
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        log_settledness(dict(diag, iter=10.0), 3.0, layers)
    finally:
        logger.removeHandler(handler)
    return [(r.levelno, r.getMessage()) for r in records]


def test_end_warning_names_the_cause():
    base = dict(agree_mag=0.9, chance_agree=1 / 6, score_spread=0.1)
    layer = NMSparseLinear(16, 8)
    (level, line), = _settledness_lines(
        dict(base, tied=0.8, unmoved=0.8, margin_steps=10.0), [('fc', layer)])
    assert level == logging.WARNING and '80.0% of the decisions were in groups ' \
        'whose scores never moved' in line and "tie_break='magnitude'" in line
    # Both causes: no gradient, or steps that float32 rounds away.
    assert 'frozen or zero-initialised weights' in line
    assert "score steps below float32's resolution" in line and 'scores_lr_mult' in line
    assert 'longer removal window' not in line
    (level, line), = _settledness_lines(
        dict(base, tied=0.1, unmoved=0.0, margin_steps=1.0))
    assert level == logging.WARNING and 'longer removal window' in line
    assert 'never moved (no gradient' not in line
    (level, line), = _settledness_lines(
        dict(base, tied=0.0, unmoved=0.0, margin_steps=math.inf))
    assert level == logging.INFO


def test_score_steps_below_float32_resolution_leave_groups_unmoved():
    """Non-zero score gradients too small for the lr (measured on the demo: score
    gradients around 1e-7 at lr 0.004) round away: the groups count as unmoved,
    which is why the warning names that cause next to "no gradient"."""
    def unmoved_share(loss_scale):
        torch.manual_seed(0)
        layer = NMSparseLinear(64, 16)
        opt = torch.optim.SGD([layer.scores], lr=0.004, momentum=0.9)
        x = torch.randn(32, 64)
        for _ in range(20):
            opt.zero_grad()
            (layer(x).square().mean() * loss_scale).backward()
            assert layer.scores.grad.abs().max() > 0
            opt.step()
        return float(unmoved_groups(layer.scores, layer.alive).float().mean())

    assert unmoved_share(1e-3) < 0.05  # score gradients ~1e-5: they move
    assert unmoved_share(1e-5) == 1.0  # ~1e-7: every step rounds away
