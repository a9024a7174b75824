"""How settled LBC's candidate choice is (docs/method.md, "Ties"); pure tensor math.

A short removal window can leave a group's alive scores closer than one or two noisy
iterations move them: the choice is then close to a coin flip. ``LBCHook`` logs
these measures at every card step and at the end of training
(:mod:`lbc_mm.hooks.lbc_settledness` applies them to the layers). The margin over
:func:`score_step_rms` is the margin in iterations' worth of score movement.

Shapes: ``scores`` / ``alive`` ``(G, C)``, candidates ``(C, m)``.
"""
from typing import Optional

import torch
from torch import Tensor


def best_candidate(scores: Tensor, alive: Tensor) -> Tensor:
    """``(G,)`` index of the best alive candidate (ties: the lower index)."""
    return scores.detach().masked_fill(~alive, float('-inf')).argmax(dim=1)


def decision_margin(scores: Tensor, alive: Tensor, keep: int) -> Tensor:
    """Score gap a removal step down to ``keep`` decides on (call it before).

    Returns:
        Tensor: ``(G',)``, for the ``G'`` groups with more than ``keep`` alive
        candidates: the ``keep``-th best alive score minus the next (>= 0).
    """
    if keep < 1:
        raise ValueError(f'decision_margin(): keep must be >= 1, got {keep}')
    if keep >= scores.shape[1]:
        return scores.new_zeros(0)
    affected = alive.sum(dim=1) > keep  # (G,)
    keys = scores.detach()[affected].masked_fill(~alive[affected], float('-inf'))
    top = torch.topk(keys, keep + 1, dim=1).values  # (G', keep+1), descending
    return top[:, keep - 1] - top[:, keep]


def unmoved_groups(scores: Tensor, alive: Tensor) -> Tensor:
    """``(G,)`` bool: the alive scores are all exactly equal (never got gradient;
    one alive candidate counts as unmoved)."""
    s = scores.detach()
    high = s.masked_fill(~alive, float('-inf')).amax(dim=1)  # (G,)
    low = s.masked_fill(~alive, float('inf')).amin(dim=1)  # (G,)
    return high == low


def score_step_rms(before: Tensor, after: Tensor, alive: Tensor) -> Tensor:
    """RMS change of the alive scores between two snapshots (0 when none alive).

    A 0-dim float32 tensor on the scores' device: no host sync per iteration.
    """
    a = alive.to(torch.float32)
    diff = (after.detach() - before.detach()).to(torch.float32) * a
    return diff.pow(2).sum().div(a.sum().clamp(min=1)).sqrt()


def relative_step_rms(before: Tensor, after: Tensor, alive: Tensor) -> Tensor:
    """RMS of the alive scores' step about their group's mean step (0-dim): what
    moves one candidate against the others of its group; a step the whole group
    shares (decay on equal scores) cancels. Groups with one alive do not count."""
    a = alive.to(torch.float32)  # (G, C)
    step = (after.detach() - before.detach()).to(torch.float32) * a
    cnt = a.sum(dim=1, keepdim=True)  # (G, 1)
    dev = (step - step.sum(dim=1, keepdim=True) / cnt.clamp(min=1)) * a
    multi = (cnt >= 2).to(torch.float32)
    return (dev.pow(2) * multi).sum().div((cnt * multi).sum().clamp(min=1)).sqrt()


def score_spread(scores: Tensor, alive: Tensor) -> float:
    """RMS deviation of alive scores from their group's alive mean.

    Only groups with at least two alive candidates count; 0 when there are none.
    """
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
    """Share of groups whose best alive candidate keeps the ``n`` largest ``|w|``
    of ``weight_groups`` ``(G, m)`` (equal magnitudes: either counts; 0 for no
    groups). By chance about ``1 / C``."""
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
    """Median of :func:`decision_margin` over ``step`` (:func:`score_step_rms`);
    None without margins or when the scores did not move."""
    if margins.numel() == 0 or not step > 0:
        return None
    return float(margins.float().median()) / step
