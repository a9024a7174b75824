"""tools/test.py and tools/train.py refuse checkpoints that do not fit (one line,
before testing / training); --cfg-options usage errors; lbc_schedule.png writes."""
import argparse
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
from lbc_toy import (  # noqa: E402
    LBCToyNet,
    build_runner,
    reset_mmengine_globals,
    subprocess_env,
    toy_cfg,
    write_config,
)

from lbc_mm.layers import NMSparseConv  # noqa: E402


def _tool(name, *args, cwd):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', f'{name}.py'),
                           *map(str, args)], cwd=str(cwd), env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


def _error_line(proc, code):
    """The one ``error:`` line on stderr (mmengine's log goes to stdout)."""
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(('error:', 'Checkpoint not found'))]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _save(state_dict, path, **extra):
    torch.save({'meta': {}, 'state_dict': state_dict, **extra}, path)
    return str(path)


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """A toy LBC 2:4 config with a test loop, and checkpoints that fit it or not."""
    folder = tmp_path_factory.mktemp('toy')
    raw = toy_cfg(str(folder / 'work'), hook=dict(t_f=0.5), with_val=True)
    raw['log_level'] = 'INFO'  # the metric line
    cfg = write_config(str(folder / 'cfg.py'), raw)
    torch.manual_seed(0)
    good = LBCToyNet().state_dict()
    # the same net with a 2:8 conv: every key present, scores / alive shaped 2:8
    other = dict(good)
    other.update({f'conv.{k}': v for k, v in NMSparseConv(
        8, 8, 3, padding=1, n=2, m=8).state_dict().items()})
    dense = {k: v for k, v in good.items() if not k.endswith(('.scores', '.alive'))}
    return dict(folder=folder, cfg=cfg,
                good=_save(good, folder / 'good.pth'),
                pattern_2of8=_save(other, folder / 'other_pattern.pth'),
                dense=_save(dense, folder / 'dense.pth'),
                extra=_save(dict(good, **{'roi_head.bbox_head.fc_cls.weight':
                                          torch.zeros(3, 4)}),
                            folder / 'extra.pth'))


# -- tools/test.py -------------------------------------------------------------------
@pytest.mark.parametrize('case,expect', [
    ('pattern_2of8', '2 shape mismatches (conv.alive: checkpoint (72, 28) vs model '
     '(144, 6)'),
    ('dense', '4 missing keys (conv.alive, conv.scores, fc.alive, ... (4 in all))'),
    ('extra', '1 unexpected keys (roi_head.bbox_head.fc_cls.weight)'),
])
def test_test_tool_refuses_a_checkpoint_that_does_not_fit(toy, tmp_path, case,
                                                          expect):
    proc = _tool('test', toy['cfg'], toy[case], '--work-dir', tmp_path / 'w',
                 cwd=tmp_path)
    line = _error_line(proc, 1)
    assert 'does not match the config' in line and expect in line, line
    assert '--allow-partial' in line
    assert 'mse' not in proc.stdout  # nothing was evaluated


def test_test_tool_allow_partial_evaluates_on_purpose(toy, tmp_path):
    proc = _tool('test', toy['cfg'], toy['dense'], '--allow-partial', '--work-dir',
                 tmp_path / 'w', cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '--allow-partial: checkpoint' in proc.stdout + proc.stderr
    assert 'mse:' in proc.stdout + proc.stderr


def test_test_tool_refuses_a_corrupted_checkpoint(toy, tmp_path):
    import zipfile
    with zipfile.ZipFile(toy['good']) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(open(toy['good'], 'rb').read())
    at = info.header_offset  # local header: 30 bytes + name + extra, then the data
    start = at + 30 + int.from_bytes(data[at + 26:at + 28], 'little') + \
        int.from_bytes(data[at + 28:at + 30], 'little')
    data[start + info.file_size // 2] ^= 0x10
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(bytes(data))
    line = _error_line(_tool('test', toy['cfg'], bad, '--work-dir', tmp_path / 'w',
                             cwd=tmp_path), 1)
    assert f'corrupted: entry {info.filename} does not match its CRC' in line


def test_test_tool_refusal_of_a_malicious_checkpoint_names_the_global(toy, tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': torch.load(toy['good'])['state_dict'],
                'meta': {'hook': os.system}}, evil)
    proc = _tool('test', toy['cfg'], evil, '--work-dir', tmp_path / 'w',
                 cwd=tmp_path)
    line = _error_line(proc, 1)
    assert 'GLOBAL posix.system' in line
    assert 'weights_only' not in proc.stdout + proc.stderr


def test_test_tool_still_evaluates_a_fitting_checkpoint(toy, tmp_path):
    proc = _tool('test', toy['cfg'], toy['good'], '--work-dir', tmp_path / 'w',
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'mse:' in proc.stdout + proc.stderr


# -- tools/train.py --resume ---------------------------------------------------------
def test_resume_from_a_missing_file_is_one_line_up_front(toy, tmp_path):
    proc = _tool('train', toy['cfg'], '--resume', tmp_path / 'nope.pth',
                 '--work-dir', tmp_path / 'w', cwd=tmp_path)
    line = _error_line(proc, 2)
    assert 'nope.pth' in line and '--resume' in line
    assert not osp.exists(tmp_path / 'w')  # nothing was built


@pytest.mark.parametrize('case', ['pattern_2of8', 'dense'])
def test_resume_from_a_checkpoint_of_another_pattern_is_refused(toy, tmp_path, case):
    proc = _tool('train', toy['cfg'], '--resume', toy[case], '--work-dir',
                 tmp_path / 'w', cwd=tmp_path)
    line = _error_line(proc, 1)
    assert 'does not match the config' in line
    assert 'resumed' not in proc.stdout.lower()
    assert not [n for n in os.listdir(tmp_path / 'w') if n.endswith('.pth')]


def test_auto_resume_checks_the_latest_checkpoint(toy, tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    ckpt = work / 'iter_4.pth'
    ckpt.write_bytes(open(toy['pattern_2of8'], 'rb').read())
    (work / 'last_checkpoint').write_text(str(ckpt))
    proc = _tool('train', toy['cfg'], '--resume', '--work-dir', work, cwd=tmp_path)
    line = _error_line(proc, 1)
    assert 'iter_4.pth does not match the config' in line


def test_load_from_a_malicious_or_corrupted_checkpoint_is_one_line(toy, tmp_path):
    """``load_from`` (fine-tuning, not resuming) may fit partially, but a file that
    cannot be read safely is refused before training, naming the global."""
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': torch.load(toy['dense'])['state_dict'],
                'meta': {'hook': os.system}}, evil)
    proc = _tool('train', toy['cfg'], '--work-dir', tmp_path / 'w', '--cfg-options',
                 f'load_from={evil}', cwd=tmp_path)
    line = _error_line(proc, 1)
    assert 'GLOBAL posix.system' in line
    assert 'weights_only' not in proc.stdout + proc.stderr


# -- --cfg-options ---------------------------------------------------------------------
@pytest.mark.parametrize('value', ['train_cfg.max_iters', 'a=1 b'])
def test_cfg_options_without_equals_is_a_usage_error(capsys, value):
    from lbc_mm.cli import add_runner_args
    parser = argparse.ArgumentParser(prog='train.py')
    parser.add_argument('config')
    add_runner_args(parser, 'train_dataloader')
    with pytest.raises(SystemExit) as info:
        parser.parse_args(['c.py', '--cfg-options', *value.split()])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage: train.py')
    assert "error: argument --cfg-options: expected KEY=VALUE, got" in err
    assert 'Traceback' not in err
    args = parser.parse_args(['c.py', '--cfg-options', 'a=1', 'b.c=[1,2]'])
    assert args.cfg_options == {'a': 1, 'b.c': [1, 2]}


def test_tools_report_cfg_options_without_equals_as_usage(toy, tmp_path):
    proc = _tool('test', toy['cfg'], toy['good'], '--cfg-options', 'work_dir',
                 cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert 'usage: test.py' in proc.stderr and 'expected KEY=VALUE' in proc.stderr


# -- lbc_schedule.png ------------------------------------------------------------------
def test_schedule_plot_follows_the_umask_and_a_failed_write_is_one_warning(
        tmp_path):
    old = os.umask(0o022)
    try:
        runner = build_runner(toy_cfg(str(tmp_path / 'ok'), hook=dict(t_f=0.5)))
        runner.train()
        reset_mmengine_globals()
        png = tmp_path / 'ok' / 'lbc_schedule.png'
        assert os.stat(png).st_mode & 0o777 == 0o644
        assert not [n for n in os.listdir(tmp_path / 'ok') if n.endswith('.tmp')]
        blocked = tmp_path / 'blocked'
        (blocked / 'lbc_schedule.png').mkdir(parents=True)  # cannot be written
        runner = build_runner(toy_cfg(str(blocked), hook=dict(t_f=0.5)))
        runner.train()  # the run still ends normally
    finally:
        os.umask(old)
        reset_mmengine_globals()
    import glob
    log = open(glob.glob(str(blocked / '*' / '*.log'))[0]).read()
    warned = [ln for ln in log.splitlines() if 'could not write' in ln]
    assert len(warned) == 1 and 'lbc_schedule.png' in warned[0]
    assert 'Is a directory' in warned[0]
    assert osp.isfile(blocked / 'iter_12.pth')


# -- every bad input is one line; nothing wrong exits 0 (issue 22 item 7) ----------
# Root writes into read-only folders: a path under a regular file fails for anyone.
def test_train_with_a_missing_config_is_one_line(tmp_path):
    line = _error_line(_tool('train', tmp_path / 'nope.py', cwd=tmp_path), 2)
    assert line == f'error: config file not found: {tmp_path / "nope.py"}'


def test_test_out_that_cannot_be_written_is_one_line_before_evaluating(toy,
                                                                        tmp_path):
    (tmp_path / 'file').write_text('')
    out = tmp_path / 'file' / 'preds.pkl'
    proc = _tool('test', toy['cfg'], toy['good'], '--out', out, '--work-dir',
                 tmp_path / 'w', cwd=tmp_path)
    line = _error_line(proc, 1)
    assert line.startswith(f'error: cannot write {out} (--out): ')
    assert line.endswith(f'{tmp_path / "file"} is not a directory')
    assert 'loss' not in proc.stdout and 'Epoch(test)' not in proc.stdout


def test_make_demo_data_into_a_folder_it_cannot_write_is_one_line(tmp_path):
    (tmp_path / 'file').write_text('')
    proc = _tool('make_demo_data', tmp_path / 'file' / 'demo', cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f'make_demo_data: cannot write {tmp_path / "file"}: File exists')


def test_benchmark_combine_of_unreadable_files_fails(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    out = tmp_path / 'combined.md'
    proc = _tool('benchmark', '--combine', bad, tmp_path / 'missing.json',
                 '--out-md', out, cwd=tmp_path)
    line = _error_line(proc, 1)
    assert line.startswith('error: no readable benchmark JSON: ')
    assert f'{bad}: unreadable' in line and 'missing.json: unreadable' in line
    assert not out.exists()


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(toy, tmp_path):
    work = tmp_path / 'w'
    work.mkdir()  # the run stopped before its first checkpoint
    proc = _tool('train', toy['cfg'], '--resume', '--work-dir', work, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (f'--resume: no checkpoint in {work} yet (no last_checkpoint: the run '
            'stopped before its first checkpoint); training starts from scratch'
            ) in proc.stdout + proc.stderr
