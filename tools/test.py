"""Evaluate a checkpoint of an mmdet or mmpretrain model trained with lbc_mm.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show] [--show-dir DIR] [--tta] [--allow-partial]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [ARGS...]

The config's ``default_scope`` picks the library. The config, the test dataset, an
``--out`` path and the checkpoint (a file or a URL, read weights-only; it must fit
the config unless ``--allow-partial``) are checked before the evaluation, each
problem in one line (docs/user_guides/failure_behaviour.md). ``--show`` /
``--show-dir`` / ``--tta`` act as in mmdet's and mmpretrain's ``tools/test.py``
(not in their pip packages, so their config edits are repeated here).
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import argparse
import copy
import logging
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from lbc_mm.apis import load_config
from lbc_mm.cli import apply_runner_args, check_runner_checkpoint, parse_runner_args
from lbc_mm.dist import teardown_distributed
from lbc_mm.io import check_writable
from lbc_mm.tool_exit import fail
from lbc_mm.training import build_checked_runner


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (mmdet / mmpretrain ``tools/test.py`` style)."""
    parser = argparse.ArgumentParser(description='Test a model trained with lbc_mm')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='dump the predictions to this pickle file (DumpResults)')
    parser.add_argument(
        '--allow-partial', action='store_true',
        help='evaluate even when the checkpoint does not fit the config (missing, '
        'unexpected or mis-shaped keys; those weights keep their initial values)')
    parser.add_argument('--show', action='store_true',
                        help='show the predictions in a window')
    parser.add_argument(
        '--show-dir', help='draw the predictions into images under '
        '<work_dir>/<timestamp>/SHOW_DIR (detection) or SHOW_DIR (classification)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each shown image stays (--show)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (the config\'s tta_model and '
                        'tta_pipeline; mmdet\'s flip defaults for a detector)')
    return parse_runner_args(parser, 'test_dataloader', argv)


def _default_det_tta(cfg: Config) -> None:
    """mmdet's ``tools/test.py`` defaults for a config without TTA settings:
    horizontal flip, NMS 0.5, 100 boxes per image."""
    cfg.setdefault('tta_model', dict(
        type='DetTTAModel',
        tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)))
    if 'tta_pipeline' not in cfg:
        data = cfg.test_dataloader.dataset
        while 'dataset' in data:
            data = data['dataset']
        pipeline = copy.deepcopy(data.pipeline)
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [dict(type='PackDetInputs',
                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                             'scale_factor', 'flip', 'flip_direction'))]])
        cfg.tta_pipeline = pipeline


def _has_mask_head(model_cfg) -> bool:
    """Whether a (possibly ``NMSparsify``-wrapped) model config predicts masks."""
    if isinstance(model_cfg, dict):
        return model_cfg.get('mask_head') is not None or any(
            _has_mask_head(v) for v in model_cfg.values())
    return False


def apply_eval_flags(cfg: Config, args: argparse.Namespace) -> None:
    """``--show`` / ``--show-dir`` / ``--tta`` into ``cfg``, each library's own way;
    ``ValueError`` for a flag the config cannot take."""
    if args.show or args.show_dir:
        hook = cfg.get('default_hooks', {}).get('visualization')
        if hook is None:
            raise ValueError("--show / --show-dir need default_hooks.visualization "
                             "(e.g. dict(type='VisualizationHook'))")
        if cfg.default_scope == 'mmdet':
            hook.update(draw=True, show=args.show, wait_time=args.wait_time)
            if args.show_dir:
                hook['test_out_dir'] = args.show_dir
        else:
            hook.update(enable=True, show=args.show, wait_time=args.wait_time,
                        out_dir=args.show_dir)
    if args.tta:
        if cfg.default_scope == 'mmdet':
            if _has_mask_head(cfg.model):
                raise ValueError("--tta: mmdet's DetTTAModel merges boxes only and "
                                 'this model predicts masks (a mask_head); test it '
                                 'without --tta')
            _default_det_tta(cfg)
        missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
        if missing:
            raise ValueError(f'--tta needs {" and ".join(missing)} in the config')
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config (in place) and return it."""
    apply_runner_args(cfg, args)
    try:
        apply_eval_flags(cfg, args)
    except ValueError as exc:  # a flag the config cannot take: one line, exit 1
        raise SystemExit(f'error: {exc}') from None
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must be a .pkl or .pickle file, got {args.out}')
        evaluator = cfg.test_evaluator
        evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [
            evaluator]
        cfg.test_evaluator = evaluators + [
            dict(type='DumpResults', out_file_path=args.out)]
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, merge, check checkpoint and data, set up distributed, test."""
    args = parse_args(argv)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        fail(f'Checkpoint not found: {args.checkpoint}', 2)
    try:
        cfg = load_config(args.config)
        if args.out is not None:  # fail now, not after the whole evaluation
            check_writable(args.out)
    except FileNotFoundError as exc:
        fail(f'error: {exc}', 2)
    except OSError as exc:
        fail(f'error: cannot write {exc.filename} (--out): {exc.strerror}', 1)
    merge_args(cfg, args)
    runner = build_checked_runner(cfg, args.launcher, ('test_dataloader', ),
                                  training=False)
    problem = check_runner_checkpoint(
        runner, args.checkpoint, allow_partial=args.allow_partial,
        hint=' (--allow-partial evaluates it anyway)')
    if problem is not None:
        print_log(f'--allow-partial: {problem}', logger='current',
                  level=logging.WARNING)
    runner.test()
    del runner  # its DDP model holds the process group (see lbc_mm/dist.py)
    teardown_distributed()  # after success only


if __name__ == '__main__':
    from lbc_mm.tool_exit import run_tool
    sys.exit(run_tool(lambda: main() or 0))  # SIGTERM: one line, exit 143
