"""Atomic file writes: a crash or Ctrl-C never leaves a half-written final file."""
import os
import tempfile
from typing import Callable

import torch


def atomic_write(path: str, write: Callable[[object], None]) -> str:
    """Call ``write(fileobj)`` on a temp file next to ``path``, then rename it.

    The temp file is removed on any exception (``KeyboardInterrupt`` included) and
    the final name only ever holds a complete file (``os.replace`` is atomic).

    Returns:
        str: ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp',
                               dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_torch_save(obj: object, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))
