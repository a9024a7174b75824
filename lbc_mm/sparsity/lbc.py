"""LBC (Learning Best Combination) math: scores, mask, schedule and removal.

Zhang, Lin et al., "Learning Best Combination for Efficient N:M Sparsity",
NeurIPS 2022 (arXiv 2206.06662); docs/method.md §2-§7.

Shapes: a layer has ``G = numel / m`` groups (:mod:`lbc_mm.sparsity.patterns`
fixes their layout) and ``C = C(m, n)`` candidates; scores and ``alive`` are
``(G, C)``, the candidate matrix ``B`` is ``(C, m)``.

Pure tensor math, no OpenMMLab imports.
"""
import math
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .noise_margin import noise_tier
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
    """Initial scores: every entry ``1 / C(m-1, n-1)`` (step 2).

    Each weight belongs to ``C(m-1, n-1)`` candidates, so every weight's summed
    score starts at exactly 1.

    Args:
        num_groups (int): ``G``.
        n (int): Kept weights per group.
        m (int): Group size.
        dtype (torch.dtype): Defaults to torch.float32.
        device (torch.device, optional): Defaults to None.

    Returns:
        Tensor: ``(G, C(m, n))``.
    """
    validate_pattern(n, m)
    value = 1.0 / math.comb(m - 1, n - 1)
    return torch.full((num_groups, math.comb(m, n)), value, dtype=dtype, device=device)


def _group_mask(alive: Tensor, candidates: Tensor) -> Tensor:
    """``(G, C)`` alive x ``(C, m)`` candidates -> ``(G, m)`` bool mask.

    A weight is kept while at least one alive candidate contains it (step 3).
    Counting alive candidates (instead of summing scores) gives the same mask and
    cannot be fooled by alive scores that cancel to exactly 0.
    """
    with torch.autocast(alive.device.type, enabled=False):
        return (alive.to(candidates.dtype) @ candidates) > 0  # (G, m)


class LBCMaskFunction(torch.autograd.Function):
    """``W_eff = mask * W`` with the straight-through gradients of step 4.

    Forward: ``mask = ((S * alive) @ B) != 0`` in the group view.
    Backward: ``dW = mask * dW_eff``; ``dS = (to_groups(W * dW_eff) @ B^T) * alive``.

    ``apply(weight, scores, candidates, alive, mask)``: ``alive=None`` means every
    candidate is alive (skips the final ``* alive``); ``mask`` may be a precomputed
    mask in ``weight.shape`` (bool or ``weight.dtype``, e.g. cached by a layer while
    ``alive`` does not change), None computes it from ``alive``.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, scores: Tensor, candidates: Tensor,
                alive: Optional[Tensor], mask: Optional[Tensor] = None) -> Tensor:
        """Masked weight.

        Args:
            ctx (Any): Autograd context.
            weight (Tensor): Weight (Linear or Conv2d shape).
            scores (Tensor): ``(G, C)``; only its gradient is produced here.
            candidates (Tensor): ``(C, m)``.
            alive (Tensor, optional): ``(G, C)`` bool; None: all alive.
            mask (Tensor, optional): Precomputed mask in ``weight.shape``.

        Returns:
            Tensor: ``mask * weight`` in ``weight.shape``.
        """
        if mask is None:
            if alive is None:
                mask = torch.ones_like(weight, dtype=torch.bool)
            else:
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
    """Effective weight of an LBC layer (steps 3-4).

    Args:
        weight (Tensor): Weight (Linear or Conv2d shape).
        scores (Tensor): ``(G, C)`` scores.
        candidates (Tensor): ``(C, m)`` from
            :func:`~lbc_mm.sparsity.patterns.candidate_matrix`.
        alive (Tensor, optional): ``(G, C)`` bool; defaults to ``scores != 0``.

    Returns:
        Tensor: ``mask * weight``; gradients flow to ``weight`` and ``scores``.
    """
    _check_scores(weight, scores, candidates)
    if alive is None:
        alive = scores.detach() != 0
    return LBCMaskFunction.apply(weight, scores, candidates, alive)


def lbc_mask(scores: Tensor,
             candidates: Tensor,
             shape: Sequence[int],
             alive: Optional[Tensor] = None) -> Tensor:
    """Current binary mask of an LBC layer.

    Args:
        scores (Tensor): ``(G, C)``.
        candidates (Tensor): ``(C, m)``.
        shape (Sequence[int]): Weight shape.
        alive (Tensor, optional): ``(G, C)`` bool; defaults to ``scores != 0``.

    Returns:
        Tensor: bool mask in ``shape`` (contiguous).
    """
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
    """Alive candidates per group at progress ``t`` (step 5).

    ``card(t) = 1 + ceil((C - 1) * (1 - (t - t_i) / (t_f - t_i)) ** power)``,
    ``C`` before ``t_i``, 1 from ``t_f`` on.

    Args:
        t (float): Training progress (epochs or iterations).
        num_candidates (int): ``C``.
        t_i (float): Start of removal, same unit as ``t``.
        t_f (float): End of removal, same unit as ``t``.
        power (float): Exponent ``p``. Defaults to 3.

    Returns:
        int: In ``[1, C]``.
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
    """Alive candidates per group during an epoch when ``card`` is recomputed once
    per epoch, at its start (the LBC authors' released code).

    During epoch ``epochs_done`` (0-based: that many epochs are complete) every
    removal step keeps ``card(epochs_done * epoch_length)``: with ``t_i = 0`` nothing
    is removed during the first epoch, then at each epoch start several candidates
    may go at once. At epoch boundaries it equals the per-iteration :func:`card`.

    Args:
        epochs_done (int): Completed epochs, ``>= 0``.
        num_candidates (int): ``C``.
        t_i (float): Start of removal, in units where one epoch is
            ``epoch_length`` long.
        t_f (float): End of removal, same unit.
        power (float): Exponent ``p``. Defaults to 3.
        epoch_length (float): Length of one epoch in the unit of ``t_i`` / ``t_f``
            (1 for epochs, the iterations per epoch for iterations). Defaults to 1.

    Returns:
        int: In ``[1, C]``.
    """
    if epochs_done < 0 or int(epochs_done) != epochs_done:
        raise ValueError(f'card_at_epoch_start(): epochs_done must be an integer '
                         f'>= 0, got {epochs_done}')
    if not epoch_length > 0:
        raise ValueError(f'card_at_epoch_start(): epoch_length must be positive, got '
                         f'{epoch_length}')
    return card(int(epochs_done) * epoch_length, num_candidates, t_i, t_f, power)


def candidate_magnitude(weight_groups: Tensor, candidates: Tensor) -> Tensor:
    """Summed ``|w|`` over each candidate's ``n`` positions (the magnitude evidence).

    Args:
        weight_groups (Tensor): ``(G, m)`` weights in the grouped view
            (``to_groups(weight, m)``).
        candidates (Tensor): ``(C, m)`` 0/1 candidate matrix.

    Returns:
        Tensor: ``(G, C)`` float64 (exact sums of a few float32 values, no TF32,
        so every rank ranks equal weights the same way).
    """
    if weight_groups.dim() != 2 or weight_groups.shape[1] != candidates.shape[1]:
        raise ValueError(f'candidate_magnitude(): weight groups '
                         f'{tuple(weight_groups.shape)} do not match candidates '
                         f'{tuple(candidates.shape)}')
    with torch.no_grad(), torch.autocast(weight_groups.device.type, enabled=False):
        mag = weight_groups.detach().abs().to(torch.float64)  # (G, m)
        return mag @ candidates.t().to(torch.float64)  # (G, C)


def removal_step(scores: Tensor, alive: Tensor, keep: int,
                 magnitude: Optional[Tensor] = None, margin=None) -> None:
    """Remove the lowest-scoring candidates of every group, in place (step 6).

    Afterwards exactly ``min(keep, alive_before)`` candidates per group are alive,
    and every removed score (old or new) is exactly 0. Removed candidates rank
    lowest. Alive candidates with exactly equal scores (scores that got no
    gradient) rank by ``magnitude`` (larger first) when it is given, then by the
    lower candidate index, so every DDP rank removes the same candidates. Where
    the scores differ the result does not depend on ``magnitude``.

    Args:
        scores (Tensor): ``(G, C)`` float scores (a Parameter is fine).
        alive (Tensor): ``(G, C)`` bool, updated in place.
        keep (int): Candidates to keep per group, ``card(t)``.
        magnitude (Tensor, optional): ``(G, C)`` tie-break key, e.g.
            :func:`candidate_magnitude` (``tie_break='magnitude'``). Defaults to
            None: ties go to the lower index (``tie_break='index'``).
        margin (float or Tensor, optional): Score gaps up to this count as ties
            (``LBCHook(noise_margin=...)``): the candidates within ``margin`` of
            the ``keep``-th best score are ranked by ``magnitude`` (required),
            those above it are kept (:func:`noise_tier`). Defaults to None:
            exact ties only (the rule above, bit for bit).

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
