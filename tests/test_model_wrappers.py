"""LBCDistributedDataParallel on CPU: device_ids, frozen scores, freezing mid-run."""

import pytest
import torch
import torch.distributed as torch_dist
from lbc_toy import LBCToyData, LBCToyNet
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from lbc_mm.model_wrappers import LBCDistributedDataParallel


@pytest.fixture
def gloo_group(free_port):
    """A one-process gloo group (what torchrun gives each rank)."""
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{free_port()}', rank=0, world_size=1)
    yield
    torch_dist.destroy_process_group()


def _batch(n=4):
    data = LBCToyData(size=n)
    return dict(inputs=[data.x[i] for i in range(n)],
                data_samples=[data.y[i] for i in range(n)])


def test_cpu_ddp_registers_frozen_scores_and_survives_freezing(gloo_group):
    model = LBCToyNet(frozen_conv=True)  # conv scores: requires_grad False
    assert not model.conv.scores.requires_grad
    # Runner.wrap_model passes device_ids=[LOCAL_RANK] to DDP subclasses.
    ddp = MODEL_WRAPPERS.build(dict(type='LBCDistributedDataParallel'),
                               default_args=dict(module=model, device_ids=[0]))
    assert isinstance(ddp, LBCDistributedDataParallel)
    assert ddp.device_ids is None
    assert ddp.find_unused_parameters is True
    assert model.conv.scores.requires_grad  # registered with DDP
    registered = {id(p) for p in ddp.parameters() if p.requires_grad}
    assert id(model.conv.scores) in registered
    optim = OptimWrapper(torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9,
                                         weight_decay=0.1))
    ddp.train_step(_batch(), optim)
    assert model.fc.scores.grad is None  # zero_grad(set_to_none)
    # Freeze mid-run: DDP must not wait for the frozen scores' gradients.
    model.fc.sparsity.remove_candidates(1)
    model.fc.sparsity.freeze_scores()
    frozen = model.fc.scores.detach().clone()
    for _ in range(2):
        ddp.train_step(_batch(), optim)
    assert torch.equal(model.fc.scores, frozen)  # no grad, momentum or decay


def test_model_without_lbc_layers_keeps_ddp_defaults(gloo_group):
    ddp = LBCDistributedDataParallel(nn.Linear(4, 4), device_ids=[0])
    assert ddp.find_unused_parameters is False
    assert ddp.device_ids is None


def test_find_unused_parameters_can_be_forced(gloo_group):
    ddp = LBCDistributedDataParallel(LBCToyNet(), find_unused_parameters=False)
    assert ddp.find_unused_parameters is False
