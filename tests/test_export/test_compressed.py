"""Compressed N:M format: bit packing, exact round trips, refusals."""
import math

import pytest
import torch

from lbc_mm.export.compressed import (
    FORMAT,
    compress_state_dict,
    compress_weight,
    decompress_state_dict,
    decompress_weight,
    index_bits,
    layer_sizes,
    pack_bits,
    unpack_bits,
)
from lbc_mm.sparsity.patterns import magnitude_mask, to_groups


@pytest.mark.parametrize('bits', range(1, 9))
def test_pack_unpack_round_trip(bits):
    g = torch.Generator().manual_seed(bits)
    vals = torch.randint(0, 2**bits, (37, ), generator=g)
    packed = pack_bits(vals, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(37 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 37), vals)


def test_pack_bits_layout_is_lsb_first():
    # indices 1, 2, 3, 0 in 2 bits: 01 10 11 00 -> byte 0b00111001 = 57
    assert pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist() == [57]
    assert pack_bits(torch.tensor([3]), 2).tolist() == [3]


def test_pack_bits_rejects_out_of_range():
    with pytest.raises(ValueError, match='in \\[0, 4\\)'):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match='need 1 bytes'):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 2, 4)


def test_index_bits():
    assert [index_bits(m) for m in (2, 4, 8, 16)] == [1, 2, 3, 4]


@pytest.mark.parametrize('n,m', [(2, 4), (2, 8), (1, 16), (4, 8)])
@pytest.mark.parametrize('shape', [(32, 64), (16, 32, 3, 3), (8, 16, 1, 1)])
def test_round_trip_is_exact(n, m, shape):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    w = w * magnitude_mask(w, n, m)
    # some groups with fewer than n non-zeros, and a negative zero
    w.view(-1)[:m] = 0.0
    w.view(-1)[m] = -0.0
    entry = compress_weight(w, n, m, 'layer')
    g = w.numel() // m
    assert entry['values'].shape == (g, n)
    assert entry['indices'].numel() == math.ceil(g * n * index_bits(m) / 8)
    out = decompress_weight(entry)
    assert out.shape == w.shape and out.dtype == w.dtype
    assert torch.equal(out, w)
    dense_b, comp_b = layer_sizes(entry)
    assert dense_b == w.numel() * 4 and comp_b < dense_b


def test_2of4_index_bytes_are_a_quarter_of_the_weights():
    w = torch.randn(64, 64)
    w = w * magnitude_mask(w, 2, 4)
    entry = compress_weight(w, 2, 4)
    # 2 indices x 2 bits per group of 4 weights -> 1 bit per weight
    assert entry['indices'].numel() * 8 == w.numel()
    assert torch.equal(to_groups(decompress_weight(entry), 4) != 0,
                       to_groups(w, 4) != 0)


def test_refuses_non_nm_weight_naming_layer_and_counts():
    w = torch.ones(8, 8)
    with pytest.raises(ValueError, match=r'blk\.fc \(8, 8\) is not 2:4: 16/16 groups'):
        compress_weight(w, 2, 4, 'blk.fc')
    with pytest.raises(ValueError):
        compress_weight(torch.zeros(8, 8), 4, 4)


def test_state_dict_round_trip_keeps_order_and_dense_entries():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    sd = {'a.bias': torch.randn(16), 'a.weight': w * magnitude_mask(w, 2, 4),
          'bn.running_mean': torch.randn(4), 'bn.num_batches_tracked': torch.tensor(3)}
    obj = compress_state_dict(sd, {'a': (2, 4)}, {'epoch': 1})
    assert obj['format'] == FORMAT and list(obj['layers']) == ['a.weight']
    back = decompress_state_dict(obj)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match='not an'):
        decompress_state_dict({'format': 'other'})
    with pytest.raises(ValueError, match='newer'):
        decompress_state_dict(dict(obj, version=99))
