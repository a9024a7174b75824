"""Tests of lbc_mm.sparsity.patterns against the plain-loop reference."""
import itertools
import math

import pytest
import torch

from lbc_mm.sparsity import (
    candidate_matrix,
    count_nm_violations,
    from_groups,
    magnitude_mask,
    num_candidates,
    to_groups,
    validate_pattern,
)

from .reference import ref_group_index, ref_magnitude_mask

PATTERNS = [(2, 4), (1, 4), (2, 8), (4, 8), (1, 16)]


@pytest.mark.parametrize('n,m', [(4, 4), (5, 4), (0, 4), (-1, 4), (2, 0), (2, -4),
                                 (2.0, 4), (True, 4)])
def test_validate_pattern_rejects(n, m):
    with pytest.raises(ValueError, match=f'{n}:{m}'):
        validate_pattern(n, m)


@pytest.mark.parametrize('n,m,expected', [(2, 4, 6), (2, 8, 28), (4, 8, 70),
                                          (1, 16, 16), (1, 4, 4)])
def test_num_candidates(n, m, expected):
    assert num_candidates(n, m) == expected


@pytest.mark.parametrize('n,m', PATTERNS)
def test_candidate_matrix_rows_are_combinations(n, m):
    cand = candidate_matrix(n, m, dtype=torch.float64)
    assert cand.shape == (math.comb(m, n), m) and cand.dtype == torch.float64
    rows = [tuple(int(j) for j in row.nonzero().flatten()) for row in cand]
    assert rows == list(itertools.combinations(range(m), n))


@pytest.mark.parametrize('shape', [(6, 8), (3, 8, 3, 2), (2, 4, 1, 1)])
def test_group_layout_matches_reference(shape):
    m = 4
    # Every weight holds its own flat index, so each group is identifiable.
    weight = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    groups = to_groups(weight, m)
    expected = torch.tensor([[float(weight[i]) for i in idx]
                             for idx in ref_group_index(shape, m)])
    assert torch.equal(groups, expected)
    assert torch.equal(from_groups(groups, shape), weight)


def test_conv_groups_are_consecutive_input_channels():
    # w[o, c, y, x] = c: every conv group must be m consecutive input channels.
    weight = torch.arange(8.).reshape(1, 8, 1, 1).expand(2, 8, 3, 3).contiguous()
    groups = to_groups(weight, 4)
    assert groups.shape == (2 * 9 * 2, 4)
    assert all(row.tolist() in ([0, 1, 2, 3], [4, 5, 6, 7]) for row in groups)


def test_to_groups_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r'\(4, 6\).*M=4'):
        to_groups(torch.zeros(4, 6), 4)
    with pytest.raises(ValueError, match='Conv2d'):
        to_groups(torch.zeros(4, 4, 4), 4)
    with pytest.raises(ValueError, match='do not fill'):
        from_groups(torch.zeros(3, 4), (4, 4))


@pytest.mark.parametrize('n,m', PATTERNS)
@pytest.mark.parametrize('kind', ['linear', 'conv'])
def test_magnitude_mask_matches_reference(n, m, kind):
    gen = torch.Generator().manual_seed(n * 100 + m)
    shape = (3, 2 * m) if kind == 'linear' else (2, 2 * m, 3, 1)
    weight = torch.randn(shape, generator=gen)
    # Ties: integer magnitudes with repeats exercise the lower-index rule.
    weight = torch.round(weight * 2)
    mask = magnitude_mask(weight, n, m)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert torch.equal(mask, ref_magnitude_mask(weight, n, m))
    assert (to_groups(mask, m).sum(1) == n).all()


def test_magnitude_mask_ties_prefer_lower_index():
    weight = torch.tensor([[1., -1., 1., 1., 0., 0., 0., 0.]])
    assert magnitude_mask(weight, 2, 4).tolist() == [[True, True, False, False,
                                                      True, True, False, False]]


def test_count_nm_violations():
    ok = torch.tensor([[1., 0., 2., 0., 0., 0., 0., 3.]])
    bad = torch.tensor([[1., 1., 2., 0., 1., 1., 1., 1.]])
    assert count_nm_violations(ok, 2, 4) == (0, 2)
    assert count_nm_violations(bad, 2, 4) == (2, 2)
    conv_bad = torch.zeros(2, 4, 3, 3)
    conv_bad[1, :3, 2, 2] = 1.0  # one group (o=1, y=2, x=2) with 3 non-zeros
    assert count_nm_violations(conv_bad, 2, 4) == (1, 18)
