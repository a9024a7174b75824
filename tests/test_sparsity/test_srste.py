"""Tests of the SR-STE / STE masked weight."""
import pytest
import torch

from lbc_mm.sparsity import magnitude_mask, srste_masked_weight


@pytest.mark.parametrize('lam', [2e-4, 0.0, 0.5])
@pytest.mark.parametrize('shape', [(4, 8), (4, 8, 3, 3)])
def test_srste_gradient(lam, shape):
    torch.manual_seed(0)
    weight = torch.randn(shape, requires_grad=True)
    upstream = torch.randn(shape)
    eff = srste_masked_weight(weight, 2, 4, lam)
    mask = magnitude_mask(weight, 2, 4)
    assert torch.equal(eff, weight.detach() * mask)
    (eff * upstream).sum().backward()
    expected = upstream + lam * (~mask) * weight.detach()
    torch.testing.assert_close(weight.grad, expected, rtol=0, atol=1e-7)


def test_srste_rejects_negative_lambda():
    with pytest.raises(ValueError, match='lambda'):
        srste_masked_weight(torch.ones(2, 4), 2, 4, -1.0)
