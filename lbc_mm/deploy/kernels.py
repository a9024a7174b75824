"""2:4 sparse GEMMs (cuSPARSELt) and the dense GEMMs they are compared with.

The weight ``W (N, K)`` is on the left, the form cuSPARSELt runs fast on Hopper
(docs/platform.md, "2:4 inference on Hopper"): ``Y^T (N, M) = W @ X^T (K, M)``, or
the same GEMM with ``Y (M, N)`` written token-major (``transpose_result=True``); ``M``
counts tokens / pixels. ``torch._cslt_sparse_mm_search`` is never called: it crashed
the CUDA context on H200.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

# Dense operand columns (M) must be a multiple of this for cuSPARSELt fp16/bf16.
DENSE_ALIGN = 8
# Sparse operand rows / cols must be a multiple of this (cuSPARSELt fp16/bf16).
SPARSE_ALIGN = 16
# Sparse GEMMs exist only for these dtypes here.
SPARSE_DTYPES = (torch.float16, torch.bfloat16)


def sparse_support(device: Optional[torch.device] = None) -> Tuple[bool, str]:
    """``(ok, reason)``: whether 2:4 sparse GEMMs run on ``device`` (default: the
    current one); ``reason`` is one line saying why not."""
    if not torch.cuda.is_available():
        return False, ('no CUDA GPU visible (torch.cuda.is_available() is False); '
                       '2:4 sparse tensor cores need an Ampere-or-newer NVIDIA GPU')
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if (major, minor) < (8, 0):
        return False, (f'GPU {name} is sm{major}{minor}; 2:4 sparse tensor cores need '
                       'sm80 (Ampere) or newer')
    if not torch.backends.cusparselt.is_available():
        return False, f'torch {torch.__version__} was built without cuSPARSELt'
    return True, ''


def cusparselt_version() -> Optional[int]:
    """cuSPARSELt's version number (e.g. 800 for 0.8.0), or None."""
    try:
        return torch.backends.cusparselt.version()
    except Exception:  # noqa: BLE001  (missing backend or no CUDA build)
        return None


def can_compress(weight2d: torch.Tensor) -> Optional[str]:
    """Why a ``(N, K)`` 2:4 weight cannot become a cuSPARSELt tensor, or None."""
    if weight2d.dim() != 2:
        return f'weight must be 2-D, got shape {tuple(weight2d.shape)}'
    if weight2d.dtype not in SPARSE_DTYPES:
        return f'dtype {weight2d.dtype} has no 2:4 kernel here (fp16 / bf16 only)'
    n, k = weight2d.shape
    if n % SPARSE_ALIGN or k % SPARSE_ALIGN or n < 32 or k < 32:
        return (f'shape {tuple(weight2d.shape)}: cuSPARSELt needs both dims to be '
                f'multiples of {SPARSE_ALIGN} and >= 32')
    return None


def compress_24(weight2d: torch.Tensor) -> torch.Tensor:
    """A CUDA fp16/bf16 ``(N, K)`` 2:4 weight (the caller checks 2:4) -> a
    ``SparseSemiStructuredTensor`` on the cuSPARSELt backend; its ``packed`` is
    what ``torch._cslt_sparse_mm`` takes."""
    why = can_compress(weight2d)
    if why is not None:
        raise ValueError(why)
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
    SparseSemiStructuredTensor._FORCE_CUTLASS = False  # CUTLASS fails on sm90
    return to_sparse_semi_structured(weight2d.detach().contiguous())


def dense_operand(x: torch.Tensor, x_fm: bool, contiguous: bool,
                  align: int = DENSE_ALIGN) -> Tuple[torch.Tensor, int]:
    """``(B (K, Mp), M)``: the right operand of ``W (N, K) @ B`` from ``x``,
    ``(K, M)`` if ``x_fm`` else ``(M, K)``, M zero-padded to ``align``.

    ``contiguous``: B is a row-major copy; else a token-major ``x`` gives the
    column-major view ``x.t()`` (cuSPARSELt reads it transposed, no copy).
    """
    x = x.contiguous()
    m = x.shape[1] if x_fm else x.shape[0]
    pad = (-m) % align
    if pad:
        x = F.pad(x, (0, pad) if x_fm else (0, 0, 0, pad))
    if x_fm:
        return x, m
    b = x.t()  # (K, Mp) column-major view
    return (b.contiguous() if contiguous else b), m


def sparse_gemm(variant: str, b: torch.Tensor, m: int, out_fm: bool, *,
                w24: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``W @ B (+ bias)`` on one path: ``(N, M)`` if ``out_fm`` else ``(M, N)``.

    ``variant``: ``'dense_fm'`` (``weight``, cuBLAS / CPU), ``'mm'`` (``torch.mm`` on
    ``w24``) or ``'cslt'`` / ``'cslt_t'`` (``torch._cslt_sparse_mm`` on ``w24.packed``,
    bias fused; they differ only in ``b``). ``b``, ``m``: from :func:`dense_operand`.
    """
    if variant == 'dense_fm':
        if out_fm:
            y = torch.mm(weight, b) if bias is None else \
                torch.addmm(bias[:, None], weight, b)  # (N, Mp)
        else:
            y = torch.mm(b.t(), weight.t()) if bias is None else \
                torch.addmm(bias, b.t(), weight.t())  # (Mp, N)
    elif variant == 'mm':
        y = torch.mm(w24, b)  # (N, Mp)
        if bias is not None:
            y = y + bias[:, None]
        if not out_fm:
            y = y.t()  # (Mp, N) view
    elif variant in ('cslt', 'cslt_t'):
        y = torch._cslt_sparse_mm(w24.packed, b, bias=bias,
                                  transpose_result=not out_fm)
    else:
        raise ValueError(f'unknown GEMM variant {variant!r}')
    return y[:, :m] if out_fm else y[:m]
