"""FiniteCheckHook: a diverging run stops, naming the iteration and the tensors, in
every phase of LBC and in dense runs; no checkpoint is written with NaN weights."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from lbc_toy import LBCToyNet, build_runner, toy_cfg, write_config  # noqa: I100
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

from lbc_mm.hooks import FiniteCheckHook, LBCHook
from lbc_mm.hooks.finite_check import non_finite_tensors
from lbc_mm.hooks.lbc_checks import end_of_training_check
from lbc_mm.sparse_model import lbc_layers

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))


@HOOKS.register_module(force=True)
class NaNInjector(Hook):
    """After iteration ``at``'s update, put a NaN into ``tensor`` of the model."""

    priority = 'HIGHEST'

    def __init__(self, tensor: str, at: int):
        self.tensor = tensor
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.get_parameter(self.tensor).view(-1)[0] = float('nan')


def _exploding_cfg(tmp_path, hook, at, finite_check=True, **kwargs):
    """Toy run (12 iterations) whose lr is multiplied by 1e30 after iteration ``at``."""
    # Without an LBCHook the toy's layers are SR-STE (LBC layers need the hook).
    kwargs.setdefault('method', 'lbc' if hook is not None else 'srste')
    cfg = toy_cfg(str(tmp_path), hook=hook, **kwargs)
    if finite_check:
        cfg['custom_hooks'].append(dict(type='FiniteCheckHook', interval=50))
    cfg['param_scheduler'] = dict(type='MultiStepLR', milestones=[at], gamma=1e30,
                                  by_epoch=False)
    return cfg


def _failing_iteration(message: str) -> int:
    return int(re.search(r'at iteration (\d+)', message).group(1))


@pytest.mark.parametrize('phase, hook, at', [
    ('before t_i', dict(t_i=0.75, t_f=1.0), 2),
    ('during removal', dict(t_i=0.0, t_f=0.75), 3),
    ('after t_f', dict(t_i=0.0, t_f=0.25), 6),
    ('no LBCHook (SR-STE)', None, 3),
])
def test_exploding_lr_stops_training(tmp_path, phase, hook, at):
    runner = build_runner(_exploding_cfg(tmp_path, hook, at))
    with pytest.raises(FloatingPointError, match='FiniteCheckHook: non-finite') as info:
        runner.train()
    message = str(info.value)
    failed = _failing_iteration(message)
    assert at < failed <= at + 3, message  # within a few iterations of the blow-up
    assert runner.iter + 1 == failed  # stopped inside that iteration
    assert 'non-finite loss' in message or 'non-finite weights' in message


def test_nan_weight_names_the_iteration_and_the_tensor(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), custom_hooks=[
        dict(type='FiniteCheckHook', interval=50),
        dict(type='NaNInjector', tensor='head.weight', at=8)])
    with pytest.raises(FloatingPointError) as info:
        build_runner(cfg).train()
    message = str(info.value)
    assert 'non-finite loss (nan) at iteration 9 (epoch 1)' in message, message
    assert 'non-finite weights in' in message and 'head.weight' in message


def test_interval_scan_finds_what_the_loss_does_not_show(tmp_path):
    """NaN LBC scores do not enter the loss: the periodic scan names them (and
    LBCHook leaves its own per-iteration scan to the FiniteCheckHook)."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_i=0.75, t_f=1.0), custom_hooks=[
        dict(type='FiniteCheckHook', interval=4),
        dict(type='NaNInjector', tensor='fc.scores', at=2)])
    runner = build_runner(cfg)
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    message = str(info.value)
    assert message.startswith('FiniteCheckHook: non-finite weights at iteration 4')
    assert '1 tensor: fc.scores' in message
    lbc = next(h for h in runner.hooks if isinstance(h, LBCHook))
    assert lbc._scan_scores is False


def test_no_checkpoint_with_nan_weights(tmp_path):
    """The last update breaks the weights; the final checkpoint is refused."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), custom_hooks=[
        dict(type='FiniteCheckHook', interval=50),
        dict(type='NaNInjector', tensor='head.bias', at=12)])
    with pytest.raises(FloatingPointError,
                       match='before saving a checkpoint at iteration 12.*head.bias'):
        build_runner(cfg).train()
    assert not osp.exists(osp.join(tmp_path, 'iter_12.pth'))


# -- LBCHook without FiniteCheckHook (a user's own config) ------------------------
def test_lbc_hook_alone_stops_a_run_whose_loss_turns_nan_after_t_f(tmp_path):
    """The masks are fixed at iteration 3, the lr explodes after iteration 6:
    without the guard the run trained on with loss nan and passed its end checks."""
    runner = build_runner(_exploding_cfg(tmp_path, dict(t_i=0.0, t_f=0.25), 6,
                                         finite_check=False))
    with pytest.raises(FloatingPointError, match='LBCHook: non-finite loss') as info:
        runner.train()
    assert 6 < _failing_iteration(str(info.value)) <= 9, str(info.value)
    assert not osp.exists(osp.join(tmp_path, 'iter_12.pth'))


def test_lbc_hook_alone_writes_no_checkpoint_with_nan_weights(tmp_path):
    """NaN in frozen scores does not enter the loss; the checkpoint is refused."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), custom_hooks=[
        dict(type='NaNInjector', tensor='fc.scores', at=12)])
    with pytest.raises(FloatingPointError, match=r'LBCHook: non-finite weights before '
                       r'saving a checkpoint at iteration 12 .*1 tensor: fc\.scores'):
        build_runner(cfg).train()
    assert not osp.exists(osp.join(tmp_path, 'iter_12.pth'))


def test_end_of_training_check_fails_on_non_finite_weights():
    """N:M masks over NaN weights are no finished model."""
    model = LBCToyNet()
    for _, layer in lbc_layers(model):
        layer.sparsity.remove_candidates(1)
    end_of_training_check(model, [], lbc_layers(model))  # finite, N:M: passes
    with torch.no_grad():
        model.head.bias[0] = float('nan')
    with pytest.raises(FloatingPointError, match='LBCHook: training ended with '
                       'non-finite weights in 1 tensor: head.bias; training diverged'):
        end_of_training_check(model, [], lbc_layers(model))


def test_non_finite_tensors_fast_path_and_overflow():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert non_finite_tensors(model) == []
    with torch.no_grad():
        model[0].weight.fill_(3e38)  # finite, but the sum overflows
    assert non_finite_tensors(model) == []
    model[1].running_var[2] = float('inf')
    model[0].bias.data[1] = float('nan')
    assert non_finite_tensors(model) == ['0.bias', '1.running_var']


@pytest.mark.parametrize('interval', [0, -1, 1.5, True])
def test_bad_interval(interval):
    with pytest.raises(ValueError, match='interval'):
        FiniteCheckHook(interval=interval)


def test_train_tool_exits_non_zero_naming_the_iteration(tmp_path):
    """The issue's case: lr explodes after t_f; tools/train.py must not exit 0, and
    says so in one line, not a traceback."""
    cfg = _exploding_cfg(tmp_path / 'work', dict(t_i=0.0, t_f=0.25), 6)
    config = write_config(str(tmp_path / 'cfg.py'), cfg)
    env = dict(os.environ, MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join([REPO, HERE] + (
        [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'), config],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: FiniteCheckHook: non-finite'), proc.stderr[-3000:]
    assert proc.stderr.count('error:') == 1
    assert 6 < _failing_iteration(last) <= 9
    assert not (tmp_path / 'work' / 'iter_12.pth').exists()


# -- the iteration named after an iteration loop's end (issue 22 item 7) ----------
def test_end_of_training_names_the_last_iteration(tmp_path):
    """A 12-iteration run broken by its last update: 'iteration 12', not 13."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), custom_hooks=[
        dict(type='FiniteCheckHook', interval=50),
        dict(type='NaNInjector', tensor='head.bias', at=12)])
    cfg['default_hooks']['checkpoint'] = dict(type='CheckpointHook', interval=100,
                                              save_last=False)
    with pytest.raises(FloatingPointError) as info:
        build_runner(cfg).train()
    assert str(info.value).startswith(
        'FiniteCheckHook: non-finite weights at the end of training at iteration 12 '
        'in 1 tensor: head.bias'), str(info.value)


@pytest.mark.parametrize('finite_check', [True, False])
def test_epoch_end_checkpoint_names_the_last_iteration(tmp_path, finite_check):
    """Two epochs of 6 iterations; the checkpoint at the end of epoch 2 holds 12."""
    owner = 'FiniteCheckHook' if finite_check else 'LBCHook'
    cfg = toy_cfg(str(tmp_path), by_epoch=True, length=2, hook=dict(t_f=0.5),
                  custom_hooks=[dict(type='FiniteCheckHook', interval=50)] * (
                      finite_check) + [dict(type='NaNInjector', tensor='fc.scores',
                                            at=12)])
    with pytest.raises(FloatingPointError) as info:
        build_runner(cfg).train()
    assert str(info.value).startswith(
        f'{owner}: non-finite weights before saving a checkpoint at iteration 12 '
        'in 1 tensor: fc.scores'), str(info.value)
