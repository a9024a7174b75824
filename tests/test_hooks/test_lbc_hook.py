"""LBCHook on a tiny real mmengine Runner (CPU): schedule, freeze, checks, logs,
plot, resume, EMA, frozen layers."""
import glob
import json
import os.path as osp

import pytest
import torch
from lbc_toy import build_runner, toy_cfg  # noqa: I100  (tests/test_hooks on path)
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from lbc_mm.hooks import LBCHook
from lbc_mm.hooks.lbc_checks import log_dense_fallbacks, nm_problems
from lbc_mm.hooks.lbc_hook import PLOT_NAME
from lbc_mm.methods import build_method
from lbc_mm.sparsity import card, card_at_epoch_start, magnitude_mask

C24 = 6  # candidates of 2:4


@HOOKS.register_module(force=True)
class AliveProbe(Hook):
    """Record, after LBCHook's removal, the alive counts of every LBC layer."""

    priority = 'NORMAL'

    def __init__(self):
        self.rows = []  # (iterations done, {layer: set of alive counts})

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model
        self.rows.append((runner.iter + 1, {
            name: set(layer.sparsity.num_alive.tolist())
            for name, layer in (('conv', model.conv), ('fc', model.fc))}))


def _probe(runner) -> AliveProbe:
    return next(h for h in runner.hooks if isinstance(h, AliveProbe))


def _train(cfg):
    runner = build_runner(cfg)
    runner.train()
    return runner


# -- arguments ---------------------------------------------------------------
@pytest.mark.parametrize('kwargs, match', [
    (dict(unit='epochs'), 'unit'),
    (dict(t_i=0.6, t_f=0.5), 't_i <= t_f'),
    (dict(t_f=1.5), 'fraction'),
    (dict(power=0), 'power'),
    (dict(frozen_layers='skip'), 'frozen_layers'),
    (dict(log_interval=0), 'log_interval'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LBCHook(**kwargs)


def test_t_f_after_end_of_training(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_i=0, t_f=20, unit='iter'))
    with pytest.raises(ValueError, match='after the end of training'):
        _train(cfg)


def test_model_without_lbc_layers(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict())
    cfg['model'] = dict(type='LBCToyNet')
    runner = build_runner(cfg)
    for layer in (runner.model.conv, runner.model.fc):
        layer.sparsity = build_method('srste', layer)  # no LBC layer left
    with pytest.raises(RuntimeError, match='no sparse LBC layer'):
        runner.train()


# -- schedule ----------------------------------------------------------------
@pytest.mark.parametrize('by_epoch, length, hook', [
    (False, 12, dict(t_i=3, t_f=9, unit='iter')),
    (False, 12, dict(t_i=0.25, t_f=0.75, unit='fraction')),
    (False, 12, dict(t_i=0.5, t_f=1.5, unit='epoch')),  # 6 iterations per epoch
    (True, 2, dict(t_i=3, t_f=9, unit='iter')),
    (True, 2, dict(t_i=0.5, t_f=1.5, unit='epoch')),
    (True, 2, dict(t_i=0.25, t_f=0.75, unit='fraction')),
], ids=['iter-iter', 'iter-fraction', 'iter-epoch', 'epoch-iter', 'epoch-epoch',
        'epoch-fraction'])
def test_alive_follows_card_every_iteration(tmp_path, by_epoch, length, hook):
    """Every unit / loop combination describes the window iterations 3 -> 9 of 12."""
    cfg = toy_cfg(str(tmp_path), by_epoch=by_epoch, length=length, hook=hook,
                  custom_hooks=[dict(type='AliveProbe')])
    rows = _probe(_train(cfg)).rows
    assert [it for it, _ in rows] == list(range(1, 13))
    expected = [card(it, C24, 3, 9, 3) for it in range(1, 13)]
    assert len(set(expected)) >= 4  # the window really moves
    for (it, alive), want in zip(rows, expected):
        assert alive == {'conv': {want}, 'fc': {want}}, f'iteration {it}'


def test_progress_is_epoch_plus_fraction(tmp_path):
    """Epoch loop: t = epoch + (batch_idx + 1) / iterations per epoch."""
    cfg = toy_cfg(str(tmp_path), by_epoch=True, length=3,
                  hook=dict(t_i=0.5, t_f=2.5, unit='epoch', power=2),
                  custom_hooks=[dict(type='AliveProbe')])
    runner = _train(cfg)
    rows = _probe(runner).rows
    assert len(rows) == 18
    for it, alive in rows:
        t = (it - 1) // 6 + ((it - 1) % 6 + 1) / 6
        want = card(t, C24, 0.5, 2.5, 2)
        assert alive['conv'] == {want}, f'iteration {it}, t={t}'
    hook = next(h for h in runner.hooks if isinstance(h, LBCHook))
    assert hook.history[-1][0] == pytest.approx(3.0)  # t is in epochs


@pytest.mark.parametrize('by_epoch, length, hook', [
    (True, 4, dict(t_i=0, t_f=3, unit='epoch')),
    (True, 4, dict(t_i=0, t_f=0.75, unit='fraction')),
    (False, 24, dict(t_i=0, t_f=3, unit='epoch')),
    (False, 24, dict(t_i=0, t_f=18, unit='iter')),
], ids=['epoch-epoch', 'epoch-fraction', 'iter-epoch', 'iter-iter'])
def test_card_update_epoch_steps_at_epoch_starts(tmp_path, by_epoch, length, hook):
    """card_update='epoch' (the authors' stepping): card(e) is recomputed at the
    start of each epoch e (6 iterations each) and holds for the whole epoch:
    nothing is removed during epoch 0, then several candidates go at once."""
    cfg = toy_cfg(str(tmp_path), by_epoch=by_epoch, length=length,
                  hook=dict(hook, power=1, card_update='epoch'),
                  custom_hooks=[dict(type='AliveProbe')])
    runner = _train(cfg)
    rows = _probe(runner).rows
    assert [it for it, _ in rows] == list(range(1, 25))
    # After iteration `it` the next forward belongs to epoch it // 6.
    expected = [card_at_epoch_start(it // 6, C24, 0, 3, 1) for it in range(1, 25)]
    assert expected[:5] == [C24] * 5  # the whole first epoch keeps every candidate
    assert expected[5:12] == [5] * 6 + [3]  # C - 1 go at once at the epoch-1 start
    for (it, alive), want in zip(rows, expected):
        assert alive == {'conv': {want}, 'fc': {want}}, f'iteration {it}'
        if it % 6 == 0:  # epoch boundaries: the per-iteration schedule agrees
            assert want == card(it / 6, C24, 0, 3, 1)
    hook_obj = next(h for h in runner.hooks if isinstance(h, LBCHook))
    t_mid = 0.5 if hook_obj.schedule.measure_epochs else 3
    assert hook_obj.schedule.card(t_mid, C24) == C24


def test_card_update_bad_value():
    with pytest.raises(ValueError, match='card_update'):
        LBCHook(card_update='step')


# -- freezing ------------------------------------------------------------------
@HOOKS.register_module(force=True)
class ScoresProbe(Hook):
    """Keep the scores and weights right after LBCHook froze them (iteration 6)."""

    priority = 'NORMAL'

    def __init__(self, at: int = 6):
        self.at = at
        self.snap = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            model = runner.model
            self.snap = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_scores_freeze_at_card_one(tmp_path):
    """After card 1 neither gradients, momentum nor weight decay move the scores."""
    # decay_mult=1: scores would decay if they were still updated.
    cfg = toy_cfg(str(tmp_path), hook=dict(t_i=0, t_f=0.5), decay_mult=1.0,
                  weight_decay=0.05, custom_hooks=[dict(type='ScoresProbe')])
    runner = _train(cfg)
    snap = next(h for h in runner.hooks if isinstance(h, ScoresProbe)).snap
    model = runner.model
    for name in ('conv', 'fc'):
        layer = getattr(model, name)
        assert not layer.scores.requires_grad and layer.scores.grad is None
        assert torch.equal(layer.scores, snap[f'{name}.scores']), name
        assert torch.equal(layer.alive, snap[f'{name}.alive']), name
        assert (layer.sparsity.num_alive == 1).all()
        assert (layer.scores[~layer.alive] == 0).all()
        # the weights keep training
        assert not torch.equal(layer.weight, snap[f'{name}.weight']), name
    assert nm_problems(model) == []


def test_scores_learn_before_card_one(tmp_path):
    """Control for the freeze test: with the same settings scores do move."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_i=0, t_f=1.0), decay_mult=1.0,
                  weight_decay=0.05, custom_hooks=[dict(type='ScoresProbe', at=6)])
    runner = _train(cfg)
    snap = next(h for h in runner.hooks if isinstance(h, ScoresProbe)).snap
    assert not torch.equal(runner.model.fc.scores, snap['fc.scores'])


# -- failures ------------------------------------------------------------------
@HOOKS.register_module(force=True)
class Saboteur(Hook):
    """Corrupt the model before LBCHook looks at it."""

    priority = 'HIGHEST'

    def __init__(self, what: str, at: int = 3):
        self.what = what
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.what == 'nan' and runner.iter + 1 == self.at:
            with torch.no_grad():
                runner.model.fc.scores[5, 2] = float('nan')

    def after_train(self, runner):
        if self.what == 'alive':
            runner.model.conv.alive[7] = True  # group 7 back to all candidates


def test_after_train_fails_on_corrupted_model(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5),
                  custom_hooks=[dict(type='Saboteur', what='alive')])
    with pytest.raises(RuntimeError, match=r'not exactly N:M') as info:
        _train(cfg)
    message = str(info.value)
    assert 'conv (2:4' in message and '1 of 144 groups' in message
    assert '(1 layers)' in message and '\n  fc' not in message


def test_non_finite_scores_stop_training(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_i=0.5, t_f=0.75),
                  custom_hooks=[dict(type='Saboteur', what='nan', at=3)])
    runner = build_runner(cfg)
    with pytest.raises(FloatingPointError, match=r'iteration 3 .*: fc'):
        runner.train()
    assert runner.iter == 2  # stopped inside iteration 3


# -- logging and plot ------------------------------------------------------------
def test_logs_and_plot(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5))
    cfg['log_level'] = 'INFO'
    runner = _train(cfg)
    scalars = runner.message_hub.log_scalars
    for key in ('alive', 'card', 'sparsity', 'nm_layers'):
        assert f'train/lbc_{key}' in scalars, key
    assert scalars['train/lbc_alive'].current() == 1.0
    assert scalars['train/lbc_card'].current() == 1.0
    assert scalars['train/lbc_sparsity'].current() == pytest.approx(0.5)
    assert scalars['train/lbc_nm_layers'].current() == 2.0
    alive_log = scalars['train/lbc_alive'].data[0]  # before_train + 12 iterations
    want = [C24] + [card(it, C24, 0, 6, 3) for it in range(1, 13)]
    assert alive_log.tolist() == want
    sparsity_log = scalars['train/lbc_sparsity'].data[0]
    assert sparsity_log[0] == 0 and sparsity_log[-1] == pytest.approx(0.5)
    assert all(a <= b for a, b in zip(sparsity_log, sparsity_log[1:]))
    text = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
    assert 'lbc_alive' in text and 'lbc_sparsity' in text
    # the visualizer backends (LocalVisBackend here, TensorBoard alike) get them too
    last = json.loads(open(osp.join(runner.log_dir, 'vis_data',
                                    'scalars.json')).read().splitlines()[-1])
    assert last['lbc_alive'] == 1.0 and last['lbc_nm_layers'] == 2.0
    png = osp.join(str(tmp_path), PLOT_NAME)
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert glob.glob(osp.join(str(tmp_path), '*.tmp')) == []


def test_no_plot_when_disabled(tmp_path):
    _train(toy_cfg(str(tmp_path), hook=dict(t_f=0.5, plot=False)))
    assert not osp.exists(osp.join(str(tmp_path), PLOT_NAME))


# -- resume ----------------------------------------------------------------------
@pytest.mark.parametrize('resume_at', [4, 8])
def test_resume_equals_uninterrupted_run(tmp_path, resume_at):
    """Checkpoints every 4 iterations; removal window 0 -> 7 of 12 iterations, so
    iteration 4 is mid-schedule and iteration 8 is after the freeze."""
    hook = dict(t_i=0, t_f=7, unit='iter')
    full = _train(toy_cfg(str(tmp_path / 'full'), hook=hook, checkpoint_interval=4,
                          with_val=True))
    ckpt = str(tmp_path / 'full' / f'iter_{resume_at}.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert len(saved['lbc_hook']['history']) == resume_at + 1
    mid = saved['state_dict']['fc.alive'].sum(1)
    assert int(mid.max()) == card(resume_at, C24, 0, 7, 3)

    cfg = toy_cfg(str(tmp_path / 'resumed'), hook=hook, checkpoint_interval=4,
                  with_val=True)
    cfg.update(resume=True, load_from=ckpt)
    resumed = _train(cfg)
    ref, got = full.model.state_dict(), resumed.model.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    hook_full, hook_res = (next(h for h in r.hooks if isinstance(h, LBCHook))
                           for r in (full, resumed))
    assert hook_res.history == hook_full.history
    assert not resumed.model.fc.scores.requires_grad


@pytest.mark.parametrize('resume_at', [4, 8])
def test_resume_with_card_per_epoch_equals_uninterrupted_run(tmp_path, resume_at):
    """card_update='epoch' on an iteration loop (6 iterations per epoch): resuming
    mid-epoch (4) or after a card step (8) continues bit for bit."""
    hook = dict(t_i=0, t_f=12, unit='iter', power=1, card_update='epoch')
    full = _train(toy_cfg(str(tmp_path / 'full'), hook=hook, checkpoint_interval=4))
    ckpt = str(tmp_path / 'full' / f'iter_{resume_at}.pth')
    saved = torch.load(ckpt, map_location='cpu', weights_only=True)
    mid = saved['state_dict']['fc.alive'].sum(1)
    assert int(mid.max()) == card_at_epoch_start(resume_at // 6, C24, 0, 12, 1, 6)
    cfg = toy_cfg(str(tmp_path / 'resumed'), hook=hook, checkpoint_interval=4)
    cfg.update(resume=True, load_from=ckpt)
    resumed = _train(cfg)
    ref, got = full.model.state_dict(), resumed.model.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert (resumed.model.fc.sparsity.num_alive == 1).all()


def test_finished_checkpoint_keeps_its_masks(tmp_path):
    """Fine-tuning from a finished LBC checkpoint (load_from, not resume): every
    layer is at one candidate at before_train, its scores freeze, no candidate is
    reopened and the masks stay those of the checkpoint; require_finished=True
    refuses a model that did not load one."""
    _train(toy_cfg(str(tmp_path / 'stage1'), hook=dict(t_i=0, t_f=6, unit='iter'),
                   length=8))
    ckpt = str(tmp_path / 'stage1' / 'iter_8.pth')
    before = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    cfg = toy_cfg(str(tmp_path / 'stage2'), decay_mult=1.0,
                  hook=dict(require_finished=True))
    cfg.update(load_from=ckpt)
    runner = _train(cfg)
    after = runner.model.state_dict()
    for key in ('conv.alive', 'fc.alive', 'conv.scores', 'fc.scores'):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before['fc.weight'], after['fc.weight'])  # weights train
    assert not runner.model.fc.scores.requires_grad
    with pytest.raises(RuntimeError, match='require_finished=True.*conv'):
        _train(toy_cfg(str(tmp_path / 'fresh'), hook=dict(require_finished=True)))


# -- EMA -------------------------------------------------------------------------
@pytest.mark.parametrize('update_buffers', [False, True])
def test_ema_model_ends_nm(tmp_path, update_buffers):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), with_val=True,
                  custom_hooks=[dict(type='EMAHook', momentum=0.3,
                                     update_buffers=update_buffers)])
    runner = _train(cfg)
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    ema = ema_hook.ema_model.module
    assert nm_problems(ema) == []
    for name in ('conv', 'fc'):
        src_layer, ema_layer = getattr(runner.model, name), getattr(ema, name)
        assert torch.equal(ema_layer.alive, src_layer.alive)
        assert (ema_layer.scores[~ema_layer.alive] == 0).all()
        assert not torch.equal(ema_layer.weight, src_layer.weight)  # really averaged
    # the saved 'state_dict' holds the EMA weights: N:M as well
    saved = torch.load(osp.join(str(tmp_path), 'iter_12.pth'), map_location='cpu',
                       weights_only=True)
    for name in ('conv', 'fc'):
        alive = saved['state_dict'][f'{name}.alive']
        assert (alive.sum(1) == 1).all()
        assert (saved['state_dict'][f'{name}.scores'][~alive] == 0).all()


# -- frozen layers -----------------------------------------------------------------
def test_frozen_layers_learn(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5, frozen_layers='learn'),
                  frozen_conv=True)
    runner = build_runner(cfg)
    init_weight = runner.model.conv.weight.detach().clone()
    init_scores = runner.model.conv.scores.detach().clone()
    runner.train()
    conv = runner.model.conv
    assert torch.equal(conv.weight, init_weight)  # weights stayed frozen
    alive_scores = conv.scores[conv.alive]
    assert not torch.equal(alive_scores, init_scores[conv.alive])  # scores learned
    assert nm_problems(runner.model) == []


def test_frozen_layers_asp(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_i=0.25, t_f=0.5, frozen_layers='asp'),
                  frozen_conv=True, custom_hooks=[dict(type='AliveProbe')])
    runner = _train(cfg)
    conv = runner.model.conv
    assert torch.equal(conv.get_mask(), magnitude_mask(conv.weight, 2, 4))
    rows = _probe(runner).rows
    assert rows[0][1]['conv'] == {1} and rows[0][1]['fc'] == {C24}
    assert nm_problems(runner.model) == []


def test_frozen_scores_missing_from_optimizer(tmp_path):
    """mmengine's default constructor drops frozen params when paramwise_cfg is set."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), frozen_conv=True)
    cfg['optim_wrapper'] = dict(optimizer=dict(type='SGD', lr=0.05),
                                paramwise_cfg=dict(norm_decay_mult=0.0))
    cfg['optim_wrapper']['optimizer']['weight_decay'] = 1e-4
    with pytest.raises(RuntimeError, match="not in the optimizer .*conv"):
        _train(cfg)


# -- mixed precision (GPU only) ------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_amp_optim_wrapper_on_gpu(tmp_path):
    """AmpOptimWrapper (fp16 autocast, dynamic loss scale) + LBCHook end N:M."""
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), with_val=True,
                  custom_hooks=[dict(type='AliveProbe')])
    cfg['optim_wrapper'].update(type='AmpOptimWrapper', loss_scale='dynamic')
    runner = _train(cfg)
    model = runner.model
    assert next(model.parameters()).is_cuda
    for name in ('conv', 'fc'):
        layer = getattr(model, name)
        assert layer.scores.dtype == torch.float32
        assert torch.isfinite(layer.scores).all()
    assert nm_problems(model) == []
    rows = _probe(runner).rows
    assert [a['fc'] for _, a in rows] == [{card(it, C24, 0, 6, 3)}
                                          for it in range(1, 13)]


# -- DDP rank agreement ----------------------------------------------------------------
def test_check_ranks_agree_two_gloo_ranks(tmp_path, free_port):
    import torch.multiprocessing as mp
    from lbc_toy import ranks_agree_worker
    mp.spawn(ranks_agree_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        agree, differ = (tmp_path / f'rank{rank}.txt').read_text().split('\n')
        assert agree == 'agree'
        assert 'ranks kept different candidates in 1 layers: fc' in differ


def test_dense_fallback_layers_are_named(log_lines):
    from torch import nn

    from lbc_mm.layers import NMSparseConv
    model = nn.Module()
    model.stem = NMSparseConv(3, 8, 7, n=2, m=4)  # Cin=3: stays dense
    model.body = NMSparseConv(8, 8, 3, n=2, m=4)
    log_dense_fallbacks(model)
    named = [line for line in log_lines if line.startswith('LBCHook:')]
    assert named == ['LBCHook: 1 of 2 N:M layers stay dense (input channels not '
                     'divisible by M): stem (8, 3, 7, 7) (2:4)']


# -- noise_margin ----------------------------------------------------------------
@pytest.mark.parametrize('noise_margin', [0.0, 1e6])
def test_noise_margin_takes_decisions_within_the_noise_by_magnitude(
        tmp_path, noise_margin):
    """One removal step, to card 1, after the last of 6 iterations: with a huge
    noise margin every decision is within the noise, so each group keeps its
    largest |w| (the weights do not move after it); the default follows the
    scores, which after 6 iterations disagree with magnitude in many groups."""
    cfg = toy_cfg(str(tmp_path), length=6,
                  hook=dict(t_i=6, t_f=6, unit='iter', noise_margin=noise_margin))
    runner = _train(cfg)
    hook = next(h for h in runner.hooks if isinstance(h, LBCHook))
    for name in ('conv', 'fc'):
        layer = getattr(runner.model, name)
        assert hook._settled.noise(name) > 0
        same = layer.get_mask() == magnitude_mask(layer.weight, layer.n, layer.m)
        if noise_margin:
            assert same.all(), name
        else:
            assert not same.all(), name


def test_noise_margin_must_not_be_negative():
    with pytest.raises(ValueError, match='noise_margin'):
        LBCHook(noise_margin=-1)
