"""The training sequence, written once: ``tools/train.py`` and each run of the
method study call it with a merged config; ``tools/test.py`` shares its first steps
(:func:`build_checked_runner`). Config and data problems are one line and exit 2, a
checkpoint that does not fit and an error whose message says it all one line and
exit 1.
"""
import logging
from typing import Tuple

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner, find_latest_checkpoint

from .cli import check_runner_checkpoint, find_missing_data
from .tool_exit import exit_on_run_error, fail

__all__ = ['build_checked_runner', 'prepare_training', 'run_training']


def build_checked_runner(cfg: Config, launcher: str, loaders: Tuple[str, ...],
                         training: bool = True) -> Runner:
    """Check the lbc_mm settings (:mod:`lbc_mm.config_check`) and the datasets of
    ``loaders`` (exit 2 each), set up distributed and build the Runner
    (``runner_type`` if set, else mmengine's)."""
    from .config_check import exit_on_config_error
    from .dist import init_cpu_dist, set_model_wrapper
    exit_on_config_error(cfg, training)
    missing = find_missing_data(cfg, loaders)
    if missing is not None:
        fail(missing, 2)
    init_cpu_dist(launcher)
    set_model_wrapper(cfg, launcher)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def prepare_training(cfg: Config, launcher: str = 'none') -> Runner:
    """Check a merged config, set up distributed training and build its Runner, its
    checkpoint to resume from / load checked (``SystemExit`` 2 for a config or data
    problem, 1 for a checkpoint that does not fit)."""
    from .hooks.checkpoint import LAST_CHECKPOINT
    loaders = ('train_dataloader', ) + (
        ('val_dataloader', ) if cfg.get('val_cfg', None) is not None else ())
    runner = build_checked_runner(cfg, launcher, loaders)
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
