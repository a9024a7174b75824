"""Compare N:M methods (dense / LBC / SR-STE / STE / ASP) on one recipe and data.

The paper's comparison table for a user's own config::

    python tools/compare_methods.py CONFIG [--methods dense,lbc,srste,ste,asp]
        [--patterns 2:4,1:4,2:8] [--seeds 0,1,2] [--work-dir DIR] [--metric KEY]
        [--cfg-options KEY=VALUE ...]

Every (method, pattern, seed) is one training run of CONFIG through the normal
training path (``tools/train.py``'s argument merging, data check, Runner, hooks and
end-of-training checks), in a subprocess of its own and a work dir of its own,
``<work-dir>/<method>_<n>of<m>_seed<s>`` (``dense_seed<s>``). Only the sparse layers'
``method`` / ``n`` / ``m`` and the seed change:

* the sparse layer configs of the model are found wherever the config sets them
  (``conv_cfg=dict(type='NMSparseConv', ...)`` of an mmpretrain / mmdet backbone, an
  ``NMSparseLinear`` layer config, or the ``NMSparsify`` model transform);
* ``lbc`` keeps (or adds, with its defaults) the ``LBCHook``; every other method
  drops it;
* ``srste`` keeps the config's ``srste_lambda`` (default 2e-4), ``ste`` is
  ``srste_lambda=0``, ``asp`` fixes the magnitude mask at the first training
  forward (of the config's initial weights: a random mask from scratch);
* ``dense`` has no sparse layer and no hook: ``conv_cfg`` becomes None, other
  sparse layer configs their ``Conv2d`` / ``Linear`` type, ``NMSparsify`` its inner
  model. Dense runs once per seed, not per pattern.

A run that finished (``result.json`` in its work dir) is not run again, so an
interrupted study continues where it stopped; a run that fails is reported in the
table (its log is ``run.log`` in its work dir) and the others go on; the study then
exits 1. One progress line per run. A pattern none of the sparse layers can hold
(input channels not divisible by M: they would all train dense) fails its runs
before training; layers that stay dense under a pattern are named in the JSON and
counted in the progress line.

Faults: a config without sparse layer configs is refused up front, in one line; the
study folder is locked (``.compare_methods.lock``), so a second study into the same
``--work-dir`` is refused in one line while the first trains; SIGTERM or Ctrl-C
stops the running run too (exit 143 / 130), and a rerun trains it again.

Per run: the last validation metrics the config's evaluator reports (``--metric``
picks the key; default ``accuracy/top1``, then ``coco/bbox_mAP``, then the first),
whether every sparse layer ended exactly N:M, wall time of the training, peak
memory (``torch.cuda.max_memory_allocated`` on a GPU, else the process' peak RSS),
and for LBC ``LBCHook``'s settledness at its last card step (how often the kept
candidate is the magnitude choice, the decision margin in iterations' worth of
score movement and the share of decisions taken on exactly equal scores; see
``lbc_mm/sparsity/diagnostics.py``).

Outputs in the work dir (written atomically): ``compare_methods.md`` (markdown
table, mean ± sample std over seeds), ``compare_methods.json`` (every run and the
summary) and ``compare_methods.png`` (metric per method and pattern, error bars).
"""
import argparse
import copy
import json
import os
import os.path as osp
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

METHODS = ('dense', 'lbc', 'srste', 'ste', 'asp')
SPARSE_TYPES = {'NMSparseConv': 'Conv2d', 'NMSparseLinear': 'Linear'}
TRANSFORM_TYPE = 'NMSparsify'
SPARSE_KEYS = ('n', 'm', 'method', 'strict', 'srste_lambda')
HOOK_TYPES = ('LBCHook', 'lbc_mm.LBCHook')
METRIC_PRIORITY = ('accuracy/top1', 'coco/bbox_mAP')
RESULT = 'result.json'
SPEC = 'run.json'
LOG = 'run.log'
OUT_NAME = 'compare_methods'
#: Held (flock) by the study training in a folder; holds its pid.
LOCK = '.compare_methods.lock'
#: Seconds a run gets to stop after SIGTERM before it is killed.
STOP_GRACE_S = 10


# -- config rewriting -------------------------------------------------------------
def _base_type(node: dict) -> str:
    value = node.get('type', '')
    return value.split('.')[-1] if isinstance(value, str) else ''


def _set_sparse(node: dict, method: str, n: int, m: int) -> None:
    node['n'], node['m'], node['method'] = n, m, method
    if method in ('lbc', 'asp', 'ste'):
        node.pop('srste_lambda', None)
    if method == 'ste':
        node['srste_lambda'] = 0.0


def _rewrite_node(node: Any, method: str, n: int, m: int, found: List[str],
                  where: str) -> Any:
    """Rewrite the sparse layer configs under ``node``; return the new node."""
    if isinstance(node, (list, tuple)):
        return type(node)(_rewrite_node(v, method, n, m, found, f'{where}.{i}')
                          for i, v in enumerate(node))
    if not isinstance(node, dict):
        return node
    kind = _base_type(node)
    if kind == TRANSFORM_TYPE:
        found.append(where)
        inner = _rewrite_node(node['model'], method, n, m, found, f'{where}.model')
        if method == 'dense':
            return inner
        node['model'] = inner
        _set_sparse(node, method, n, m)
        return node
    if kind in SPARSE_TYPES:
        found.append(where)
        if method == 'dense':
            if where.endswith('conv_cfg'):
                return None
            node = {k: v for k, v in node.items() if k not in SPARSE_KEYS}
            node['type'] = SPARSE_TYPES[kind]
            return node
        _set_sparse(node, method, n, m)
        return node
    for key in list(node.keys()):
        node[key] = _rewrite_node(node[key], method, n, m, found, f'{where}.{key}')
    return node


def rewrite_config(cfg, method: str, pattern: Optional[Tuple[int, int]],
                   seed: int) -> List[str]:
    """Make ``cfg`` (an mmengine ``Config``, in place) one run of the study.

    Args:
        cfg (Config): The loaded config (``--cfg-options`` already merged).
        method (str): One of :data:`METHODS`.
        pattern (tuple, optional): ``(n, m)``; ignored for ``'dense'``.
        seed (int): ``randomness.seed``.

    Returns:
        list[str]: Config paths of the sparse layer configs that were rewritten.

    Raises:
        ValueError: Unknown method, or no sparse layer config in ``cfg.model``.
    """
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}, expected one of {METHODS}')
    n, m = pattern if pattern is not None else (0, 0)
    if method != 'dense' and pattern is None:
        raise ValueError(f'method {method!r} needs a pattern')
    model = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else copy.deepcopy(
        dict(cfg.model))
    found: List[str] = []
    model = _rewrite_node(model, method, n, m, found, 'model')
    if not found:
        raise ValueError(
            'the config has no sparse layer config to switch: expected '
            "conv_cfg=dict(type='NMSparseConv', ...), an NMSparseLinear layer or "
            "model=dict(type='NMSparsify', ...)")
    cfg.model = model
    hooks = [h.to_dict() if hasattr(h, 'to_dict') else dict(h)
             for h in (cfg.get('custom_hooks', None) or [])]
    has_hook = any(h.get('type') in HOOK_TYPES for h in hooks)
    if method == 'lbc':
        if not has_hook:
            hooks.append(dict(type='LBCHook'))
        # An LBCHook needs the scores' optimizer constructor (lbc_mm.config_check);
        # a dense / SR-STE config switched to LBC does not name it yet.
        optim_wrapper = cfg.get('optim_wrapper', None)
        if optim_wrapper is not None and optim_wrapper.get('constructor', None) in (
                None, 'DefaultOptimWrapperConstructor'):
            optim_wrapper['constructor'] = 'LBCOptimWrapperConstructor'
    else:
        hooks = [h for h in hooks if h.get('type') not in HOOK_TYPES]
    cfg.custom_hooks = hooks
    randomness = dict(cfg.get('randomness', None) or {})
    randomness['seed'] = seed
    cfg.randomness = randomness
    return found


# -- the study grid ---------------------------------------------------------------
def parse_patterns(text: str) -> List[Tuple[int, int]]:
    """``'2:4,1:4'`` -> ``[(2, 4), (1, 4)]``."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(','))):
        try:
            n, m = (int(v) for v in item.split(':'))
        except ValueError:
            raise SystemExit(f'--patterns: {item!r} is not N:M (e.g. 2:4)')
        if not 0 < n < m:
            raise SystemExit(f'--patterns: {item!r} needs 0 < N < M')
        out.append((n, m))
    return out


def pattern_name(pattern: Optional[Tuple[int, int]]) -> str:
    return 'dense' if pattern is None else f'{pattern[0]}:{pattern[1]}'


def run_name(method: str, pattern: Optional[Tuple[int, int]], seed: int) -> str:
    if method == 'dense':
        return f'dense_seed{seed}'
    return f'{method}_{pattern[0]}of{pattern[1]}_seed{seed}'


def grid(methods: Sequence[str], patterns: Sequence[Tuple[int, int]],
         seeds: Sequence[int]) -> List[Tuple[str, Optional[Tuple[int, int]], int]]:
    """Every run: dense once per seed, the sparse methods per pattern and seed.

    Seed-major: the first seed of every (method, pattern) comes first, so a
    partial study already compares every cell.
    """
    runs = []
    for seed in seeds:
        for method in methods:
            for pattern in ([None] if method == 'dense' else patterns):
                runs.append((method, pattern, seed))
    return runs


# -- one run (in its own process) -------------------------------------------------
def _load_train_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'lbc_tools_train', osp.join(REPO, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dense_fallbacks(model) -> Tuple[List[str], int]:
    """Names of the sparse-typed layers that stayed dense (input channels not
    divisible by M), and the number of sparse-typed layers."""
    from lbc_mm.layers import sparse_layers
    layers = list(sparse_layers(model, only_sparse=False))
    return [name for name, layer in layers if not layer.is_sparse], len(layers)


def _nm_exact(model) -> Optional[bool]:
    """Every sparse layer keeps exactly ``n`` of every ``m`` weights (None: none)."""
    import torch

    from lbc_mm.layers import sparse_layers
    from lbc_mm.sparsity import count_nm_violations, to_groups
    layers = list(sparse_layers(model))
    if not layers:
        return None
    with torch.no_grad():
        for _, layer in layers:
            kept = to_groups(layer.get_mask(), layer.m).sum(dim=1)
            if bool((kept != layer.n).any()):
                return False
            if count_nm_violations(layer.sparse_weight(), layer.n, layer.m)[0]:
                return False
    return True


def run_one(run_dir: str) -> None:
    """Train the run described by ``<run_dir>/run.json``; write ``result.json``."""
    import resource

    import torch
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import MODELS
    from torch import nn

    import lbc_mm  # noqa: F401
    from lbc_mm.apis import load_config
    from lbc_mm.cli import build_runner, find_missing_data
    from lbc_mm.dist import setup_distributed
    from lbc_mm.export.io import atomic_write
    from lbc_mm.hooks.lbc_hook import LBCHook

    # A dense run turns NMSparseLinear layer configs into type='Linear'; mmcv
    # registers 'Conv2d' but not 'Linear'.
    if MODELS.get('Linear') is None:
        MODELS.register_module('Linear', module=nn.Linear)
    with open(osp.join(run_dir, SPEC)) as f:
        spec = json.load(f)
    train = _load_train_tool()
    cfg = load_config(spec['config'])
    if spec.get('cfg_options'):
        cfg.merge_from_dict(spec['cfg_options'])
    pattern = tuple(spec['pattern']) if spec['pattern'] else None
    rewrite_config(cfg, spec['method'], pattern, spec['seed'])
    args = train.parse_args([spec['config'], '--work-dir', run_dir])
    train.merge_args(cfg, args)
    loaders = ('train_dataloader', ) + (
        ('val_dataloader', ) if cfg.get('val_cfg', None) is not None else ())
    missing = find_missing_data(cfg, loaders)
    if missing is not None:
        raise SystemExit(missing)
    setup_distributed(cfg, 'none')
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    class _Metrics(Hook):
        priority = 'LOWEST'
        metrics: Optional[dict] = None

        def after_val_epoch(self, runner, metrics=None) -> None:
            if metrics:
                self.metrics = dict(metrics)

    recorder = _Metrics()
    runner = build_runner(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    dense, total = dense_fallbacks(model)
    if pattern is not None and total and len(dense) == total:
        named = ', '.join(dense[:3]) + (', ...' if len(dense) > 3 else '')
        raise SystemExit(
            f'error: no layer can hold {pattern_name(pattern)}: the input channels '
            f'of all {total} sparse layers are not divisible by {pattern[1]}, they '
            f'would train dense ({named})')
    runner.register_hook(recorder, priority='LOWEST')
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start
    metrics = recorder.metrics
    if metrics is None and cfg.get('val_cfg', None) is not None:
        metrics = runner.val()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    diag = {}
    for hook in runner.hooks:
        if isinstance(hook, LBCHook):
            diag = dict(hook.diagnostics)
    result = dict(
        status='ok', method=spec['method'], pattern=pattern_name(pattern),
        seed=spec['seed'], metrics={k: float(v) for k, v in (metrics or {}).items()
                                    if isinstance(v, (int, float))},
        nm_exact=_nm_exact(model), dense_layers=dense, wall_s=wall,
        peak_mem_mib=peak, peak_mem_kind='cuda allocated' if cuda else 'RSS',
        diagnostics=diag, iters=runner.iter)
    atomic_write(osp.join(run_dir, RESULT),
                 lambda f: f.write(json.dumps(result, indent=1).encode()))


# -- the driver -------------------------------------------------------------------
def _last_error(log_path: str) -> str:
    """The last line of a failed run's log that names an error."""
    try:
        with open(log_path, errors='replace') as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return 'no log'
    for line in reversed(lines):
        if ('Error' in line or 'error' in line or 'SystemExit' in line
                or 'not found' in line):
            return line[:300]
    return lines[-1][:300] if lines else 'empty log'


def launch(run_dir: str, spec: dict) -> dict:
    """Run one spec in a subprocess (log in ``run.log``); its result dict."""
    from lbc_mm.export.io import atomic_write
    os.makedirs(run_dir, exist_ok=True)
    atomic_write(osp.join(run_dir, SPEC),
                 lambda f: f.write(json.dumps(spec, indent=1).encode()))
    start = time.perf_counter()
    with open(osp.join(run_dir, LOG), 'wb') as log:
        # A session of its own: Ctrl-C reaches only this process, which stops the
        # run (and its data loader workers) itself.
        proc = subprocess.Popen(
            [sys.executable, osp.abspath(__file__), '--run-one', run_dir],
            stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd(),
            start_new_session=True)
        try:
            proc.wait()
        except BaseException:  # SIGTERM (Terminated) or Ctrl-C: no orphan run
            stop_run(proc)
            raise
    result_path = osp.join(run_dir, RESULT)
    if proc.returncode == 0 and osp.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    return dict(status='failed', method=spec['method'],
                pattern=pattern_name(tuple(spec['pattern']) if spec['pattern']
                                     else None),
                seed=spec['seed'], returncode=proc.returncode,
                error=_last_error(osp.join(run_dir, LOG)),
                wall_s=time.perf_counter() - start)


def stop_run(proc: subprocess.Popen) -> None:
    """SIGTERM a run's process group; SIGKILL it after :data:`STOP_GRACE_S`."""
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal would orphan it
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def lock_study(work_dir: str) -> int:
    """Lock the study folder until this process exits (its descriptor stays open;
    the kernel releases the lock however the process ends).

    Returns:
        int: The lock file's descriptor.

    Raises:
        SystemExit: One line when another study trains in ``work_dir``.
    """
    import fcntl
    os.makedirs(work_dir, exist_ok=True)
    fd = os.open(osp.join(work_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or '?'
        os.close(fd)
        raise SystemExit(f'error: another compare_methods study (pid {holder}) is '
                         f'training in {work_dir}; wait for it to end or choose '
                         f'another --work-dir') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def check_config(config: str, cfg_options: Optional[dict],
                 grid_runs: Sequence[Tuple[str, Optional[Tuple[int, int]], int]]
                 ) -> None:
    """Refuse, in one line, a config the runs could not switch (no sparse layer
    config), before any run starts."""
    from lbc_mm.apis import load_config
    method, pattern, seed = grid_runs[0]
    try:
        cfg = load_config(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        rewrite_config(cfg, method, pattern, seed)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f'error: {config}: {exc}') from None


def pick_metric(results: Sequence[dict], wanted: Optional[str]) -> Optional[str]:
    keys: List[str] = []
    for res in results:
        for key in res.get('metrics', {}):
            if key not in keys:
                keys.append(key)
    if wanted:
        return wanted
    for key in METRIC_PRIORITY:
        if key in keys:
            return key
    return keys[0] if keys else None


def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def summarize(results: Sequence[dict], metric: Optional[str]) -> List[dict]:
    """One row per (method, pattern): mean / std over the seeds that finished."""
    rows: Dict[Tuple[str, str], dict] = {}
    for res in results:
        key = (res['method'], res['pattern'])
        row = rows.setdefault(key, dict(method=key[0], pattern=key[1], runs=[]))
        row['runs'].append(res)
    out = []
    for row in rows.values():
        ok = [r for r in row['runs'] if r['status'] == 'ok']
        values = [r['metrics'][metric] for r in ok
                  if metric is not None and metric in r.get('metrics', {})]
        mean, std = _mean_std(values)
        nm = [r['nm_exact'] for r in ok if r.get('nm_exact') is not None]
        diag = [r.get('diagnostics') or {} for r in ok]
        agree = [d['agree_mag'] for d in diag if 'agree_mag' in d]
        margin = [d['margin_steps'] for d in diag if 'margin_steps' in d]
        chance = [d['chance_agree'] for d in diag if 'chance_agree' in d]
        tied = [d['tied'] for d in diag if 'tied' in d]
        out.append(dict(
            method=row['method'], pattern=row['pattern'], metric=metric,
            mean=mean, std=std, values=values, seeds=[r['seed'] for r in ok],
            ok=len(ok), failed=[dict(seed=r['seed'], error=r.get('error', ''))
                                for r in row['runs'] if r['status'] == 'failed'],
            not_run=[r['seed'] for r in row['runs'] if r['status'] == 'not run'],
            nm_exact=None if not nm else sum(nm), nm_runs=len(nm),
            wall_s=_mean_std([r['wall_s'] for r in ok])[0],
            peak_mem_mib=max((r['peak_mem_mib'] for r in ok), default=None),
            agree_mag=_mean_std(agree)[0], margin_steps=_mean_std(margin)[0],
            tied=_mean_std(tied)[0],
            chance_agree=chance[0] if chance else None))
    return out


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_table(rows: Sequence[dict], metric: Optional[str]) -> str:
    """The study's markdown table."""
    head = (f'| method | pattern | {metric or "metric"} (mean ± std) | exactly N:M | '
            'train time / run (s) | peak memory (MiB) | LBC: kept = magnitude '
            '(chance) | LBC: decision margin (score steps; tied decisions) | runs |')
    lines = [head, '|' + '---|' * 9]
    for row in rows:
        value = '-' if row['mean'] is None else (
            f'{row["mean"]:.2f}' + (f' ± {row["std"]:.2f}'
                                    if row['std'] is not None else ''))
        nm = ('n/a' if row['nm_exact'] is None else
              f'{row["nm_exact"]}/{row["nm_runs"]}')
        agree = ('-' if row['agree_mag'] is None else
                 f'{row["agree_mag"]:.1%} ({row["chance_agree"]:.1%})')
        runs = f'{row["ok"]} ok'
        if row.get('not_run'):
            runs += f', {len(row["not_run"])} not run yet'
        if row['failed']:
            runs += ', ' + '; '.join(
                f'seed {f["seed"]} failed: {f["error"][:120]}'.replace('|', '/')
                for f in row['failed'])
        lines.append(
            f'| {row["method"]} | {row["pattern"]} | {value} | {nm} | '
            f'{_fmt(row["wall_s"], 0)} | {_fmt(row["peak_mem_mib"], 0)} | {agree} | '
            f'{_fmt(row["margin_steps"], 1)}'
            + ('' if row.get('tied') is None else f' ({row["tied"]:.0%} tied)')
            + f' | {runs} |')
    return '\n'.join(lines) + '\n'


def write_chart(path: str, rows: Sequence[dict], metric: Optional[str]):
    """Metric per method and pattern (bars, std error bars; dense as a line);
    returns the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lbc_mm.export.io import atomic_write
    patterns = []
    for row in rows:
        if row['method'] != 'dense' and row['pattern'] not in patterns:
            patterns.append(row['pattern'])
    methods = [m for m in METHODS if m != 'dense'
               and any(r['method'] == m for r in rows)]
    fig = Figure(figsize=(max(5, 1.6 * max(1, len(patterns)) + 2), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, pattern in enumerate(patterns):
            row = next((r for r in rows if r['method'] == method
                        and r['pattern'] == pattern), None)
            if row is None or row['mean'] is None:
                continue
            xs.append(i + (j - (len(methods) - 1) / 2) * width)
            ys.append(row['mean'])
            errs.append(row['std'] or 0.0)
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=method)
    for row in rows:
        if row['method'] == 'dense' and row['mean'] is not None:
            ax.axhline(row['mean'], color='black', linestyle='--', label='dense')
            if row['std']:
                ax.axhspan(row['mean'] - row['std'], row['mean'] + row['std'],
                           color='grey', alpha=0.2)
    ax.set_xticks(range(len(patterns)))
    ax.set_xticklabels(patterns)
    ax.set_xlabel('N:M pattern')
    ax.set_ylabel(f'{metric} (mean ± std over seeds)' if metric else 'metric')
    values = [r['mean'] for r in rows if r['mean'] is not None]
    if values:
        low, high = min(values), max(values)
        pad = max(1e-6, (high - low) * 0.5 + 0.02 * abs(high))
        ax.set_ylim(low - pad, high + pad)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
    return fig


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from lbc_mm.cli import KeyValueAction
    parser = argparse.ArgumentParser(
        description='Compare dense / LBC / SR-STE / STE / ASP on one config')
    parser.add_argument('config', help='train config (any lbc_mm N:M config)')
    parser.add_argument('--methods', default='dense,lbc,srste,ste,asp',
                        help=f'comma-separated, from {",".join(METHODS)}')
    parser.add_argument('--patterns', default='2:4,1:4,2:8',
                        help='comma-separated N:M patterns')
    parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds')
    parser.add_argument('--work-dir', help='study folder (one sub-folder per run); '
                        'default work_dirs/compare_methods/<config name>')
    parser.add_argument('--metric', help='metric key to compare (default: '
                        'accuracy/top1, else coco/bbox_mAP, else the first)')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        help='override config settings for every run')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: write the table, JSON and chart of '
                        'the runs finished so far (e.g. while a study runs)')
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        parser.error(f'--methods: unknown {unknown}, expected from {METHODS}')
    args.patterns = parse_patterns(args.patterns)
    try:
        args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError:
        parser.error('--seeds: comma-separated integers')
    if any(m != 'dense' for m in args.methods) and not args.patterns:
        parser.error('--patterns: at least one N:M pattern')
    if args.work_dir is None:
        args.work_dir = osp.join('work_dirs', OUT_NAME,
                                 osp.splitext(osp.basename(args.config))[0])
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Run (or skip) every run of the grid, then write the table, JSON and chart."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--run-one']:
        run_one(argv[1])
        return []
    args = parse_args(argv)
    from lbc_mm.export.io import Terminated, atomic_write, raise_on_sigterm
    config = osp.abspath(args.config)
    cfg_options = (None if args.cfg_options is None else
                   {k: v for k, v in args.cfg_options.items()})
    runs = grid(args.methods, args.patterns, args.seeds)
    if not args.report_only:
        check_config(config, cfg_options, runs)
        lock_study(args.work_dir)  # held until this process exits
        raise_on_sigterm()  # SIGTERM stops the running run too (launch)
    results: List[dict] = []
    start = time.perf_counter()
    done_times: List[float] = []
    for i, (method, pattern, seed) in enumerate(runs, 1):
        name = run_name(method, pattern, seed)
        run_dir = osp.join(args.work_dir, name)
        result_path = osp.join(run_dir, RESULT)
        head = f'[{i}/{len(runs)}] {name}'
        if osp.exists(result_path):
            with open(result_path) as f:
                res = json.load(f)
            results.append(res)
            print(f'{head}: finished before, skipped', flush=True)
            continue
        if args.report_only:
            results.append(dict(status='not run', method=method,
                                pattern=pattern_name(pattern), seed=seed))
            print(f'{head}: not run yet', flush=True)
            continue
        spec = dict(config=config, cfg_options=cfg_options, method=method,
                    pattern=list(pattern) if pattern else None, seed=seed)
        try:
            res = launch(run_dir, spec)
        except KeyboardInterrupt as exc:
            what = 'terminated (SIGTERM)' if isinstance(exc, Terminated) else \
                'interrupted'
            print(f'error: {what} during {name}, which was stopped too; a rerun '
                  f'trains it again (finished runs are skipped)', file=sys.stderr)
            raise SystemExit(143 if isinstance(exc, Terminated) else 130) from None
        results.append(res)
        done_times.append(res['wall_s'])
        left = len(runs) - i
        eta = (f'; about {statistics.fmean(done_times) * left / 60:.0f} min left'
               if left else '')
        if res['status'] == 'ok':
            metric = pick_metric([res], args.metric)
            value = res['metrics'].get(metric) if metric else None
            what = (f'{metric} {value:.4g}' if value is not None else 'no metric')
            nm = {True: 'N:M', False: 'NOT N:M', None: 'dense'}[res['nm_exact']]
            if res.get('dense_layers'):
                nm += (f' ({len(res["dense_layers"])} sparse layers stayed dense: '
                       f'input channels not divisible by M)')
            print(f'{head}: ok in {res["wall_s"]:.0f} s, {what}, {nm}{eta}',
                  flush=True)
        else:
            print(f'{head}: FAILED ({res["error"]}); log {osp.join(run_dir, LOG)}'
                  f'{eta}', flush=True)
    metric = pick_metric(results, args.metric)
    rows = summarize(results, metric)
    table = markdown_table(rows, metric)
    base = osp.join(args.work_dir, OUT_NAME)
    command = ' '.join(['python tools/compare_methods.py'] + [
        a if ' ' not in a else repr(a) for a in argv])
    atomic_write(base + '.md', lambda f: f.write(
        (f'Command: `{command}`\n\n' + table).encode()))
    atomic_write(base + '.json', lambda f: f.write(json.dumps(
        dict(command=command, metric=metric, runs=results, summary=rows),
        indent=1).encode()))
    chart = write_chart(base + '.png', rows, metric)
    if not args.report_only:  # the config's visualizer backends get it too
        from lbc_mm.apis import load_config
        from lbc_mm.visualization import add_figure_for_config
        cfg = load_config(config)
        cfg.merge_from_dict(cfg_options or {})
        add_figure_for_config(cfg, args.work_dir, OUT_NAME, chart)
    failed = sum(r['status'] != 'ok' for r in results)
    print(f'{len(results) - failed} of {len(results)} runs ok '
          f'({time.perf_counter() - start:.0f} s); table {base}.md, JSON '
          f'{base}.json, chart {base}.png', flush=True)
    print(table, flush=True)
    return results


if __name__ == '__main__':
    sys.exit(1 if any(r['status'] == 'failed' for r in main()) else 0)
