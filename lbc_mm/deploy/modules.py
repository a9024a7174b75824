"""Drop-in modules that run a dense-with-zeros 2:4 layer on cuSPARSELt.

``variant`` picks the path (:func:`lbc_mm.deploy.kernels.sparse_gemm`; the benchmark
JSON's notes describe each): ``'dense_fm'`` (dense GEMM in the same form, CPU too),
``'mm'``, ``'cslt'``, ``'cslt_t'``. The modules hold the compressed weight as a plain
attribute, cast inputs to their own dtype and turn autocast off inside (mmdet
evaluates under ``torch.autocast``). :func:`preflight`: which variants run on this
GPU (``tools/benchmark.py --preflight``).
"""
from typing import Callable, List, Optional

import torch
from torch import nn

from ..sparsity.patterns import magnitude_mask
from . import kernels
from .timing import LAYER_TOL, error_line, rel_error, safe_sync, time_many

VARIANTS = ('dense_fm', 'mm', 'cslt', 'cslt_t')
SPARSE_VARIANTS = ('mm', 'cslt', 'cslt_t')
# Element-wise activations that commute with the feature-major layout.
ELEMENTWISE_ACTS = (nn.GELU, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Tanh,
                    nn.Sigmoid, nn.Identity, nn.Dropout)


class _GEMM(nn.Module):
    """Holds ``W (N, K)`` in the form ``variant`` needs and runs ``W @ x``."""

    def __init__(self, weight2d: torch.Tensor, bias: Optional[torch.Tensor],
                 variant: str):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f'unknown 2:4 variant {variant!r}; one of {VARIANTS}')
        self.variant = variant
        self.out_features, self.in_features = weight2d.shape
        self.dtype = weight2d.dtype
        self.bias = None if bias is None else bias.detach().to(weight2d.dtype)
        dense = variant == 'dense_fm'
        self.weight = weight2d.detach().contiguous() if dense else None  # (N, K)
        self.w24 = None if dense else kernels.compress_24(weight2d)  # (N, K) 2:4
        # cuSPARSELt wants M padded to 8; the dense GEMM does not care
        self.align = 1 if dense else kernels.DENSE_ALIGN
        # 'cslt_t' and the dense GEMM read a token-major input as B = x^T in place
        self.contiguous = variant in ('mm', 'cslt')

    def forward(self, x: torch.Tensor, x_fm: bool, out_fm: bool) -> torch.Tensor:
        """x: ``(K, M)`` if ``x_fm`` else ``(M, K)`` -> ``(N, M)`` if ``out_fm``."""
        b, m = kernels.dense_operand(x, x_fm, self.contiguous, self.align)
        return kernels.sparse_gemm(self.variant, b, m, out_fm, w24=self.w24,
                                   weight=self.weight, bias=self.bias)


class Sparse24Linear(nn.Module):
    """``nn.Linear`` replacement: ``y = x W^T + b`` via ``W (N, K) @ x^T (K, M)``."""

    def __init__(self, linear: nn.Linear, variant: str = 'cslt'):
        super().__init__()
        self.gemm = _GEMM(linear.weight, linear.bias, variant)
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(..., K)`` -> ``(..., N)``."""
        with torch.autocast(x.device.type, enabled=False):
            lead = x.shape[:-1]
            x2 = x.to(self.gemm.dtype).reshape(-1, x.shape[-1])  # (M, K)
            y = self.gemm(x2, x_fm=False, out_fm=False)  # (M, N)
            return y.reshape(*lead, self.gemm.out_features)


class Sparse24Conv1x1(nn.Module):
    """1x1 ``nn.Conv2d`` (groups 1, no padding) as a GEMM over pixels.

    NCHW input of batch 1 is feature-major already (a pure GEMM); larger NCHW
    batches pay a copy in and out; channels-last input is token-major (a view).
    """

    def __init__(self, conv: nn.Conv2d, variant: str = 'cslt'):
        super().__init__()
        why = conv1x1_unsupported(conv)
        if why:
            raise ValueError(why)
        out_c, in_c = conv.weight.shape[:2]
        self.gemm = _GEMM(conv.weight.reshape(out_c, in_c), conv.bias, variant)
        self.stride = tuple(conv.stride)
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, K, H, W)`` -> ``(B, N, H', W')``."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.gemm.dtype)
            if self.stride != (1, 1):
                x = x[:, :, ::self.stride[0], ::self.stride[1]]
            b, k, h, w = x.shape
            n = self.gemm.out_features
            if b > 1 and x.is_contiguous(memory_format=torch.channels_last):
                x2 = x.permute(0, 2, 3, 1).reshape(-1, k)  # (B*H*W, K) view
                y = self.gemm(x2, x_fm=False, out_fm=False)  # (B*H*W, N)
                return y.reshape(b, h, w, n).permute(0, 3, 1, 2)  # channels-last
            x_t = x.transpose(0, 1).reshape(k, b * h * w)  # (K, M); a view if b == 1
            y_t = self.gemm(x_t, x_fm=True, out_fm=True)  # (N, B*H*W)
            y = y_t.reshape(n, b, h, w).transpose(0, 1)  # (B, N, H, W)
            return y if b == 1 else y.contiguous()


class FeatureMajorMLP(nn.Module):
    """fc1 -> act -> fc2 with the hidden activation kept feature-major.

    ``h^T (H, M) = W1 @ x^T``, ``act`` element-wise, ``y (M, C) = (W2 @ h^T)^T``
    written token-major; ``variant1`` / ``variant2``: ``VARIANTS`` or ``'dense'``.
    Dropouts are left out (inference only).
    """

    def __init__(self, fc1: nn.Linear, act: nn.Module, fc2: nn.Linear,
                 variant1: str = 'cslt', variant2: str = 'cslt'):
        super().__init__()
        self.fc1 = _GEMM(fc1.weight, fc1.bias,
                         'dense_fm' if variant1 == 'dense' else variant1)
        self.fc2 = _GEMM(fc2.weight, fc2.bias,
                         'dense_fm' if variant2 == 'dense' else variant2)
        self.act = act
        self.variant = f'{variant1}+{variant2}'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(..., C)`` -> ``(..., C_out)``."""
        with torch.autocast(x.device.type, enabled=False):
            lead = x.shape[:-1]
            x2 = x.to(self.fc1.dtype).reshape(-1, x.shape[-1])  # (M, C)
            h_t = self.act(self.fc1(x2, x_fm=False, out_fm=True))  # (H, M)
            y = self.fc2(h_t, x_fm=True, out_fm=False)  # (M, C_out)
            return y.reshape(*lead, self.fc2.out_features)


def conv1x1_unsupported(conv: nn.Module) -> Optional[str]:
    """Why ``conv`` cannot run as a GEMM, or None."""
    if not isinstance(conv, nn.Conv2d):
        return f'{type(conv).__name__} is not a Conv2d'
    if tuple(conv.kernel_size) != (1, 1):
        # im2col + 2:4 GEMM is 20-40x slower than cuDNN (docs/platform.md)
        return (f'{tuple(conv.kernel_size)} conv: no 2:4 convolution kernel outside '
                'TensorRT')
    if conv.groups != 1:
        return f'grouped conv (groups={conv.groups})'
    if tuple(conv.padding) != (0, 0) or \
            getattr(conv, 'padding_mode', 'zeros') != 'zeros':
        return f'1x1 conv with padding {conv.padding}'
    return None


def match_mlp(seq: nn.Module):
    """``(fc1, act, fc2)`` when ``seq`` is mmcv's ``FFN.layers``,
    ``Seq(Seq(fc1, act, drop), fc2, drop)`` with element-wise ``act``; else None."""
    if not (isinstance(seq, nn.Sequential) and len(seq) == 3
            and isinstance(seq[0], nn.Sequential) and len(seq[0]) == 3):
        return None
    (fc1, act, drop1), fc2, drop = seq
    ok = (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
          and isinstance(act, ELEMENTWISE_ACTS) and isinstance(drop1, nn.Dropout)
          and isinstance(drop, nn.Dropout) and fc1.out_features == fc2.in_features)
    return (fc1, act, fc2) if ok else None


# -- which variants run on this GPU ---------------------------------------------
def _check_variant(variant: str) -> None:
    """Run ``variant`` on a Linear and 1x1 convs in fp16 and bf16; raise on a
    wrong output or a failed graph replay."""
    for dtype in (torch.float16, torch.bfloat16):
        lin = nn.Linear(256, 512).cuda().to(dtype)
        conv = nn.Conv2d(128, 256, 1).cuda().to(dtype)
        with torch.no_grad():
            for layer in (lin, conv):
                layer.weight.mul_(magnitude_mask(layer.weight, 2, 4))
        cases = [(lin, Sparse24Linear,
                  torch.randn(4, 50, 256, device='cuda', dtype=dtype))]
        if variant != 'cslt_t':
            cases += [(conv, Sparse24Conv1x1, torch.randn(
                batch, 128, 12, 10, device='cuda', dtype=dtype)) for batch in (1, 2)]
        for layer, cls, x in cases:
            sparse = cls(layer, variant)
            with torch.no_grad():
                ref = layer(x)
                err = rel_error(sparse(x), ref)
                timing = time_many({'v': lambda: sparse(x)}, graph=True, repeats=1,
                                   target_ms=1.0)
            tol = LAYER_TOL[dtype]
            if not err <= tol or 'ms' not in timing['v']:
                raise RuntimeError(f'{cls.__name__} {dtype}: error {err:.2e} '
                                   f'(tol {tol}), graph {timing["v"]}')


def preflight(log: Callable[[str], None] = print) -> List[str]:
    """Run each 2:4 variant once on small layers, eager and graph-replayed; the
    variants that matched dense.

    Logs ``PREFLIGHT_OK <variant>`` as each passes, so when one kills the process
    (a CUDA context crash) the caller still knows which are safe.
    """
    ok_variants = []
    torch.manual_seed(0)
    for variant in SPARSE_VARIANTS:
        try:
            _check_variant(variant)
        except Exception as exc:  # noqa: BLE001
            log(f'PREFLIGHT_FAIL {variant}: {error_line(exc)}')
            if safe_sync() is not None:
                break  # the CUDA context is gone: nothing after this is safe
        else:
            ok_variants.append(variant)
            log(f'PREFLIGHT_OK {variant}')
    return ok_variants
