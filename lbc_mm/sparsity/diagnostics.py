"""How settled LBC's candidate choice is (pure tensor math, no OpenMMLab imports).

LBC decides which candidate of a group survives from accumulated score gradients.
When the removal window is short, the alive scores of a group may differ by less
than what one or two noisy iterations move them: the choice is then close to a coin
flip. These functions measure that; ``LBCHook`` logs them at every card step and at
the end of training.

* :func:`decision_margin`: per group, the gap between the lowest kept and the
  highest removed alive score of a removal step (``keep`` = card after the step);
  for ``keep=1`` the gap between the best and the second alive score.
* :func:`score_step_rms`: the RMS change of alive scores between two snapshots, i.e.
  how far one iteration (optimizer step: gradient, momentum, decay) moves a score.
  ``margin / step`` is the margin in "iterations' worth of score movement": below a
  few, a handful of batches could have swapped the choice.
* :func:`magnitude_agreement`: the fraction of groups whose best alive candidate
  is the magnitude choice (the ``n`` largest ``|w|``). By chance it is ``1 / C``
  for random choices; 1 means LBC chose what one-shot magnitude pruning (ASP)
  would have.
* :func:`score_spread`: the RMS deviation of alive scores from their group mean.
* :func:`unmoved_groups`: groups whose alive scores are all exactly equal, i.e.
  never got gradient (frozen or zero-gradient weights): there the choice rests on
  the layer's ``tie_break``, not on a margin, so they are counted apart.

Over a run, on the layers themselves: :mod:`lbc_mm.hooks.lbc_settledness`.

Shapes: ``scores`` / ``alive`` ``(G, C)``, candidates ``(C, m)``.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    'best_candidate',
    'decision_margin',
    'magnitude_agreement',
    'score_spread',
    'score_step_rms',
    'settledness',
    'unmoved_groups',
]


def _check(scores: Tensor, alive: Tensor) -> None:
    if scores.shape != alive.shape or scores.dim() != 2:
        raise ValueError(f'scores {tuple(scores.shape)} and alive '
                         f'{tuple(alive.shape)} must both be (G, C)')


def best_candidate(scores: Tensor, alive: Tensor) -> Tensor:
    """Index of the best alive candidate of every group.

    Ties go to the lower candidate index (``removal_step`` with
    ``tie_break='index'``); at card 1 this is the one alive candidate.

    Returns:
        Tensor: ``(G,)`` long.
    """
    _check(scores, alive)
    # argmax returns the first maximal index.
    return scores.detach().masked_fill(~alive, float('-inf')).argmax(dim=1)


def decision_margin(scores: Tensor, alive: Tensor, keep: int) -> Tensor:
    """Score gap a removal step down to ``keep`` candidates decides on.

    For every group with more than ``keep`` alive candidates: the ``keep``-th best
    alive score minus the ``keep + 1``-th best (>= 0). Call it *before* the
    removal.

    Args:
        scores (Tensor): ``(G, C)``.
        alive (Tensor): ``(G, C)`` bool.
        keep (int): Candidates kept per group by the step (>= 1).

    Returns:
        Tensor: ``(G',)`` float margins of the ``G'`` groups the step changes
        (empty when it changes none).
    """
    _check(scores, alive)
    if keep < 1:
        raise ValueError(f'decision_margin(): keep must be >= 1, got {keep}')
    if keep >= scores.shape[1]:
        return scores.new_zeros(0)
    affected = alive.sum(dim=1) > keep  # (G,)
    keys = scores.detach()[affected].masked_fill(~alive[affected], float('-inf'))
    top = torch.topk(keys, keep + 1, dim=1).values  # (G', keep+1), descending
    return top[:, keep - 1] - top[:, keep]


def unmoved_groups(scores: Tensor, alive: Tensor) -> Tensor:
    """Groups whose alive scores are all exactly equal (no gradient evidence).

    Scores that never got gradient move together (same init, same decay and
    momentum), so they stay bit-equal; one alive candidate counts as unmoved.

    Returns:
        Tensor: ``(G,)`` bool.
    """
    _check(scores, alive)
    s = scores.detach()
    high = s.masked_fill(~alive, float('-inf')).amax(dim=1)  # (G,)
    low = s.masked_fill(~alive, float('inf')).amin(dim=1)  # (G,)
    return high == low


def score_step_rms(before: Tensor, after: Tensor, alive: Tensor) -> Tensor:
    """RMS change of the alive scores between two snapshots (0 when none alive).

    Args:
        before (Tensor): ``(G, C)`` scores at an earlier iteration.
        after (Tensor): ``(G, C)`` scores now.
        alive (Tensor): ``(G, C)`` bool, candidates alive now.

    Returns:
        Tensor: 0-dim float32 on the scores' device (no host sync, so a hook can
        call it every iteration on a GPU).
    """
    _check(after, alive)
    a = alive.to(torch.float32)
    diff = (after.detach() - before.detach()).to(torch.float32) * a
    return diff.pow(2).sum().div(a.sum().clamp(min=1)).sqrt()


def score_spread(scores: Tensor, alive: Tensor) -> float:
    """RMS deviation of alive scores from their group's alive mean.

    Only groups with at least two alive candidates count; 0 when there are none.
    """
    _check(scores, alive)
    a = alive.to(torch.float32)
    cnt = a.sum(dim=1)  # (G,)
    multi = (cnt >= 2).to(torch.float32)  # (G,)
    total = float((cnt * multi).sum())
    if total == 0:
        return 0.0
    s = scores.detach().to(torch.float32) * a
    mean = s.sum(dim=1) / cnt.clamp(min=1)  # (G,)
    dev = ((s - mean[:, None]) * a).pow(2).sum(dim=1)  # (G,)
    return float((dev * multi).sum().div(total).sqrt())


def magnitude_agreement(weight_groups: Tensor, scores: Tensor, alive: Tensor,
                        candidates: Tensor) -> float:
    """Fraction of groups whose best alive candidate is the magnitude choice.

    The magnitude choice keeps the ``n`` largest ``|w|`` of a group; a candidate is
    that choice when its smallest kept ``|w|`` is at least its largest removed
    ``|w|`` (with equal magnitudes either choice counts).

    Args:
        weight_groups (Tensor): ``(G, m)`` weights in the grouped view
            (``to_groups(weight, m)``, or some of its rows).
        scores (Tensor): ``(G, C)`` (the same rows).
        alive (Tensor): ``(G, C)`` bool.
        candidates (Tensor): ``(C, m)`` 0/1 candidate matrix.

    Returns:
        float: In ``[0, 1]`` (0 for no groups).
    """
    _check(scores, alive)
    if weight_groups.shape[0] != scores.shape[0] or (
            weight_groups.shape[1] != candidates.shape[1]):
        raise ValueError(f'weight groups {tuple(weight_groups.shape)} do not match '
                         f'scores {tuple(scores.shape)} and candidates '
                         f'{tuple(candidates.shape)}')
    if scores.shape[0] == 0:
        return 0.0
    mag = weight_groups.detach().abs().to(torch.float32)  # (G, m)
    kept = candidates[best_candidate(scores, alive)] != 0  # (G, m) bool
    low_kept = mag.masked_fill(~kept, float('inf')).amin(dim=1)
    high_removed = mag.masked_fill(kept, float('-inf')).amax(dim=1)
    return float((low_kept >= high_removed).to(torch.float32).mean())


def settledness(margins: Tensor, step: float) -> Optional[float]:
    """Median decision margin in units of one iteration's score movement.

    Args:
        margins (Tensor): Margins from :func:`decision_margin`.
        step (float): From :func:`score_step_rms` (same layer / schedule).

    Returns:
        float or None: None when there is no margin or the scores did not move.
    """
    if margins.numel() == 0 or not step > 0:
        return None
    return float(margins.float().median()) / step
