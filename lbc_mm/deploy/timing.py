"""GPU timing: CUDA events, warm-up, median of repeats, eager or CUDA-graph replay.

Candidates are timed interleaved (A, B, A, B, ...) so clock and thermal drift hit
all of them alike. Without CUDA (the CPU dry run of the benchmark pipeline) eager
calls are timed with ``time.perf_counter`` and graph mode reports an error.
"""
import statistics
import time
from typing import Callable, Dict, Optional

import torch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def safe_sync() -> Optional[str]:
    """Synchronize after a failure; return the error instead of raising it."""
    try:
        _sync()
    except Exception as exc:  # noqa: BLE001  (e.g. an invalidated graph capture)
        return f'{type(exc).__name__}: {exc}'.splitlines()[0]
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


def _once_ms(run: Callable[[], object], iters: int) -> float:
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        return (time.perf_counter() - t0) * 1e3 / iters
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def time_many(fns: Dict[str, Callable[[], object]], *, graph: bool,
              warmup: int = 3, repeats: int = 5, target_ms: float = 20.0,
              max_iters: int = 50) -> Dict[str, Dict[str, object]]:
    """Time several callables on the current CUDA device.

    Args:
        fns (dict[str, callable]): name -> zero-argument function launching work.
        graph (bool): capture each in a CUDA graph and time replays (no host
            overhead) instead of eager calls.
        warmup (int): warm-up calls before capture / timing. Defaults to 3.
        repeats (int): timed repeats; the median is reported. Defaults to 5.
        target_ms (float): each repeat runs about this long. Defaults to 20.
        max_iters (int): cap on calls per repeat. Defaults to 50.

    Returns:
        dict[str, dict]: name -> ``{'ms': median, 'min_ms', 'max_ms', 'iters',
        'repeats', 'mode'}`` or ``{'error': str}`` if that candidate failed (its
        failure does not stop the others).
    """
    mode = 'cuda_graph' if graph else 'eager'
    runners: Dict[str, Callable[[], object]] = {}
    results: Dict[str, Dict[str, object]] = {}
    keep = []  # graphs and their outputs must outlive the timing
    for name, fn in fns.items():
        try:
            if graph:
                if not torch.cuda.is_available():
                    raise RuntimeError('CUDA graphs need a CUDA GPU')
                g, out = _capture(fn, warmup)
                keep.append((g, out))
                runners[name] = g.replay
            else:
                for _ in range(warmup):
                    fn()
                _sync()
                runners[name] = fn
        except Exception as exc:  # noqa: BLE001  (report, keep timing the others)
            results[name] = {'error': f'{type(exc).__name__}: {exc}'.splitlines()[0],
                             'mode': mode}
            safe_sync()
    iters: Dict[str, int] = {}
    for name, run in runners.items():
        probe = _once_ms(run, 1)
        iters[name] = int(max(1, min(max_iters, target_ms / max(probe, 1e-3))))
    samples: Dict[str, list] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            samples[name].append(_once_ms(run, iters[name]))
    for name, vals in samples.items():
        results[name] = {'ms': statistics.median(vals), 'min_ms': min(vals),
                         'max_ms': max(vals), 'iters': iters[name],
                         'repeats': repeats, 'mode': mode}
    del keep
    return results


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|out - ref| / max|ref|`` in fp32.

    inf when the shapes differ or either side has a non-finite value (an fp16
    overflow must never pass a check as NaN, which compares False to everything).
    """
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
