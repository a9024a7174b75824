"""How every tool stops: the one line of an error, of SIGTERM and of Ctrl-C.

:func:`run_error_line` / :func:`exit_on_run_error` for an error that stopped a
training or test run, :func:`tool_error_line` for the file tools, :func:`fail` for a
tool's own one-line refusal, and :func:`run_tool`, which every tool's ``main`` runs
its work through.
"""
import errno
import signal
import sys
from typing import Callable, Iterable, NoReturn, Optional

#: errno of a failed write: disk or quota full, file too large, folder read-only or
#: not writable.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)
#: Message prefixes of the errors lbc_mm's hooks stop a run with.
HOOK_PREFIXES = ('LBCHook', 'FiniteCheckHook')


def fail(line: str, code: int) -> NoReturn:
    """Print ``line`` on stderr and exit with ``code``."""
    print(line, file=sys.stderr)
    raise SystemExit(code)


def run_error_line(exc: BaseException) -> Optional[str]:
    """The one line a tool prints for an error whose message says it all (a
    divergence, an lbc_mm hook's refusal, a refused checkpoint, a failed write),
    or None: an unexpected error keeps its traceback."""
    from .checkpoint_io import CheckpointMismatchError
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        what = f'cannot write {exc.filename}' if exc.filename else 'a write failed'
        return f'error: {what}: {exc.strerror or exc}'
    if isinstance(exc, (FloatingPointError, CheckpointMismatchError)) or (
            isinstance(exc, (ValueError, RuntimeError))
            and str(exc).startswith(HOOK_PREFIXES)):
        return f'error: {exc}'
    return None


def exit_on_run_error(exc: BaseException, runner) -> None:
    """Print :func:`run_error_line` on stderr and exit 1; return for other errors.
    A write failure also names the last complete checkpoint of ``runner``'s
    ``work_dir``, which ``--resume`` continues from."""
    line = run_error_line(exc)
    if line is None:
        return
    if isinstance(exc, OSError):
        from mmengine.runner import find_latest_checkpoint
        latest = find_latest_checkpoint(runner.work_dir)
        line += (f'; training stopped, --resume continues from {latest}' if latest
                 else '; training stopped before its first checkpoint')
    fail(line, 1)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by :func:`raise_on_sigterm` so that cleanups run; a
    ``KeyboardInterrupt``, so code that handles Ctrl-C handles it too."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated('terminated (SIGTERM)')


def raise_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def run_tool(body: Callable[[], int], done: Callable[[], str] = lambda: '') -> int:
    """``body()``'s exit code, the one way every lbc_mm tool stops: SIGTERM raises
    :class:`Terminated` (cleanups run); a stop by SIGTERM or Ctrl-C prints
    ``error: terminated (SIGTERM)`` / ``error: interrupted`` (then ``; done()`` when
    not empty, e.g. which files were written) and returns 143 / 130."""
    raise_on_sigterm()
    try:
        return body()
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        note = done()
        print(('error: terminated (SIGTERM)' if terminated else 'error: interrupted')
              + (f'; {note}' if note else ''), file=sys.stderr)
        return 143 if terminated else 130


def tool_error_line(exc: Exception, config: str, outputs: Iterable = (),
                    done: str = '') -> str:
    """The one line a file tool (convert, export_onnx, get_flops) prints for an
    error it stops on: an ``OSError`` writing one of ``outputs`` (the file, the
    reason, then ``; done``: what was written so far), a ``KeyError`` (a registry
    type that ``config`` names is unknown) or any other (its message)."""
    if isinstance(exc, OSError) and exc.errno is not None and (
            exc.filename in set(filter(None, outputs))):
        return (f'error: cannot write {exc.filename}: {exc.strerror}'
                + (f'; {done}' if done else ''))
    if isinstance(exc, KeyError):
        return f'error: config {config}: {exc.args[0] if exc.args else exc}'
    return f'error: {exc}'
