"""LBCHook's settledness diagnostics on the tiny real Runner (CPU)."""
import glob
import os.path as osp

import pytest
from lbc_toy import build_runner, toy_cfg  # noqa: I100  (tests/test_hooks on path)

from lbc_mm.hooks import LBCHook
from lbc_mm.sparsity import card

C24 = 6


def _log_lines(runner) -> list:
    with open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]) as f:
        return f.read().splitlines()


def _hook(runner) -> LBCHook:
    return next(h for h in runner.hooks if isinstance(h, LBCHook))


def test_settledness_logged_at_every_card_step_and_end(tmp_path):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5))  # removal over 6 of 12 iters
    cfg['log_level'] = 'INFO'
    runner = build_runner(cfg)
    runner.train()
    log_lines = _log_lines(runner)
    steps = [line for line in log_lines if 'card step at iteration' in line]
    cards = [card(it, C24, 0, 6, 3) for it in range(0, 13)]
    changes = [it for it in range(1, 13) if cards[it] < cards[it - 1]]
    assert len(steps) == len(changes)
    for line, it in zip(steps, changes):
        assert f'iteration {it} ' in line and 'magnitude choice' in line
    final = [line for line in log_lines if 'settledness of the last card step' in line]
    assert len(final) == 1 and f'(iteration {changes[-1]})' in final[0]
    diag = _hook(runner).diagnostics
    assert 0.0 <= diag['agree_mag'] <= 1.0
    assert diag['chance_agree'] == pytest.approx(1 / C24)
    assert diag['margin_steps'] >= 0 and diag['score_spread'] >= 0
    assert 0.0 <= diag['unmoved'] <= diag['tied'] <= 1.0
    scalars = runner.message_hub.log_scalars
    for key in ('agree_mag', 'margin_steps', 'score_spread', 'tied', 'unmoved'):
        assert f'train/lbc_{key}' in scalars, key
    assert scalars['train/lbc_agree_mag'].current() == pytest.approx(
        diag['agree_mag'])


def test_short_window_is_flagged_unsettled(tmp_path):
    # Removal within two iterations: the margin rests on one iteration's movement.
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=2, unit='iter'), length=4)
    cfg['log_level'] = 'INFO'
    runner = build_runner(cfg)
    runner.train()
    log_lines = _log_lines(runner)
    diag = _hook(runner).diagnostics
    final = [line for line in log_lines if 'settledness of the last card step' in line]
    assert len(final) == 1
    # The short-window verdict is about the groups whose scores moved.
    short = diag.get('margin_steps', float('inf')) < LBCHook.UNSETTLED_STEPS
    assert short == ('longer removal window' in final[0])
    assert (diag['unmoved'] >= 0.5) == ('never moved (no gradient' in final[0])
