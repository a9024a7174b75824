"""The visualisation and test-time augmentation flags of mmdet's and mmpretrain's
``tools/test.py`` (``--show``, ``--show-dir``, ``--wait-time``, ``--tta``), for
lbc_mm's ``tools/test.py``.

Those scripts are not in the pip packages, so their few config edits are repeated
here, each library's own way: mmdet turns on the ``VisualizationHook``'s ``draw`` and
sets ``test_out_dir``, mmpretrain ``enable`` and ``out_dir``; ``--tta`` wraps the model
in ``cfg.tta_model`` and tests on ``cfg.tta_pipeline``, which a detector config may
leave out (mmdet's defaults then: horizontal flip, NMS 0.5, 100 boxes per image;
mmdet's TTA merges boxes only, so a model with a mask head is refused in one line).
"""
import argparse
import copy

from mmengine.config import Config, ConfigDict


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--show``, ``--show-dir``, ``--wait-time`` and ``--tta``."""
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


def _default_det_tta(cfg: Config) -> None:
    """mmdet's ``tools/test.py`` defaults for a config without TTA settings."""
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
    """Apply the flags to ``cfg`` in place (a no-op when none is given).

    Raises:
        ValueError: ``--show`` / ``--show-dir`` without a ``VisualizationHook`` in
            ``default_hooks``, ``--tta`` on a model that predicts masks (mmdet's
            ``DetTTAModel`` merges boxes only) or on a classifier config without
            ``tta_model`` / ``tta_pipeline``.
    """
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
