"""End-to-end stage of the benchmark: dense, auto and all-2:4 models of one
workload, their outputs checked against the dense-with-zeros model, then timed.

Auto never ships a slower model: if the per-layer choices lose end to end, auto
falls back to dense (speedup 1.00x) and says so.
"""
import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import torch

from . import plan
from .timing import speedup, time_many
from .workload import Workload, output_error

__all__ = ['E2E_TOL', 'EndToEnd', 'EndToEndResult']

E2E_TOL = 5e-2  # end-to-end output agreement (relative to max |ref|), fp16


def _error_line(exc: BaseException) -> str:
    return f'{type(exc).__name__}: {exc}'.splitlines()[0]


@dataclass
class EndToEndResult:
    """What the stage found (the benchmark JSON's ``end_to_end`` and ``plans``).

    Attributes:
        entries: ``<function>_<mode>`` -> timings, checks and speedups (or
            ``<function>`` -> ``{'error'}`` when it ran on no model).
        plans: model key (``auto_cuda_graph``, ``auto_eager``, ``all_sparse``) ->
            ``{unit: variant}`` installed.
    """
    entries: Dict[str, dict] = field(default_factory=dict)
    plans: Dict[str, dict] = field(default_factory=dict)


class EndToEnd:
    """Whole-model timings of one workload.

    Args:
        work (Workload): the dense-with-zeros model and its input.
        units (dict): unit name -> signature (``find_units``).
        modes (Sequence[str]): ``'cuda_graph'`` and/or ``'eager'``.
        write (callable): called with the :class:`EndToEndResult` so far after
            each step (the benchmark rewrites its JSON).
        log (callable): line printer.
    """

    def __init__(self, work: Workload, units: Dict[str, str], modes: Sequence[str],
                 write: Callable[[EndToEndResult], None],
                 log: Callable[[str], None]):
        self.work, self.units, self.modes = work, units, tuple(modes)
        self.out = EndToEndResult()
        self.entries = self.out.entries
        self._write, self.log = write, log

    def write(self) -> None:
        self._write(self.out)

    def deploy_plans(self, unit_results: Dict[str, plan.UnitTiming],
                     margin: float) -> Dict[str, tuple]:
        """``auto_cuda_graph``, ``auto_eager`` and ``all_sparse`` models:
        key -> (model, {unit: variant installed})."""
        choices = {f'auto_{mode}': plan.choose(unit_results, mode, margin)
                   for mode in ('cuda_graph', 'eager')}
        # every unit on its fastest 2:4 variant, win or lose
        choices['all_sparse'] = {
            sig: r.best_in(self.modes[0])[0] for sig, r in unit_results.items()}
        deployed = {}
        for key, choice in choices.items():
            model = copy.deepcopy(self.work.model)
            installed = plan.apply_plan(model, self.units, choice)
            deployed[key] = (model.eval(), installed)
        self.out.plans = {k: v[1] for k, v in deployed.items()}
        self.write()
        return deployed

    def reference(self, fname: str, spec: dict):
        """``(fn, dense output, note)`` of one timed function, its fallback when
        the dense model fails it; None (recorded) when neither runs."""
        fn, dense = spec['fn'], self.work.model
        try:
            return fn, fn(dense), None
        except Exception as exc:  # noqa: BLE001
            err = _error_line(exc)
            self.log(f'[bench] {fname} failed on the dense model: {err}')
            if 'fallback' not in spec:
                self.entries[fname] = {'error': err}
                return None
        try:
            return (spec['fallback'], spec['fallback'](dense),
                    f'{spec["fallback_note"]}: {err}')
        except Exception as exc2:  # noqa: BLE001
            self.entries[fname] = {
                'error': f'{err}; fallback: {_error_line(exc2)}'}
            return None

    def run(self, unit_results: Dict[str, plan.UnitTiming],
            margin: float) -> EndToEndResult:
        """Deploy the plans, check every function's outputs, time them."""
        deployed = self.deploy_plans(unit_results, margin)
        tensor_checks: Dict[str, object] = {}
        for fname, spec in self.work.functions().items():
            with torch.no_grad():
                got = self.reference(fname, spec)
                if got is None:
                    continue
                fn, ref, note = got
                checks = {}
                for key, (model, _installed) in deployed.items():
                    try:
                        checks[key] = output_error(fn(model), ref)
                    except Exception as exc:  # noqa: BLE001
                        checks[key] = _error_line(exc)
                    if checks[key] is None:  # predict: its backbone+neck check
                        checks[key] = tensor_checks.get(key)
                tensor_checks.update({k: v for k, v in checks.items() if v is not None})
            for mode in self.modes:
                if spec['graph'] or mode == 'eager':
                    self.time_function(fname, fn, mode, note, checks, deployed)
        deployed.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return self.out

    def time_function(self, fname: str, fn, mode: str, note: Optional[str],
                      checks: Dict[str, object], deployed: Dict[str, tuple]) -> None:
        """Dense / auto / all-2:4 timings of one function in one mode."""
        auto_key = f'auto_{mode}'
        models = {'dense': self.work.model, 'auto': deployed[auto_key][0],
                  'all_sparse': deployed['all_sparse'][0]}
        # a model whose output failed the check is not timed
        rejected = [k for k, ck in (('auto', checks.get(auto_key)),
                                    ('all_sparse', checks.get('all_sparse')))
                    if isinstance(ck, str) or (isinstance(ck, float) and ck > E2E_TOL)]
        fns = {k: (lambda m=m: fn(m)) for k, m in models.items() if k not in rejected}
        with torch.no_grad():
            timing = time_many(fns, graph=(mode == 'cuda_graph'), target_ms=60.0)
        auto_sp = speedup(timing.get('dense'), timing.get('auto'))
        dense_ms = timing.get('dense', {}).get('ms')
        entry = {'function': fname, 'mode': mode, 'timing': timing, 'note': note,
                 'checks': {'auto': checks.get(auto_key),
                            'all_sparse': checks.get('all_sparse')},
                 'rejected_by_check': rejected, 'units': len(self.units),
                 'auto_sparse_units': len(deployed[auto_key][1]),
                 'all_sparse_units': len(deployed['all_sparse'][1]),
                 'auto_layers_speedup': auto_sp,
                 'all_sparse_speedup': speedup(timing.get('dense'),
                                               timing.get('all_sparse'))}
        # Auto never ships a slower model: if the per-layer choices lose end to end,
        # auto falls back to dense (speedup 1.00x) and says so.
        if auto_sp is not None and auto_sp >= 1.0:
            entry.update(auto_ms=timing['auto']['ms'], auto_speedup=auto_sp,
                         auto_fallback_to_dense=False)
        else:
            entry.update(auto_ms=dense_ms, auto_fallback_to_dense=True,
                         auto_speedup=1.0 if dense_ms is not None else None)
        entry['check_summary'] = ' / '.join(
            ('%.1e' % c) if isinstance(c, float) else
            ('n/a' if c is None else str(c)[:40])
            for c in (checks.get(auto_key), checks.get('all_sparse')))
        self.entries[f'{fname}_{mode}'] = entry
        self.log(f'[bench] e2e {fname} {mode}: dense {dense_ms} ms, auto-layers '
                 f'{timing.get("auto", {}).get("ms")} ms ({auto_sp}), all-2:4 '
                 f'{timing.get("all_sparse", {}).get("ms")} ms, checks {checks}')
        self.write()
