"""Dense and 2:4 TensorRT engines built and timed by NVIDIA's ``trtexec``, with the
flags of its version (:func:`trtexec_argv`, docs/deploy.md); the timing is trtexec's
``--exportTimes`` JSON. Written without a GPU or TensorRT to run it on.
"""
import json
import os
import re
import shutil
import subprocess
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .trt_layers import engine_layers, parse_trtexec_log

TRTEXEC_PATHS = ('/usr/src/tensorrt/bin/trtexec', '/opt/tensorrt/bin/trtexec')
# trtexec's banner: ``[TensorRT v8601]`` (8.6.1: 1000 * major + 100 * minor + patch)
# or ``[TensorRT v100300]`` (10.3.0: 10000 * major + 100 * minor + patch)
_TRT_NUMBER = re.compile(r'\[TensorRT v(\d{4,6})\]')


def version_tuple(version: str) -> Tuple[int, int]:
    """``'10.3.0.26'`` -> ``(10, 3)``."""
    parts = re.findall(r'\d+', str(version))
    if not parts:
        raise ValueError(f'not a TensorRT version: {version!r}')
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def trtexec_version(text: str) -> Optional[str]:
    """The TensorRT version in ``trtexec``'s banner (``[TensorRT v100300] ...``,
    printed by every trtexec since 8.0), or None."""
    m = _TRT_NUMBER.search(text)
    if m is None:
        return None
    n = int(m.group(1))
    major, rest = (n // 10000, n % 10000) if n >= 100000 else (n // 1000, n % 1000)
    return f'{major}.{rest // 100}.{rest % 100}'


def find_tensorrt() -> Dict[str, Optional[str]]:
    """``{'trtexec': path, 'trtexec_version'}`` (None where absent)."""
    trtexec = shutil.which('trtexec') or next(
        (p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)
    exe_version = None
    if trtexec:
        try:  # trtexec prints its banner (with the version) before any work
            proc = subprocess.run([trtexec, '--help'], capture_output=True, text=True,
                                  timeout=60)
            exe_version = trtexec_version(proc.stdout + proc.stderr)
        except (OSError, subprocess.SubprocessError):
            pass
    return {'trtexec': trtexec, 'trtexec_version': exe_version}


def dynamic_inputs(onnx_path: str) -> Dict[str, List[object]]:
    """``{input name: dims}`` of the ONNX file's inputs with a dynamic axis."""
    import onnx
    proto = onnx.load(onnx_path, load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    out = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_param or (d.dim_value if d.HasField('dim_value') else '?')
                for d in inp.type.tensor_type.shape.dim]
        if any(isinstance(d, str) or d <= 0 for d in dims):
            out[inp.name] = dims
    return out


def needs_fp16_onnx(version: Optional[str], precision: str) -> bool:
    """TensorRT 11+ is strongly typed: an FP16 engine needs an FP16 ONNX file."""
    return precision == 'fp16' and version is not None and \
        version_tuple(version)[0] >= 11


def shape_text(shape: Sequence[int]) -> str:
    return 'x'.join(str(v) for v in shape)


def trtexec_argv(trtexec: str, onnx_path: str, version: str, sparse: bool,
                 workdir: str, precision: str = 'fp16',
                 shapes: Optional[Dict[str, Sequence[int]]] = None) -> List[str]:
    """The ``trtexec`` command for one engine of TensorRT ``version`` (pure; the
    flags per version: docs/deploy.md, "TensorRT, by version"). Engine, layer
    information and times go to ``workdir``."""
    major, minor = version_tuple(version)
    if major < 8:
        raise ValueError(f'TensorRT {version} is too old: 8.x or newer is needed '
                         '(2:4 sparse kernels)')
    tag = 'sparse' if sparse else 'dense'
    cmd = [trtexec, f'--onnx={onnx_path}',
           f'--saveEngine={os.path.join(workdir, tag + ".engine")}',
           f'--sparsity={"enable" if sparse else "disable"}']
    if (major, minor) < (8, 2):
        cmd.append('--explicitBatch')  # deprecated (no effect) from 8.2 on
    else:
        cmd += ['--profilingVerbosity=detailed',
                f'--exportLayerInfo={_path(workdir, "layers", sparse)}']
    if shapes:
        cmd.append('--shapes=' + ','.join(f'{name}:{shape_text(s)}'
                                          for name, s in shapes.items()))
    if precision == 'fp16' and major < 11:
        cmd.append('--fp16')
    cmd += ['--noDataTransfers', '--useCudaGraph', '--duration=10', '--verbose',
            f'--exportTimes={_path(workdir, "times", sparse)}']
    return cmd


def _path(workdir: str, what: str, sparse: bool, ext: str = 'json') -> str:
    return os.path.join(workdir, f'{what}_{"sparse" if sparse else "dense"}.{ext}')


def median_compute_ms(times) -> Optional[float]:
    """Median GPU compute ms of ``--exportTimes`` JSON (``computeMs``, older:
    ``endComputeMs - startComputeMs``), None without an iteration."""
    vals = sorted(
        float(t['computeMs']) if 'computeMs' in t else
        float(t['endComputeMs']) - float(t['startComputeMs'])
        for t in times if isinstance(t, dict) and (
            'computeMs' in t or 'startComputeMs' in t))
    return vals[len(vals) // 2] if vals else None


def how_to_run(onnx_path: str, shape: Sequence[int], dynamic: bool = True) -> str:
    """The one line printed where TensorRT is missing."""
    shapes = f' --shapes=input:{shape_text(shape)}' if dynamic else ''
    return (f'TensorRT not found (no trtexec on PATH): on a GPU '
            f'machine with TensorRT 8/10 run `trtexec --onnx={onnx_path} --fp16 '
            f'--sparsity=enable{shapes} --verbose` (and --sparsity=disable to '
            'compare; on TensorRT 11 no --fp16: pass the FP16 ONNX file, '
            '--fp16-onnx), or rerun this tool there')


def run_trtexec(cmd: List[str], workdir: str, sparse: bool,
                timeout: int = 900) -> Dict[str, object]:
    """Run one :func:`trtexec_argv` command: median ms, the layers with sparse
    kernels (layer information and log), the log's path."""
    os.makedirs(workdir, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    log_path = _path(workdir, 'trtexec', sparse, 'log')
    with open(log_path, 'w') as f:
        f.write(' '.join(cmd) + '\n' + proc.stdout + proc.stderr)
    res = parse_trtexec_log(proc.stdout + proc.stderr)
    layers, times = (_read_json(_path(workdir, what, sparse))
                     for what in ('layers', 'times'))
    res.update(engine_layers=engine_layers(layers or {}),
               median_ms=median_compute_ms(times or []), rc=proc.returncode,
               log=log_path, command=cmd)
    return res


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # not written: the build or the run failed
        return None


def compare_engines(onnx_path: str, shape: Sequence[int], workdir: str,
                    precision: str = 'fp16', found: Optional[Dict] = None,
                    on_step: Callable[[Dict], None] = lambda _res: None
                    ) -> Dict[str, object]:
    """Dense and sparse engines side by side, or ``{'available': False, 'line'}``.

    ``onnx_path``: FP16 where :func:`needs_fp16_onnx` says so. ``on_step(result)``
    runs before and after each engine (a caller writes what is done).
    """
    found = found or find_tensorrt()
    dyn = dynamic_inputs(onnx_path)
    if not found['trtexec']:
        return {'available': False, 'line': how_to_run(onnx_path, shape, bool(dyn))}
    shapes = {name: list(shape) for name in dyn}
    version = found['trtexec_version']
    if version is None:
        return {'available': False, 'line': f'{found["trtexec"]} did not print its '
                'TensorRT version; cannot pick its flags'}
    res: Dict[str, object] = {
        'available': True, 'tensorrt_version': version, 'tool': 'trtexec',
        'precision': precision, 'onnx': onnx_path, 'shape': list(shape),
        'dynamic_inputs': dyn, 'runs': {}, 'speedup': None}
    for sparse in (False, True):
        key = 'sparse' if sparse else 'dense'
        cmd = trtexec_argv(found['trtexec'], onnx_path, version, sparse, workdir,
                           precision, shapes)
        res['runs'][key] = {'command': cmd, 'status': 'running'}
        on_step(res)
        res['runs'][key] = run_trtexec(cmd, workdir, sparse)
        on_step(res)
    d, s = res['runs']['dense']['median_ms'], res['runs']['sparse']['median_ms']
    res['speedup'] = d / s if d and s else None
    return res


def format_engines(res: Dict[str, object]) -> str:
    """Latency side by side and the layers TensorRT ran with sparse kernels."""
    if not res.get('available'):
        return res['line']
    r = res['runs']

    def ms(run):
        if run.get('median_ms'):
            return f'{run["median_ms"]:.3f}'
        return f'failed (rc {run.get("rc")}, {run.get("log", "no log")})'

    sparse_run = r['sparse']
    picked = sorted({x['name'] for x in sparse_run.get('engine_layers', [])
                     if x['sparse']} | set(sparse_run.get('sparse_layers', [])))
    lines = [f'TensorRT {res.get("tensorrt_version", "?")} ({res.get("tool", "?")}), '
             f'{res["precision"]}, input {shape_text(res["shape"])} (median GPU '
             'compute time):',
             '| engine | median ms | layers with sparse kernels |',
             '| --- | --- | --- |',
             f'| dense (--sparsity=disable) | {ms(r["dense"])} | - |',
             f'| 2:4 (--sparsity=enable) | {ms(sparse_run)} | {len(picked)} |']
    if res.get('speedup'):
        lines.append(f'speed-up dense/sparse: {res["speedup"]:.2f}x')
    lines.append('sparse kernels chosen for: ' + (', '.join(picked) if picked else
                                                   'no layer'))
    missed = [v['layer'] for v in res.get('verdicts', [])
              if v['verdict'] == 'eligible, not picked']
    if missed:
        lines.append(f'2:4 in the ONNX file but run dense by TensorRT ({len(missed)}): '
                     + ', '.join(missed))
    return '\n'.join(lines)
