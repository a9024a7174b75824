"""2:4 sparse GEMM kernels (cuSPARSELt) and the dense GEMMs they are compared with.

Every function here computes a GEMM with the weight ``W`` of shape ``(N, K)`` (out
features x reduction) on the **left**, which is the form cuSPARSELt runs fast on
Hopper (see PLATFORM.md, "2:4 sparse inference on Hopper GPUs"):

- feature-major: ``Y^T (N, M) = W (N, K) @ X^T (K, M)`` with ``X^T`` contiguous;
- token-major result: same GEMM, cuSPARSELt writes ``Y (M, N)`` directly
  (``transpose_result=True``), so no transpose copy of the output is needed.

``M`` is the number of tokens / pixels. The 2:4 weight is built with
``torch.sparse.to_sparse_semi_structured`` on the cuSPARSELt backend (the CUTLASS
backend fails on sm90). ``torch._cslt_sparse_mm_search`` is never called: it crashed
the CUDA context on H200.
"""
from typing import Optional, Tuple

import torch

# Dense operand columns (M) must be a multiple of this for cuSPARSELt fp16/bf16.
DENSE_ALIGN = 8
# Sparse operand rows / cols must be a multiple of this (cuSPARSELt fp16/bf16).
SPARSE_ALIGN = 16
# Sparse GEMMs exist only for these dtypes here.
SPARSE_DTYPES = (torch.float16, torch.bfloat16)


def sparse_support(device: Optional[torch.device] = None) -> Tuple[bool, str]:
    """Say whether 2:4 sparse GEMMs can run here.

    Args:
        device (torch.device, optional): CUDA device to ask about. Defaults to
            the current device.

    Returns:
        tuple[bool, str]: ``(ok, reason)``; ``reason`` is one line saying why not.
    """
    if not torch.cuda.is_available():
        return False, ('no CUDA GPU visible (torch.cuda.is_available() is False); '
                       '2:4 sparse tensor cores need an Ampere-or-newer NVIDIA GPU')
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if (major, minor) < (8, 0):
        return False, (f'GPU {name} is sm{major}{minor}; 2:4 sparse tensor cores need '
                       'sm80 (Ampere) or newer')
    if not hasattr(torch.sparse, 'to_sparse_semi_structured'):
        return False, f'torch {torch.__version__} has no to_sparse_semi_structured'
    cslt = getattr(torch.backends, 'cusparselt', None)
    if cslt is None or not cslt.is_available():
        return False, f'torch {torch.__version__} was built without cuSPARSELt'
    return True, ''


def cusparselt_version() -> Optional[int]:
    """Return cuSPARSELt's version number (e.g. 800 for 0.8.0), or None."""
    try:
        return torch.backends.cusparselt.version()
    except Exception:  # noqa: BLE001  (missing backend or no CUDA build)
        return None


def can_compress(weight2d: torch.Tensor) -> Optional[str]:
    """Return None if ``weight2d`` can become a cuSPARSELt 2:4 tensor, else why not.

    Args:
        weight2d (Tensor): ``(N, K)`` weight, already 2:4 along K.
    """
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
    """Compress a 2:4 weight for cuSPARSELt.

    Args:
        weight2d (Tensor): ``(N, K)`` CUDA fp16/bf16 weight with at most 2 non-zeros
            in every group of 4 consecutive entries of a row (the caller checks).

    Returns:
        Tensor: a ``SparseSemiStructuredTensor`` (cuSPARSELt backend) of shape
        ``(N, K)``; its ``packed`` attribute is the buffer ``torch._cslt_sparse_mm``
        takes.
    """
    why = can_compress(weight2d)
    if why is not None:
        raise ValueError(why)
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
    SparseSemiStructuredTensor._FORCE_CUTLASS = False  # CUTLASS fails on sm90
    return to_sparse_semi_structured(weight2d.detach().contiguous())


def pad_cols(x_t: torch.Tensor, align: int = DENSE_ALIGN) -> torch.Tensor:
    """Zero-pad the columns of ``x_t`` (K, M) to a multiple of ``align``."""
    pad = (-x_t.shape[1]) % align
    if pad == 0:
        return x_t
    return torch.nn.functional.pad(x_t, (0, pad))


def sparse_mm_fm(w24: torch.Tensor, x_t: torch.Tensor,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``Y^T = W24 @ X^T (+ b)`` through ``torch.mm`` on the tensor subclass.

    Args:
        w24 (Tensor): ``(N, K)`` SparseSemiStructuredTensor.
        x_t (Tensor): ``(K, M)`` contiguous activation.
        bias (Tensor, optional): ``(N,)``.

    Returns:
        Tensor: ``(N, M)`` contiguous.
    """
    m = x_t.shape[1]
    y_t = torch.mm(w24, pad_cols(x_t))  # (N, Mp)
    if y_t.shape[1] != m:
        y_t = y_t[:, :m]
    if bias is not None:
        y_t = y_t + bias[:, None]
    return y_t


def cslt_mm(packed: torch.Tensor, x_t: torch.Tensor,
            bias: Optional[torch.Tensor] = None,
            transpose_result: bool = False) -> torch.Tensor:
    """cuSPARSELt GEMM on the packed weight, bias fused.

    Args:
        packed (Tensor): ``w24.packed`` of a ``(N, K)`` 2:4 weight.
        x_t (Tensor): ``(K, M)`` contiguous activation.
        bias (Tensor, optional): ``(N,)``, same dtype.
        transpose_result (bool): False -> ``(N, M)`` (feature-major);
            True -> ``(M, N)`` (token-major), both contiguous.
    """
    m = x_t.shape[1]
    y = torch._cslt_sparse_mm(
        packed, pad_cols(x_t), bias=bias, transpose_result=transpose_result)
    if transpose_result:
        return y[:m] if y.shape[0] != m else y  # (M, N)
    return y[:, :m] if y.shape[1] != m else y  # (N, M)


def dense_mm_fm(weight2d: torch.Tensor, x_t: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dense ``Y^T (N, M) = W (N, K) @ X^T (K, M) (+ b)`` (cuBLAS / CPU reference)."""
    if bias is None:
        return torch.mm(weight2d, x_t)
    return torch.addmm(bias[:, None], weight2d, x_t)


def dense_mm_tm(weight2d: torch.Tensor, x_t: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Dense ``Y (M, N) = (X^T)^T W^T (+ b)`` from a feature-major input."""
    if bias is None:
        return torch.mm(x_t.t(), weight2d.t())
    return torch.addmm(bias, x_t.t(), weight2d.t())
