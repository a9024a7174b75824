"""Dense vs 2:4 benchmark of one model in one process (``tools/benchmark.py``).

Stages, the JSON rewritten after each (a timeout still leaves results):
``weights`` (the model and its N:M check, also without a GPU, which then stops with
exit code 2); ``layers_<dtype>`` (each unit dense vs each 2:4 variant at its shape
in the model); ``end_to_end`` (dense, **auto**: units 2:4 only where faster, and
all-2:4 models, outputs checked against dense, then timed; a detector's ``predict``
eager only: NMS has data-dependent shapes). Auto never ships a slower model: if it
loses end to end it falls back to dense (1.00x) and says so.
"""
import copy
import os
import time
from typing import Callable, Dict, Optional, Sequence

import torch

from . import kernels, plan, report
from .models import LoadedModel, prepare
from .timing import error_line, safe_sync, speedup, time_many
from .workload import Workload

__all__ = ['Benchmark', 'DTYPES', 'model_label']

DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16, 'fp32': torch.float32}
E2E_TOL = 5e-2  # end-to-end output agreement (relative to max |ref|), fp16
NOTES = [
    'times are medians of torch.utils.benchmark.Timer blocks; speedup = dense ms / '
    '2:4 ms on the same dense-with-zeros weights',
    'auto: a unit runs 2:4 only where its isolated timing at the model shape beat '
    'dense by the margin and matched dense output; if the result is slower end to '
    'end, auto falls back to dense (1.00x)',
    'variants: mm = torch.mm(W24, x^T) on SparseSemiStructuredTensor; cslt = '
    'torch._cslt_sparse_mm on the packed weight, bias fused, token-major output, '
    'input copied to a contiguous x^T; cslt_t = the same reading a token-major input '
    'as the column-major view x^T (no copy); a+b = MLP fc1/fc2 variants with the '
    'hidden activation feature-major; dense_fm = dense GEMM in that form',
    'layers the auto plan leaves dense, 3x3 convs included, run cuDNN / cuBLAS '
    'exactly as in the dense model']


def model_label(config: Optional[str], model_file: Optional[str]) -> str:
    """The label in tables: the config's stem, else the model file's."""
    stem = os.path.basename((config or model_file).split('::')[-1])
    return stem[:-len('.nm.pth')] if stem.endswith('.nm.pth') else \
        os.path.splitext(stem)[0]


class Benchmark:
    """Benchmark one model; :meth:`run` returns the process exit code.

    ``config`` / ``model_file``: as ``tools/benchmark.py`` takes them (no
    ``model_file``: random weights with magnitude masks); the other arguments are
    its flags (``allowed_variants``: ``--variants``, None: all, ``[]``: dense only;
    ``dry_run``: ``--dry-run-cpu``, the pipeline on CPU in fp32 with the dense
    feature-major GEMM standing in for the 2:4 kernels). ``batch`` defaults to 1
    for detectors, 64 for classifiers; ``log`` prints a line.
    """

    def __init__(self, config: Optional[str], model_file: Optional[str] = None, *,
                 out_json: str,
                 out_png: Optional[str] = None, model_name: Optional[str] = None,
                 batch: Optional[int] = None, dtype: str = 'fp16',
                 layer_dtypes: Sequence[str] = ('fp16', 'bf16'),
                 img_size: Optional[int] = None, det_shape=(800, 1216),
                 channels_last: bool = False, margin: float = 0.03,
                 time_budget: float = 80.0,
                 allowed_variants: Optional[Sequence[str]] = None,
                 log: Callable[[str], None] = print, dry_run: bool = False):
        self.config, self.model_file = config, model_file
        self.out_json, self.out_png = out_json, out_png
        self.name = model_name or model_label(config, model_file)
        self.batch, self.dtype = batch, dtype
        self.layer_dtypes = tuple(layer_dtypes)
        self.img_size, self.det_shape = img_size, list(det_shape)
        self.channels_last, self.margin = channels_last, margin
        self.time_budget = time_budget
        self.allowed_variants = (None if allowed_variants is None
                                 else list(allowed_variants))
        self.log, self.dry_run = log, dry_run
        self.modes = ('eager', ) if dry_run else ('cuda_graph', 'eager')
        self.status = 0
        self.workload: Optional[Workload] = None
        self.found: Dict[str, dict] = {}  # plan.find_units: inputs, units, rows
        self.unit_results: Dict[str, plan.UnitTiming] = {}  # main dtype's
        self.result: Dict[str, object] = {
            'model_name': self.name, 'config': config, 'model_file': model_file,
            'batch': batch, 'dtype': dtype, 'layer_dtypes': list(layer_dtypes),
            'channels_last': channels_last, 'margin': margin,
            'env': report.environment(), 'stages_done': [], 'truncated': [],
            'layers': {}, 'end_to_end': {}, 'notes': list(NOTES)}

    def run(self) -> int:
        """All stages. Returns 0 done, 1 weights not N:M or a stage crashed, 2 no
        sparse timing possible here (no GPU / pre-Ampere GPU).

        Raises:
            Not2of4Error: a sparse layer's weights are not 2:4 (e.g. 4:8).
        """
        t0 = time.time()
        ok, why = kernels.sparse_support()
        loaded = prepare(self.config, self.model_file,
                         device='cuda' if ok and not self.dry_run else 'cpu')
        if not self.check_weights(loaded):
            return 1
        if self.dry_run:
            ok, self.dtype, self.layer_dtypes = True, 'fp32', ('fp32', )
            self.result.update(dry_run=True, dtype='fp32', layer_dtypes=['fp32'])
            self.result['notes'].insert(0, 'DRY RUN on CPU: dense GEMMs stand in for '
                                        '2:4 kernels; the numbers mean nothing')
        if not ok:
            self.result['no_sparse_timing'] = why
            self.write()
            self.log(f'no 2:4 sparse timing possible: {why}')
            return 2
        self.setup(loaded)
        order = [self.dtype] + [d for d in self.layer_dtypes if d != self.dtype]
        # the main dtype gets half the budget (untimed units stay dense), then end
        # to end; the other dtypes what is left
        self.time_layers(order[0], t0 + 0.5 * self.time_budget)
        self.end_to_end(order)
        for dtype_name in order[1:]:
            self.time_layers(dtype_name, t0 + self.time_budget)
        self.result['seconds'] = time.time() - t0
        self.finish(order, final=True)
        return self.status

    def check_weights(self, loaded: LoadedModel) -> bool:
        """Stage 1: the weights and their N:M check into the JSON; False when a
        sparse layer is not N:M (:class:`Not2of4Error` when not 2:4)."""
        self.batch = self.batch or (1 if loaded.scope == 'mmdet' else 64)
        rows, bad = loaded.nm_rows, loaded.not_nm
        self.result.update(
            batch=self.batch, weights=loaded.kind, weights_source=loaded.source,
            scope_rule=loaded.rule, scope=loaded.scope,
            nm_check={'layers': len(rows), 'layers_not_nm': len(bad), 'rows': rows})
        if loaded.not_2of4:
            self.result['not_2of4'] = loaded.not_2of4
        self.result['stages_done'].append('weights')
        self.log(f'[bench] {self.name}: {len(rows)} sparse layers, '
                 f'{len(bad)} not N:M; {loaded.source}')
        self.write()
        if bad:
            self.log('[bench] refusing to time: layers not N:M: ' + ', '.join(
                f'{r["layer"]} ({r["bad_groups"]}/{r["groups"]} groups)' for r in bad))
            return False
        loaded.require_2of4()  # 1:4, 2:8, 1:16 weights are 2:4 too; 4:8 mostly not
        return True

    def setup(self, loaded: LoadedModel) -> None:
        """The workload on its device, the units and their recorded inputs."""
        device = torch.device('cpu' if self.dry_run else 'cuda')
        torch.backends.cudnn.benchmark = True
        work = Workload(loaded.model, loaded.scope, self.batch, DTYPES[self.dtype],
                        device, self.img_size, self.det_shape, self.channels_last)
        self.workload = work
        self.found = plan.find_units(work.model, list(loaded.patterns),
                                     lambda: work.main_fn()(work.model))
        self.result.update(input_shape=list(work.x.shape), units=self.found['units'],
                           allowed_variants=self.allowed_variants)  # None: all

    def time_layers(self, dtype_name: str, deadline: float) -> None:
        """Stage 2: per-layer timing for one dtype into ``result['layers']``."""
        rows_out = self.result['layers'].setdefault(dtype_name, [])
        for sig, row in self.found['rows'].items():
            if time.time() > deadline:
                self.result['truncated'].append(
                    f'layers_{dtype_name}: stopped at time budget')
                self.log(f'[bench] time budget reached in layers_{dtype_name}')
                break
            try:
                timing = plan.time_unit(
                    self.workload.model.get_submodule(row['module']),
                    self.found['inputs'][row['module']], DTYPES[dtype_name],
                    self.workload.device, modes=self.modes, stand_in=self.dry_run,
                    allowed_variants=self.allowed_variants)
            except Exception as exc:  # noqa: BLE001  (one layer must not stop the rest)
                timing = plan.UnitTiming(error=error_line(exc))
                safe_sync()
            rows_out.append({**row, **timing.to_dict()})
            if dtype_name == self.dtype:
                self.unit_results[sig] = timing
            variant, sp = timing.best_in(self.modes[0])
            speed = ('%.2fx' % sp) if sp else (timing.unsupported or '-')
            self.log(f'[bench] {dtype_name} {report.short_names(row["layers"])} '
                     f'{row["kind"]} in={row["input_shape"]}: best {variant} {speed}')
            self.write()
        self.result['stages_done'].append(f'layers_{dtype_name}')
        self.write()

    def end_to_end(self, order) -> None:
        """Stage 3 (a crash is recorded, exit code 1), then the tables."""
        try:
            self.time_models()
            self.result['stages_done'].append('end_to_end')
        except Exception as exc:  # noqa: BLE001
            self.result['end_to_end']['error'] = f'{type(exc).__name__}: {exc}'
            self.log(f'[bench] end-to-end failed: {self.result["end_to_end"]["error"]}')
            self.status = 1
        self.finish(order, final=False)

    def time_models(self) -> None:
        """Deploy the auto and all-2:4 plans, check their outputs, time them."""
        choices = {f'auto_{mode}': plan.choose(self.unit_results, mode, self.margin)
                   for mode in ('cuda_graph', 'eager')}
        # every unit on its fastest 2:4 variant, win or lose
        choices['all_sparse'] = {
            sig: r.best_in(self.modes[0])[0] for sig, r in self.unit_results.items()}
        deployed = {key: copy.deepcopy(self.workload.model) for key in choices}
        self.result['plans'] = {
            key: plan.apply_plan(deployed[key], self.found['units'], choice)
            for key, choice in choices.items()}
        self.write()
        e2e = self.result['end_to_end']
        outputs = self.workload.check_outputs(deployed, self.log)
        for fname, got in outputs.items():
            if 'error' in got:
                e2e[fname] = got
                continue
            for mode in self.modes:
                if got['graph'] or mode == 'eager':
                    e2e[f'{fname}_{mode}'] = self.time_function(fname, got, mode,
                                                                deployed)
                    self.write()
        deployed.clear()
        torch.cuda.empty_cache()  # a no-op where CUDA never started

    def time_function(self, fname: str, got: dict, mode: str,
                      deployed: Dict[str, torch.nn.Module]) -> dict:
        """Dense / auto / all-2:4 timings of one checked function in one mode."""
        fn, checks, auto_key = got['fn'], got['checks'], f'auto_{mode}'
        models = {'dense': self.workload.model, 'auto': deployed[auto_key],
                  'all_sparse': deployed['all_sparse']}
        ours = {'auto': checks.get(auto_key), 'all_sparse': checks.get('all_sparse')}
        # a model whose output failed the check is not timed
        rejected = [k for k, ck in ours.items()
                    if isinstance(ck, str) or (isinstance(ck, float) and ck > E2E_TOL)]
        fns = {k: (lambda m=m: fn(m)) for k, m in models.items() if k not in rejected}
        with torch.no_grad():
            timing = time_many(fns, graph=(mode == 'cuda_graph'), target_ms=60.0)
        auto_sp = speedup(timing.get('dense'), timing.get('auto'))
        dense_ms = timing.get('dense', {}).get('ms')
        entry = {'function': fname, 'mode': mode, 'timing': timing,
                 'note': got['note'], 'checks': ours,
                 'rejected_by_check': rejected, 'units': len(self.found['units']),
                 'auto_sparse_units': len(self.result['plans'][auto_key]),
                 'all_sparse_units': len(self.result['plans']['all_sparse']),
                 'auto_layers_speedup': auto_sp,
                 'all_sparse_speedup': speedup(timing.get('dense'),
                                               timing.get('all_sparse'))}
        if auto_sp is not None and auto_sp >= 1.0:
            entry.update(auto_ms=timing['auto']['ms'], auto_speedup=auto_sp,
                         auto_fallback_to_dense=False)
        else:  # auto never ships a slower model
            entry.update(auto_ms=dense_ms, auto_fallback_to_dense=True,
                         auto_speedup=1.0 if dense_ms is not None else None)
        entry['check_summary'] = ' / '.join(
            ('%.1e' % c) if isinstance(c, float) else
            ('n/a' if c is None else str(c)[:40]) for c in ours.values())
        self.log(f'[bench] e2e {fname} {mode}: dense {dense_ms} ms, auto-layers '
                 f'{timing.get("auto", {}).get("ms")} ms ({auto_sp}), all-2:4 '
                 f'{timing.get("all_sparse", {}).get("ms")} ms, checks {checks}')
        return entry

    def write(self) -> None:
        """Rewrite the JSON (atomically)."""
        report.write_json(self.result, self.out_json)

    def finish(self, order, final: bool) -> None:
        """Tables into the JSON (and the log when ``final``), JSON and PNG written."""
        self.result['markdown'] = report.tables(self.result, list(order))
        self.write()
        if final:
            for table in self.result['markdown']['layers'].values():
                self.log(table)
            self.log(self.result['markdown']['end_to_end'])
        if self.out_png:
            try:
                report.plot_layers([self.result], self.out_png,
                                   title=f'{self.name} batch {self.batch}')
            except Exception as exc:  # noqa: BLE001  (a plot must not cost the JSON)
                self.log(f'[bench] plot failed: {exc}')
