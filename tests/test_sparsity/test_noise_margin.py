"""removal_step(margin=...): decisions within the noise go to magnitude
(LBCHook(noise_margin=...)); margin None / 0 is the exact-tie rule bit for bit."""
import pytest
import torch

from lbc_mm.sparsity import removal_step
from lbc_mm.sparsity.lbc import noise_tier


def _case():
    # One 1:4 group (C = 4): scores and summed |w| per candidate.
    scores = torch.tensor([[1.0, 1.05, 0.5, 2.0]])
    magnitude = torch.tensor([[4.0, 1.0, 3.0, 2.0]], dtype=torch.float64)
    return scores, torch.ones(1, 4, dtype=torch.bool), magnitude


@pytest.mark.parametrize('margin, kept', [
    (None, [1, 3]),   # scores decide: 2.0 and 1.05
    (0.0, [1, 3]),    # no exact tie: the same
    (0.1, [0, 3]),    # 1.0 vs 1.05 within the noise: magnitude 4 beats 1
    (0.6, [0, 3]),    # 0.5 joins the contested ones; 4 still best
    (1.0, [0, 2]),    # even 2.0 is within the noise of 1.05: the 2 largest |w|
])
def test_margin_changes_the_decision_as_specified(margin, kept):
    scores, alive, magnitude = _case()
    removal_step(scores, alive, 2, magnitude, margin)
    assert alive[0].nonzero().flatten().tolist() == kept
    assert (scores[~alive] == 0).all() and (scores[alive] != 0).all()


def test_tiers():
    scores, alive, _ = _case()
    alive[0, 2] = False
    assert noise_tier(scores, alive, 2, 0.1).tolist() == [[1, 1, -1, 2]]
    # Fewer alive than `keep`: every alive candidate is tier 2 (nothing to decide).
    alive[0, 1] = False
    assert noise_tier(scores, alive, 3, 0.1).tolist() == [[2, -1, -1, 2]]


def test_margin_zero_is_the_exact_tie_rule_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        # Scores on a coarse grid: many exact ties, as in groups without gradient.
        scores = torch.randint(0, 3, (64, 6), generator=gen).float()
        alive = torch.rand(64, 6, generator=gen) < 0.8
        alive[:, 0] = True
        scores[~alive] = 0
        magnitude = torch.rand(64, 6, generator=gen, dtype=torch.float64)
        a, b = (scores.clone(), alive.clone()), (scores.clone(), alive.clone())
        removal_step(*a, 2, magnitude)
        removal_step(*b, 2, magnitude, 0.0)
        assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


def test_margin_needs_magnitude():
    scores, alive, _ = _case()
    with pytest.raises(ValueError, match='needs magnitude'):
        removal_step(scores, alive, 2, None, 0.1)
