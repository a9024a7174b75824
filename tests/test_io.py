"""lbc_mm.io: atomic writes (a failure mid-write leaves neither the final file nor
a temp; the file and its folder are fsync'ed) and the one way tools stop."""
import errno
import os
import signal
import subprocess
import sys

import pytest
import torch

from lbc_mm import tool_exit
from lbc_mm.io import atomic_torch_save, atomic_write, atomic_write_all
from lbc_mm.tool_exit import Terminated, run_tool, tool_error_line


def _failing_save(exc):

    def save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a zip file')  # some bytes hit the disk first
        raise exc

    return save


@pytest.mark.parametrize('exc', [OSError('disk full'), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, exc):
    target = tmp_path / 'model.pth'
    monkeypatch.setattr(torch, 'save', _failing_save(exc))
    with pytest.raises(type(exc)):
        atomic_torch_save({'w': torch.ones(3)}, str(target))
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / 'model.pth'
    atomic_torch_save({'w': torch.ones(3)}, str(target))
    monkeypatch.setattr(torch, 'save', _failing_save(OSError('boom')))
    with pytest.raises(OSError):
        atomic_torch_save({'w': torch.zeros(3)}, str(target))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ['model.pth']
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.ones(3))


def test_success_writes_only_the_final_file(tmp_path):
    target = tmp_path / 'sub' / 'model.pth'
    atomic_torch_save({'w': torch.arange(4)}, str(target))
    assert os.listdir(tmp_path / 'sub') == ['model.pth']
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.arange(4))


# -- file modes, the pair, real write failures, SIGTERM ---------------------------
@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(str(tmp_path / 'a.json'), lambda f: f.write(b'{}'))
        atomic_torch_save({'w': torch.ones(2)}, str(tmp_path / 'a.pth'))
    finally:
        os.umask(old)
    for name in ('a.json', 'a.pth'):
        assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name


def _writer(data, exc=None):

    def write(f):
        f.write(data)
        if exc is not None:
            raise exc

    return write


@pytest.mark.parametrize('exc', [OSError(28, 'No space left on device'),
                                 KeyboardInterrupt(), Terminated()])
def test_a_pair_is_written_whole_or_not_at_all(tmp_path, exc):
    a, b = str(tmp_path / 'a.pth'), str(tmp_path / 'a.nm.pth')
    atomic_write_all([(a, _writer(b'old a')), (b, _writer(b'old b'))])
    with pytest.raises(type(exc)):
        atomic_write_all([(a, _writer(b'new a')), (b, _writer(b'new b', exc))])
    assert sorted(os.listdir(tmp_path)) == ['a.nm.pth', 'a.pth']  # no temp file
    assert open(a, 'rb').read() == b'old a' and open(b, 'rb').read() == b'old b'
    fresh = tmp_path / 'fresh'
    fresh.mkdir()
    with pytest.raises(type(exc)):
        atomic_write_all([(str(fresh / 'x'), _writer(b'x')),
                          (str(fresh / 'y'), _writer(b'y', exc))])
    assert os.listdir(fresh) == []


def test_second_file_of_a_pair_failing_for_real_leaves_neither(tmp_path):
    blocker = tmp_path / 'not_a_dir'
    blocker.write_text('a file where a folder should be')
    with pytest.raises(OSError):
        atomic_write_all([(str(tmp_path / 'a.pth'), _writer(b'a')),
                          (str(blocker / 'a.nm.pth'), _writer(b'b'))])
    assert os.listdir(tmp_path) == ['not_a_dir']


def test_a_directory_in_place_of_the_file_is_refused_before_writing(tmp_path):
    (tmp_path / 'out.pth').mkdir()
    with pytest.raises(IsADirectoryError, match='out.pth'):
        atomic_torch_save({'w': torch.ones(2)}, str(tmp_path / 'out.pth'))
    assert os.listdir(tmp_path) == ['out.pth']


_FULL_DISK = r'''
import resource, sys
import torch
from lbc_mm.io import atomic_torch_save
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # writes past 4 KiB fail
try:
    atomic_torch_save({'w': torch.zeros(100000)}, sys.argv[1])
except OSError as exc:
    print(type(exc).__name__, exc.errno, exc.filename)
'''


def test_torch_save_failing_on_a_full_disk_is_an_oserror(tmp_path):
    """A real write failure (file size limit, EFBIG) inside ``torch.save`` reaches
    the caller as the ``OSError`` naming the file, not torch's ``RuntimeError:
    [enforce fail at inline_container.cc]``."""
    target = tmp_path / 'big.pth'
    proc = subprocess.run([sys.executable, '-c', _FULL_DISK, str(target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ['OSError', str(errno.EFBIG), str(target)]
    assert os.listdir(tmp_path) == []


_SIGTERM = r'''
import sys, time
from lbc_mm.tool_exit import Terminated, raise_on_sigterm
from lbc_mm.io import atomic_write
raise_on_sigterm()

def slow(f):
    f.write(b'half')
    f.flush()
    print('writing', flush=True)
    time.sleep(60)

try:
    atomic_write(sys.argv[1], slow)
except Terminated:
    sys.exit(143)
'''


def test_sigterm_mid_write_leaves_no_temp_file(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', _SIGTERM, str(tmp_path / 'x.pth')],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'writing'
    assert len(os.listdir(tmp_path)) == 1  # the hidden temp file
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert os.listdir(tmp_path) == []


def test_the_file_then_its_folder_are_fsynced(tmp_path, monkeypatch):
    """One durability policy for every writer: the rename survives a power loss."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}'))
        return real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)
    atomic_write(str(tmp_path / 'a.json'), lambda f: f.write(b'{}'))
    assert len(synced) == 2 and '.a.json.' in synced[0]
    assert synced[1] == str(tmp_path)


@pytest.mark.parametrize('exc,code,line', [
    (KeyboardInterrupt(), 130, 'error: interrupted; a.pth was written'),
    (Terminated(), 143, 'error: terminated (SIGTERM); a.pth was written')])
def test_run_tool_turns_a_stop_into_one_line_and_its_code(capsys, exc, code, line):
    def body():
        raise exc

    try:
        assert run_tool(body, lambda: 'a.pth was written') == code
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert capsys.readouterr().err == line + '\n'


def test_run_tool_passes_the_exit_code_and_installs_the_sigterm_handler():
    try:
        assert run_tool(lambda: 3) == 3
        assert signal.getsignal(signal.SIGTERM) is tool_exit._raise_terminated
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize('exc, line', [
    (OSError(28, 'No space left on device', 'out.pth'),
     'error: cannot write out.pth: No space left on device; nothing written'),
    (FileNotFoundError(2, 'No such file', 'ckpt.pth'), 'error: [Errno 2] No such file: '
     "'ckpt.pth'"),  # not an output: the message as it is
    (KeyError("'Foo is not in the mmdet::model registry'"),
     "error: config cfg.py: 'Foo is not in the mmdet::model registry'"),
    (ValueError('2 sparse layers are not N:M'), 'error: 2 sparse layers are not N:M'),
])
def test_tool_error_line(exc, line):
    assert tool_error_line(exc, 'cfg.py', ['out.pth', None],
                           'nothing written') == line
