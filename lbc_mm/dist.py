"""Distributed set-up for machines without a GPU (CPU DDP over gloo), and teardown.

mmengine 0.10.7 assumes CUDA: ``init_dist('pytorch')`` calls
``torch.cuda.set_device`` and ``Runner.wrap_model`` gives DDP ``device_ids``, both of
which fail on a CPU machine. The Runner skips ``init_dist`` when a process group
exists, so the tools initialise gloo here first and pick
:class:`~lbc_mm.model_wrappers.LBCDistributedDataParallel` (``device_ids=None`` on
CPU). A finished run destroys its group (:func:`teardown_distributed`).
"""
import datetime
import gc
import os
from typing import Any

import torch
import torch.distributed as torch_dist

#: Model wrapper the tools use for every distributed launch (CPU or GPU).
WRAPPER_TYPE = 'LBCDistributedDataParallel'
#: mmengine's own DDP wrapper (``LBCDistributedDataParallel`` subclasses it).
MMDDP = 'MMDistributedDataParallel'
#: Environment variables torchrun sets and ``init_method='env://'`` reads.
TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def init_cpu_dist(launcher: str, timeout_s: float = 1800.0) -> bool:
    """Initialise a gloo process group (collective timeout ``timeout_s``) when
    launching distributed without a GPU; True when this call created it.

    Raises:
        ValueError: CPU training with a launcher other than ``'pytorch'``.
        RuntimeError: The torchrun environment variables are missing.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if torch_dist.is_available() and torch_dist.is_initialized():
        return False
    if launcher != 'pytorch':
        raise ValueError(f'distributed training without a GPU supports only '
                         f"--launcher pytorch (torchrun), got '{launcher}'")
    missing = [key for key in TORCHRUN_ENV if key not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment '
                           f'({", ".join(missing)} not set): launch with '
                           f'tools/dist_train.sh CONFIG NUM_PROCS or torchrun')
    torch_dist.init_process_group(
        backend='gloo',
        init_method='env://',
        timeout=datetime.timedelta(seconds=timeout_s))
    return True


def set_model_wrapper(cfg: Any, launcher: str) -> None:
    """Make a distributed run use :class:`LBCDistributedDataParallel` (in place):
    a config without ``model_wrapper_cfg`` gets it, one naming mmengine's
    ``MMDistributedDataParallel`` (explicitly or by omitting ``type``) keeps its
    other arguments (it is a subclass); any other wrapper is left alone."""
    if launcher == 'none':
        return
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(type=WRAPPER_TYPE)
    elif wrapper.get('type', MMDDP) == MMDDP:
        wrapper['type'] = WRAPPER_TYPE


def teardown_distributed() -> bool:
    """Destroy the default process group at the end of a successful run; True when
    one was destroyed.

    Left for interpreter exit, gloo's threads can abort a finished rank ("terminate
    called without an active exception"). Every rank calls it after dropping its
    Runner, whose DDP model holds the group from reference cycles: collect garbage,
    wait for every rank, destroy. Not called after a failure, where other ranks may
    never reach it and it can hang.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    gc.collect()
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    gc.collect()
    return True
