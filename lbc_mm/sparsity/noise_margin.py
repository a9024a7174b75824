"""Removal decisions within the noise go to magnitude (``LBCHook(noise_margin=...)``,
docs/training_cost.md): the rank tiers :func:`lbc_mm.sparsity.lbc.removal_step`
sorts by when it is given a margin. Pure tensor math.

Shapes: scores / alive ``(G, C)``.
"""
import torch
from torch import Tensor

__all__ = ['noise_tier']


def noise_tier(scores: Tensor, alive: Tensor, keep: int, margin) -> Tensor:
    """Rank tiers of a removal step whose near-ties go to magnitude.

    Per group, with ``s_k`` the ``keep``-th best alive score: tier 2 for alive
    candidates above ``s_k + margin`` (kept whatever their magnitude), 1 for alive
    candidates within ``margin`` of ``s_k`` (the step's contested decisions, ranked
    by magnitude), 0 for the alive ones below, -1 for removed ones. With
    ``margin = 0`` tier 1 is exactly the candidates tied with ``s_k``: the exact-tie
    rule of :func:`removal_step`.

    Args:
        scores (Tensor): ``(G, C)``.
        alive (Tensor): ``(G, C)`` bool.
        keep (int): Candidates kept per group, ``1 <= keep < C``.
        margin (float or Tensor): ``>= 0``, a scalar or ``(G, 1)``.

    Returns:
        Tensor: ``(G, C)`` float tiers.
    """
    keys = scores.detach().masked_fill(~alive, float('-inf'))  # (G, C)
    s_k = torch.topk(keys, keep, dim=1).values[:, keep - 1:keep]  # (G, 1)
    # A group with fewer than `keep` alive candidates has s_k = -inf: all its
    # alive candidates are tier 2 (nothing to decide).
    above = alive & (keys > s_k + margin)
    near = alive & ~above & (keys >= s_k - margin)
    tier = torch.where(alive, 0.0, -1.0).to(torch.float32)
    return tier.masked_fill(near, 1.0).masked_fill(above, 2.0)
