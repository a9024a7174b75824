"""Tests of the LBC math against the plain-loop reference of docs/method.md."""
import math

import pytest
import torch

from lbc_mm.sparsity import (
    candidate_matrix,
    card,
    card_at_epoch_start,
    from_groups,
    init_scores,
    lbc_mask,
    lbc_masked_weight,
    removal_step,
    to_groups,
)

from .reference import ref_card, ref_grads, ref_mask, ref_remove

PATTERNS = [(2, 4), (1, 4), (2, 8), (4, 8), (1, 16)]


def _shape(kind, m):
    return (3, 2 * m) if kind == 'linear' else (2, 2 * m, 3, 2)


def _random_alive(num_groups, num_c, gen):
    alive = torch.rand(num_groups, num_c, generator=gen) < 0.5
    alive[:, 0] = True  # at least one alive candidate per group
    return alive


@pytest.mark.parametrize('n,m', PATTERNS)
def test_init_scores_sum_to_one_per_weight(n, m):
    scores = init_scores(5, n, m, dtype=torch.float64)
    assert scores.shape == (5, math.comb(m, n))
    per_weight = scores @ candidate_matrix(n, m, dtype=torch.float64)  # (G, m)
    torch.testing.assert_close(per_weight, torch.ones(5, m, dtype=torch.float64))


@pytest.mark.parametrize('n,m', PATTERNS)
@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_mask_and_gradients_match_reference(n, m, kind):
    gen = torch.Generator().manual_seed(7 * n + m)
    shape = _shape(kind, m)
    weight = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    num_groups, num_c = weight.numel() // m, math.comb(m, n)
    alive = _random_alive(num_groups, num_c, gen)
    scores = torch.rand(num_groups, num_c, generator=gen, dtype=torch.float64) + 0.1
    scores = (scores * alive).requires_grad_()
    cand = candidate_matrix(n, m, dtype=torch.float64)
    eff = lbc_masked_weight(weight, scores, cand)  # alive derived from scores != 0
    expected_mask = ref_mask(shape, alive.tolist(), n, m)
    assert torch.equal(eff, weight.detach() * expected_mask)
    assert torch.equal(lbc_mask(scores, cand, shape), expected_mask)
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
    (eff * upstream).sum().backward()
    ref_w, ref_s = ref_grads(weight.detach(), upstream, alive.tolist(), n, m)
    torch.testing.assert_close(weight.grad, ref_w)
    torch.testing.assert_close(scores.grad, ref_s)


def test_all_alive_mask_is_dense():
    weight = torch.randn(4, 8, 3, 3)
    scores = init_scores(4 * 8 * 9 // 4, 2, 4)
    eff = lbc_masked_weight(weight, scores, candidate_matrix(2, 4))
    assert torch.equal(eff, weight)


def test_explicit_alive_overrides_scores():
    # A removed candidate whose score momentum moved away from 0 stays removed.
    scores = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.0, 0.3]])  # (1, 6)
    alive = torch.tensor([[True, False, False, False, False, False]])
    mask = lbc_mask(scores, candidate_matrix(2, 4), (1, 4), alive)
    assert mask.tolist() == [[True, True, False, False]]


def test_scores_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r'expected \(4, 6\)'):
        lbc_masked_weight(torch.ones(2, 8), torch.ones(3, 6), candidate_matrix(2, 4))


@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_gradcheck_weight_path(kind):
    gen = torch.Generator().manual_seed(3)
    shape = _shape(kind, 4)
    weight = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    alive = _random_alive(weight.numel() // 4, 6, gen)
    scores = init_scores(weight.numel() // 4, 2, 4, dtype=torch.float64) * alive
    cand = candidate_matrix(2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: lbc_masked_weight(w, scores, cand, alive),
                                    (weight, ))


def _surrogate(weight, scores, cand, alive):
    """Forward equals ``W * ((S * alive) @ B)`` grouped: differentiable in S."""
    soft = (scores * alive) @ cand  # (G, m)
    return weight * from_groups(soft, weight.shape)


@pytest.mark.parametrize('n,m', [(2, 4), (2, 8)])
@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_score_gradient_equals_straight_through_surrogate(n, m, kind):
    gen = torch.Generator().manual_seed(11)
    shape = _shape(kind, m)
    num_groups, num_c = math.prod(shape) // m, math.comb(m, n)
    weight = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    alive = _random_alive(num_groups, num_c, gen)
    scores = (torch.rand(num_groups, num_c, generator=gen, dtype=torch.float64) *
              alive).requires_grad_()
    cand = candidate_matrix(n, m, dtype=torch.float64)
    # The surrogate's own derivative is right (gradcheck), ...
    assert torch.autograd.gradcheck(
        lambda s: _surrogate(weight.detach(), s, cand, alive), (scores, ))
    # ... and the custom function's score gradient equals it.
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
    (lbc_masked_weight(weight, scores, cand, alive) * upstream).sum().backward()
    surrogate_grad, = torch.autograd.grad(
        (_surrogate(weight.detach(), scores, cand, alive) * upstream).sum(), scores)
    torch.testing.assert_close(scores.grad, surrogate_grad)


def test_card_schedule():
    assert [card(t, 6, 0, 10) for t in range(12)] == [ref_card(t, 6, 0, 10, 3)
                                                      for t in range(12)]
    assert card(0, 70, 0, 60) == 70 and card(60, 70, 0, 60) == 1
    assert card(-1, 70, 0, 60) == 70 and card(1e9, 70, 0, 60) == 1
    assert card(5, 6, 5, 5) == 1 and card(4.9, 6, 5, 5) == 6  # step schedule
    # A larger power removes faster early on.
    assert card(10, 70, 0, 60, power=4) < card(10, 70, 0, 60, power=3)
    values = [card(t / 10, 28, 2, 9) for t in range(120)]
    assert values == sorted(values, reverse=True)
    for bad in (dict(t_i=5, t_f=4), dict(power=0), dict(num_candidates=0)):
        args = dict(t=1, num_candidates=6, t_i=0, t_f=10, power=3)
        args.update(bad)
        with pytest.raises(ValueError):
            card(**args)


def test_card_at_epoch_start_is_card_of_the_epoch_start():
    """The authors' stepping: card(e) during all of epoch e (0-based)."""
    for e in range(0, 130):
        assert card_at_epoch_start(e, 6, 0, 60) == ref_card(e, 6, 0, 60, 3)
        assert card_at_epoch_start(e, 28, 0, 200, power=4) == ref_card(e, 28, 0, 200,
                                                                       4)
    assert card_at_epoch_start(0, 70, 0, 60) == 70  # nothing goes in epoch 0
    assert card_at_epoch_start(1, 70, 0, 60) < 70  # ... then several at once
    assert 70 - card_at_epoch_start(1, 70, 0, 60) > 1
    # In iterations (epoch_length = iterations per epoch): the same steps.
    for e in range(12):
        assert card_at_epoch_start(e, 6, 0, 60 * 5, 3, epoch_length=5) == card(
            e, 6, 0, 60)
    # Per-iteration and per-epoch stepping agree at every epoch boundary.
    ipe = 7
    for it in range(0, 10 * ipe + 1, ipe):
        assert card_at_epoch_start(it // ipe, 6, 0, 9) == card(it / ipe, 6, 0, 9)
    for bad in (dict(epochs_done=-1), dict(epochs_done=1.5), dict(epoch_length=0)):
        args = dict(epochs_done=1, num_candidates=6, t_i=0, t_f=10)
        args.update(bad)
        with pytest.raises(ValueError):
            card_at_epoch_start(**args)


@pytest.mark.parametrize('n,m', PATTERNS)
@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_removal_trajectory_matches_reference(n, m, kind):
    """Whole run: SGD with momentum on scores, removal every step (steps 4-7)."""
    gen = torch.Generator().manual_seed(100 * n + m)
    shape = _shape(kind, m)
    num_groups, num_c = math.prod(shape) // m, math.comb(m, n)
    cand = candidate_matrix(n, m, dtype=torch.float64)
    weight = torch.randn(shape, generator=gen, dtype=torch.float64)
    scores = init_scores(num_groups, n, m, dtype=torch.float64).requires_grad_()
    alive = torch.ones(num_groups, num_c, dtype=torch.bool)
    lr, mom, wd = 0.05, 0.9, 1e-3
    opt = torch.optim.SGD([scores], lr=lr, momentum=mom, weight_decay=wd)
    # Independent reference run: loop gradients, hand-written momentum SGD.
    ref_scores = scores.detach().clone()
    ref_buf = None
    ref_alive = alive.tolist()
    steps, t_f = 14, 10
    for t in range(steps):
        upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        (lbc_masked_weight(weight, scores, cand, alive) * upstream).sum().backward()
        opt.step()
        _, ref_grad = ref_grads(weight, upstream, ref_alive, n, m)
        d_p = ref_grad + wd * ref_scores
        ref_buf = d_p if ref_buf is None else mom * ref_buf + d_p
        ref_scores = ref_scores - lr * ref_buf  # removed ones may move: momentum
        keep = card(t + 1, num_c, 0, t_f)
        assert keep == ref_card(t + 1, num_c, 0, t_f, 3)
        ref_list = ref_scores.tolist()
        ref_remove(ref_list, ref_alive, keep)
        ref_scores = torch.tensor(ref_list, dtype=torch.float64)
        removal_step(scores.data, alive, keep)
        assert alive.tolist() == ref_alive
        torch.testing.assert_close(scores.detach(), ref_scores)
        assert (alive.sum(1) == keep).all()  # alive count per group is card(t)
        assert (scores.detach()[~alive] == 0).all()
    assert keep == 1
    final = lbc_mask(scores, cand, shape, alive)
    assert torch.equal(final, ref_mask(shape, ref_alive, n, m))
    assert (to_groups(final, m).sum(1) == n).all()  # exactly N ones per group


def test_removal_ties_prefer_lower_index_and_removed_rank_lowest():
    scores = torch.tensor([[1.0, 1.0, 1.0, 2.0], [5.0, -3.0, 0.0, -1.0]])
    alive = torch.tensor([[True, True, True, True], [False, True, False, True]])
    removal_step(scores, alive, 2)
    assert alive.tolist() == [[True, False, False, True], [False, True, False, True]]
    assert scores.tolist() == [[1.0, 0.0, 0.0, 2.0], [0.0, -3.0, 0.0, -1.0]]
    removal_step(scores, alive, 1)
    assert alive.tolist() == [[False, False, False, True], [False, False, False, True]]
    # keep >= alive: nothing is added back, removed scores are re-zeroed.
    scores[0, 0] = 9.0
    removal_step(scores, alive, 4)
    assert alive.sum().item() == 2 and scores[0, 0] == 0


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_removal_refuses_non_finite_scores(bad):
    scores = torch.ones(3, 6)
    scores[1, 2] = bad
    alive = torch.ones(3, 6, dtype=torch.bool)
    with pytest.raises(FloatingPointError, match='non-finite.*group 1'):
        removal_step(scores, alive, 3)
    assert alive.all()  # nothing was removed
    # A non-finite score of an already removed candidate is fine.
    alive[1, 2] = False
    removal_step(scores, alive, 3)
    assert scores[1, 2] == 0 and (alive.sum(1) == 3).all()


def test_removal_rejects_bad_arguments():
    with pytest.raises(ValueError, match='keep'):
        removal_step(torch.ones(2, 6), torch.ones(2, 6, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match=r'\(G, C\)'):
        removal_step(torch.ones(2, 6), torch.ones(2, 5, dtype=torch.bool), 1)


def test_bf16_autocast_cpu():
    weight = torch.randn(8, 16, 3, 3, requires_grad=True)
    scores = init_scores(8 * 16 * 9 // 4, 2, 4).requires_grad_()
    alive = torch.ones(scores.shape, dtype=torch.bool)
    scores.data.add_(torch.rand(scores.shape))
    removal_step(scores.data, alive, 1)
    cand = candidate_matrix(2, 4)
    x = torch.randn(2, 16, 8, 8)
    with torch.autocast('cpu', torch.bfloat16):
        eff = lbc_masked_weight(weight, scores, cand, alive)
        out = torch.nn.functional.conv2d(x, eff)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert scores.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert (scores.grad[~alive] == 0).all() and scores.grad.abs().sum() > 0
