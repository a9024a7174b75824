"""Distributed set-up for machines without a GPU (CPU DDP over gloo).

mmengine 0.10.7 assumes CUDA for distributed training: ``init_dist('pytorch')`` calls
``torch.cuda.set_device(LOCAL_RANK)`` before ``init_process_group`` and
``Runner.wrap_model`` gives DDP ``device_ids=[LOCAL_RANK]``. On a CPU machine both fail
("Found no NVIDIA driver"). The Runner skips ``init_dist`` when a process group already
exists (``Runner.setup_env``: ``if self.distributed and not is_distributed()``), so the
tools initialise gloo here first and pick :class:`~lbc_mm.model_wrappers.
LBCDistributedDataParallel`, which builds DDP with ``device_ids=None`` on CPU.

After a successful run the tools drop their Runner and call
:func:`teardown_distributed`: a process group left for interpreter exit can abort a
finished rank ("terminate called without an active exception", exit -6) when gloo's
threads are joined while Python shuts down. Destroying the group is not enough on its
own: the Runner's DDP model holds it, and a finished Runner sits in reference cycles,
so without a collection it is freed (and gloo's threads joined) only at shutdown. It
is not called after a failure, where the other ranks may never reach it and
destroying the group can hang.
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
    """Initialise a gloo process group when launching distributed without a GPU.

    Args:
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        timeout_s (float): Collective timeout in seconds. Defaults to 1800.

    Returns:
        bool: True when this call created the process group; False when there is
        nothing to do (not distributed, a GPU is present, or already initialised).

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
    """Make a distributed run use :class:`LBCDistributedDataParallel`.

    A config without ``model_wrapper_cfg`` gets ``dict(type=WRAPPER_TYPE)``; one that
    names mmengine's ``MMDistributedDataParallel`` (explicitly or by omitting
    ``type``) keeps its other arguments with the type swapped (it is a subclass).
    Any other wrapper type is left alone. Nothing changes when not distributed.

    Args:
        cfg (Config): The run config, modified in place.
        launcher (str): The launcher of the run.
    """
    if launcher == 'none':
        return
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(type=WRAPPER_TYPE)
    elif wrapper.get('type', MMDDP) == MMDDP:
        wrapper['type'] = WRAPPER_TYPE


def setup_distributed(cfg: Any, launcher: str) -> bool:
    """Everything the tools do before building the Runner of a distributed run.

    Args:
        cfg (Config): The run config, modified in place.
        launcher (str): The launcher of the run.

    Returns:
        bool: Whether a gloo process group was created here.
    """
    created = init_cpu_dist(launcher)
    set_model_wrapper(cfg, launcher)
    return created


def teardown_distributed() -> bool:
    """Destroy the default process group at the end of a successful run.

    Every rank must call it (it ends the group for all), after dropping its own
    references to the Runner: the DDP model's reducer holds the group, and a Runner
    kept alive by reference cycles would otherwise free it (and join gloo's threads)
    only during interpreter shutdown. So: collect garbage (the dropped Runner goes
    now), wait for every rank (no peer is still in the last collective), destroy.
    Whoever created the group (:func:`init_cpu_dist`, or mmengine's ``init_dist``
    on GPUs) does not matter.

    Returns:
        bool: True when a process group was destroyed.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    gc.collect()
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    gc.collect()
    return True
