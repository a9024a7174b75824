"""tools/train.py: argument merging, the missing-dataset line, a real CPU run."""
import argparse
import errno
import glob
import importlib.util
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
from lbc_toy import (  # tests/test_hooks: setup.cfg's pytest pythonpath
    reset_mmengine_globals,
    subprocess_env,
    toy_cfg,
    write_config,
)
from mmengine.config import Config

from lbc_mm.cli import find_missing_data, merge_train_args, parse_train_args

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'lbc_tools_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = _load_tool('train')


@pytest.fixture(autouse=True)
def _restore_local_rank(monkeypatch):
    """parse_args() sets LOCAL_RANK; keep it out of the other tests."""
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.delenv('LOCAL_RANK')




# -- merge_args ------------------------------------------------------------------
def _merged(tmp_path, argv, cfg=None):
    cfg = Config(cfg or toy_cfg(str(tmp_path), hook=dict(t_f=0.5)))
    args = parse_train_args(['config.py'] + argv)
    return merge_train_args(cfg, args)


def test_merge_args_amp_resume_work_dir(tmp_path):
    cfg = _merged(tmp_path, ['--amp', '--resume', '--work-dir', 'wd',
                             '--cfg-options', 'train_cfg.max_iters=7'])
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.work_dir == 'wd' and cfg.train_cfg.max_iters == 7
    cfg = _merged(tmp_path, ['--resume', 'some/iter_4.pth'])
    assert cfg.resume is True and cfg.load_from == 'some/iter_4.pth'
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'


def test_default_work_dir(tmp_path):
    raw = toy_cfg(str(tmp_path), hook=dict())
    raw.pop('work_dir')
    cfg = merge_train_args(Config(raw), parse_train_args(['configs/x/my_cfg.py']))
    assert cfg.work_dir == osp.join('./work_dirs', 'my_cfg')


def test_merge_args_leaves_the_optimizer_constructor_to_the_config(tmp_path):
    """No silent rewrite: an LBC config without the scores' constructor is refused
    by lbc_mm.config_check (tests/test_config_check.py), not completed here."""
    raw = toy_cfg(str(tmp_path), hook=dict(t_f=0.5))
    raw['optim_wrapper'].pop('constructor')
    assert 'constructor' not in _merged(tmp_path, [], raw).optim_wrapper
    raw = toy_cfg(str(tmp_path), hook=None)  # no LBCHook: untouched
    raw['optim_wrapper'].pop('constructor')
    assert 'constructor' not in _merged(tmp_path, [], raw).optim_wrapper


# -- dataset check -----------------------------------------------------------------
def _coco_loader(root: str, ann: str = 'annotations/train.json') -> dict:
    return dict(dataset=dict(type='CocoDataset', data_root=root, ann_file=ann,
                             data_prefix=dict(img='train2017/')))


def test_find_missing_data_paths(tmp_path):
    root = tmp_path / 'coco'
    cfg = Config(dict(train_dataloader=_coco_loader(str(root) + '/')))
    message = find_missing_data(cfg, ('train_dataloader', ))
    assert f'{root}/ does not exist' in message
    assert '--cfg-options train_dataloader.dataset.data_root=' in message
    (root / 'annotations').mkdir(parents=True)
    message = find_missing_data(cfg, ('train_dataloader', ))
    assert str(root / 'annotations' / 'train.json') in message
    (root / 'annotations' / 'train.json').write_text('{}')
    message = find_missing_data(cfg, ('train_dataloader', ))
    assert str(root / 'train2017') in message
    (root / 'train2017').mkdir()
    assert find_missing_data(cfg, ('train_dataloader', )) is None


def test_find_missing_data_nested_and_skipped(tmp_path):
    inner = _coco_loader(str(tmp_path / 'nope'))['dataset']
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='ConcatDataset',
                         datasets=[dict(type='CustomDataset', data_root=str(tmp_path),
                                        data_prefix=''), inner]))),
        val_dataloader=dict(dataset=dict(type='CIFAR10', data_root='data/cifar')),
        test_dataloader=dict(dataset=dict(type='X', data_root='s3://bucket/coco'))))
    message = find_missing_data(cfg, ('train_dataloader', ))
    assert ('--cfg-options train_dataloader.dataset.dataset.datasets.1.data_root='
            in message)
    # self-downloading and remote datasets are not checked
    assert find_missing_data(cfg, ('val_dataloader', 'test_dataloader')) is None


def test_missing_dataset_is_one_line_not_a_traceback(tmp_path):
    """mmdet-style config whose COCO data is absent: exit != 0 with one line."""
    cfg = toy_cfg(str(tmp_path / 'work'), hook=dict(t_f=0.5))
    cfg['train_dataloader'] = _coco_loader('data/coco/',
                                           'annotations/instances_train2017.json')
    cfg['default_scope'] = 'mmdet'
    path = write_config(str(tmp_path / 'cfg.py'), cfg)
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), path],
        cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if 'Dataset not found' in line]
    assert len(lines) == 1, proc.stderr
    assert 'data/coco/ does not exist' in lines[0]
    assert '--cfg-options train_dataloader.dataset.data_root=' in lines[0]
    assert not osp.exists(tmp_path / 'work')  # nothing was built


def test_train_then_test_tool_on_cpu(tmp_path):
    """A real run: LBC removal to 2:4, plot, checkpoint, the config's scores
    constructor with its default settings; then tools/test.py evaluates the checkpoint
    and dumps the predictions."""
    cfg = toy_cfg(str(tmp_path / 'ignored'), hook=dict(t_f=0.5), with_val=True)
    cfg['optim_wrapper'].pop('paramwise_cfg')
    cfg['log_level'] = 'INFO'
    path = write_config(str(tmp_path / 'cfg.py'), cfg)
    work = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), path,
         '--work-dir', str(work)],
        cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert osp.isfile(work / 'iter_12.pth')
    assert osp.isfile(work / 'lbc_schedule.png')
    log = open(sorted(glob.glob(str(work / '*' / '*.log')))[0]).read()
    assert 'lbc_alive: 1.0000' in log and 'lbc_sparsity: 0.5000' in log
    assert 'every LBC layer is N:M after iteration 6' in log

    test_tool = [sys.executable, osp.join(REPO, 'tools', 'test.py'), path]
    proc = subprocess.run(
        test_tool + [str(work / 'iter_12.pth'), '--work-dir', str(tmp_path / 't'),
                     '--out', str(tmp_path / 'preds.pkl')],
        cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'mse:' in proc.stdout + proc.stderr
    assert osp.getsize(tmp_path / 'preds.pkl') > 0
    proc = subprocess.run(
        test_tool + [str(work / 'missing.pth')], cwd=str(tmp_path),
        env=subprocess_env(),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert 'Checkpoint not found' in proc.stderr


def test_amp_without_gpu_is_one_line(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('CPU-only behaviour')
    path = write_config(str(tmp_path / 'cfg.py'),
                        toy_cfg(str(tmp_path / 'w'), hook=dict(t_f=0.5)))
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), path, '--amp'],
        cwd=str(tmp_path), env=subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert '--amp needs a CUDA GPU' in proc.stderr


# -- errors that stop training: one line, exit 1 ------------------------------------
def _main_error(argv, capsys):
    """Run tools/train.py's main() here; its exit code and its ``error:`` lines."""
    try:
        with pytest.raises(SystemExit) as info:
            train.main(argv)
    finally:
        reset_mmengine_globals()
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err[-3000:]
    return info.value.code, [ln for ln in err.splitlines() if ln.startswith('error:')]


def test_t_f_after_the_end_of_training_is_one_line(tmp_path, capsys):
    path = write_config(str(tmp_path / 'cfg.py'), toy_cfg(
        str(tmp_path / 'w'), hook=dict(t_f=20, unit='iter')))
    code, errors = _main_error([path], capsys)
    assert code == 1
    assert errors == ['error: LBCHook: t_f=20 (iter) = 20 iterations is after the '
                      'end of training (12 iterations): the model would not end N:M; '
                      'set it inside training, e.g. --cfg-options '
                      'custom_hooks.0.t_f=6']


def test_full_disk_during_training_is_one_line(tmp_path, capsys, monkeypatch):
    """The checkpoint of iteration 8 hits a full disk (a write inside the atomic
    writer fails with ENOSPC): one line naming the file and the checkpoint that
    --resume continues from; no temp file stays."""
    from lbc_mm.hooks import checkpoint
    real = checkpoint.atomic_write

    def full_disk(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def atomic_write(path, write):
        return real(path, full_disk if path.endswith('iter_8.pth') else write)

    monkeypatch.setattr(checkpoint, 'atomic_write', atomic_write)
    work = tmp_path / 'w'
    cfg = toy_cfg(str(work), hook=dict(t_f=0.5), checkpoint_interval=4)
    cfg['default_hooks']['checkpoint']['type'] = 'AtomicCheckpointHook'
    code, errors = _main_error([write_config(str(tmp_path / 'cfg.py'), cfg)], capsys)
    assert code == 1
    assert errors == [f'error: cannot write {work}/iter_8.pth: No space left on '
                      f'device; training stopped, --resume continues from '
                      f'{work}/iter_4.pth']
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == [
        'iter_4.pth']
    assert not [p for p in os.listdir(work) if p.endswith('.tmp')]


def test_sigterm_during_training_is_one_line_and_leaves_no_temp_file(
        tmp_path, capsys, monkeypatch):
    """SIGTERM while the checkpoint of iteration 8 is written (what tools/train.py
    runs under ``lbc_mm.tool_exit.run_tool``): exit 143, one line, the temp file
    removed, iter_4.pth left for --resume."""
    from lbc_mm.hooks import checkpoint
    from lbc_mm.tool_exit import run_tool
    real = checkpoint.atomic_write

    def atomic_write(path, write):
        def killed(f):
            f.write(b'partial')
            os.kill(os.getpid(), signal.SIGTERM)
            write(f)
        return real(path, killed if path.endswith('iter_8.pth') else write)

    monkeypatch.setattr(checkpoint, 'atomic_write', atomic_write)
    work = tmp_path / 'w'
    cfg = toy_cfg(str(work), hook=dict(t_f=0.5), checkpoint_interval=4)
    cfg['default_hooks']['checkpoint']['type'] = 'AtomicCheckpointHook'
    path = write_config(str(tmp_path / 'cfg.py'), cfg)
    try:
        code = run_tool(lambda: train.main([path]) or 0)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        reset_mmengine_globals()
    err = capsys.readouterr().err
    assert code == 143
    assert [ln for ln in err.splitlines() if ln.startswith('error:')] == [
        'error: terminated (SIGTERM)']
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == [
        'iter_4.pth']
    assert not [p for p in os.listdir(work) if p.endswith('.tmp')]


def test_parse_args_sets_local_rank():
    args = parse_train_args(['c.py', '--local-rank', '1'])
    assert isinstance(args, argparse.Namespace)
    assert os.environ['LOCAL_RANK'] == '1'
