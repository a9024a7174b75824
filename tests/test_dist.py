"""lbc_mm.dist: when gloo is initialised and which model wrapper a run gets."""
import pytest
import torch
from mmengine.config import Config

from lbc_mm.dist import WRAPPER_TYPE, init_cpu_dist, set_model_wrapper

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')


def test_not_distributed_does_nothing():
    assert init_cpu_dist('none') is False
    cfg = Config(dict(model_wrapper_cfg=None))
    set_model_wrapper(cfg, 'none')
    assert cfg.model_wrapper_cfg is None


@no_cuda
def test_cpu_launcher_must_be_pytorch():
    with pytest.raises(ValueError, match="only --launcher pytorch .*'slurm'"):
        init_cpu_dist('slurm')


@no_cuda
def test_missing_torchrun_environment(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='RANK, WORLD_SIZE.*dist_train.sh'):
        init_cpu_dist('pytorch')


@pytest.mark.parametrize('given, expected', [
    (None, dict(type=WRAPPER_TYPE)),
    (dict(find_unused_parameters=False),
     dict(type=WRAPPER_TYPE, find_unused_parameters=False)),
    (dict(type='MMDistributedDataParallel', broadcast_buffers=True),
     dict(type=WRAPPER_TYPE, broadcast_buffers=True)),
    (dict(type='MMFullyShardedDataParallel'), dict(type='MMFullyShardedDataParallel')),
])
def test_set_model_wrapper(given, expected):
    cfg = Config(dict(model_wrapper_cfg=given) if given is not None else dict())
    set_model_wrapper(cfg, 'pytorch')
    assert cfg.model_wrapper_cfg.to_dict() == expected
