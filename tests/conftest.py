"""Test-suite settings: CPU, headless plots, deterministic small thread pools."""
import os

os.environ.setdefault('MPLBACKEND', 'Agg')

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

import lbc_mm  # noqa: E402,F401  (registers layers, hooks, compat shims)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root() -> str:
    """Absolute path of the repository checkout."""
    return REPO_ROOT


@pytest.fixture
def free_port():
    """Callable returning a free TCP port on 127.0.0.1 (for gloo / torchrun)."""
    import socket

    def find() -> int:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            return sock.getsockname()[1]

    return find


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.fixture
def log_lines():
    """Messages printed with ``print_log(..., logger='current')`` during a test."""
    logger = MMLogger.get_current_instance()
    lines = []

    class _Collect(logging.Handler):

        def emit(self, record):
            lines.append(record.getMessage())

    handler = _Collect()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state, whatever ran before it (an mmengine
    Runner without a seed reseeds torch globally). ``LBC_TEST_SEED`` picks another
    state, to check that tests hold for other random draws."""
    import random

    import numpy as np
    seed = int(os.environ.get('LBC_TEST_SEED', '0'))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
