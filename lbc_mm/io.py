"""Atomic file writes: a crash, Ctrl-C, SIGTERM or a full disk never leaves a
half-written final file, nor a temp file behind.

Every file lbc_mm writes goes through :func:`atomic_write` (or :func:`atomic_write_all`
for files that belong together): the bytes go to a hidden temp file next to the
destination (``.<name>.pid<PID>.<random>.tmp``), are fsync'ed and renamed over the
final name, and the folder is fsync'ed. A temp file that ``kill -9`` or a power loss
left behind is removed by the next write into that folder (:func:`sweep_stale_temps`).
The file gets the mode a plain ``open()`` would give it. A failure is an ``OSError``
naming the final path (tools print it in one line: :mod:`lbc_mm.tool_exit`).
"""
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

Writer = Callable[[object], None]


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (symlinks resolved; hard links too when
    both exist)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_writable(path: str) -> None:
    """Raise, before any slow work, the ``OSError`` (naming ``path``) a write of
    ``path`` would: it is a folder, or the nearest existing folder above it is not
    a folder or not writable. A full disk only shows when writing."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, 'Is a directory (give a file name)', path)
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, f'{folder} is not a directory', path)
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        code = errno.EROFS if read_only else errno.EACCES
        raise OSError(code, f'{os.strerror(code)} ({folder})', path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _named(exc: OSError, path: str) -> OSError:
    """``exc`` naming the final ``path`` (not the temp file), same errno."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), path)


def fsync_dir(folder: str) -> None:
    """``fsync`` a folder so a rename inside it survives a power loss (skipped where
    folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


#: A temp file's name: ``.<final name>.pid<writer's pid>.<random hex>.tmp``.
TEMP_NAME = re.compile(r'\..+\.pid(\d+)\.\w+\.tmp')


def _runs(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except OSError as exc:  # PermissionError: another user's process
        return not isinstance(exc, ProcessLookupError)
    return True


def sweep_stale_temps(folder: str) -> List[str]:
    """Remove (and return) the temp files in ``folder`` whose writer no longer runs
    (``kill -9`` or a power loss left them: hidden, model-sized)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    stale = [os.path.join(folder, name) for name in names
             if (found := TEMP_NAME.fullmatch(name)) and not _runs(int(found[1]))]
    for path in stale:
        with contextlib.suppress(OSError):  # gone already, or another user's
            os.remove(path)
    return stale


def _write_temp(path: str, write: Writer) -> str:
    """Write to a temp file next to ``path`` (fsync'ed, umask mode); its name. It is
    removed on any exception (``KeyboardInterrupt`` included)."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, 'Is a directory (give a file name)', path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        sweep_stale_temps(folder)
        tmp = os.path.join(folder, f'.{os.path.basename(path)}.pid{os.getpid()}.'
                           f'{secrets.token_hex(6)}.tmp')
        # mode 0o666 minus the umask, as open() gives (mkstemp would give 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        _remove(tmp)
        raise _named(exc, path) from None
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def atomic_write_all(items: Sequence[Tuple[str, Writer]]) -> List[str]:
    """Write several files all or none: ``write(fileobj)`` for each ``(path, write)``
    into a temp file; only when every one is complete are they renamed to their
    final names. On any exception (Ctrl-C / SIGTERM included) the temp files are
    removed and no new file is left under a final name (one between the renames
    removes those already renamed). Returns the paths.

    Raises:
        OSError: a write failed; ``filename`` is the final path.
    """
    temps: List[Tuple[str, str]] = []
    renamed: List[str] = []
    try:
        for path, write in items:
            temps.append((_write_temp(path, write), path))
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _named(exc, path) from None
            renamed.append(path)
        for folder in dict.fromkeys(os.path.dirname(os.path.abspath(path))
                                    for _tmp, path in temps):
            fsync_dir(folder)
    except BaseException:
        for tmp, _path in temps:
            _remove(tmp)
        if len(renamed) < len(temps):
            for path in renamed:
                _remove(path)
        raise
    return [path for path, _write in items]


def atomic_write(path: str, write: Writer) -> str:
    """``write(fileobj)`` into ``path`` atomically (:func:`atomic_write_all`);
    returns ``path``."""
    return atomic_write_all([(path, write)])[0]


def file_ids(paths: Iterable[str]) -> Dict[str, Optional[Tuple[int, int]]]:
    """``(device, inode)`` of each path (None: absent), for :func:`replaced_since`."""
    ids: Dict[str, Optional[Tuple[int, int]]] = {}
    for path in filter(None, paths):
        try:
            stat = os.stat(path)
            ids[path] = (stat.st_dev, stat.st_ino)
        except OSError:
            ids[path] = None
    return ids


def replaced_since(before: Dict[str, Optional[Tuple[int, int]]]) -> List[str]:
    """The paths of ``before`` (:func:`file_ids`) holding a new file (an atomic write
    gives it a new inode): what was written since."""
    now = file_ids(before)
    return [path for path, was in before.items() if now[path] not in (None, was)]


class _Recorder:
    """File wrapper remembering the first exception its ``write`` raised: torch's
    zip writer turns it into ``RuntimeError: [enforce fail ...]``."""

    def __init__(self, f) -> None:
        self._f = f
        self.error = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            raise

    def flush(self) -> None:
        self._f.flush()


def torch_writer(obj: object) -> Writer:
    """A writer for :func:`atomic_write` doing ``torch.save(obj)``; a failed write
    re-raises the original ``OSError`` / ``KeyboardInterrupt``."""

    def write(f) -> None:
        recorder = _Recorder(f)
        try:
            torch.save(obj, recorder)
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from None
            raise

    return write


def atomic_torch_save(obj: object, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically."""
    return atomic_write(path, torch_writer(obj))


# Generated data sets (tools/make_demo_data.py, make_study_data.py): files written
# into a sibling folder that replaces the data set as a whole.
def save_png(img, path: str) -> None:
    """Save a PIL image as PNG (deterministic bytes: no metadata, fixed compression)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, format='PNG', compress_level=6)


def write_json(obj: Dict, path: str) -> None:
    """Write JSON with stable formatting."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, sort_keys=True, separators=(',', ':'))
        f.write('\n')


def write_tree(out_dir: str, fill: Callable[[str], None]) -> str:
    """Run ``fill(folder)`` on a sibling folder of ``out_dir``, then swap it in
    (``os.replace``), replacing an existing ``out_dir`` as a whole; the absolute
    ``out_dir``."""
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f'.{name}.tmp-{os.getpid()}')
    old = os.path.join(parent, f'.{name}.old-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
        if os.path.lexists(out_dir):
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
