"""Compressed N:M weight format: kept values + packed in-group indices.

The layout is specified in docs/export_format.md: per layer, groups as
``lbc_mm.sparsity.patterns.to_groups`` makes them (``(G, M)``), ``values`` ``(G, N)``
in ascending in-group position and ``indices`` as ``index_bits(M)``-bit fields, LSB
first, in a little-endian uint8 bit stream. Decoding gives the dense-with-zeros
weight bit for bit.
"""
import math
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from ..sparsity.patterns import (
    count_nm_violations,
    from_groups,
    magnitude_mask,
    to_groups,
    validate_pattern,
)

FORMAT = 'lbc_mm.nm_compressed'
VERSION = 1


def index_bits(m: int) -> int:
    """Bits per in-group index for group size ``m`` (2 for M=4)."""
    return max(1, math.ceil(math.log2(m)))


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Pack ``(L,)`` non-negative integers ``< 2**bits`` (``bits`` in 1..8) into a
    ``(ceil(L * bits / 8),)`` uint8 bit stream, LSB first."""
    if not 1 <= bits <= 8:
        raise ValueError(f'bits must be in 1..8, got {bits}')
    values = values.reshape(-1).to(torch.int64)
    if values.numel() and (values.min() < 0 or values.max() >= 2**bits):
        raise ValueError(f'values must be in [0, {2**bits}) to pack into {bits} bits')
    shifts = torch.arange(bits, device=values.device)
    stream = ((values[:, None] >> shifts) & 1).reshape(-1)  # (L * bits,) LSB first
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).reshape(-1, 8)  # (B, 8)
    weights = (1 << torch.arange(8, device=values.device))  # bit j of a byte
    return (stream * weights).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``(count,)`` int64."""
    if packed.dtype != torch.uint8:
        raise ValueError(f'packed indices must be uint8, got {packed.dtype}')
    need = math.ceil(count * bits / 8)
    if packed.numel() != need:
        raise ValueError(f'{count} indices of {bits} bits need {need} bytes, '
                         f'got {packed.numel()}')
    byte = packed.to(torch.int64)
    stream = ((byte[:, None] >> torch.arange(8, device=packed.device)) & 1).reshape(-1)
    stream = stream[:count * bits].reshape(count, bits)
    return (stream << torch.arange(bits, device=packed.device)).sum(dim=1)


def compress_weight(weight: Tensor, n: int, m: int, name: str = 'weight') -> Dict:
    """Compress a Linear / Conv2d weight with at most ``n`` non-zeros in every group
    of ``m`` into ``{n, m, shape, num_groups, index_bits, values (G, n), indices}``;
    ``ValueError`` (naming the layer ``name``) for a bad pattern or a weight that is
    not N:M."""
    validate_pattern(n, m)
    bad, total = count_nm_violations(weight, n, m)
    if bad:
        raise ValueError(f'{name} {tuple(weight.shape)} is not {n}:{m}: {bad}/{total} '
                         f'groups have more than {n} non-zeros')
    w = weight.detach().cpu()
    groups = to_groups(w, m)  # (G, m)
    keep = to_groups(magnitude_mask(w, n, m), m)  # (G, m), n ones, covers non-zeros
    idx = keep.nonzero()[:, 1].reshape(-1, n)  # (G, n) ascending per group
    bits = index_bits(m)
    return {'n': n, 'm': m, 'shape': list(w.shape), 'num_groups': groups.shape[0],
            'index_bits': bits, 'values': groups.gather(1, idx).contiguous(),
            'indices': pack_bits(idx, bits)}


def decompress_weight(entry: Dict) -> Tensor:
    """Dense-with-zeros weight from a :func:`compress_weight` entry."""
    n, m, g = int(entry['n']), int(entry['m']), int(entry['num_groups'])
    values = entry['values']
    if tuple(values.shape) != (g, n):
        raise ValueError(f'values have shape {tuple(values.shape)}, expected {(g, n)}')
    idx = unpack_bits(entry['indices'], int(entry['index_bits']), g * n).reshape(g, n)
    groups = torch.zeros(g, m, dtype=values.dtype)
    groups.scatter_(1, idx, values)
    return from_groups(groups, entry['shape']).contiguous()


def nbytes(t: Tensor) -> int:
    """Storage bytes of a tensor's elements."""
    return t.numel() * t.element_size()


def compress_state_dict(state_dict: Dict[str, Tensor],
                        patterns: Dict[str, Sequence[int]],
                        meta: Dict = None) -> Dict:
    """The compressed file's content for a stock (baked) state dict.

    Args:
        state_dict (dict): stock keys -> tensors (masks already baked in).
        patterns (dict): sparse layer name -> ``(n, m)``; their ``<name>.weight``
            is stored compressed, every other entry as is.
        meta (dict, optional): plain metadata to keep.

    Returns:
        dict: ``format, version, keys (original order), layers, dense, meta``.
    """
    layers, dense = {}, {}
    for key, val in state_dict.items():
        name = key[:-len('.weight')] if key.endswith('.weight') else None
        if name in patterns:
            n, m = patterns[name]
            layers[key] = compress_weight(val, int(n), int(m), name)
        else:
            dense[key] = val.detach().cpu()
    return {'format': FORMAT, 'version': VERSION, 'keys': list(state_dict),
            'layers': layers, 'dense': dense, 'meta': meta or {}}


def decompress_state_dict(obj: Dict) -> Dict[str, Tensor]:
    """Stock state dict (dense with zeros) from a compressed file's content."""
    if not isinstance(obj, dict) or obj.get('format') != FORMAT:
        raise ValueError(f'not an {FORMAT} object')
    if int(obj.get('version', -1)) > VERSION:
        raise ValueError(f'{FORMAT} version {obj.get("version")} is newer than this '
                         f'reader ({VERSION})')
    return {key: decompress_weight(obj['layers'][key]) if key in obj['layers']
            else obj['dense'][key] for key in obj['keys']}


def load_compressed(path: str) -> Dict[str, Tensor]:
    """Read a compressed file (``weights_only=True``) -> stock state dict.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: corrupted (zip CRCs), unreadable or refused file,
            on one line (``lbc_mm.checkpoint_io.read_checkpoint``).
    """
    from ..checkpoint_io import read_checkpoint
    return decompress_state_dict(read_checkpoint(path))


def layer_sizes(entry: Dict) -> List[int]:
    """``[dense bytes, compressed bytes]`` of one compressed layer."""
    dense = math.prod(entry['shape']) * entry['values'].element_size()
    return [dense, nbytes(entry['values']) + nbytes(entry['indices'])]
