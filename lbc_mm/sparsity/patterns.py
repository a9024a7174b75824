"""N:M patterns: validation, candidate subsets, the group layout and magnitude masks.

The one place that knows the group layout (docs/method.md, "N:M layout"): ``m``
consecutive input channels, a conv weight permuted to ``(out, kh, kw, in/groups)``
first (NHWC implicit GEMM). Pure tensor math.
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
    'grouped_product',
    'magnitude_mask',
    'num_candidates',
    'parse_pattern',
    'to_groups',
    'validate_pattern',
]


def validate_pattern(n: int, m: int) -> None:
    """``ValueError`` unless ``n`` / ``m`` are ints with ``0 < n < m``."""
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
    """``(C, m)`` candidate matrix ``B`` (docs/method.md §1): row ``c`` has ones at
    the c-th subset of ``itertools.combinations(range(m), n)``."""
    validate_pattern(n, m)
    return torch.tensor([[float(i in c) for i in range(m)]
                         for c in itertools.combinations(range(m), n)],
                        dtype=dtype, device=device)


def _group_dim(shape: Sequence[int]) -> int:
    """Length of the grouped axis of a Linear / Conv2d weight (``shape[1]``)."""
    if len(shape) not in (2, 4):
        raise ValueError(f'N:M groups need a Linear (out, in) or Conv2d '
                         f'(out, in/groups, kh, kw) weight, got shape '
                         f'{tuple(shape)}')
    return int(shape[1])


def _check_divisible(shape: Sequence[int], m: int) -> None:
    cin = _group_dim(shape)
    if cin % m != 0:
        raise ValueError(f'weight of shape {tuple(shape)}: input channels '
                         f'{cin} are not a multiple of M={m}')


def to_groups(weight: Tensor, m: int) -> Tensor:
    """A Linear / Conv2d weight as ``(G, m)`` groups (a copy for a conv)."""
    _check_divisible(weight.shape, m)
    if weight.dim() == 4:
        weight = weight.permute(0, 2, 3, 1)  # (out, kh, kw, cin)
    return weight.reshape(-1, m)


def from_groups(groups: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`to_groups`: a (maybe non-contiguous) view in ``shape``."""
    shape = tuple(int(s) for s in shape)
    if groups.numel() != math.prod(shape):
        raise ValueError(f'{tuple(groups.shape)} groups do not fill a weight of '
                         f'shape {shape}')
    if len(shape) == 4:
        out_c, cin, kh, kw = shape
        return groups.reshape(out_c, kh, kw, cin).permute(0, 3, 1, 2)
    _group_dim(shape)
    return groups.reshape(shape)


def grouped_product(a: Tensor, b: Tensor, m: int) -> Tensor:
    """``to_groups(a * b, m)`` in one pass (no separate permute copy for convs)."""
    _check_divisible(a.shape, m)
    if a.dim() == 4:
        out_c, cin, kh, kw = a.shape
        dtype = torch.result_type(a, b)
        out = torch.empty((out_c, kh, kw, cin), dtype=dtype, device=a.device)
        torch.mul(a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1), out=out)
        return out.view(-1, m)
    return (a * b).reshape(-1, m)


def magnitude_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """Bool mask of the ``n`` largest ``|w|`` of every group, in ``weight.shape``
    (ties: the lower in-group index)."""
    validate_pattern(n, m)
    mag = to_groups(weight.detach().abs(), m)  # (G, m)
    keep = torch.sort(mag, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros(mag.shape, dtype=torch.bool, device=mag.device)
    mask.scatter_(1, keep, True)  # (G, m)
    return from_groups(mask, weight.shape).contiguous()


def count_nm_violations(weight: Tensor, n: int, m: int) -> Tuple[int, int]:
    """``(groups with more than n non-zeros, groups)`` of a (masked) weight."""
    validate_pattern(n, m)
    nonzero = (to_groups(weight.detach(), m) != 0).sum(dim=1)  # (G,)
    return int((nonzero > n).sum()), int(nonzero.numel())
