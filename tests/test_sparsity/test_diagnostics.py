"""lbc_mm.sparsity.diagnostics: how settled LBC's candidate choice is."""
import math

import pytest
import torch

from lbc_mm.sparsity import (
    candidate_matrix,
    init_scores,
    magnitude_mask,
    removal_step,
    to_groups,
)
from lbc_mm.sparsity.diagnostics import (
    best_candidate,
    decision_margin,
    magnitude_agreement,
    score_spread,
    score_step_rms,
    settledness,
)


def test_best_candidate_ignores_removed_and_breaks_ties_low():
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.2, 0.1], [0.0, 0.3, 0.0]])
    alive = torch.tensor([[True, True, False], [True, True, True],
                          [False, True, False]])
    assert best_candidate(scores, alive).tolist() == [1, 0, 1]


def test_best_candidate_is_what_removal_keeps():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 6, generator=gen)
    scores[:5, :2] = 0.7  # ties
    alive = torch.ones(50, 6, dtype=torch.bool)
    best = best_candidate(scores, alive)
    kept = scores.clone()
    removal_step(kept, alive, 1)
    assert torch.equal(alive.float().argmax(dim=1), best)


def test_decision_margin():
    scores = torch.tensor([[0.9, 0.5, 0.4, 0.1], [0.3, 0.3, 0.0, 0.0],
                           [0.5, 0.0, 0.0, 0.0]])
    alive = torch.tensor([[True] * 4, [True, True, False, False],
                          [True, False, False, False]])
    # keep 2: group 0 decides between 0.5 and 0.4; group 1 has 2 alive (not
    # affected), group 2 one.
    assert torch.allclose(decision_margin(scores, alive, 2), torch.tensor([0.1]))
    # keep 1: best vs second, for the groups with >= 2 alive.
    assert torch.allclose(decision_margin(scores, alive, 1),
                          torch.tensor([0.4, 0.0]))
    assert decision_margin(scores, alive, 4).numel() == 0
    with pytest.raises(ValueError):
        decision_margin(scores, alive, 0)


def test_score_step_rms_counts_alive_only():
    before = torch.zeros(2, 3)
    after = torch.tensor([[0.3, 0.4, 9.0], [0.0, 0.0, 0.0]])
    alive = torch.tensor([[True, True, False], [True, True, False]])
    # alive diffs 0.3, 0.4, 0, 0 -> sqrt(0.25 / 4)
    assert float(score_step_rms(before, after, alive)) == pytest.approx(0.25)
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert float(score_step_rms(before, after, none)) == 0


def test_score_spread():
    scores = torch.tensor([[1.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    alive = torch.tensor([[True, True, False], [True, False, False]])
    assert score_spread(scores, alive) == pytest.approx(1.0)  # +-1 around 2
    assert score_spread(init_scores(4, 2, 4), torch.ones(4, 6, dtype=torch.bool)) == 0


def test_magnitude_agreement_exact_and_chance():
    torch.manual_seed(0)
    n, m = 2, 4
    weight = torch.randn(16, 8)  # (out, in): 32 groups of 4 along `in`
    cands = candidate_matrix(n, m)  # (6, 4)
    num_g = weight.numel() // m
    alive = torch.ones(num_g, cands.shape[0], dtype=torch.bool)
    groups = to_groups(weight, m)  # (32, 4)
    # Scores that rank each group's magnitude candidate first: agreement 1.
    top = to_groups(magnitude_mask(weight, n, m), m).float()
    hits = (top @ cands.t()) == n  # (G, C), one True per row
    assert magnitude_agreement(groups, hits.float(), alive, cands) == 1.0
    # The opposite ranking never agrees.
    assert magnitude_agreement(groups, (~hits).float(), alive, cands) == 0.0
    # Only alive candidates count: remove the magnitude one, agreement 0.
    assert magnitude_agreement(groups, hits.float(), alive & ~hits, cands) == 0.0
    # A subset of rows works the same way.
    assert magnitude_agreement(groups[::3], hits.float()[::3], alive[::3],
                               cands) == 1.0
    # Random scores: about 1/C.
    weight = torch.randn(600, 16)
    scores = torch.rand(weight.numel() // m, 6)
    alive = torch.ones_like(scores, dtype=torch.bool)
    agree = magnitude_agreement(to_groups(weight, m), scores, alive, cands)
    assert abs(agree - 1 / 6) < 0.03
    with pytest.raises(ValueError, match='do not match'):
        magnitude_agreement(groups[:3], scores[:4], alive[:4], cands)


def test_settledness():
    assert settledness(torch.tensor([1.0, 2.0, 9.0]), 0.5) == pytest.approx(4.0)
    assert settledness(torch.tensor([]), 0.5) is None
    assert settledness(torch.tensor([1.0]), 0.0) is None
    assert not math.isnan(settledness(torch.tensor([0.0]), 1.0))
