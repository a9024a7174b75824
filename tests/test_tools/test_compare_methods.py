"""tools/compare_methods.py and lbc_mm.study: config rewriting, a real two-method
study, resume, failing runs, faults (signals, a second study, bad configs and
options)."""
import importlib.util
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
from compare_toy import cm_cfg, write_cm_config  # setup.cfg's pytest pythonpath
from mmengine.config import Config

from lbc_mm import study as study_pkg

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS_TEST_DIR = osp.dirname(osp.abspath(__file__))
TOY_DIR = osp.join(REPO, 'tests', 'test_hooks')


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'lbc_tools_compare_methods', osp.join(REPO, 'tools', 'compare_methods.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cm = _load_tool()


def _env() -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO, TOY_DIR, TOOLS_TEST_DIR] +
        ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('MPLBACKEND', 'Agg')
    env['OMP_NUM_THREADS'] = '1'
    return env


def _study(argv, cwd):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools',
                                                    'compare_methods.py')] + argv,
                          capture_output=True, text=True, env=_env(), cwd=cwd,
                          timeout=600)


# -- config rewriting (no training) -----------------------------------------------
def test_rewrite_classifier_config(tmp_path):
    path = osp.join(REPO, 'configs', 'demo', 'lbc-2of4_resnet50_1xb8_demo-shapes.py')
    cfg = Config.fromfile(path)
    found = study_pkg.rewrite_config(cfg, 'srste', (1, 4), seed=3)
    assert found == ['model.backbone.conv_cfg']
    conv_cfg = cfg.model.backbone.conv_cfg
    assert (conv_cfg.n, conv_cfg.m, conv_cfg.method) == (1, 4, 'srste')
    assert not any(h['type'] == 'LBCHook' for h in cfg.custom_hooks)
    assert cfg.randomness.seed == 3
    cfg = Config.fromfile(path)
    study_pkg.rewrite_config(cfg, 'ste', (2, 8), seed=0)
    assert cfg.model.backbone.conv_cfg.srste_lambda == 0.0
    cfg = Config.fromfile(path)
    study_pkg.rewrite_config(cfg, 'lbc', (2, 8), seed=0)
    assert cfg.model.backbone.conv_cfg.m == 8
    assert sum(h['type'] == 'LBCHook' for h in cfg.custom_hooks) == 1
    cfg = Config.fromfile(path)
    study_pkg.rewrite_config(cfg, 'dense', None, seed=0)
    assert cfg.model.backbone.conv_cfg is None
    assert not any(h['type'] == 'LBCHook' for h in cfg.custom_hooks)


def test_rewrite_detector_config():
    path = osp.join(REPO, 'configs', 'demo',
                    'mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py')
    cfg = Config.fromfile(path)
    assert study_pkg.rewrite_config(cfg, 'asp', (2, 8), seed=1) == [
        'model.backbone.conv_cfg']
    conv_cfg = cfg.model.backbone.conv_cfg
    assert (conv_cfg.n, conv_cfg.m, conv_cfg.method) == (2, 8, 'asp')
    assert cfg.model.neck.get('conv_cfg') is None  # neck stays dense
    assert not any(h['type'] == 'LBCHook' for h in cfg.custom_hooks)
    cfg = Config.fromfile(path)
    study_pkg.rewrite_config(cfg, 'dense', None, seed=1)
    assert cfg.model.backbone.conv_cfg is None
    cfg = Config.fromfile(path)
    study_pkg.rewrite_config(cfg, 'lbc', (1, 4), seed=1)
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'LBCHook']
    assert len(hooks) == 1 and hooks[0]['frozen_layers'] == 'learn'


def test_rewrite_transform_and_layer_configs():
    cfg = Config(dict(model=dict(
        type='NMSparsify', n=2, m=4, method='lbc',
        model=dict(type='Net', fc=dict(type='NMSparseLinear', in_features=8,
                                       out_features=8, n=2, m=4, method='lbc'))),
        custom_hooks=[dict(type='LBCHook')]))
    found = study_pkg.rewrite_config(cfg, 'srste', (1, 4), seed=0)
    assert found == ['model', 'model.model.fc']
    assert (cfg.model.n, cfg.model.m, cfg.model.method) == (1, 4, 'srste')
    assert cfg.model.model.fc.method == 'srste' and cfg.custom_hooks == []
    study_pkg.rewrite_config(cfg, 'dense', None, seed=0)
    assert cfg.model.type == 'Net'
    assert cfg.model.fc == dict(type='Linear', in_features=8, out_features=8)
    with pytest.raises(ValueError, match='no sparse layer config'):
        study_pkg.rewrite_config(Config(dict(model=dict(type='Net'))), 'lbc', (2, 4), 0)


def test_switch_to_lbc_names_the_scores_constructor():
    """An SR-STE config switched to LBC gets the LBCHook and the constructor it
    needs (lbc_mm.config_check refuses the pair otherwise); tools/train.py no longer
    adds it."""
    from lbc_mm.config_check import find_config_error
    cfg = Config(dict(
        model=dict(type='Net', fc=dict(type='NMSparseLinear', in_features=8,
                                       out_features=8, n=2, m=4, method='srste')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1))))
    study_pkg.rewrite_config(cfg, 'lbc', (2, 4), seed=0)
    assert cfg.optim_wrapper.constructor == 'LBCOptimWrapperConstructor'
    assert find_config_error(cfg) is None


def test_grid_and_patterns():
    assert study_pkg.parse_patterns('2:4, 1:4') == [(2, 4), (1, 4)]
    with pytest.raises(ValueError, match="pattern '4:2' is not a valid N:M"):
        study_pkg.parse_patterns('4:2')
    runs = study_pkg.grid(['dense', 'lbc'], [(2, 4), (1, 4)], [0, 1])
    assert [study_pkg.run_name(*r) for r in runs] == [
        'dense_seed0', 'lbc_2of4_seed0', 'lbc_1of4_seed0', 'dense_seed1',
        'lbc_2of4_seed1', 'lbc_1of4_seed1']


def test_arms_and_windows():
    assert study_pkg.parse_arm('lbc') == ('lbc', {})
    assert study_pkg.parse_arm('lbc+noise_margin=2+t_f=0.05') == (
        'lbc', dict(noise_margin=2, t_f=0.05, unit='fraction', t_i=0))
    for bad, match in (('lbc+t_f', 'key=value'), ('srste+t_f=0.1', 'driven by a hook'),
                       ('magic', 'unknown method')):
        with pytest.raises(ValueError, match=match):
            study_pkg.parse_arm(bad)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo',
                                   'lbc-2of4_resnet50_1xb8_demo-shapes.py'))
    study_pkg.rewrite_config(cfg, 'lbc+t_f=0.05+noise_margin=2', (1, 4), seed=0)
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'LBCHook')
    assert (hook['t_f'], hook['t_i'], hook['unit'], hook['noise_margin']) == (
        0.05, 0, 'fraction', 2)
    assert study_pkg.with_windows(
        ['lbc', 'srste', 'lbc+noise_margin=2', 'lbc+t_f=0.3'],
        [0.01, 0.5]) == [
        'lbc+t_f=0.01', 'lbc+t_f=0.5', 'srste', 'lbc+noise_margin=2+t_f=0.01',
        'lbc+noise_margin=2+t_f=0.5', 'lbc+t_f=0.3']
    args = cm.parse_args(['c.py', '--methods', 'lbc,ste', '--windows', '0.1,0.75'])
    assert args.methods == ['lbc+t_f=0.1', 'lbc+t_f=0.75', 'ste']
    for bad in (['--windows', '2'], ['--methods', 'ste+t_f=0.1']):
        with pytest.raises(SystemExit):
            cm.parse_args(['c.py'] + bad)


def test_report_training_cost_columns_and_window_chart(tmp_path):
    def run(method, pattern, seed, top1, relative):
        return dict(status='ok', method=method, pattern=pattern, seed=seed,
                    metrics={'accuracy/top1': top1},
                    nm_exact=None if method == 'dense' else True, wall_s=1.0,
                    peak_mem_mib=10.0, train_cost=dict(flops=relative * 1e12,
                                                       relative=relative))
    results = [run('dense', 'dense', 0, 90.0, 1.0)]
    for seed in (0, 1):
        results += [run('srste', '2:4', seed, 88.0, 0.667),
                    run('lbc+t_f=0.05', '2:4', seed, 87.0 + seed, 0.52),
                    run('lbc+t_f=0.5', '2:4', seed, 85.0, 0.7)]
    rows = study_pkg.summarize(results, 'accuracy/top1')
    by = {r['method']: r for r in rows}
    assert by['lbc+t_f=0.05']['train_relative'] == pytest.approx(0.52)
    assert by['lbc+t_f=0.05']['train_flops'] == pytest.approx(0.52e12)
    table = study_pkg.markdown_table(rows, 'accuracy/top1')
    assert '| lbc+t_f=0.05 | 2:4 | 87.50 ± 0.71 | 2/2 | 520 G (0.520) |' in table
    assert '| dense | dense | 90.00 | n/a | 1 T (1.000) |' in table
    path = str(tmp_path / 'study.png')
    study_pkg.write_chart(path, rows, 'accuracy/top1')
    for name in ('study.png', 'study_windows.png'):
        with open(tmp_path / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # One line for the LBC family through its windows, one point for SR-STE.
    fig = study_pkg.write_window_chart(str(tmp_path / 'w.png'), rows,
                                       'accuracy/top1')
    labels = {bars.get_label(): list(bars.lines[0].get_xdata())
              for bars in fig.axes[0].containers}
    assert labels['lbc'] == [0.52, 0.7] and labels['srste'] == [0.667]
    # Runs without training FLOPs (older studies): no second chart, '-' column.
    for r in results:
        r.pop('train_cost')
    rows = study_pkg.summarize(results, 'accuracy/top1')
    study_pkg.write_chart(str(tmp_path / 'old.png'), rows, 'accuracy/top1')
    assert not osp.exists(tmp_path / 'old_windows.png')
    assert '| - (-) |' in study_pkg.markdown_table(rows, 'accuracy/top1')


# -- real runs ----------------------------------------------------------------------
def test_study_writes_table_json_png_and_resumes(tmp_path):
    config = write_cm_config(str(tmp_path / 'toy.py'), cm_cfg(str(tmp_path / 'x')))
    work = str(tmp_path / 'study')
    argv = [config, '--methods', 'lbc,srste', '--patterns', '2:4', '--seeds', '0',
            '--work-dir', work]
    proc = _study(argv, str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '[1/2] lbc_2of4_seed0: ok' in proc.stdout
    assert '[2/2] srste_2of4_seed0: ok' in proc.stdout
    for ext in ('md', 'json', 'png'):
        assert osp.getsize(osp.join(work, f'compare_methods.{ext}')) > 0
    with open(osp.join(work, 'compare_methods.json')) as f:
        study = json.load(f)
    assert study['metric'] == 'mse'
    by_method = {row['method']: row for row in study['summary']}
    assert set(by_method) == {'lbc', 'srste'}
    for row in by_method.values():
        assert row['ok'] == 1 and row['nm_exact'] == 1 and row['mean'] >= 0
    # LBC carries the hook's settledness diagnostics.
    assert 0 <= by_method['lbc']['agree_mag'] <= 1
    assert by_method['srste']['agree_mag'] is None
    table = open(osp.join(work, 'compare_methods.md')).read()
    assert '| lbc | 2:4 |' in table and '| srste | 2:4 |' in table
    # Training FLOPs (lbc_mm.train_cost): SR-STE's dense weight gradient costs more
    # than LBC's end state; both below dense.
    runs = {r['method']: r['train_cost'] for r in study['runs']}
    assert 0.5 < runs['lbc']['relative'] < 1 and 0.5 < runs['srste']['relative'] < 1
    assert runs['srste']['step_last'] > runs['lbc']['step_last']
    assert runs['lbc']['step_first'] == pytest.approx(runs['lbc']['flops_dense'] / 8)
    assert 'training FLOPs (x dense)' in table
    assert f'({by_method["lbc"]["train_relative"]:.3f})' in table
    with open(osp.join(work, 'compare_methods_windows.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(osp.join(work, 'compare_methods.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # the config's visualizer backends got the chart (LocalVisBackend here)
    assert osp.isfile(osp.join(work, 'vis_data', 'vis_image', 'compare_methods_0.png'))
    # A rerun skips both finished runs (no training, same table).
    proc = _study(argv, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('finished before, skipped') == 2
    assert open(osp.join(work, 'compare_methods.md')).read() == table
    # --report-only with one more seed: nothing trains, the new runs are listed.
    proc = _study(argv[:-3] + ['1,0', '--work-dir', work, '--report-only'],
                  str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(': not run yet') == 2
    assert not osp.exists(osp.join(work, 'lbc_2of4_seed1'))
    assert '1 ok, 1 not run yet' in open(osp.join(work,
                                                  'compare_methods.md')).read()


def test_failing_run_is_reported_not_fatal(tmp_path):
    # LBCHook's t_f is after the end of training: the LBC 2:4 run fails at
    # before_train; no layer of the toy (8 input channels) can hold 1:16, so that
    # run fails before training instead of training dense as "ok"; the dense run
    # (no hook, no sparse layers) trains; the study exits 1.
    cfg = cm_cfg(str(tmp_path / 'x'), iters=4, hook=dict(t_f=10, unit='iter'))
    config = write_cm_config(str(tmp_path / 'toy.py'), cfg)
    work = str(tmp_path / 'study')
    proc = _study([config, '--methods', 'lbc,dense', '--patterns', '2:4,1:16',
                   '--seeds', '0', '--work-dir', work], str(tmp_path))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '[1/3] lbc_2of4_seed0: FAILED' in proc.stdout
    assert 'after the end of training' in proc.stdout
    assert ('[2/3] lbc_1of16_seed0: FAILED (error: no layer can hold 1:16: the input '
            'channels of all 2 sparse layers are not divisible by 16') in proc.stdout
    assert '[3/3] dense_seed0: ok' in proc.stdout
    with open(osp.join(work, 'compare_methods.json')) as f:
        rows = {row['method']: row for row in json.load(f)['summary']}
    assert rows['lbc']['ok'] == 0 and rows['lbc']['failed'][0]['seed'] == 0
    assert rows['dense']['ok'] == 1 and rows['dense']['nm_exact'] is None
    table = open(osp.join(work, 'compare_methods.md')).read()
    assert 'seed 0 failed' in table
    assert not osp.exists(osp.join(work, 'lbc_2of4_seed0', 'result.json'))


# -- faults -------------------------------------------------------------------------
def _argv(config, work):
    return [config, '--methods', 'srste', '--patterns', '2:4', '--seeds', '0',
            '--work-dir', work]


def test_config_without_sparse_layers_is_refused_up_front(tmp_path):
    cfg = cm_cfg(str(tmp_path / 'x'))
    cfg['model'] = dict(type='CMToyNet')  # plain Conv2d / Linear
    cfg['custom_hooks'] = []
    config = write_cm_config(str(tmp_path / 'dense.py'), cfg)
    work = str(tmp_path / 'study')
    with pytest.raises(SystemExit) as info:
        cm.main(_argv(config, work))
    assert str(info.value.code).startswith(
        f'error: {config}: the config has no sparse layer config to switch')
    assert not osp.exists(work)


def test_cfg_options_without_equals_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cm.parse_args(['c.py', '--cfg-options', 'train_cfg.max_iters'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected KEY=VALUE, got 'train_cfg.max_iters'" in err
    assert 'Traceback' not in err


def test_second_study_into_the_same_folder_is_refused(tmp_path):
    config = write_cm_config(str(tmp_path / 'toy.py'), cm_cfg(str(tmp_path / 'x')))
    work = str(tmp_path / 'study')
    fd = study_pkg.lock_study(work)  # a first study is training there
    try:
        with pytest.raises(SystemExit) as info:
            cm.main(_argv(config, work))
        assert info.value.code == (
            f'error: another compare_methods study (pid {os.getpid()}) is training '
            f'in {work}; wait for it to end or choose another --work-dir')
        assert os.listdir(work) == [study_pkg.LOCK]  # nothing trained
    finally:
        os.close(fd)
    os.close(study_pkg.lock_study(work))  # free again once the first one ended


def _children(pid):
    """Pids of the processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def _study_with_a_run(tmp_path, **pipes):
    """Start a study of one never-ending run; wait until that run trains.

    Returns:
        tuple: the study ``Popen``, its work dir, the run's pids (empty when the run
        never started: the caller asserts, then kills what it started).
    """
    config = write_cm_config(str(tmp_path / 'toy.py'),
                             cm_cfg(str(tmp_path / 'x'), iters=10**6))
    work = str(tmp_path / 'study')
    study = subprocess.Popen(
        [sys.executable, osp.join(REPO, 'tools', 'compare_methods.py')]
        + _argv(config, work), env=_env(), cwd=str(tmp_path), **pipes)
    children = []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline:
        time.sleep(0.2)
        children = _children(study.pid)
    if children:
        time.sleep(1.0)  # the run is under way
    return study, work, children


def test_sigterm_stops_the_running_run_too(tmp_path):
    """SIGTERM to the study while a run trains: the run stops too (no orphan that
    trains on), one line, exit 143, and the run is not recorded as finished."""
    study, work, children = _study_with_a_run(
        tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert children, 'the run never started'
        study.send_signal(signal.SIGTERM)
        _out, err = study.communicate(timeout=60)
        assert study.returncode == 143, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            'error: terminated (SIGTERM); srste_2of4_seed0 was stopped too; a rerun '
            'trains it again (finished runs are skipped)')
        assert not [pid for pid in children if osp.exists(f'/proc/{pid}')]
        assert not osp.exists(osp.join(work, 'srste_2of4_seed0', study_pkg.RESULT))
    finally:
        _kill_all(study, children)


def _kill_all(study, children) -> None:
    """Kill the study and its runs (an orphan, the bug, must not outlive a test)."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if study.poll() is None:
        study.kill()
        study.wait()


def _alive(pid) -> bool:
    """Whether ``pid`` runs (a zombie has ended)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_kill_9_of_the_study_stops_the_run_and_keeps_the_lock_until_then(tmp_path):
    """``kill -9`` of the study while a run trains: the run dies with it (it trained
    on before), and the study folder stays locked until the run has ended (the lock
    was free at once, so a rerun trained the same run folder twice) (issue 22
    item 6)."""
    import fcntl
    study, work, children = _study_with_a_run(
        tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert children, 'the run never started'
        study.kill()
        study.wait()
        fd = os.open(osp.join(work, study_pkg.LOCK), os.O_RDWR)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    assert time.monotonic() < deadline, 'the lock is still held'
                    time.sleep(0.05)
                    continue
                # free: the run must have ended before
                assert not [pid for pid in children if _alive(pid)], \
                    'the lock was free while the run still trained'
                break
        finally:
            os.close(fd)
    finally:
        _kill_all(study, children)
