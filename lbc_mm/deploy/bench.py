"""Dense vs 2:4 benchmark of one model, side by side in one process.

Stages (the JSON is rewritten after each, so a timeout still leaves results):

1. ``weights``: build the model, bake / make the 2:4 masks, check every sparse layer
   is N:M (also done on machines without a GPU, which then stop with exit code 2);
2. ``layers_<dtype>``: every sparse unit timed dense vs each 2:4 variant at the input
   shape it sees in the model (forward hooks), eager and under CUDA graphs;
3. ``end_to_end``: dense, **auto** (a unit runs sparse only where it measured faster)
   and all-sparse models, outputs checked against the dense-with-zeros model, eager
   and CUDA-graph timings (a detector's ``predict`` is eager only: its NMS has
   data-dependent shapes; backbone+neck is also graph-timed).
"""
import copy
import json
import os
import platform
import time
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from . import kernels
from . import plan as P
from .models import prepare
from .timing import rel_error, safe_sync, speedup, time_many

E2E_TOL = 5e-2  # end-to-end output agreement (relative to max |ref|), fp16
DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16, 'fp32': torch.float32}


def environment() -> Dict[str, object]:
    """Versions and hardware, so a JSON file describes itself."""
    env: Dict[str, object] = {
        'python': platform.python_version(), 'torch': torch.__version__,
        'cuda': torch.version.cuda, 'host': platform.node(),
        'cusparselt': kernels.cusparselt_version()}
    for pkg in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):
        try:
            env[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001  (optional for the report)
            env[pkg] = None
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name()
        env['capability'] = 'sm%d%d' % torch.cuda.get_device_capability()
    else:
        env['gpu'] = None
    return env


def write_json(obj: dict, path: str) -> None:
    """Write ``obj`` as JSON atomically (``lbc_mm.export.io.atomic_write``)."""
    from ..export.io import atomic_write
    text = json.dumps(obj, indent=1, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


class _Model:
    """The model under test plus its inputs and the functions that are timed."""

    def __init__(self, prep: dict, batch: int, dtype: torch.dtype,
                 device: torch.device, img_size: Optional[int],
                 det_shape: List[int], channels_last: bool):
        self.scope = prep['scope']
        self.dtype = dtype
        self.device = device
        model = prep['model'].to(device)
        self.is_det = self.scope == 'mmdet'
        if self.is_det:
            # backbone + neck in `dtype`; heads keep fp32 weights and run under
            # autocast, which is how mmdet evaluates with mixed precision.
            model.backbone.to(dtype)
            if getattr(model, 'neck', None) is not None:
                model.neck.to(dtype)
            h, w = det_shape
            self.x = torch.randn(batch, 3, h, w, device=device, dtype=dtype)
            from mmdet.structures import DetDataSample
            meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                        batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
            self.samples = [DetDataSample(metainfo=meta) for _ in range(batch)]
        else:
            model.to(dtype)
            size = img_size or 224
            self.x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.model = model.eval()

    def functions(self) -> Dict[str, Dict[str, object]]:
        """name -> ``{'fn': model -> output, 'graph': capturable}``."""
        if not self.is_det:
            return {'forward': {'fn': lambda mdl: mdl(self.x, mode='tensor'),
                                'graph': True}}
        dt, dev = self.dtype, self.device.type
        amp = dt != torch.float32  # fp32: the CPU dry run

        def backbone_neck(mdl):
            with torch.autocast(dev, dtype=dt, enabled=amp, cache_enabled=False):
                return mdl.extract_feat(self.x)

        def predict(mdl):
            with torch.autocast(dev, dtype=dt, enabled=amp, cache_enabled=False):
                return mdl.predict(self.x, copy.deepcopy(self.samples), rescale=False)

        def predict_fp32_heads(mdl):
            # fallback if a head op has no fp16 kernel: backbone+neck in `dtype`,
            # RPN / RoI heads in fp32 (the same for dense and 2:4)
            samples = copy.deepcopy(self.samples)
            with torch.autocast(dev, dtype=dt, enabled=amp, cache_enabled=False):
                feats = mdl.extract_feat(self.x)
            feats = tuple(f.float() for f in feats)
            rpn = mdl.rpn_head.predict(feats, samples, rescale=False)
            return mdl.roi_head.predict(feats, rpn, samples, rescale=False)

        return {'backbone_neck': {'fn': backbone_neck, 'graph': True},
                'predict': {'fn': predict, 'graph': False,
                            'fallback': predict_fp32_heads,
                            'fallback_note': 'predict with fp32 RPN/RoI heads (the '
                                             'fp16-autocast predict failed)'}}

    def main_fn(self) -> Callable[[nn.Module], object]:
        """The function whose run records the sparse layers' input shapes."""
        fns = self.functions()
        return fns['backbone_neck' if self.is_det else 'forward']['fn']


def _out_error(out, ref) -> Optional[float]:
    """Relative error between outputs (tensor or sequence of tensors).

    None for outputs that are not tensors (a detector's ``predict`` results: NMS
    makes them discrete; the backbone+neck features are compared instead).
    """
    if torch.is_tensor(out):
        return rel_error(out, ref)
    if isinstance(out, (list, tuple)) and out and all(torch.is_tensor(o) for o in out):
        return max(rel_error(o, r) for o, r in zip(out, ref))
    return None


def _units(model: nn.Module, layers: Dict[str, object],
           inputs: Dict[str, dict]) -> Dict[str, Dict[str, object]]:
    """Units for the e2e plan and the per-layer table.

    Returns:
        dict: ``{'units': {unit name: signature}, 'rows': {signature: {...}}}``;
        rows cover every sparse layer (incl. fc1/fc2 inside an MLP) and each MLP.
    """
    names = list(layers)
    mlps = P.find_mlps(model, names)
    in_mlp = {n for pair in mlps.values() for n in pair}
    units: Dict[str, str] = {}
    rows: Dict[str, Dict[str, object]] = {}
    for name in names + list(mlps):
        if name not in inputs:
            continue
        mod = P.get_module(model, name)
        sig = P.signature(mod, inputs[name])
        row = rows.setdefault(sig, {'signature': sig, 'kind': P.unit_kind(mod),
                                    'input_shape': inputs[name]['shape'],
                                    'layers': [], 'module': name})
        if P.unit_kind(mod) == 'mlp':
            fc1, _act, fc2 = P.dm.match_mlp(mod)
            row['weight_shape'] = [list(fc1.weight.shape), list(fc2.weight.shape)]
        else:
            row['weight_shape'] = list(mod.weight.shape)
        row['layers'].append(name)
        if name in mlps or name not in in_mlp:
            units[name] = sig
    return {'units': units, 'rows': rows}


def _short(names: List[str]) -> str:
    """Compact label for a list of layer names (first name, count)."""
    return names[0] if len(names) == 1 else f'{names[0]} (+{len(names) - 1})'


def layer_markdown(rows: List[dict], dtype: str) -> str:
    """Markdown table of per-layer timings for one dtype."""
    out = [f'| layer ({dtype}) | kind | weight | input | dense ms (graph) | '
           '2:4 ms (graph) | speedup graph | speedup eager | best 2:4 variant (graph / '
           'eager) |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        t = r.get('timing', {}).get('cuda_graph', {})
        best_g = r.get('best', {}).get('cuda_graph') or [None, None]
        best_e = r.get('best', {}).get('eager') or [None, None]
        dense_ms = t.get('dense', {}).get('ms')
        sp_ms = t.get(best_g[0], {}).get('ms') if best_g[0] else None
        fmt = (lambda v, p='%.3f': (p % v) if isinstance(v, (int, float)) else '-')
        if best_g[0] or best_e[0]:
            variant = f'{best_g[0] or "-"} / {best_e[0] or "-"}'
        else:
            variant = r.get('unsupported') or r.get('error') or '-'
        out.append(f'| {_short(r["layers"])} | {r["kind"]} | {r.get("weight_shape")} '
                   f'| {r["input_shape"]} | {fmt(dense_ms)} | {fmt(sp_ms)} | '
                   f'{fmt(best_g[1], "%.2fx")} | {fmt(best_e[1], "%.2fx")} | '
                   f'{variant} |')
    return '\n'.join(out)


def e2e_markdown(model_name: str, e2e: Dict[str, dict]) -> str:
    """Markdown table of end-to-end timings."""
    out = ['| model | function | mode | dense ms | auto ms | auto speedup | '
           'per-layer choice ms (speedup) | all-2:4 ms | all-2:4 speedup | '
           'sparse units (auto) | output rel. err (auto / all-2:4) |',
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    fmt = (lambda v, p='%.2f': (p % v) if isinstance(v, (int, float)) else '-')
    for key, r in e2e.items():
        if 'timing' not in r:
            out.append(f'| {model_name} | {key} | - | error: {r.get("error")} |')
            continue
        t = r['timing']
        out.append(
            f'| {model_name} | {r["function"]} | {r["mode"]} | '
            f'{fmt(t.get("dense", {}).get("ms"))} | {fmt(r.get("auto_ms"))} | '
            f'{fmt(r.get("auto_speedup"), "%.2fx")}'
            f'{" (fallback: dense)" if r.get("auto_fallback_to_dense") else ""} | '
            f'{fmt(t.get("auto", {}).get("ms"))} '
            f'({fmt(r.get("auto_layers_speedup"), "%.2fx")}) | '
            f'{fmt(t.get("all_sparse", {}).get("ms"))} | '
            f'{fmt(r.get("all_sparse_speedup"), "%.2fx")} | '
            f'{r.get("auto_sparse_units", "-")}/{r.get("units", "-")} | '
            f'{r.get("check_summary", "-")} |')
    return '\n'.join(out)


def plot_layers(results: List[dict], path: str, title: str = '') -> Optional[str]:
    """Bar chart of per-layer 2:4 speedups (CUDA graphs), one panel per result.

    Args:
        results (list[dict]): benchmark JSON objects.
        path (str): PNG path (written atomically).

    Returns:
        str | None: the path, or None when there was nothing to plot.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = []
    for res in results:
        for dt, rows in res.get('layers', {}).items():
            if rows:
                panels.append((f'{res.get("model_name", "?")} {dt}', rows))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.2 * len(panels)),
                             squeeze=False)
    for ax, (name, rows) in zip(axes[:, 0], panels):
        labels, vals, colors = [], [], []
        mode = 'cuda_graph' if any(r.get('best', {}).get('cuda_graph')
                                   for r in rows) else 'eager'
        for r in rows:
            best = (r.get('best', {}).get(mode) or [None, None])[1]
            labels.append(f'{r["kind"]} {r.get("weight_shape")}\nx{len(r["layers"])}')
            vals.append(best or 0.0)
            colors.append('tab:green' if (best or 0) >= 1.0 else 'tab:red')
        ax.bar(range(len(vals)), vals, color=colors)
        ax.axhline(1.0, color='k', lw=0.8)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, rotation=60, ha='right', fontsize=6)
        ax.set_ylabel('2:4 speedup')
        ax.set_title(f'{name}: per-layer dense ms / 2:4 ms ({mode}; 0 = no 2:4 path)',
                     fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from ..export.io import atomic_write
    try:
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=90))
    finally:
        plt.close(fig)
    return path


def _time_layers(state: dict, dtype_name: str, deadline: float, log) -> None:
    """Per-layer timing for one dtype into ``state['result']['layers']``."""
    res = state['result']
    dtype = DTYPES[dtype_name]
    rows_out = res['layers'].setdefault(dtype_name, [])
    done = {r['signature'] for r in rows_out}
    for sig, row in state['rows'].items():
        if sig in done:
            continue
        if time.time() > deadline:
            res['truncated'].append(f'layers_{dtype_name}: stopped at time budget')
            log(f'[bench] time budget reached in layers_{dtype_name}')
            return
        mod = P.get_module(state['model'], row['module'])
        inp = state['inputs'][row['module']]
        try:
            timing = P.time_unit(mod, inp, dtype, state['device'], modes=state['modes'],
                                 stand_in=state['dry_run'])
        except Exception as exc:  # noqa: BLE001  (one layer must not stop the rest)
            timing = {'error': f'{type(exc).__name__}: {exc}'.splitlines()[0]}
            safe_sync()
        entry = dict(row)
        entry.update(timing)
        rows_out.append(entry)
        if dtype_name == state['dtype_name']:
            state['unit_results'][sig] = timing
        best = (timing.get('best', {}).get(state['modes'][0]) or [None, None])
        log(f'[bench] {dtype_name} {_short(row["layers"])} {row["kind"]} '
            f'in={row["input_shape"]}: best {best[0]} '
            f'{("%.2fx" % best[1]) if best[1] else timing.get("unsupported", "-")}')
        write_json(res, state['json'])


def _end_to_end(state: dict, log) -> None:
    """Dense / auto / all-sparse whole-model timings into ``result['end_to_end']``."""
    res = state['result']
    mm: _Model = state['mm']
    units = state['units']
    plans = {mode: P.choose(state['unit_results'], mode, state['margin'])
             for mode in ('cuda_graph', 'eager')}
    all_sparse = {}  # every unit on its fastest 2:4 variant, win or lose
    for sig, r in state['unit_results'].items():
        best = (r.get('best', {}).get(state['modes'][0]) or [None, None])[0]
        all_sparse[sig] = best
    deployed = {}
    for key, choice in (('auto_cuda_graph', plans['cuda_graph']),
                        ('auto_eager', plans['eager']), ('all_sparse', all_sparse)):
        dep = copy.deepcopy(mm.model)
        installed = P.apply_plan(dep, units, choice)
        deployed[key] = (dep.eval(), installed)
    res['plans'] = {k: v[1] for k, v in deployed.items()}
    write_json(res, state['json'])
    e2e = res['end_to_end']
    tensor_checks: Dict[str, object] = {}
    for fname, spec in mm.functions().items():
        fn, note = spec['fn'], None
        with torch.no_grad():
            try:
                ref = fn(mm.model)
            except Exception as exc:  # noqa: BLE001
                err = f'{type(exc).__name__}: {exc}'.splitlines()[0]
                log(f'[bench] {fname} failed on the dense model: {err}')
                if 'fallback' not in spec:
                    e2e[fname] = {'error': err}
                    continue
                fn, note = spec['fallback'], f'{spec["fallback_note"]}: {err}'
                try:
                    ref = fn(mm.model)
                except Exception as exc2:  # noqa: BLE001
                    e2e[fname] = {'error': f'{err}; fallback: {type(exc2).__name__}: '
                                           f'{exc2}'.splitlines()[0]}
                    continue
            checks = {}
            for key, (dep, _inst) in deployed.items():
                try:
                    checks[key] = _out_error(fn(dep), ref)
                except Exception as exc:  # noqa: BLE001
                    checks[key] = f'{type(exc).__name__}: {exc}'.splitlines()[0]
                if checks[key] is None:  # predict: judged by its backbone+neck check
                    checks[key] = tensor_checks.get(key)
            tensor_checks.update({k: v for k, v in checks.items() if v is not None})
        modes = [md for md in state['modes'] if spec['graph'] or md == 'eager']
        for mode in modes:
            auto_key = f'auto_{mode}'
            cands = {'dense': mm.model, 'auto': deployed[auto_key][0],
                     'all_sparse': deployed['all_sparse'][0]}
            # a model whose output failed the check is not timed
            bad = [k for k, ck in ((k, checks.get(dk)) for k, dk in
                                   (('auto', auto_key), ('all_sparse', 'all_sparse')))
                   if isinstance(ck, str) or (isinstance(ck, float) and ck > E2E_TOL)]
            fns = {k: (lambda m=m: fn(m)) for k, m in cands.items() if k not in bad}
            with torch.no_grad():
                timing = time_many(fns, graph=(mode == 'cuda_graph'),
                                   target_ms=60.0, max_iters=20, repeats=5)
            auto_sp = speedup(timing.get('dense'), timing.get('auto'))
            entry = {'function': fname, 'mode': mode, 'timing': timing, 'note': note,
                     'checks': {'auto': checks.get(auto_key),
                                'all_sparse': checks.get('all_sparse')},
                     'rejected_by_check': bad,
                     'units': len(units),
                     'auto_sparse_units': len(deployed[auto_key][1]),
                     'all_sparse_units': len(deployed['all_sparse'][1]),
                     'auto_layers_speedup': auto_sp,
                     'all_sparse_speedup': speedup(timing.get('dense'),
                                                   timing.get('all_sparse'))}
            # Auto never ships a slower model: if the per-layer choices lose end to
            # end, auto falls back to dense (speedup 1.00x) and says so.
            dense_ms = timing.get('dense', {}).get('ms')
            if auto_sp is not None and auto_sp >= 1.0:
                entry['auto_ms'], entry['auto_speedup'] = timing['auto']['ms'], auto_sp
                entry['auto_fallback_to_dense'] = False
            else:
                entry['auto_ms'], entry['auto_speedup'] = dense_ms, 1.0 \
                    if dense_ms is not None else None
                entry['auto_fallback_to_dense'] = True
            ck = [checks.get(auto_key), checks.get('all_sparse')]
            entry['check_summary'] = ' / '.join(
                ('%.1e' % c) if isinstance(c, float) else
                ('n/a' if c is None else str(c)[:40]) for c in ck)
            e2e[f'{fname}_{mode}'] = entry
            log(f'[bench] e2e {fname} {mode}: dense {dense_ms} ms, auto-layers '
                f'{timing.get("auto", {}).get("ms")} ms ({auto_sp}), all-2:4 '
                f'{timing.get("all_sparse", {}).get("ms")} ms, checks {checks}')
            write_json(res, state['json'])
    deployed.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(config: str, checkpoint: Optional[str] = None, *, out_json: str,
        out_png: Optional[str] = None, model_name: Optional[str] = None,
        batch: Optional[int] = None, dtype: str = 'fp16', layer_dtypes=('fp16', 'bf16'),
        img_size: Optional[int] = None, det_shape=(800, 1216),
        channels_last: bool = False, margin: float = 0.03,
        time_budget: float = 80.0, log: Callable[[str], None] = print,
        dry_run: bool = False) -> int:
    """Benchmark one model; returns the process exit code.

    Args:
        config (str): config path or ``pkg::path``.
        checkpoint (str, optional): trained checkpoint; None -> magnitude masks.
        out_json (str): JSON path (rewritten after every stage).
        out_png (str, optional): per-layer speedup bar chart.
        model_name (str, optional): label in tables. Defaults to the config stem.
        batch (int, optional): batch size. Defaults to 1 for detectors, 64 for
            classifiers.
        dtype (str): end-to-end dtype. Defaults to ``'fp16'``.
        layer_dtypes (tuple[str]): dtypes of the per-layer table.
        img_size (int, optional): classifier input size. Defaults to 224.
        det_shape (tuple[int, int]): detector input (H, W).
        channels_last (bool): run the model channels-last.
        margin (float): auto needs a sparse unit ``1 + margin`` times faster.
        time_budget (float): seconds; later stages are skipped past it.
        log (callable): line printer.
        dry_run (bool): run the whole pipeline on CPU in fp32 with the dense
            feature-major GEMM standing in for the 2:4 kernels (tests the script;
            its numbers mean nothing and the JSON says so).

    Returns:
        int: 0 done, 1 weights not N:M or a stage crashed, 2 no sparse timing
        possible here (no GPU / pre-Ampere GPU).
    """
    t0 = time.time()
    deadline = t0 + time_budget
    name = model_name or os.path.splitext(os.path.basename(config.split('::')[-1]))[0]
    res: Dict[str, object] = {
        'model_name': name, 'config': config, 'checkpoint': checkpoint,
        'batch': batch, 'dtype': dtype, 'layer_dtypes': list(layer_dtypes),
        'channels_last': channels_last, 'margin': margin,
        'env': environment(), 'stages_done': [], 'truncated': [], 'layers': {},
        'end_to_end': {},
        'notes': ['times are medians of repeats (CUDA events); speedup = dense ms '
                  '/ 2:4 ms on the same dense-with-zeros weights',
                  'auto: a unit runs 2:4 only where its isolated timing at the model '
                  'shape beat dense by the margin and matched dense output; if the '
                  'result is slower end to end, auto falls back to dense (1.00x)',
                  'variants: mm = torch.mm(W24, x^T) on SparseSemiStructuredTensor; '
                  'cslt = torch._cslt_sparse_mm on the packed weight, bias fused, '
                  'token-major output, input copied to a contiguous x^T; cslt_t = '
                  'the same reading a token-major input as the column-major view '
                  'x^T (no copy); a+b = MLP fc1/fc2 variants with the hidden '
                  'activation feature-major; dense_fm = dense GEMM in that form',
                  'layers the auto plan leaves dense, 3x3 convs included, run '
                  'cuDNN / cuBLAS exactly as in the dense model']}
    ok, why = kernels.sparse_support()
    prep = prepare(config, checkpoint, device='cuda' if ok and not dry_run else 'cpu')
    batch = batch or (1 if prep['scope'] == 'mmdet' else 64)
    res['batch'] = batch
    res['weights'] = prep['weights']
    res['scope_rule'] = prep['scope_rule']
    res['scope'] = prep['scope']
    bad = [r for r in prep['nm_check'] if r['bad_groups']]
    res['nm_check'] = {'layers': len(prep['nm_check']), 'layers_not_nm': len(bad),
                       'rows': prep['nm_check']}
    res['stages_done'].append('weights')
    log(f'[bench] {name}: {len(prep["nm_check"])} sparse layers, {len(bad)} not N:M; '
        f'{prep["weights"]}')
    write_json(res, out_json)
    if bad:
        log('[bench] refusing to time: layers not N:M: ' + ', '.join(
            f'{r["layer"]} ({r["bad_groups"]}/{r["groups"]} groups)' for r in bad))
        return 1
    if dry_run:
        ok = True
        dtype, layer_dtypes = 'fp32', ('fp32', )
        res.update(dry_run=True, dtype=dtype, layer_dtypes=['fp32'])
        res['notes'].insert(0, 'DRY RUN on CPU: dense GEMMs stand in for 2:4 kernels; '
                            'the numbers mean nothing')
    if not ok:
        res['no_sparse_timing'] = why
        write_json(res, out_json)
        log(f'no 2:4 sparse timing possible: {why}')
        return 2
    if any(nm != (2, 4) for nm in prep['layers'].values()):
        why = 'the GPU kernels run 2:4 only; this model has other N:M patterns'
        res['no_sparse_timing'] = why
        write_json(res, out_json)
        log(f'no 2:4 sparse timing possible: {why}')
        return 2
    device = torch.device('cpu' if dry_run else 'cuda')
    torch.backends.cudnn.benchmark = True
    mm = _Model(prep, batch, DTYPES[dtype], device, img_size, list(det_shape),
                channels_last)
    res['input_shape'] = list(mm.x.shape)
    names = list(prep['layers'])
    mlps = P.find_mlps(mm.model, names)
    inputs = P.record_inputs(mm.model, names + list(mlps),
                             lambda: mm.main_fn()(mm.model))
    uu = _units(mm.model, prep['layers'], inputs)
    state = dict(result=res, model=mm.model, rows=uu['rows'], units=uu['units'],
                 inputs=inputs, device=device, json=out_json, unit_results={},
                 dtype_name=dtype, margin=margin, mm=mm, dry_run=dry_run,
                 modes=('eager', ) if dry_run else ('cuda_graph', 'eager'))
    res['units'] = uu['units']
    res['allowed_variants'] = P.ALLOWED_VARIANTS  # None: every variant
    status = 0
    order = [dtype] + [d for d in layer_dtypes if d != dtype]

    def end_to_end():
        nonlocal status
        try:
            _end_to_end(state, log)
            res['stages_done'].append('end_to_end')
        except Exception as exc:  # noqa: BLE001
            res['end_to_end']['error'] = f'{type(exc).__name__}: {exc}'
            log(f'[bench] end-to-end failed: {res["end_to_end"]["error"]}')
            status = 1
        _finish(res, order, name, out_json, out_png, batch, log, final=False)

    for i, dt in enumerate(order):
        if i == 1:  # end to end right after the main dtype's per-layer table
            end_to_end()
        # the main dtype gets half the budget (untimed units stay dense), the
        # others what is left after the end-to-end stage
        _time_layers(state, dt, deadline if i > 0 else t0 + 0.5 * time_budget, log)
        res['stages_done'].append(f'layers_{dt}')
        write_json(res, out_json)
    if len(order) == 1:
        end_to_end()
    res['seconds'] = time.time() - t0
    _finish(res, order, name, out_json, out_png, batch, log, final=True)
    return status


def _finish(res: dict, order: List[str], name: str, out_json: str,
            out_png: Optional[str], batch: int, log, final: bool) -> None:
    """Tables into the JSON (and the log when ``final``), JSON and PNG written."""
    e2e = {k: v for k, v in res['end_to_end'].items() if isinstance(v, dict)}
    res['markdown'] = {'layers': {dt: layer_markdown(res['layers'].get(dt, []), dt)
                                  for dt in order if res['layers'].get(dt)},
                       'end_to_end': e2e_markdown(name, e2e)}
    write_json(res, out_json)
    if final:
        for md in res['markdown']['layers'].values():
            log(md)
        log(res['markdown']['end_to_end'])
    if out_png:
        try:
            plot_layers([res], out_png, title=f'{name} batch {batch}')
        except Exception as exc:  # noqa: BLE001  (a plot must not cost the JSON)
            log(f'[bench] plot failed: {exc}')


def preflight(log: Callable[[str], None] = print) -> List[str]:
    """Run every 2:4 variant once on small layers, eager and graph-replayed.

    Prints ``PREFLIGHT_OK <variant>`` as each one passes, safest first, so when a
    variant kills the process (a CUDA context crash) the caller still knows which
    ones are safe to benchmark (``tools/gpu_check.sh`` runs this first in its own
    process).

    Returns:
        list[str]: the variants that ran and matched dense.
    """
    from ..sparsity.patterns import magnitude_mask
    from . import modules as dm
    ok_variants = []
    torch.manual_seed(0)
    for variant in dm.SPARSE_VARIANTS:
        try:
            for dtype in (torch.float16, torch.bfloat16):
                lin = nn.Linear(256, 512).cuda().to(dtype)
                conv = nn.Conv2d(128, 256, 1).cuda().to(dtype)
                with torch.no_grad():
                    for layer in (lin, conv):
                        layer.weight.mul_(magnitude_mask(layer.weight, 2, 4))
                cases = [(lin, dm.Sparse24Linear,
                          torch.randn(4, 50, 256, device='cuda', dtype=dtype))]
                if variant != 'cslt_t':
                    for b in (1, 2):
                        cases.append((conv, dm.Sparse24Conv1x1, torch.randn(
                            b, 128, 12, 10, device='cuda', dtype=dtype)))
                for layer, cls, x in cases:
                    sp = cls(layer, variant)
                    with torch.no_grad():
                        ref = layer(x)
                        err = rel_error(sp(x), ref)
                        timing = time_many({'v': lambda: sp(x)}, graph=True,
                                           repeats=1, max_iters=2)
                    tol = P.LAYER_TOL[dtype]
                    if not err <= tol or 'ms' not in timing['v']:
                        raise RuntimeError(f'{cls.__name__} {dtype}: error {err:.2e} '
                                           f'(tol {tol}), graph {timing["v"]}')
        except Exception as exc:  # noqa: BLE001
            log(f'PREFLIGHT_FAIL {variant}: {type(exc).__name__}: '
                f'{str(exc).splitlines()[0] if str(exc) else ""}')
            if safe_sync() is not None:
                break  # the CUDA context is gone: nothing after this is safe
            continue
        ok_variants.append(variant)
        log(f'PREFLIGHT_OK {variant}')
    return ok_variants


__all__ = ['e2e_markdown', 'environment', 'layer_markdown', 'plot_layers',
           'preflight', 'run', 'write_json']
