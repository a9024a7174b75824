"""The end-of-training checks say so in the log when they pass."""
import pytest
from lbc_toy import build_runner, toy_cfg  # noqa: I100


@pytest.mark.parametrize('ema', [False, True])
def test_passing_checks_log_one_line(tmp_path, ema):
    cfg = toy_cfg(str(tmp_path), hook=dict(t_f=0.5), custom_hooks=(
        [dict(type='EMAHook', momentum=0.5)] if ema else []))
    cfg['log_level'] = 'INFO'
    runner = build_runner(cfg)
    runner.train()
    with open(runner.logger.log_file) as f:
        lines = [line for line in f if 'end-of-training checks passed' in line]
    assert len(lines) == 1
    ema_part = ' (EMA model too)' if ema else ''
    assert lines[0].rstrip().endswith(
        f'LBCHook: end-of-training checks passed: 2 LBC layers exactly 2:4{ema_part}; '
        'one process, no ranks to compare')
