"""TensorRT engines with and without sparse kernels, when TensorRT is installed.

``trtexec`` is preferred (``trtexec --sparsity=enable`` vs ``--sparsity=disable``,
same shapes, same precision); the ``tensorrt`` Python module is the fallback
(``BuilderFlag.SPARSE_WEIGHTS``, timed with CUDA events through torch). Which layers
TensorRT ran with sparse kernels comes from its build log ("(Sparsity) ... picked
sparse implementation for layers: ...") and from the engine's layer information
(tactic names containing ``sparse``).

Written without a GPU to run it on: the parsing is unit-tested on log text, the
engine building is not (docs/deploy.md).
"""
import json
import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional, Sequence

TRTEXEC_PATHS = ('/usr/src/tensorrt/bin/trtexec', '/opt/tensorrt/bin/trtexec')
_MEDIAN = re.compile(r'GPU Compute Time:.*?median = ([0-9.eE+-]+) ms')
_PICKED = re.compile(r'\(Sparsity\)[^\n]*picked sparse implementation for layers:'
                     r'\s*(.*)')
_ELIGIBLE = re.compile(r'\(Sparsity\)[^\n]*eligible for sparse math:\s*(.*)')


def find_tensorrt() -> Dict[str, Optional[str]]:
    """``{'trtexec': path or None, 'python': tensorrt version or None}``."""
    trtexec = shutil.which('trtexec') or next(
        (p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)
    try:
        import tensorrt
        version = str(tensorrt.__version__)
    except Exception:  # noqa: BLE001  (not installed, or no CUDA driver)
        version = None
    return {'trtexec': trtexec, 'python': version}


def how_to_run(onnx_path: str, shape: Sequence[int]) -> str:
    """The one line printed where TensorRT is missing."""
    s = 'x'.join(str(v) for v in shape)
    return (f'TensorRT not found (no trtexec on PATH, no tensorrt module): on a GPU '
            f'machine with TensorRT run `trtexec --onnx={onnx_path} --fp16 '
            f'--sparsity=enable --shapes=input:{s} --verbose` (and --sparsity=disable '
            f'to compare), or rerun this tool there with --trt')


def _split_layers(text: str) -> List[str]:
    return [p.strip() for p in text.strip().rstrip('.').split(',') if p.strip()]


def parse_trtexec_log(log: str) -> Dict[str, object]:
    """Median GPU compute time (ms) and the sparse layers from a trtexec log."""
    med = _MEDIAN.findall(log)
    picked = [x for m in _PICKED.findall(log) for x in _split_layers(m)]
    eligible = [x for m in _ELIGIBLE.findall(log) for x in _split_layers(m)]
    return {'median_ms': float(med[-1]) if med else None, 'sparse_layers': picked,
            'eligible_layers': eligible}


def sparse_tactic_layers(layer_info: Dict) -> List[str]:
    """Layers whose tactic name says sparse, from ``--exportLayerInfo`` JSON."""
    out = []
    for layer in layer_info.get('Layers', []) if isinstance(layer_info, dict) else []:
        if isinstance(layer, dict) and 'sparse' in str(layer.get('TacticName', '')
                                                       ).lower():
            out.append(str(layer.get('Name', '?')))
    return out


def run_trtexec(trtexec: str, onnx_path: str, shape: Sequence[int], sparse: bool,
                workdir: str, precision: str = 'fp16',
                timeout: int = 900) -> Dict[str, object]:
    """Build and time one engine; returns median ms, sparse layers, the log path."""
    tag = 'sparse' if sparse else 'dense'
    os.makedirs(workdir, exist_ok=True)
    info = os.path.join(workdir, f'layers_{tag}.json')
    cmd = [trtexec, f'--onnx={onnx_path}', f'--saveEngine={workdir}/{tag}.engine',
           f'--sparsity={"enable" if sparse else "disable"}',
           f'--shapes=input:{"x".join(str(v) for v in shape)}',
           '--profilingVerbosity=detailed', f'--exportLayerInfo={info}',
           '--noDataTransfers', '--useCudaGraph', '--duration=10', '--verbose']
    if precision != 'fp32':
        cmd.append(f'--{precision}')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    log_path = os.path.join(workdir, f'trtexec_{tag}.log')
    with open(log_path, 'w') as f:
        f.write(' '.join(cmd) + '\n' + proc.stdout + proc.stderr)
    res = parse_trtexec_log(proc.stdout + proc.stderr)
    if os.path.isfile(info):
        try:
            with open(info) as f:
                tactic = sparse_tactic_layers(json.load(f))
            res['sparse_layers'] = sorted(set(res['sparse_layers']) | set(tactic))
        except (OSError, ValueError):
            pass
    res.update(rc=proc.returncode, log=log_path, command=' '.join(cmd))
    return res


def run_python_trt(onnx_path: str, shape: Sequence[int], sparse: bool,
                   precision: str = 'fp16', iters: int = 200) -> Dict[str, object]:
    """The same with the tensorrt Python API (needs torch with CUDA for timing)."""
    import tensorrt as trt
    import torch
    messages: List[str] = []

    class _Log(trt.ILogger):

        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            messages.append(msg)

    logger = _Log()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, 'rb') as f:
        if not parser.parse(f.read()):
            raise RuntimeError(f'TensorRT cannot parse {onnx_path}: '
                               f'{parser.get_error(0)}')
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, tuple(shape), tuple(shape), tuple(shape))
    config.add_optimization_profile(profile)
    engine = trt.Runtime(logger).deserialize_cuda_engine(
        builder.build_serialized_network(network, config))
    ctx = engine.create_execution_context()
    ctx.set_input_shape(name, tuple(shape))
    bufs = []
    for i in range(engine.num_io_tensors):
        t = engine.get_tensor_name(i)
        buf = torch.empty(tuple(ctx.get_tensor_shape(t)), device='cuda',
                          dtype=torch.float16 if engine.get_tensor_dtype(t) ==
                          trt.DataType.HALF else torch.float32)
        ctx.set_tensor_address(t, buf.data_ptr())
        bufs.append(buf)
    stream = torch.cuda.Stream()
    times = []
    for i in range(iters + 20):
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record(stream)
        ctx.execute_async_v3(stream.cuda_stream)
        end.record(stream)
        end.synchronize()
        if i >= 20:
            times.append(start.elapsed_time(end))
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    res = parse_trtexec_log('\n'.join(messages))
    res['sparse_layers'] = sorted(set(res['sparse_layers']) |
                                  set(sparse_tactic_layers(info)))
    res['median_ms'] = sorted(times)[len(times) // 2]
    res['command'] = f'tensorrt {trt.__version__} Python API'
    return res


def compare_engines(onnx_path: str, shape: Sequence[int], workdir: str,
                    precision: str = 'fp16') -> Dict[str, object]:
    """Dense and sparse engines side by side, or ``{'available': False, 'line'}``."""
    found = find_tensorrt()
    if not found['trtexec'] and not found['python']:
        return {'available': False, 'line': how_to_run(onnx_path, shape)}
    runs = {}
    for sparse in (False, True):
        key = 'sparse' if sparse else 'dense'
        runs[key] = run_trtexec(found['trtexec'], onnx_path, shape, sparse, workdir,
                                precision) if found['trtexec'] else \
            run_python_trt(onnx_path, shape, sparse, precision)
    d, s = runs['dense']['median_ms'], runs['sparse']['median_ms']
    return {'available': True, 'precision': precision, 'shape': list(shape),
            'runs': runs, 'speedup': d / s if d and s else None}


def format_engines(res: Dict[str, object]) -> str:
    """Latency side by side and the layers TensorRT ran with sparse kernels."""
    if not res.get('available'):
        return res['line']
    r = res['runs']

    def ms(run):
        if run.get('median_ms'):
            return f'{run["median_ms"]:.3f}'
        return f'failed (rc {run.get("rc")}, {run.get("log", "no log")})'

    lines = [f'TensorRT, {res["precision"]}, input {"x".join(map(str, res["shape"]))}'
             ' (median GPU compute time):',
             '| engine | median ms | layers with sparse kernels |',
             '| --- | --- | --- |',
             f'| dense (--sparsity=disable) | {ms(r["dense"])} | - |',
             f'| 2:4 (--sparsity=enable) | {ms(r["sparse"])} | '
             f'{len(r["sparse"]["sparse_layers"])} |']
    if res.get('speedup'):
        lines.append(f'speed-up dense/sparse: {res["speedup"]:.2f}x')
    picked = r['sparse']['sparse_layers']
    lines.append('sparse kernels chosen for: ' + (', '.join(picked) if picked else
                                                   'no layer'))
    return '\n'.join(lines)
