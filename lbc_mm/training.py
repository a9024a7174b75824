"""The training sequence, written once: ``tools/train.py`` and each run of the
method study (:func:`lbc_mm.study.run.run_one`) call it with a merged config.

Before the Runner is built: the lbc_mm settings (:mod:`lbc_mm.config_check`) and
the datasets (:func:`lbc_mm.cli.find_missing_data`), one line and exit 2 each. Then
distributed set-up, the Runner, and the checkpoint it resumes from or loads
(:func:`lbc_mm.cli.check_runner_checkpoint`, one line and exit 1). An error that
stops training with a message that says it all is one line and exit 1
(:func:`lbc_mm.tool_exit.exit_on_run_error`).
"""
import logging
import sys

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner, find_latest_checkpoint

from .cli import build_runner, check_runner_checkpoint, find_missing_data
from .tool_exit import exit_on_run_error

__all__ = ['prepare_training', 'run_training']


def prepare_training(cfg: Config, launcher: str = 'none') -> Runner:
    """Check a merged config, set up distributed training and build its Runner.

    Args:
        cfg (Config): The config with the command line merged.
        launcher (str): ``none`` / ``pytorch`` / ``slurm`` / ``mpi``.

    Returns:
        Runner: Built; its checkpoint to resume from / load checked.

    Raises:
        SystemExit: 2 for a config or data problem, 1 for a checkpoint that does
            not fit (one line on stderr each).
    """
    from .config_check import exit_on_config_error
    from .dist import setup_distributed
    from .hooks.checkpoint import LAST_CHECKPOINT

    # lbc_mm settings, e.g. an LBCHook without the scores' optimizer constructor
    # (the config says it; nothing adds it): one line, exit 2.
    exit_on_config_error(cfg)
    loaders = ('train_dataloader', ) + (
        ('val_dataloader', ) if cfg.get('val_cfg', None) is not None else ())
    missing = find_missing_data(cfg, loaders)
    if missing is not None:
        print(missing, file=sys.stderr)
        raise SystemExit(2)
    setup_distributed(cfg, launcher)
    runner = build_runner(cfg)
    if cfg.get('resume', False):  # the checkpoint mmengine will resume from
        resume_from = cfg.get('load_from', None) or find_latest_checkpoint(
            runner.work_dir)
        if resume_from:  # of another pattern / model: refuse before training
            check_runner_checkpoint(runner, resume_from)
        else:  # mmengine would start from scratch without a word
            print_log(f'--resume: no checkpoint in {runner.work_dir} yet (no '
                      f'{LAST_CHECKPOINT}: the run stopped before its first '
                      'checkpoint); training starts from scratch', logger='current',
                      level=logging.WARNING)
    elif cfg.get('load_from', None):  # fine-tuning may fit partially; must be sound
        check_runner_checkpoint(runner, cfg.load_from, allow_partial=True)
    return runner


def run_training(runner: Runner) -> None:
    """``runner.train()``; an error whose message says it all is one line, exit 1
    (any other keeps its traceback)."""
    try:
        runner.train()
    except Exception as exc:
        exit_on_run_error(exc, runner)
        raise
