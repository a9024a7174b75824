"""tools/convert.py: the table on success, one-line errors with exit code 1."""
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'convert.py')

SPARSE = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  base_channels=16, conv_cfg=dict(type='NMSparseConv', n=2, m=4,
                                                  method='srste')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128))
"""


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    import lbc_mm  # noqa: F401
    from lbc_mm.apis import build_model, load_config
    folder = tmp_path_factory.mktemp('cli')
    cfg = folder / 'srste.py'
    cfg.write_text(SPARSE)
    model, _ = build_model(load_config(str(cfg)))
    ckpt = folder / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, ckpt)
    return folder, str(cfg), str(ckpt)


def test_converts_and_prints_the_table(setup):
    folder, cfg, ckpt = setup
    out = folder / 'out' / 'model.pth'
    proc = _run(cfg, ckpt, str(out), '--pattern', '2:4')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '| layer | pattern | shape | sparsity | dense bytes | compressed bytes |' \
        in proc.stdout
    assert '| **whole model** |' in proc.stdout
    # the stock config next to the stock checkpoint: the pair needs no lbc_mm
    assert sorted(os.listdir(folder / 'out')) == ['model.nm.pth', 'model.pth',
                                                  'model.py']
    assert f'and {out.with_suffix(".py")} (the stock config' in proc.stdout


@pytest.mark.parametrize('case,expect', [
    ('missing', 'error: checkpoint not found'),
    ('pattern', "error: pattern '4:4' is not a valid N:M pattern"),
    ('mismatch', 'does not match the config'),
])
def test_errors_are_one_line(setup, tmp_path, case, expect):
    folder, cfg, ckpt = setup
    args = {'missing': [cfg, str(tmp_path / 'nope.pth'), str(tmp_path / 'o.pth')],
            'pattern': [cfg, ckpt, str(tmp_path / 'o.pth'), '--pattern', '4:4'],
            'mismatch': [cfg.replace('srste.py', 'other.py'), ckpt,
                         str(tmp_path / 'o.pth')]}[case]
    if case == 'mismatch':
        with open(args[0], 'w') as f:
            f.write(SPARSE.replace('num_classes=10', 'num_classes=7'))
    proc = _run(*args)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and expect in err[0], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path) in ([], ['other.py'])


# -- reliability: overwrites, write failures, signals, damaged checkpoints ---------
def _one_error_line(proc, code=1):
    assert proc.returncode == code, proc.stdout[-1500:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), proc.stderr[-2000:]
    return err[0]


def _digest(path):
    import hashlib
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize('case', ['out_is_ckpt', 'out_links_to_ckpt', 'out_is_config',
                                  'compressed_is_out', 'compressed_is_ckpt',
                                  'json_is_out'])
def test_refuses_to_overwrite_its_input_or_its_other_output(setup, tmp_path, case):
    folder, cfg, ckpt = setup
    work = tmp_path / 'w'
    work.mkdir()
    link = work / 'link.pth'
    link.symlink_to(ckpt)
    out = str(work / 'model.pth')
    args = {'out_is_ckpt': [cfg, ckpt, ckpt],
            'out_links_to_ckpt': [cfg, ckpt, str(link)],
            'out_is_config': [cfg, ckpt, cfg],
            'compressed_is_out': [cfg, ckpt, out, '--compressed', out],
            'compressed_is_ckpt': [cfg, ckpt, out, '--compressed',
                                   os.path.join(folder, '.', 'epoch_1.pth')],
            'json_is_out': [cfg, ckpt, out, '--json', out]}[case]
    before = _digest(ckpt), _digest(cfg)
    line = _one_error_line(_run(*args))
    assert 'is the same file as' in line and 'refusing to overwrite' in line
    assert (_digest(ckpt), _digest(cfg)) == before
    assert os.listdir(work) == ['link.pth']


def test_out_is_a_directory_is_one_line(setup, tmp_path):
    _folder, cfg, ckpt = setup
    (tmp_path / 'model.pth').mkdir()
    line = _one_error_line(_run(cfg, ckpt, str(tmp_path / 'model.pth')))
    assert 'model.pth' in line and 'directory' in line
    assert os.listdir(tmp_path) == ['model.pth']


def test_output_paths_are_checked_before_loading(setup, tmp_path):
    """An OUT under a file is refused before anything is loaded: with a checkpoint
    that does not fit its config, the error is still the OUT's."""
    _folder, _cfg, ckpt = setup
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    other = tmp_path / 'other.py'
    other.write_text(SPARSE.replace('num_classes=10', 'num_classes=7'))
    line = _one_error_line(_run(str(other), ckpt, str(blocker / 'model.pth')))
    assert line == (f'error: cannot write {blocker}/model.pth: {blocker} is not a '
                    f'directory; no output file was written')


def _limit_file_size():
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_full_disk_is_one_line_and_leaves_no_file(setup, tmp_path):
    """Writes past 1 MiB fail for real (file size limit: EFBIG, like ENOSPC): one
    line, exit 1, and neither file (nor a temp file) is left."""
    _folder, cfg, ckpt = setup
    proc = subprocess.run([sys.executable, SCRIPT, cfg, ckpt,
                           str(tmp_path / 'model.pth')], cwd=REPO, text=True,
                          capture_output=True, timeout=180,
                          preexec_fn=_limit_file_size)
    line = _one_error_line(proc)
    assert 'cannot write' in line and 'File too large' in line
    assert 'no output file was written' in line
    assert os.listdir(tmp_path) == []


def test_no_space_left_on_a_real_tiny_filesystem(setup, tmp_path):
    """ENOSPC from a 1 MiB tmpfs (needs root to mount; skipped otherwise)."""
    _folder, cfg, ckpt = setup
    mnt = tmp_path / 'tiny'
    mnt.mkdir()
    mount = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs',
                            str(mnt)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip('cannot mount a tmpfs here (needs root)')
    try:
        line = _one_error_line(_run(cfg, ckpt, str(mnt / 'model.pth')))
        assert 'No space left on device' in line
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(['umount', str(mnt)], check=True)


# Runs tools/convert.py and sends it a real signal while it fsyncs the compressed
# file, i.e. after the stock file is completely written.
_SIGNAL_MID_WRITE = r'''
import os, runpy, signal, sys
sig = getattr(signal, sys.argv[1])
# A shell starts background jobs with SIGINT ignored; a user's Ctrl-C is the default.
signal.signal(signal.SIGINT, signal.default_int_handler)
real_fsync = os.fsync

def fsync(fd):
    if '.nm.pth.' in os.readlink(f'/proc/self/fd/{fd}'):
        os.kill(os.getpid(), sig)
    return real_fsync(fd)

os.fsync = fsync
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.parametrize('sig,code,word', [('SIGINT', 130, 'interrupted'),
                                           ('SIGTERM', 143, 'terminated')])
def test_signal_while_writing_the_compressed_file_leaves_neither(
        setup, tmp_path, sig, code, word):
    _folder, cfg, ckpt = setup
    proc = subprocess.run(
        [sys.executable, '-c', _SIGNAL_MID_WRITE, sig, SCRIPT, cfg, ckpt,
         str(tmp_path / 'model.pth')], cwd=REPO, capture_output=True, text=True,
        timeout=180)
    line = _one_error_line(proc, code)
    assert word in line and 'no output file was written' in line
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_exported_files_follow_the_umask(setup, tmp_path):
    _folder, cfg, ckpt = setup
    proc = subprocess.run([sys.executable, SCRIPT, cfg, ckpt,
                           str(tmp_path / 'model.pth'), '--json',
                           str(tmp_path / 'table.json')], cwd=REPO, text=True,
                          capture_output=True, timeout=180,
                          preexec_fn=lambda: os.umask(0o022))
    assert proc.returncode == 0, proc.stderr[-2000:]
    modes = {name: os.stat(tmp_path / name).st_mode & 0o777
             for name in os.listdir(tmp_path)}
    assert modes == {'model.pth': 0o644, 'model.nm.pth': 0o644, 'model.py': 0o644,
                     'table.json': 0o644}


def _largest_entry(path):
    import zipfile
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, 'rb') as f:  # local header: 30 bytes + name + extra
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), 'little') for _ in range(2))
    return info.filename, info.header_offset + 30 + name_len + extra_len, \
        info.file_size


def damaged_copy(src, dst, how):
    """A copy of checkpoint ``src`` with one data byte flipped or cut in half."""
    data = bytearray(open(src, 'rb').read())
    entry = None
    if how == 'flipped':
        entry, start, size = _largest_entry(src)
        data[start + size // 2] ^= 0x40
    else:
        data = data[:len(data) // 2]
    with open(dst, 'wb') as f:
        f.write(bytes(data))
    return entry


@pytest.mark.parametrize('how', ['flipped', 'truncated'])
def test_corrupted_checkpoint_is_refused_naming_the_entry(setup, tmp_path, how):
    _folder, cfg, ckpt = setup
    bad = str(tmp_path / 'bad.pth')
    entry = damaged_copy(ckpt, bad, how)
    line = _one_error_line(_run(cfg, bad, str(tmp_path / 'o.pth')))
    assert 'corrupted' in line
    if entry is not None:
        assert f'entry {entry} does not match its CRC' in line
    assert sorted(os.listdir(tmp_path)) == ['bad.pth']


def test_malicious_checkpoint_refusal_names_the_global(setup, tmp_path):
    _folder, cfg, ckpt = setup
    evil = tmp_path / 'evil.pth'
    sd = torch.load(ckpt, weights_only=True)['state_dict']
    torch.save({'state_dict': sd, 'meta': {'hook': os.system}}, evil)
    line = _one_error_line(_run(cfg, str(evil), str(tmp_path / 'o.pth')))
    assert 'GLOBAL posix.system' in line and 'refused' in line
    assert 'weights_only=False' not in line and 'weights_only' not in line
    assert sorted(os.listdir(tmp_path)) == ['evil.pth']


# -- kill -9 mid-write: the next run sweeps the hidden temp file (issue 22 item 6) --
_SLOW_WRITE = '''
import sys, time
from lbc_mm.io import atomic_write

def write(f):
    f.write(b'x' * 2**20)
    f.flush()
    print('writing', flush=True)
    time.sleep(600)

atomic_write(sys.argv[1], write)
'''


def _writer(path):
    """A process writing ``path`` the way the tools do, stopped mid-write."""
    proc = subprocess.Popen([sys.executable, '-c', _SLOW_WRITE, str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'writing'
    return proc


def test_next_run_sweeps_temp_files_of_a_killed_writer(setup, tmp_path):
    folder, cfg, ckpt = setup
    out = tmp_path / 'model.pth'
    killed = _writer(out)
    killed.kill()  # kill -9 mid-write
    killed.wait()
    left = [n for n in os.listdir(tmp_path) if n.startswith('.model.pth.')]
    assert len(left) == 1 and os.path.getsize(tmp_path / left[0]) == 2**20
    running = _writer(tmp_path / 'other.pth')  # a write still under way
    try:
        proc = _run(cfg, ckpt, str(out), '--pattern', '2:4')
        assert proc.returncode == 0, proc.stderr[-2000:]
        hidden = [n for n in os.listdir(tmp_path) if n.startswith('.')]
        assert len(hidden) == 1 and hidden[0].startswith('.other.pth.'), hidden
    finally:
        running.kill()
        running.wait()


# Ctrl-C while the folder is fsync'ed, i.e. after every file was renamed into place.
_SIGNAL_AT_FOLDER_SYNC = _SIGNAL_MID_WRITE.replace(
    "'.nm.pth.' in os.readlink(f'/proc/self/fd/{fd}')",
    "os.path.isdir(os.readlink(f'/proc/self/fd/{fd}'))")


def test_ctrl_c_during_the_final_folder_sync_names_the_complete_files(setup,
                                                                       tmp_path):
    """The files are complete: the line says so (it said 'no output file was
    written' over them) (issue 22 item 7)."""
    _folder, cfg, ckpt = setup
    out = tmp_path / 'model.pth'
    proc = subprocess.run(
        [sys.executable, '-c', _SIGNAL_AT_FOLDER_SYNC, 'SIGINT', SCRIPT, cfg, ckpt,
         str(out)], cwd=REPO, capture_output=True, text=True, timeout=180)
    line = _one_error_line(proc, 130)
    assert line == (f'error: interrupted; {out}, {tmp_path / "model.nm.pth"}, '
                    f'{tmp_path / "model.py"} were written')
    assert sorted(os.listdir(tmp_path)) == ['model.nm.pth', 'model.pth', 'model.py']
