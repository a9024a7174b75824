"""The worked examples of configs/examples/README.md, run the way a user runs them:
``tools/train.py`` / ``tools/test.py`` / ``tools/convert.py`` in subprocesses on
generated demo data (2 train images, 2 iterations, CPU).

- keep chosen layers dense: ``NMSparsify`` + ``exclude`` around Mask R-CNN;
- mixed patterns: backbone 2:4 + neck 2:8 by nested ``NMSparsify``;
- ``--cfg-options custom_hooks.0.t_f=...``: a ``t_f`` after the end of training is
  one line naming that fix, and the fix it names trains;
- ``tools/test.py --show-dir --tta`` on the LBC checkpoint and on the converted one
  (the boxes-only example: mmdet's TTA merges no masks, and a Mask R-CNN is refused
  in one line).
"""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = 'configs/demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py'
DENSE_LAYER4 = 'configs/examples/mask-rcnn_r50-lbc-2of4-dense-layer4_fpn_demo-shapes.py'
MIXED = 'configs/examples/mask-rcnn_r50-lbc-2of4-neck-2of8_fpn_demo-shapes.py'
BOXES = 'configs/examples/faster-rcnn_r50-lbc-2of4_fpn_demo-shapes.py'
TWO_ITERS = ['train_cfg.max_epochs=2']  # 2 images, batch 4: one iteration per epoch


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
                MPLBACKEND='Agg')


def _tool(cwd, name, *args, timeout=600):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', name), *args],
                          cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """A folder holding ``data/demo`` (2 train, 1 val image), where the configs'
    relative ``data_root`` points."""
    root = tmp_path_factory.mktemp('examples')
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'make_demo_data.py'),
                    str(root / 'data' / 'demo'), '--num-train', '2', '--num-val', '1',
                    '--cls-train-per-class', '1', '--cls-val-per-class', '1'],
                   check=True, capture_output=True, timeout=300)
    return root


def _train(workdir, config, name, *options):
    work = workdir / name
    proc = _tool(workdir, 'train.py', osp.join(REPO, config), '--work-dir', str(work),
                 '--cfg-options', *TWO_ITERS, *options)
    return proc, work


def _scores(ckpt):
    state = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
    return {k[:-len('.scores')]: v.shape for k, v in state.items()
            if k.endswith('.scores')}


def test_exclude_keeps_the_named_layers_dense(workdir):
    proc, work = _train(workdir, DENSE_LAYER4, 'dense_layer4')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'NMSparsify: 42 layers made 2:4 lbc' in proc.stdout + proc.stderr
    scores = _scores(work / 'epoch_2.pth')
    # ResNet-50: 52 convs but the stem; layer4's 9 convs + 1 downsample stay dense
    assert len(scores) == 42
    assert not [k for k in scores if k.startswith(('backbone.layer4', 'neck',
                                                   'roi_head', 'rpn_head'))]
    assert 'backbone.conv1' not in scores
    assert 'end-of-training checks passed: 42 LBC layers exactly 2:4' in proc.stdout


def test_nested_nmsparsify_mixes_patterns(workdir):
    proc, work = _train(workdir, MIXED, 'mixed')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    scores = _scores(work / 'epoch_2.pth')
    backbone = {k: s for k, s in scores.items() if k.startswith('backbone.')}
    neck = {k: s for k, s in scores.items() if k.startswith('neck.')}
    assert len(backbone) == 52 and len(neck) == 8  # FPN: 4 lateral + 4 output convs
    assert {s[1] for s in backbone.values()} == {6}  # C(4, 2) candidates
    assert {s[1] for s in neck.values()} == {28}  # C(8, 2)
    assert 'end-of-training checks passed: 60 LBC layers' in proc.stdout


@pytest.fixture(scope='module')
def lbc_run(workdir):
    """The t_f fix the error names, taken from the error and run."""
    proc, _ = _train(workdir, BOXES, 'late_tf', 'custom_hooks.0.unit=epoch',
                     'custom_hooks.0.t_f=20')
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    fix = re.search(r'--cfg-options (custom_hooks\.0\.t_f=\S+)$', lines[-1])
    assert fix, proc.stderr[-2000:]
    assert 'after the end of training' in lines[-1] and 'Traceback' not in proc.stderr
    proc, work = _train(workdir, BOXES, 'fixed_tf', 'custom_hooks.0.unit=epoch',
                        fix.group(1))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert fix.group(1) == 'custom_hooks.0.t_f=1'  # half of the 2 epochs
    return work


def test_cfg_options_fix_named_by_the_t_f_error_trains(lbc_run):
    assert (lbc_run / 'epoch_2.pth').is_file()


def _images(folder):
    return [f for _, _, files in os.walk(folder) for f in files
            if f.endswith(('.png', '.jpg'))]


def _test_show_tta(workdir, config, ckpt, name):
    work = workdir / name
    proc = _tool(workdir, 'test.py', config, ckpt, '--work-dir', str(work),
                 '--show-dir', 'vis', '--tta')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'coco/bbox_mAP' in proc.stdout
    assert len(_images(work)) == 1  # one val image drawn under <work>/<time>/vis
    return proc


def test_show_dir_and_tta_on_the_lbc_and_the_converted_checkpoint(workdir, lbc_run):
    _test_show_tta(workdir, osp.join(REPO, BOXES), str(lbc_run / 'epoch_2.pth'),
                   'test_lbc')
    out = workdir / 'export' / 'model.pth'
    proc = _tool(workdir, 'convert.py', osp.join(REPO, BOXES),
                 str(lbc_run / 'epoch_2.pth'), str(out), '--pattern', '2:4')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _test_show_tta(workdir, str(workdir / 'export' / 'model.py'), str(out),
                   'test_stock')


def test_tta_on_a_mask_rcnn_is_one_line(workdir, lbc_run):
    proc = _tool(workdir, 'test.py', osp.join(REPO, DEMO), str(lbc_run / 'epoch_2.pth'),
                 '--tta')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --tta: mmdet's DetTTAModel merges boxes only and this model predicts "
        'masks (a mask_head); test it without --tta')


def test_tta_without_tta_settings_on_a_classifier_is_one_line(workdir, lbc_run):
    proc = _tool(workdir, 'test.py',
                 osp.join(REPO, 'configs/demo/lbc-2of4_resnet50_1xb8_demo-shapes.py'),
                 str(lbc_run / 'epoch_2.pth'), '--tta')
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        'error: --tta needs tta_model and tta_pipeline in the config')
