"""Timing with ``torch.utils.benchmark.Timer`` (CUDA sync, median of blocks), of
eager calls or of CUDA-graph replays (the capture is what the Timer lacks); on CPU
(the dry run) eager only."""
from typing import Callable, Dict, Optional

import torch

#: One 2:4 layer vs its dense twin: ``rel_error`` allowed per dtype.
LAYER_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float32: 1e-4}


def error_line(exc: BaseException) -> str:
    """``'Type: message'``, first line only."""
    return f'{type(exc).__name__}: {exc}'.splitlines()[0]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def safe_sync() -> Optional[str]:
    """Synchronize after a failure; return the error instead of raising it."""
    try:
        _sync()
    except Exception as exc:  # noqa: BLE001  (e.g. an invalidated graph capture)
        return error_line(exc)
    return None


def _capture(fn: Callable[[], object], warmup: int):
    """Warm ``fn`` up on a side stream and capture it in a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize()
    return graph, out


def time_many(fns: Dict[str, Callable[[], object]], *, graph: bool,
              warmup: int = 3, repeats: int = 5, target_ms: float = 20.0
              ) -> Dict[str, Dict[str, object]]:
    """Time zero-argument callables one after the other: eager calls, or with
    ``graph`` CUDA-graph replays (no host overhead); about ``repeats`` blocks of
    ``target_ms`` (``Timer.blocked_autorange``) after ``warmup`` calls.

    Returns:
        dict[str, dict]: name -> ``{'ms': median, 'min_ms', 'max_ms', 'iters'
        (calls per block), 'repeats' (blocks), 'mode'}``, or ``{'error', 'mode'}``
        for one that failed (the others are still timed).
    """
    # Imported here: it logs a CUDA_HOME warning on a machine without CUDA
    from torch.utils.benchmark import Timer
    mode = 'cuda_graph' if graph else 'eager'
    results: Dict[str, Dict[str, object]] = {}
    for name, fn in fns.items():
        try:
            run, keep = fn, None
            if graph:
                if not torch.cuda.is_available():
                    raise RuntimeError('CUDA graphs need a CUDA GPU')
                keep = _capture(fn, warmup)  # the graph and its output live on
                run = keep[0].replay
            else:
                for _ in range(warmup):
                    fn()
                _sync()
            got = Timer('run()', globals={'run': run}).blocked_autorange(
                min_run_time=repeats * target_ms / 1e3)
            del keep
        except Exception as exc:  # noqa: BLE001  (report, keep timing the others)
            results[name] = {'error': error_line(exc), 'mode': mode}
            safe_sync()
            continue
        results[name] = {'ms': got.median * 1e3, 'min_ms': min(got.times) * 1e3,
                         'max_ms': max(got.times) * 1e3,
                         'iters': got.number_per_run, 'repeats': len(got.times),
                         'mode': mode}
    return results


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|out - ref| / max|ref|`` in fp32; inf for other shapes or a non-finite
    value (an fp16 overflow must not pass as NaN, which compares False)."""
    if out.shape != ref.shape:
        return float('inf')
    ref32, out32 = ref.float(), out.float()
    if not (torch.isfinite(ref32).all() and torch.isfinite(out32).all()):
        return float('inf')
    scale = ref32.abs().max().clamp_min(1e-6)
    return float((out32 - ref32).abs().max() / scale)


def speedup(dense: Optional[dict], sparse: Optional[dict]) -> Optional[float]:
    """``dense ms / sparse ms`` or None when either timing is missing."""
    if not dense or not sparse or 'ms' not in dense or 'ms' not in sparse:
        return None
    return float(dense['ms']) / max(float(sparse['ms']), 1e-9)
