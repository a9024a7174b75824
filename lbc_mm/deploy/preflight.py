"""Which 2:4 variants run on this GPU: each once on small layers, eager and
graph-replayed (``tools/benchmark.py --preflight``, run first by
``tools/gpu_check.sh`` in its own process)."""
from typing import Callable, List

import torch
from torch import nn

from ..sparsity.patterns import magnitude_mask
from . import modules
from .plan import LAYER_TOL
from .timing import rel_error, safe_sync, time_many

__all__ = ['preflight']


def _check_variant(variant: str) -> None:
    """Run ``variant`` on a Linear and 1x1 convs in fp16 and bf16; raise on a
    wrong output or a failed graph replay."""
    for dtype in (torch.float16, torch.bfloat16):
        lin = nn.Linear(256, 512).cuda().to(dtype)
        conv = nn.Conv2d(128, 256, 1).cuda().to(dtype)
        with torch.no_grad():
            for layer in (lin, conv):
                layer.weight.mul_(magnitude_mask(layer.weight, 2, 4))
        cases = [(lin, modules.Sparse24Linear,
                  torch.randn(4, 50, 256, device='cuda', dtype=dtype))]
        if variant != 'cslt_t':
            for batch in (1, 2):
                cases.append((conv, modules.Sparse24Conv1x1, torch.randn(
                    batch, 128, 12, 10, device='cuda', dtype=dtype)))
        for layer, cls, x in cases:
            sparse = cls(layer, variant)
            with torch.no_grad():
                ref = layer(x)
                err = rel_error(sparse(x), ref)
                timing = time_many({'v': lambda: sparse(x)}, graph=True, repeats=1,
                                   max_iters=2)
            tol = LAYER_TOL[dtype]
            if not err <= tol or 'ms' not in timing['v']:
                raise RuntimeError(f'{cls.__name__} {dtype}: error {err:.2e} '
                                   f'(tol {tol}), graph {timing["v"]}')


def preflight(log: Callable[[str], None] = print) -> List[str]:
    """Run every 2:4 variant once on small layers, eager and graph-replayed.

    Prints ``PREFLIGHT_OK <variant>`` as each one passes, safest first, so when a
    variant kills the process (a CUDA context crash) the caller still knows which
    ones are safe to benchmark.

    Returns:
        list[str]: the variants that ran and matched dense.
    """
    ok_variants = []
    torch.manual_seed(0)
    for variant in modules.SPARSE_VARIANTS:
        try:
            _check_variant(variant)
        except Exception as exc:  # noqa: BLE001
            log(f'PREFLIGHT_FAIL {variant}: {type(exc).__name__}: '
                f'{str(exc).splitlines()[0] if str(exc) else ""}')
            if safe_sync() is not None:
                break  # the CUDA context is gone: nothing after this is safe
            continue
        ok_variants.append(variant)
        log(f'PREFLIGHT_OK {variant}')
    return ok_variants
