"""N:M layers that stay dense (input channels not divisible by M) are a warning with
their count, and the end-of-training line counts them (issue 22 item 7): a 2:3 run
trained most layers dense and logged only "checks passed"."""
import glob
import os.path as osp

from compare_toy import cm_cfg  # setup.cfg's pytest pythonpath
from lbc_toy import build_runner, reset_mmengine_globals


def test_dense_fallbacks_are_a_warning_and_counted_at_the_end(tmp_path):
    cfg = cm_cfg(str(tmp_path), iters=8)
    cfg['model']['linear_cfg']['m'] = 3  # fc: 8 input features, not a multiple of 3
    cfg['log_level'] = 'INFO'
    runner = build_runner(cfg)
    try:
        runner.train()
        text = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
    finally:
        reset_mmengine_globals()
    assert ('WARNING - LBCHook: 1 of 2 N:M layers stay dense (input channels not '
            'divisible by M): fc (8, 8) (2:3)') in text
    assert ('LBCHook: end-of-training checks passed: 1 LBC layers exactly 2:4; 1 N:M '
            'layers stayed dense (input channels not divisible by M); one process'
            ) in text
