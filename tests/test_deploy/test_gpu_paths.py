"""GPU tests: every 2:4 execution path matches the dense-with-zeros layer.

Skipped without an Ampere-or-newer CUDA GPU. ``tools/gpu_check.sh`` runs this file
with pytest, or directly (``python tests/test_deploy/test_gpu_paths.py``) on a GPU
machine without pytest.
"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from lbc_mm.deploy import kernels  # noqa: E402
from lbc_mm.deploy import modules as dm  # noqa: E402
from lbc_mm.deploy.plan import choose, time_unit  # noqa: E402
from lbc_mm.deploy.timing import rel_error, time_many  # noqa: E402
from lbc_mm.sparsity.patterns import count_nm_violations, magnitude_mask  # noqa: E402

try:
    import pytest
    SUPPORTED, WHY = kernels.sparse_support()
    pytestmark = [pytest.mark.gpu,
                  pytest.mark.skipif(not SUPPORTED, reason=WHY or 'needs sm80+ GPU')]
    parametrize = pytest.mark.parametrize
except ImportError:  # direct runner on a GPU machine without pytest
    pytest = None

    def parametrize(*_a, **_k):
        return lambda f: f


FP16_TOL = 1e-2  # relative to max |ref|; one fp16 GEMM with fp32 accumulation
DTYPES = [torch.float16, torch.bfloat16]


def _tol(dtype):
    return FP16_TOL if dtype == torch.float16 else 4e-2


def _prune(mod: nn.Module) -> nn.Module:
    with torch.no_grad():
        mod.weight.mul_(magnitude_mask(mod.weight, 2, 4))
    assert count_nm_violations(mod.weight, 2, 4)[0] == 0
    return mod


@parametrize('dtype', DTYPES)
@parametrize('variant', ['mm', 'cslt', 'cslt_t'])
@parametrize('shape', [(4, 50, 256), (300, 256), (2, 7, 256)])
def test_linear_paths(dtype, variant, shape):
    torch.manual_seed(0)
    lin = _prune(nn.Linear(256, 512)).cuda().to(dtype)
    x = torch.randn(*shape, device='cuda', dtype=dtype)
    with torch.no_grad():
        ref = lin(x)
        out = dm.Sparse24Linear(lin, variant)(x)
    assert out.shape == ref.shape
    assert rel_error(out, ref) < _tol(dtype)


@parametrize('dtype', DTYPES)
@parametrize('variant', ['mm', 'cslt'])
@parametrize('batch,stride,channels_last',
             [(1, 1, False), (3, 1, False), (3, 1, True), (1, 2, False),
              (2, 2, True)])
def test_conv1x1_paths(dtype, variant, batch, stride, channels_last):
    torch.manual_seed(0)
    conv = _prune(nn.Conv2d(128, 256, 1, stride=stride)).cuda().to(dtype)
    x = torch.randn(batch, 128, 14, 20, device='cuda', dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv(x)
        out = dm.Sparse24Conv1x1(conv, variant)(x)
    assert out.shape == ref.shape
    assert rel_error(out, ref) < _tol(dtype)


@parametrize('dtype', DTYPES)
@parametrize('v1,v2', [('cslt_t', 'cslt'), ('cslt', 'cslt'), ('mm', 'mm'),
                       ('cslt_t', 'dense'), ('dense', 'cslt'), ('cslt', 'cslt_t')])
def test_feature_major_mlp(dtype, v1, v2):
    torch.manual_seed(0)
    fc1, fc2 = _prune(nn.Linear(128, 512)), _prune(nn.Linear(512, 128))
    seq = nn.Sequential(nn.Sequential(fc1, nn.GELU(), nn.Dropout(0.0)), fc2,
                        nn.Dropout(0.0)).cuda().to(dtype).eval()
    x = torch.randn(4, 33, 128, device='cuda', dtype=dtype)
    fc1_, act, fc2_ = dm.match_mlp(seq)
    with torch.no_grad():
        ref = seq(x)
        out = dm.FeatureMajorMLP(fc1_, act, fc2_, v1, v2)(x)
    assert rel_error(out, ref) < 2 * _tol(dtype)


def test_sparse_linear_under_cuda_graph():
    """Replaying a captured 2:4 GEMM gives the eager result."""
    torch.manual_seed(0)
    lin = _prune(nn.Linear(256, 256)).cuda().half()
    sp = dm.Sparse24Linear(lin, 'cslt')
    x = torch.randn(64, 256, device='cuda', dtype=torch.half)
    with torch.no_grad():
        eager = sp(x).clone()
        res = time_many({'sparse': lambda: sp(x)}, graph=True, repeats=2, target_ms=1.0)
    assert 'ms' in res['sparse'], res
    g = torch.cuda.CUDAGraph()
    with torch.no_grad():
        sp(x)
        torch.cuda.synchronize()
        with torch.cuda.graph(g):
            y = sp(x)
    g.replay()
    torch.cuda.synchronize()
    assert rel_error(y, eager) < 1e-3


def test_time_unit_and_auto_choice():
    torch.manual_seed(0)
    lin = _prune(nn.Linear(1024, 1024))
    res = time_unit(lin, {'shape': [4096, 1024], 'channels_last': False},
                    torch.float16, torch.device('cuda'), modes=('cuda_graph', ))
    assert all(isinstance(v, float) and v < FP16_TOL for v in res.check.values()), \
        res.check
    assert 'dense' in res.timing['cuda_graph']
    plan = choose({'sig': res}, 'cuda_graph', margin=0.0)
    best, sp = res.best_in('cuda_graph')
    assert plan['sig'] == (best if sp >= 1.0 else None)


def _run_directly() -> int:
    """Minimal runner for GPU machines without pytest."""
    ok, why = kernels.sparse_support()
    if not ok:
        print(f'SKIP all: {why}')
        return 0
    cases = []
    for dtype in DTYPES:
        for variant in ('mm', 'cslt', 'cslt_t'):
            for shape in [(4, 50, 256), (300, 256), (2, 7, 256)]:
                cases.append((f'linear {dtype} {variant} {shape}', test_linear_paths,
                              (dtype, variant, shape)))
        for variant in ('mm', 'cslt'):
            for b, s, cl in [(1, 1, False), (3, 1, False), (3, 1, True), (1, 2, False),
                             (2, 2, True)]:
                cases.append((f'conv1x1 {dtype} {variant} b{b} s{s} cl{cl}',
                              test_conv1x1_paths, (dtype, variant, b, s, cl)))
        for v1, v2 in [('cslt_t', 'cslt'), ('cslt', 'cslt'), ('mm', 'mm'),
                       ('cslt_t', 'dense'), ('dense', 'cslt'), ('cslt', 'cslt_t')]:
            cases.append((f'mlp {dtype} {v1}+{v2}', test_feature_major_mlp,
                          (dtype, v1, v2)))
    cases.append(('cuda graph', test_sparse_linear_under_cuda_graph, ()))
    cases.append(('time_unit', test_time_unit_and_auto_choice, ()))
    failed = 0
    for name, fn, args in cases:
        try:
            fn(*args)
            print(f'PASS {name}')
        except Exception as exc:  # noqa: BLE001
            failed += 1
            print(f'FAIL {name}: {type(exc).__name__}: {exc}')
    print(f'{len(cases) - failed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(_run_directly())
