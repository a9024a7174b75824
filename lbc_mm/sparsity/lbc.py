"""LBC math (docs/method.md §2-§7): scores, mask, schedule and removal.

Shapes: ``G = numel / m`` groups, ``C = C(m, n)`` candidates; scores and ``alive``
``(G, C)``, the candidate matrix ``B`` ``(C, m)``. Pure tensor math.
"""
import math
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .patterns import from_groups, grouped_product, validate_pattern

#: How :func:`removal_step` ranks alive candidates with exactly equal scores:
#: ``'magnitude'`` (larger summed ``|w|`` first, then the lower index) or
#: ``'index'`` (the lower candidate index first).
TIE_BREAKS = ('magnitude', 'index')

__all__ = [
    'LBCMaskFunction',
    'TIE_BREAKS',
    'candidate_magnitude',
    'card',
    'card_at_epoch_start',
    'init_scores',
    'lbc_mask',
    'lbc_masked_weight',
    'noise_tier',
    'removal_step',
]


def init_scores(num_groups: int,
                n: int,
                m: int,
                dtype: torch.dtype = torch.float32,
                device: Optional[torch.device] = None) -> Tensor:
    """``(G, C(m, n))`` initial scores, every entry ``1 / C(m-1, n-1)`` (§2)."""
    validate_pattern(n, m)
    value = 1.0 / math.comb(m - 1, n - 1)
    return torch.full((num_groups, math.comb(m, n)), value, dtype=dtype, device=device)


def _group_mask(alive: Tensor, candidates: Tensor) -> Tensor:
    """``(G, C)`` alive x ``(C, m)`` candidates -> ``(G, m)`` bool mask (§3)."""
    with torch.autocast(alive.device.type, enabled=False):
        return (alive.to(candidates.dtype) @ candidates) > 0  # (G, m)


class LBCMaskFunction(torch.autograd.Function):
    """``W_eff = mask * W`` with the straight-through gradients of step 4.

    Forward: ``mask = ((S * alive) @ B) != 0`` in the group view.
    Backward: ``dW = mask * dW_eff``; ``dS = (to_groups(W * dW_eff) @ B^T) * alive``.

    ``apply(weight, scores, candidates, alive, mask)``: ``alive=None`` means every
    candidate is alive (skips the final ``* alive``) and needs ``mask``: a
    precomputed mask in ``weight.shape`` (bool or ``weight.dtype``, e.g. cached by a
    layer while ``alive`` does not change); None computes it from ``alive``.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, scores: Tensor, candidates: Tensor,
                alive: Optional[Tensor], mask: Optional[Tensor] = None) -> Tensor:
        if mask is None:
            mask = from_groups(_group_mask(alive, candidates), weight.shape)
        ctx.save_for_backward(weight, mask, candidates, alive)
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        """Straight-through gradients (``mask`` treated as ``soft``)."""
        weight, mask, candidates, alive = ctx.saved_tensors
        grad_w = grad_s = None
        with torch.autocast(grad_out.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_w = grad_out * mask
            if ctx.needs_input_grad[1]:
                m = candidates.shape[1]
                dsoft = grouped_product(weight, grad_out, m)  # (G, m)
                grad_s = dsoft @ candidates.t().to(dsoft.dtype)  # (G, C)
                if alive is not None:
                    grad_s.mul_(alive)
        return grad_w, grad_s, None, None, None


def lbc_masked_weight(weight: Tensor,
                      scores: Tensor,
                      candidates: Tensor,
                      alive: Optional[Tensor] = None) -> Tensor:
    """``mask * weight`` with gradients to ``weight`` and ``scores`` (§3-§4);
    ``alive`` defaults to ``scores != 0``."""
    _check_scores(weight, scores, candidates)
    if alive is None:
        alive = scores.detach() != 0
    return LBCMaskFunction.apply(weight, scores, candidates, alive)


def lbc_mask(scores: Tensor,
             candidates: Tensor,
             shape: Sequence[int],
             alive: Optional[Tensor] = None) -> Tensor:
    """Contiguous bool mask in the weight ``shape``; ``alive`` defaults to
    ``scores != 0``."""
    if alive is None:
        alive = scores.detach() != 0
    return from_groups(_group_mask(alive, candidates), shape).contiguous()


def _check_scores(weight: Tensor, scores: Tensor, candidates: Tensor) -> None:
    num_c, m = candidates.shape
    expected = (weight.numel() // m, num_c)
    if tuple(scores.shape) != expected:
        raise ValueError(f'scores of shape {tuple(scores.shape)} do not match a '
                         f'weight of shape {tuple(weight.shape)} with {num_c} '
                         f'candidates of size {m}: expected {expected}')


def card(t: float,
         num_candidates: int,
         t_i: float,
         t_f: float,
         power: float = 3) -> int:
    """Alive candidates per group at progress ``t``, in ``[1, C]`` (§5).

    ``t``, ``t_i`` and ``t_f`` share a unit (epochs or iterations).
    """
    if num_candidates < 1:
        raise ValueError(f'card(): num_candidates must be >= 1, got {num_candidates}')
    if not t_f >= t_i:
        raise ValueError(f'card(): t_f={t_f} must not be before t_i={t_i}')
    if not power > 0:
        raise ValueError(f'card(): power must be positive, got {power}')
    if t < t_i:
        return num_candidates
    if t >= t_f:
        return 1
    frac = 1.0 - (t - t_i) / (t_f - t_i)
    value = 1 + math.ceil((num_candidates - 1) * frac**power)
    return max(1, min(num_candidates, value))


def card_at_epoch_start(epochs_done: int,
                        num_candidates: int,
                        t_i: float,
                        t_f: float,
                        power: float = 3,
                        epoch_length: float = 1.0) -> int:
    """``card`` during epoch ``epochs_done`` (0-based) when it is recomputed once
    per epoch, at its start (the authors' code, §10): ``card(epochs_done *
    epoch_length)``, with ``epoch_length`` one epoch in the unit of ``t_i`` /
    ``t_f``."""
    if epochs_done < 0 or int(epochs_done) != epochs_done:
        raise ValueError(f'card_at_epoch_start(): epochs_done must be an integer '
                         f'>= 0, got {epochs_done}')
    if not epoch_length > 0:
        raise ValueError(f'card_at_epoch_start(): epoch_length must be positive, got '
                         f'{epoch_length}')
    return card(int(epochs_done) * epoch_length, num_candidates, t_i, t_f, power)


def candidate_magnitude(weight_groups: Tensor, candidates: Tensor) -> Tensor:
    """``(G, C)`` summed ``|w|`` over each candidate's positions, from ``(G, m)``
    grouped weights; float64 without TF32, so every rank ranks alike."""
    if weight_groups.dim() != 2 or weight_groups.shape[1] != candidates.shape[1]:
        raise ValueError(f'candidate_magnitude(): weight groups '
                         f'{tuple(weight_groups.shape)} do not match candidates '
                         f'{tuple(candidates.shape)}')
    with torch.no_grad(), torch.autocast(weight_groups.device.type, enabled=False):
        mag = weight_groups.detach().abs().to(torch.float64)  # (G, m)
        return mag @ candidates.t().to(torch.float64)  # (G, C)


def removal_step(scores: Tensor, alive: Tensor, keep: int,
                 magnitude: Optional[Tensor] = None, margin=None) -> None:
    """Keep the ``keep`` best alive candidates of every group, in place (§6).

    Removed scores (old or new) become exactly 0. Exactly equal alive scores rank
    by ``magnitude`` (``(G, C)``, larger first) when given, then by the lower
    index. ``margin`` (``LBCHook(noise_margin=...)``, needs ``magnitude``): score
    gaps up to it count as ties too (:func:`noise_tier`); None: exact ties only.

    Raises:
        ValueError: If the shapes differ or ``keep < 1``.
        FloatingPointError: If an alive score is NaN or infinite.
    """
    if scores.shape != alive.shape or scores.dim() != 2:
        raise ValueError(f'removal_step(): scores {tuple(scores.shape)} and alive '
                         f'{tuple(alive.shape)} must both be (G, C)')
    if magnitude is not None and magnitude.shape != scores.shape:
        raise ValueError(f'removal_step(): magnitude {tuple(magnitude.shape)} must '
                         f'match scores {tuple(scores.shape)}')
    if keep < 1:
        raise ValueError(f'removal_step(): keep must be >= 1, got {keep}')
    with torch.no_grad():
        if keep < scores.shape[1]:
            bad = alive & ~torch.isfinite(scores)  # (G, C)
            if bool(bad.any()):
                groups = bad.any(dim=1).nonzero().flatten()
                raise FloatingPointError(
                    f'{int(bad.sum())} non-finite alive scores in '
                    f'{groups.numel()} of {scores.shape[0]} groups (first group '
                    f'{int(groups[0])}); refusing to rank them')
            keys = scores.masked_fill(~alive, float('-inf'))  # removed rank lowest
            if margin is not None:
                if magnitude is None:
                    raise ValueError('removal_step(): a margin needs magnitude')
                keys = noise_tier(scores, alive, keep, margin)
            order = None
            if magnitude is not None:
                # Two stable sorts: by magnitude (index breaks its ties), then by
                # score; the second keeps the first's order among equal scores.
                order = torch.sort(magnitude, dim=1, descending=True,
                                   stable=True).indices  # (G, C)
                keys = keys.gather(1, order)
            rank = torch.sort(keys, dim=1, descending=True, stable=True).indices
            if order is not None:
                rank = order.gather(1, rank)  # back to candidate indices
            kept = torch.zeros_like(alive).scatter_(1, rank[:, :keep], True)
            alive &= kept
        scores.masked_fill_(~alive, 0.0)


def noise_tier(scores: Tensor, alive: Tensor, keep: int, margin) -> Tensor:
    """``(G, C)`` rank tiers of a removal step whose near-ties go to magnitude.

    With ``s_k`` the ``keep``-th best alive score of a group: 2 above ``s_k +
    margin`` (kept), 1 within ``margin`` of ``s_k`` (ranked by magnitude), 0 below,
    -1 removed. ``margin`` (``>= 0``, scalar or ``(G, 1)``) 0 gives the exact ties.
    """
    keys = scores.detach().masked_fill(~alive, float('-inf'))  # (G, C)
    s_k = torch.topk(keys, keep, dim=1).values[:, keep - 1:keep]  # (G, 1)
    # A group with fewer than `keep` alive candidates has s_k = -inf: all its
    # alive candidates are tier 2 (nothing to decide).
    above = alive & (keys > s_k + margin)
    near = alive & ~above & (keys >= s_k - margin)
    tier = torch.where(alive, 0.0, -1.0).to(torch.float32)
    return tier.masked_fill(near, 1.0).masked_fill(above, 2.0)
