"""N:M patterns: validation, candidate subsets, the group layout and magnitude masks.

This module is the one place that knows the group layout (docs/method.md, "N:M
layout"): groups are ``m`` consecutive weights along the GEMM reduction axis, i.e.
input channels.

- Linear ``(out, in)``: ``w.reshape(-1, m)`` -> ``(G, m)``.
- Conv2d ``(out, in/groups, kh, kw)``: ``w.permute(0, 2, 3, 1).reshape(-1, m)`` ->
  ``(G, m)``, the NHWC implicit-GEMM layout that sparse tensor cores accelerate.

Pure tensor math, no OpenMMLab imports.
"""
import itertools
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    'candidate_matrix',
    'count_nm_violations',
    'from_groups',
    'group_dim',
    'grouped_product',
    'magnitude_mask',
    'num_candidates',
    'parse_pattern',
    'to_groups',
    'validate_pattern',
]


def validate_pattern(n: int, m: int) -> None:
    """Check that ``n:m`` is a valid N:M pattern.

    Args:
        n (int): Kept weights per group.
        m (int): Group size.

    Raises:
        ValueError: If ``n`` or ``m`` is not an int, ``n <= 0``, ``m <= 0`` or
            ``n >= m``.
    """
    for name, value in (('n', n), ('m', m)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'N:M pattern {n}:{m}: {name} must be an int, '
                             f'got {type(value).__name__}')
    if n <= 0 or m <= 0:
        raise ValueError(f'N:M pattern {n}:{m}: N and M must be positive')
    if n >= m:
        raise ValueError(f'N:M pattern {n}:{m}: N must be smaller than M')


def parse_pattern(text: str) -> Tuple[int, int]:
    """``'2:4'`` -> ``(2, 4)``; ``ValueError`` for anything that is not N:M."""
    parts = str(text).split(':')
    try:
        n, m = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f'pattern {text!r} is not N:M (expected e.g. 2:4)') from None
    try:
        validate_pattern(n, m)
    except ValueError as err:
        raise ValueError(
            f'pattern {text!r} is not a valid N:M pattern: {err}') from None
    return n, m


def num_candidates(n: int, m: int) -> int:
    """Number of candidate subsets ``C(m, n)`` (e.g. 6 for 2:4, 70 for 4:8)."""
    validate_pattern(n, m)
    return math.comb(m, n)


def candidate_matrix(n: int,
                     m: int,
                     dtype: torch.dtype = torch.float32,
                     device: Optional[torch.device] = None) -> Tensor:
    """Binary candidate matrix ``B`` of an N:M pattern (docs/method.md §1).

    Args:
        n (int): Kept weights per group.
        m (int): Group size.
        dtype (torch.dtype): Dtype of the result. Defaults to torch.float32.
        device (torch.device, optional): Device of the result. Defaults to None.

    Returns:
        Tensor: ``(C, m)``; row ``c`` has ones at the positions of the c-th subset
        of ``itertools.combinations(range(m), n)``.
    """
    validate_pattern(n, m)
    combos = list(itertools.combinations(range(m), n))
    rows = torch.tensor(combos, dtype=torch.long)  # (C, n)
    out = torch.zeros(len(combos), m, dtype=dtype)  # (C, m)
    out.scatter_(1, rows, 1)
    return out.to(device) if device is not None else out


def group_dim(shape: Sequence[int]) -> int:
    """Length of the grouped (input-channel) axis of a Linear or Conv2d weight.

    Args:
        shape (Sequence[int]): ``(out, in)`` or ``(out, in/groups, kh, kw)``.

    Returns:
        int: ``in`` or ``in/groups``.
    """
    if len(shape) not in (2, 4):
        raise ValueError(f'N:M groups need a Linear (out, in) or Conv2d '
                         f'(out, in/groups, kh, kw) weight, got shape '
                         f'{tuple(shape)}')
    return int(shape[1])


def _check_divisible(shape: Sequence[int], m: int) -> None:
    cin = group_dim(shape)
    if cin % m != 0:
        raise ValueError(f'weight of shape {tuple(shape)}: input channels '
                         f'{cin} are not a multiple of M={m}')


def to_groups(weight: Tensor, m: int) -> Tensor:
    """View a weight as N:M groups.

    Args:
        weight (Tensor): ``(out, in)`` or ``(out, in/groups, kh, kw)``.
        m (int): Group size.

    Returns:
        Tensor: ``(G, m)`` with ``G = numel / m``; a view for Linear, a copy for
        Conv2d (permuted to ``(out, kh, kw, in/groups)`` first).
    """
    _check_divisible(weight.shape, m)
    if weight.dim() == 4:
        weight = weight.permute(0, 2, 3, 1)  # (out, kh, kw, cin)
    return weight.reshape(-1, m)


def from_groups(groups: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`to_groups`.

    Args:
        groups (Tensor): ``(G, m)``.
        shape (Sequence[int]): The weight shape.

    Returns:
        Tensor: In ``shape``; a (possibly non-contiguous) view of ``groups``.
    """
    shape = tuple(int(s) for s in shape)
    if groups.numel() != math.prod(shape):
        raise ValueError(f'{tuple(groups.shape)} groups do not fill a weight of '
                         f'shape {shape}')
    if len(shape) == 4:
        out_c, cin, kh, kw = shape
        return groups.reshape(out_c, kh, kw, cin).permute(0, 3, 1, 2)
    group_dim(shape)
    return groups.reshape(shape)


def grouped_product(a: Tensor, b: Tensor, m: int) -> Tensor:
    """``to_groups(a * b, m)`` in one pass (no separate permute copy for convs).

    Args:
        a (Tensor): Weight-shaped tensor.
        b (Tensor): Tensor of the same shape.
        m (int): Group size.

    Returns:
        Tensor: ``(G, m)``, contiguous.
    """
    _check_divisible(a.shape, m)
    if a.dim() == 4:
        out_c, cin, kh, kw = a.shape
        dtype = torch.result_type(a, b)
        out = torch.empty((out_c, kh, kw, cin), dtype=dtype, device=a.device)
        torch.mul(a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1), out=out)
        return out.view(-1, m)
    return (a * b).reshape(-1, m)


def magnitude_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """N largest ``|w|`` of every group (ties: the lower in-group index wins).

    Args:
        weight (Tensor): Linear or Conv2d weight.
        n (int): Kept weights per group.
        m (int): Group size.

    Returns:
        Tensor: bool mask in ``weight.shape`` with exactly ``n`` ones per group.
    """
    validate_pattern(n, m)
    mag = to_groups(weight.detach().abs(), m)  # (G, m)
    # Stable descending sort keeps the lower index first among equal magnitudes.
    keep = torch.sort(mag, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros(mag.shape, dtype=torch.bool, device=mag.device)
    mask.scatter_(1, keep, True)  # (G, m)
    return from_groups(mask, weight.shape).contiguous()


def count_nm_violations(weight: Tensor, n: int, m: int) -> Tuple[int, int]:
    """Count the groups with more than ``n`` non-zeros.

    Args:
        weight (Tensor): Linear or Conv2d weight (masked / effective weight).
        n (int): Allowed non-zeros per group.
        m (int): Group size.

    Returns:
        tuple[int, int]: ``(bad_groups, total_groups)``.
    """
    validate_pattern(n, m)
    nonzero = (to_groups(weight.detach(), m) != 0).sum(dim=1)  # (G,)
    return int((nonzero > n).sum()), int(nonzero.numel())
