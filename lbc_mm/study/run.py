"""The method study's driver: each run trains in a subprocess of its own
(``python -m lbc_mm.study RUN_DIR``), the study folder is locked (by the study and its
running run), a stop stops the running run too (``kill -9`` of the study as well),
and the table, JSON and chart are written at the end.
"""
import functools
import json
import os
import os.path as osp
import signal
import statistics
import subprocess
import sys
import time
from typing import Callable, List, Optional

from ..io import atomic_write
from .grid import grid, parse_arm, pattern_name, rewrite_config, run_name
from .report import OUT_NAME, markdown_table, pick_metric, summarize, write_chart

RESULT = 'result.json'
SPEC = 'run.json'
LOG = 'run.log'
#: Held (flock) by the study training in a folder; holds its pid.
LOCK = '.compare_methods.lock'
#: Seconds a run gets to stop after SIGTERM before it is killed.
STOP_GRACE_S = 10
#: ``prctl`` option: the signal a process gets when its parent ends (Linux).
PR_SET_PDEATHSIG = 1


def run_one(run_dir: str) -> None:
    """Train the run described by ``<run_dir>/run.json``; write ``result.json``."""
    import resource

    import torch
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper

    from ..hooks.lbc_checks import dense_fallbacks
    from ..hooks.lbc_hook import LBCHook
    from ..sparse_model import nm_report
    from ..train_cost import run_cost
    from ..training import prepare_training, run_training

    with open(osp.join(run_dir, SPEC)) as f:
        spec = json.load(f)
    cfg = _load(spec['config'], spec.get('cfg_options'))
    pattern = tuple(spec['pattern']) if spec['pattern'] else None
    rewrite_config(cfg, spec['method'], pattern, spec['seed'])
    cfg.launcher, cfg.work_dir = 'none', run_dir
    cuda = torch.cuda.is_available()  # a fresh process: peak stats start at 0

    class _Metrics(Hook):
        metrics: Optional[dict] = None

        def after_val_epoch(self, runner, metrics=None) -> None:
            if metrics:
                self.metrics = dict(metrics)

    recorder = _Metrics()
    runner = prepare_training(cfg)  # tools/train.py's sequence
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
    run_training(runner)
    wall = time.perf_counter() - start
    metrics = recorder.metrics
    if metrics is None and cfg.get('val_cfg', None) is not None:
        metrics = runner.val()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    nm_rows = nm_report(model)  # every sparse layer at most n of every m weights
    diag = next((dict(h.diagnostics) for h in runner.hooks if isinstance(h, LBCHook)),
                {})
    result = dict(
        status='ok', method=spec['method'], pattern=pattern_name(pattern),
        seed=spec['seed'], metrics={k: float(v) for k, v in (metrics or {}).items()
                                    if isinstance(v, (int, float))},
        nm_exact=not any(r['bad_groups'] for r in nm_rows) if nm_rows else None,
        dense_layers=dense, wall_s=wall,
        peak_mem_mib=peak, peak_mem_kind='cuda allocated' if cuda else 'RSS',
        diagnostics=diag, iters=runner.iter,
        train_cost=run_cost(runner, model, parse_arm(spec['method'])[0]))
    _write_json(osp.join(run_dir, RESULT), result)


def _load(config: str, cfg_options: Optional[dict]):
    """The config with ``--cfg-options`` merged."""
    from ..apis import load_config
    cfg = load_config(config)
    cfg.merge_from_dict(cfg_options or {})
    return cfg


def _write_json(path: str, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _last_error(log_path: str) -> str:
    """The last line of a failed run's log that names an error."""
    with open(log_path, errors='replace') as f:
        lines = [line.strip() for line in f if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ('Error', 'error', 'SystemExit', 'not found')):
            return line[:300]
    return lines[-1][:300] if lines else 'empty log'


def _die_with_parent(parent: int) -> None:
    """The run's ``preexec_fn``: it gets SIGTERM when the study process ``parent``
    ends, however it ends (``kill -9`` too; Linux ``PR_SET_PDEATHSIG``), and exits
    at once when the study ended before it got there."""
    import ctypes
    prctl = getattr(ctypes.CDLL(None), 'prctl', None)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def launch(run_dir: str, spec: dict, lock: Optional[int] = None) -> dict:
    """Run one spec in a subprocess (log in ``run.log``); its result dict. The run
    dies with the study process and inherits its ``lock`` (:func:`lock_study`)."""
    os.makedirs(run_dir, exist_ok=True)
    _write_json(osp.join(run_dir, SPEC), spec)
    start = time.perf_counter()
    with open(osp.join(run_dir, LOG), 'wb') as log:
        # A session of its own: Ctrl-C reaches only this process, which stops the
        # run (and its data loader workers) itself.
        proc = subprocess.Popen(
            [sys.executable, '-m', 'lbc_mm.study', run_dir],
            stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, pass_fds=() if lock is None else (lock, ),
            preexec_fn=functools.partial(_die_with_parent, os.getpid()))
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
                pattern=pattern_name(spec['pattern']), seed=spec['seed'],
                returncode=proc.returncode,
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
    """Lock the study folder (``flock``, released by the kernel however this
    process and the runs it passes the descriptor to end); the descriptor.
    Another study training in ``work_dir``: one-line ``SystemExit``."""
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


def run_study(args, command: str,
              on_run: Callable[[Optional[str]], None] = lambda name: None
              ) -> List[dict]:
    """Run (or skip) every run of the grid, then write the table, JSON and chart;
    every run's result (``status`` ok / failed / not run).

    Args:
        args (Namespace): ``tools/compare_methods.py``'s arguments.
        command (str): The command line, recorded in the table and the JSON.
        on_run (callable): Called with a run's name when it starts training, with
            None when it ended (a stop in between names the run).
    """
    config = osp.abspath(args.config)
    runs = grid(args.methods, args.patterns, args.seeds)
    lock = None
    if not args.report_only:
        try:  # a config the runs could not switch: one line, before any run
            rewrite_config(_load(config, args.cfg_options), *runs[0])
        except (ValueError, FileNotFoundError) as exc:
            raise SystemExit(f'error: {config}: {exc}') from None
        lock = lock_study(args.work_dir)  # held until this process and its run exit
    results: List[dict] = []
    start = time.perf_counter()
    done_times: List[float] = []
    for i, (method, pattern, seed) in enumerate(runs, 1):
        name = run_name(method, pattern, seed)
        run_dir = osp.join(args.work_dir, name)
        head = f'[{i}/{len(runs)}] {name}'
        if osp.exists(osp.join(run_dir, RESULT)):
            with open(osp.join(run_dir, RESULT)) as f:
                results.append(json.load(f))
            print(f'{head}: finished before, skipped', flush=True)
            continue
        if args.report_only:
            results.append(dict(status='not run', method=method,
                                pattern=pattern_name(pattern), seed=seed))
            print(f'{head}: not run yet', flush=True)
            continue
        spec = dict(config=config, cfg_options=args.cfg_options, method=method,
                    pattern=list(pattern) if pattern else None, seed=seed)
        on_run(name)
        res = launch(run_dir, spec, lock)
        on_run(None)
        results.append(res)
        done_times.append(res['wall_s'])
        left = len(runs) - i
        eta = (f'; about {statistics.fmean(done_times) * left / 60:.0f} min left'
               if left else '')
        if res['status'] == 'ok':
            metric = pick_metric([res], args.metric)
            value = res['metrics'].get(metric)
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
    atomic_write(base + '.md', lambda f: f.write(
        (f'Command: `{command}`\n\n' + table).encode()))
    _write_json(base + '.json', dict(command=command, metric=metric, runs=results,
                                     summary=rows))
    chart = write_chart(base + '.png', rows, metric)
    if not args.report_only:  # the config's visualizer backends get it too
        from ..visualization import add_figure_for_config
        add_figure_for_config(_load(config, args.cfg_options), args.work_dir,
                              OUT_NAME, chart)
    failed = sum(r['status'] != 'ok' for r in results)
    print(f'{len(results) - failed} of {len(results)} runs ok '
          f'({time.perf_counter() - start:.0f} s); table {base}.md, JSON '
          f'{base}.json, chart {base}.png', flush=True)
    print(table, flush=True)
    return results
