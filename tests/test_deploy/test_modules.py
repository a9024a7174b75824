"""CPU tests of the deploy modules' layout code (the ``dense_fm`` variant).

The 2:4 kernels need a GPU (``test_gpu_paths.py``); the feature-major / token-major
reshapes around them are shared with the dense feature-major GEMM, tested here.
"""
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from lbc_mm.deploy import kernels
from lbc_mm.deploy import modules as dm


@pytest.mark.parametrize('shape', [(5, 64), (2, 7, 64), (3, 1, 4, 64)])
def test_linear_dense_fm_matches_linear(shape):
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    x = torch.randn(*shape)
    out = dm.Sparse24Linear(lin, 'dense_fm')(x)
    assert out.shape == (*shape[:-1], 48)
    torch.testing.assert_close(out, lin(x), rtol=1e-5, atol=1e-5)


def test_linear_without_bias():
    lin = nn.Linear(32, 16, bias=False)
    x = torch.randn(9, 32)
    torch.testing.assert_close(dm.Sparse24Linear(lin, 'dense_fm')(x), lin(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('batch,stride,channels_last',
                         [(1, 1, False), (3, 1, False), (3, 1, True), (1, 2, False),
                          (2, 2, True), (2, (1, 2), False)])
def test_conv1x1_dense_fm_matches_conv(batch, stride, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 1, stride=stride)
    x = torch.randn(batch, 16, 6, 10)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = dm.Sparse24Conv1x1(conv, 'dense_fm')(x)
    ref = conv(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('conv,why', [
    (nn.Conv2d(8, 8, 3), 'no 2:4 convolution kernel'),
    (nn.Conv2d(8, 8, 1, groups=2), 'grouped'),
    (nn.Conv2d(8, 8, 1, padding=1), 'padding'),
])
def test_conv1x1_refuses_other_convs(conv, why):
    assert why in dm.conv1x1_unsupported(conv)
    with pytest.raises(ValueError, match=why):
        dm.Sparse24Conv1x1(conv, 'dense_fm')


def test_unknown_variant_is_a_value_error():
    with pytest.raises(ValueError, match='unknown 2:4 variant'):
        dm.Sparse24Linear(nn.Linear(32, 32), 'fast')


def test_match_mlp_on_mmcv_ffn_and_feature_major_equality():
    torch.manual_seed(0)
    ffn = FFN(embed_dims=32, feedforward_channels=64, num_fcs=2).eval()
    x = torch.randn(2, 9, 32)
    ref = ffn(x)
    parts = dm.match_mlp(ffn.layers)
    assert parts is not None
    fc1, act, fc2 = parts
    assert (fc1.in_features, fc1.out_features, fc2.out_features) == (32, 64, 32)
    ffn.layers = dm.FeatureMajorMLP(fc1, act, fc2, 'dense', 'dense')
    torch.testing.assert_close(ffn(x), ref, rtol=1e-5, atol=1e-5)


def test_match_mlp_rejects_other_structures():
    assert dm.match_mlp(nn.Sequential(nn.Linear(4, 4), nn.ReLU())) is None
    three = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.Softmax(-1),
                                        nn.Dropout()), nn.Linear(8, 4), nn.Dropout())
    assert dm.match_mlp(three) is None  # softmax is not element-wise
    assert dm.match_mlp(nn.Linear(4, 4)) is None


def test_can_compress_reasons():
    assert 'fp16 / bf16' in kernels.can_compress(torch.zeros(64, 64))
    assert 'multiples of 16' in kernels.can_compress(torch.zeros(64, 40).half())
    assert 'must be 2-D' in kernels.can_compress(torch.zeros(4, 4, 4).half())
    assert kernels.can_compress(torch.zeros(64, 64).half()) is None
    with pytest.raises(ValueError, match='fp16 / bf16'):
        kernels.compress_24(torch.zeros(64, 64))


@pytest.mark.parametrize('x_fm', [True, False])
@pytest.mark.parametrize('contiguous', [True, False])
@pytest.mark.parametrize('m', [13, 16])
def test_dense_operand_orientation_and_padding(x_fm, contiguous, m):
    x_tm = torch.randn(m, 6)  # (M, K) token-major
    x = x_tm.t().contiguous() if x_fm else x_tm
    b, m_out = kernels.dense_operand(x, x_fm, contiguous, align=8)
    assert m_out == m and b.shape == (6, 16)
    torch.testing.assert_close(b[:, :m], x_tm.t())
    assert b[:, m:].abs().sum() == 0
    # a token-major input is only copied when a contiguous operand is asked for
    assert b.is_contiguous() == (x_fm or contiguous)


@pytest.mark.parametrize('out_fm', [True, False])
@pytest.mark.parametrize('bias', [True, False])
def test_sparse_gemm_dense_reference(out_fm, bias):
    torch.manual_seed(0)
    w, x = torch.randn(5, 6), torch.randn(13, 6)
    bb = torch.randn(5) if bias else None
    b, m = kernels.dense_operand(x, False, False, align=8)
    y = kernels.sparse_gemm('dense_fm', b, m, out_fm, weight=w, bias=bb)
    ref = torch.nn.functional.linear(x, w, bb)  # (M, N)
    torch.testing.assert_close(y, ref.t() if out_fm else ref)
    with pytest.raises(ValueError, match='unknown GEMM variant'):
        kernels.sparse_gemm('fast', b, m, out_fm, weight=w)


@pytest.mark.skipif(torch.cuda.is_available(), reason='tests the no-GPU answer')
def test_sparse_support_without_gpu_says_why():
    ok, why = kernels.sparse_support()
    assert not ok
    assert 'no CUDA GPU' in why and '\n' not in why
