"""SR-STE and STE masked weights (Zhou et al., "Learning N:M Fine-grained
Structured Sparse Neural Networks From Scratch", ICLR 2021).

Every forward the mask is the N largest ``|w|`` of each group; the backward is
straight-through plus the sparse-refined decay of the pruned weights:
``dW = dW_eff + lambda_w * (1 - mask) * W``. STE is ``lambda_w = 0``.

Pure tensor math, no OpenMMLab imports.
"""
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from .patterns import magnitude_mask

__all__ = ['SRSTEFunction', 'srste_masked_weight']


class SRSTEFunction(torch.autograd.Function):
    """``W_eff = mask * W``; ``dW = dW_eff + lambda_w * (1 - mask) * W``."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, n: int, m: int, lambda_w: float) -> Tensor:
        mask = magnitude_mask(weight, n, m)  # bool, weight shape
        ctx.lambda_w = float(lambda_w)
        if lambda_w:
            ctx.save_for_backward(weight, mask)
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        """Straight-through gradient plus the SR-STE term."""
        if not ctx.lambda_w:
            return grad_out, None, None, None
        weight, mask = ctx.saved_tensors
        return grad_out + ctx.lambda_w * (~mask) * weight, None, None, None


def srste_masked_weight(weight: Tensor,
                        n: int,
                        m: int,
                        lambda_w: float = 2e-4) -> Tensor:
    """``mask * weight`` with the SR-STE backward (STE: ``lambda_w=0``)."""
    if lambda_w < 0:
        raise ValueError(f'SR-STE lambda_w must be >= 0, got {lambda_w}')
    return SRSTEFunction.apply(weight, n, m, lambda_w)
