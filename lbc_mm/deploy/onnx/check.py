"""Checks on an exported ONNX model: N:M in TensorRT's layout, onnxruntime equality.

TensorRT groups a weight along its *input* channels, as
``lbc_mm.sparsity.patterns.to_groups`` does: a Conv ``(O, I/g, kh, kw)`` as is, a
GEMM as ``(N, K)`` (a ``Gemm`` without ``transB`` and a ``MatMul`` store ``(K, N)``).
Each Conv / Gemm / MatMul weight initializer is a table row: its layer (the node's
module scope), N:M state, 2:4 or not (``polygraphy inspect sparsity`` decides where
it is run, :func:`judge_by_polygraphy`; else our count), and why a dense one is.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ...sparsity.patterns import count_nm_violations

#: onnxruntime vs PyTorch: ``|ort - torch| <= ATOL + RTOL * |torch|`` element-wise.
RTOL = 1e-3
ATOL = 1e-4
WEIGHT_OPS = ('Conv', 'Gemm', 'MatMul')


class OnnxCheckError(ValueError):
    """The exported graph lost N:M zeros, or onnxruntime disagrees with PyTorch."""


def layer_of(node_name: str, module_names: Sequence[str]) -> Optional[str]:
    """Module name of a TorchScript-exporter node name: each scope part is
    relative to the nearest enclosing *called* module
    (``'/model/backbone/layer1/layer1.0/conv1/Conv'`` -> ``'model.backbone.layer1.0
    .conv1'``)."""
    names = set(module_names)
    parts = [p for p in node_name.split('/') if p][:-1]
    cur = ''
    for part in parts:
        base = cur
        while True:
            cand = f'{base}.{part}' if base else part
            if cand in names:
                cur = cand
                break
            if not base:
                return None
            base = base.rpartition('.')[0]
    return cur or None


def gemm_view(op: str, arr: np.ndarray, node) -> Optional[np.ndarray]:
    """The weight as TensorRT groups it: Conv as is, GEMMs as ``(N, K)``."""
    if op == 'Conv':
        return arr if arr.ndim == 4 else None
    if arr.ndim != 2:
        return None
    if op == 'Gemm':
        trans_b = next((a.i for a in node.attribute if a.name == 'transB'), 0)
        return arr if trans_b else arr.T
    return arr.T  # MatMul: x (.., K) @ W (K, N)


def _conv_groups(node) -> int:
    return next((a.i for a in node.attribute if a.name == 'group'), 1)


def _is_nm(w: torch.Tensor, n: int, m: int) -> Optional[bool]:
    if w.shape[1] % m:
        return None
    return count_nm_violations(w, n, m)[0] == 0


def dense_reason(op: str, node, arr: np.ndarray, view) -> str:
    """Why a weight initializer is not (and cannot be) a 2:4 TensorRT weight."""
    if not np.issubdtype(arr.dtype, np.floating):
        return f'dtype {arr.dtype}: not a float weight'
    if view is None:
        return f'{op} weight of shape {tuple(arr.shape)}: not a 2-D GEMM / 4-D conv'
    if op == 'Conv' and _conv_groups(node) > 1:
        return f'grouped conv (group={_conv_groups(node)}): no sparse kernel'
    if view.shape[1] % 4:
        return f'{view.shape[1]} input channels: not a multiple of 4'
    return 'dense layer in the model (the config keeps it dense)'


def initializer_rows(proto, wrapper: nn.Module,
                     patterns: Dict[str, Tuple[int, int]],
                     prefix: str = 'model.') -> List[Dict[str, object]]:
    """One row per Conv / Gemm / MatMul weight initializer of ``proto``, exported
    from ``wrapper`` (``patterns``: sparse layer names without ``prefix``).

    Returns:
        list[dict]: ``initializer, op, node, layer, shape, dtype, pattern, nm_ok,
        is_2of4, zeros_kept`` (every zero of the PyTorch weight kept), ``sparsity,
        why``.
    """
    from onnx import numpy_helper
    inits = {i.name: i for i in proto.graph.initializer}
    modules = dict(wrapper.named_modules())
    # The exporter keeps one initializer for equal weights (e.g. all-zero folded
    # Conv+BN) and feeds the other layers through Identity nodes.
    alias = {n.output[0]: n.input[0] for n in proto.graph.node
             if n.op_type == 'Identity'}
    rows = []
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        weight = node.input[1]
        while weight not in inits and weight in alias:
            weight = alias[weight]
        if weight not in inits:
            continue
        arr = numpy_helper.to_array(inits[weight])
        # The node's module scope names its layer; the initializer's name only
        # where it lies inside that scope (equal weights share one initializer).
        scope = layer_of(node.name, list(modules)) or layer_of(
            '/' + prefix.rstrip('.') + node.name, list(modules)) or ''
        owner = weight[:-len('.weight')]
        layer = owner if weight.endswith('.weight') and owner in modules and (
            not scope or owner == scope or owner.startswith(scope + '.')) else scope
        name = layer[len(prefix):] if layer.startswith(prefix) else layer
        view = gemm_view(node.op_type, arr, node)
        row = dict(initializer=weight, op=node.op_type, node=node.name, layer=name,
                   shape=list(arr.shape), dtype=str(arr.dtype), pattern='',
                   nm_ok=None, is_2of4=None, zeros_kept=None,
                   sparsity=float((arr == 0).mean()) if arr.size else 0.0)
        grouped = node.op_type == 'Conv' and _conv_groups(node) > 1
        w = torch.from_numpy(np.array(view)) if view is not None and not grouped \
            and np.issubdtype(arr.dtype, np.floating) else None
        if w is not None:
            row['is_2of4'] = _is_nm(w, 2, 4)
        if name in patterns:
            n, m = patterns[name]
            row['pattern'] = f'{n}:{m}'
            if w is None:
                row['nm_ok'] = False
                row['why'] = 'sparse layer, but its initializer cannot be grouped: ' \
                    + dense_reason(node.op_type, node, arr, view)
            else:
                row['nm_ok'] = bool(_is_nm(w, n, m))
                ref = getattr(modules.get(layer), 'weight', None)
                if ref is not None and tuple(ref.shape) == tuple(w.shape):
                    row['zeros_kept'] = bool(((ref.detach() == 0) <= (w == 0)).all())
                row['why'] = f'sparse layer ({n}:{m})' + (
                    '' if row['is_2of4'] else
                    ': not 2:4, so TensorRT cannot use sparse kernels for it')
        else:
            row['why'] = dense_reason(node.op_type, node, arr, view)
        rows.append(row)
    return rows


def check_rows(rows: List[Dict[str, object]],
               patterns: Dict[str, Tuple[int, int]]) -> None:
    """Raise :class:`OnnxCheckError` when a sparse layer lost its N:M zeros, or has
    no initializer in the graph (e.g. its weight became a computed tensor)."""
    found = {r['layer'] for r in rows if r['pattern']}
    missing = sorted(set(patterns) - found)
    bad = [r['layer'] for r in rows if r['pattern'] and
           (not r['nm_ok'] or r['zeros_kept'] is False)]
    if missing or bad:
        parts = ([f'{len(missing)} sparse layers have no weight initializer '
                  f'({", ".join(missing[:3])})'] if missing else []) + \
            ([f'{len(bad)} initializers are not N:M or lost zeros '
              f'({", ".join(bad[:3])})'] if bad else [])
        raise OnnxCheckError('exported ONNX model fails the N:M check: ' +
                             '; '.join(parts))


def _mark(v, fail: str = 'no') -> str:
    return '-' if v is None else ('yes' if v else fail)


def format_rows(rows: List[Dict[str, object]]) -> str:
    """Markdown table of :func:`initializer_rows`, sparse layers first."""
    lines = ['| layer | ONNX op / initializer | shape | dtype | pattern | N:M | 2:4 | '
             'zeros kept | zero frac | why |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in sorted(rows, key=lambda r: not r['pattern']):
        lines.append(
            f'| {r["layer"] or "?"} | {r["op"]} `{r["initializer"]}` | '
            f'{"x".join(str(s) for s in r["shape"])} | {r["dtype"]} | '
            f'{r["pattern"] or "dense"} | {_mark(r["nm_ok"], "NO")} | '
            f'{_mark(r["is_2of4"])} | '
            f'{_mark(r["zeros_kept"], "NO")} | {r["sparsity"]:.2f} | {r["why"]} |')
    return '\n'.join(lines)


def summarize_rows(rows: List[Dict[str, object]], n_inits: int) -> str:
    """One line: how many initializers are 2:4 sparse, dense, and other."""
    sparse = sum(1 for r in rows if r['pattern'] and r['nm_ok'])
    two4 = sum(1 for r in rows if r['pattern'] and r['is_2of4'])
    return (f'{len(rows)} Conv/Gemm/MatMul weight initializers: {sparse} N:M sparse '
            f'({two4} of them 2:4, usable by TensorRT --sparsity=enable), '
            f'{len(rows) - sparse} dense; {n_inits - len(rows)} other initializers '
            '(biases, folded norms, shape constants) are not GEMM weights')


def compare_onnxruntime(proto, x: torch.Tensor, expected: Sequence[torch.Tensor],
                        rtol: float = RTOL, atol: float = ATOL) -> Dict[str, object]:
    """``proto`` in onnxruntime (CPU) on ``x`` vs PyTorch's ``expected``: ``outputs``
    (name, shape, max_abs_diff, max_abs_ref, ok), ``ok``, ``tolerance`` (a sentence),
    ``top1_agree`` for a single 2-D output."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    outs = []
    for meta, g, ref in zip(sess.get_outputs(), got, expected):
        r = ref.detach().float().numpy()
        same_shape = tuple(g.shape) == tuple(r.shape)
        diff = float(np.abs(g - r).max()) if same_shape and r.size else float('inf')
        outs.append(dict(name=meta.name, shape=list(g.shape), max_abs_diff=diff,
                         max_abs_ref=float(np.abs(r).max()) if r.size else 0.0,
                         ok=bool(same_shape and np.allclose(g, r, rtol=rtol,
                                                            atol=atol))))
    report = dict(outputs=outs, ok=len(got) == len(expected) and
                  all(o['ok'] for o in outs),
                  tolerance=f'|ort - torch| <= {atol:g} + {rtol:g} * |torch| '
                  'element-wise')
    if len(got) == 1 and got[0].ndim == 2 and outs[0]['ok']:
        report['top1_agree'] = float(
            (got[0].argmax(1) == expected[0].numpy().argmax(1)).mean())
    return report


def polygraphy_sparsity(onnx_path: str, exe: Optional[str] = None,
                        timeout: int = 3600) -> Dict[str, object]:
    """NVIDIA's ``polygraphy inspect sparsity ONNX`` (CPU): ``sparse`` and
    ``non_sparse`` (the initializer names its ``Found [non-]sparse tensor: NAME``
    lines give) and ``command``.

    Raises:
        FileNotFoundError: polygraphy is not installed.
        RuntimeError: it failed (one line: its last output line).
    """
    import os
    import shutil
    import subprocess
    import sys
    exe = exe or shutil.which('polygraphy') or shutil.which(
        'polygraphy', path=os.path.dirname(sys.executable))
    if exe is None:
        raise FileNotFoundError('polygraphy is not installed: pip install polygraphy '
                                '(or pip install -e ".[deploy]")')
    cmd = [exe, 'inspect', 'sparsity', onnx_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ['no output']
        raise RuntimeError(f'{" ".join(cmd)} failed (rc {proc.returncode}): {last[0]}')

    def found(tag):
        return sorted({ln.split(tag, 1)[1].strip() for ln in text.splitlines()
                       if tag in ln})

    return {'sparse': found('Found sparse tensor:'),
            'non_sparse': found('Found non-sparse tensor:'), 'command': cmd}


def judge_by_polygraphy(rows: List[Dict[str, object]],
                        poly: Dict[str, object]) -> List[str]:
    """Polygraphy's verdicts become the ``is_2of4`` column (in place) where it is
    not None (a grouped conv has no 2:4 kernel whatever Polygraphy says); returns
    the sparse layers whose initializer Polygraphy does not call 2:4."""
    sparse = set(poly['sparse'])
    for r in rows:
        if r['is_2of4'] is not None:
            r['is_2of4'] = r['initializer'] in sparse
    return [str(r['layer']) for r in rows if r['pattern'] and r['is_2of4'] is False]
