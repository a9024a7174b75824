"""OpenMMLab's model index and ``mim``: one README.md + metafile.yml per config
folder, ``model-index.yml`` importing them, ``mim search / train / test lbc_mm``
from the installed package (editable here; a built wheel carries ``.mim/``)."""
import glob
import importlib.util
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FOLDERS = ('mmdet', 'mmpretrain', 'examples', 'demo')
needs_mim = pytest.mark.skipif(importlib.util.find_spec('mim') is None,
                               reason='openmim is not installed (the mim extra)')


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               MPLBACKEND='Agg')
    env.pop('LBC_MM_NO_CONFIG_HOOK', None)
    env.update(extra)
    return env


def test_model_index_imports_one_metafile_per_config_folder():
    index = _load(osp.join(REPO, 'model-index.yml'))
    assert index['Import'] == [f'configs/{d}/metafile.yml' for d in FOLDERS]
    for folder in FOLDERS:
        assert osp.isfile(osp.join(REPO, 'configs', folder, 'README.md'))


@pytest.mark.parametrize('folder', FOLDERS)
def test_metafile_lists_every_config_of_its_folder(folder):
    meta = _load(osp.join(REPO, 'configs', folder, 'metafile.yml'))
    collections = {c['Name'] for c in meta['Collections']}
    for c in meta['Collections']:
        assert osp.isfile(osp.join(REPO, c['README'])), c['README']
    listed = {m['Config'] for m in meta['Models']}
    for model in meta['Models']:
        assert model['In Collection'] in collections
        assert osp.isfile(osp.join(REPO, model['Config'])), model['Config']
        assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
        if folder != 'demo':  # only the CPU demo has been trained: no invented numbers
            assert 'Results' not in model and 'Weights' not in model, model['Name']
    present = {osp.relpath(p, REPO) for p in
               glob.glob(osp.join(REPO, 'configs', folder, '*.py'))}
    assert present <= listed, f'configs without a metafile entry: {present - listed}'


@needs_mim
def test_mim_search_lists_the_configs():
    proc = subprocess.run([sys.executable, '-m', 'mim', 'search', 'lbc_mm',
                           '--field', 'config'], capture_output=True, text=True,
                          env=_env(COLUMNS='200'), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ('mask-rcnn_r50-lbc-2of4_fpn_1x_coco', 'lbc-2of4_resnet50_8xb32_in1k',
                 'mask-rcnn_r50-lbc-2of4_fpn_demo-shapes'):
        assert name in proc.stdout, proc.stdout[-3000:]


@needs_mim
def test_mim_train_and_test_find_the_config_and_tools(tmp_path):
    """``mim train lbc_mm NAME`` finds NAME under ``lbc_mm/.mim/configs`` and runs
    ``.mim/tools/train.py`` (1 epoch of the study recipe on 6 tiny images); ``mim
    test`` evaluates the checkpoint with ``.mim/tools/test.py``."""
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'make_demo_data.py'),
                    str(tmp_path / 'data' / 'demo_study'), '--num-train', '1',
                    '--num-val', '1', '--cls-train-per-class', '2',
                    '--cls-val-per-class', '1', '--cls-image-size', '32'],
                   check=True, capture_output=True, timeout=120)
    name = 'lbc-2of4_resnet18_1xb16_demo-shapes-study.py'
    work = str(tmp_path / 'work')
    opts = ['--cfg-options', 'train_cfg.max_epochs=1', 'train_dataloader.batch_size=6',
            'default_hooks.logger.interval=1']
    train = subprocess.run(
        [sys.executable, '-m', 'mim', 'train', 'lbc_mm', name, '--work-dir', work]
        + opts, cwd=tmp_path, capture_output=True, text=True, env=_env(),
        timeout=600)
    out = train.stdout + train.stderr
    assert train.returncode == 0, out[-4000:]
    assert osp.join('.mim', 'tools', 'train.py') in out, out[-3000:]
    assert 'Training finished successfully' in out
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    test = subprocess.run(
        [sys.executable, '-m', 'mim', 'test', 'lbc_mm', name, '--checkpoint', ckpt,
         '--work-dir', work], cwd=tmp_path, capture_output=True, text=True,
        env=_env(), timeout=600)
    out = test.stdout + test.stderr
    assert test.returncode == 0, out[-4000:]
    assert 'accuracy/top1' in out and osp.join('.mim', 'tools', 'test.py') in out


def test_wheel_ships_model_index_configs_and_tools(tmp_path):
    """A regular (non-editable) build copies ``.mim/`` into the wheel: what mim
    reads from site-packages (installed from the wheel, without the start-up hook,
    ``mim search`` works)."""
    src = tmp_path / 'src'
    files = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    files += [osp.relpath(p, REPO) for p in  # new, not yet committed
              glob.glob(osp.join(REPO, 'configs', '*', '*.yml'))
              + glob.glob(osp.join(REPO, 'configs', '*', 'README.md'))]
    for rel in set(files):
        if osp.isfile(osp.join(REPO, rel)):
            os.makedirs(osp.dirname(src / rel), exist_ok=True)
            shutil.copy2(osp.join(REPO, rel), src / rel)
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                           '--no-build-isolation', str(src), '-w',
                           str(tmp_path / 'dist')], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel, = glob.glob(str(tmp_path / 'dist' / 'lbc_mm-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ('lbc_mm/.mim/model-index.yml', 'lbc_mm/.mim/tools/train.py',
                 'lbc_mm/.mim/tools/test.py', 'lbc_mm/.mim/tools/slurm_train.sh',
                 'lbc_mm/.mim/configs/mask_rcnn_r50_lbc_2of4.py',
                 'lbc_mm/.mim/configs/mmdet/metafile.yml',
                 'lbc_mm/.mim/configs/mmpretrain/README.md',
                 'lbc_mm/.mim/configs/mmpretrain/_base_/lbc_resnet50_recipe.py',
                 'lbc_mm/.mim/configs/demo/metafile.yml'):
        assert want in names, want
    if importlib.util.find_spec('mim') is None:
        return
    # installed as a regular package (first on the path), mim reads its .mim/ as is
    target = str(tmp_path / 'site')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--target', target, wheel], check=True, capture_output=True,
                   timeout=300)
    proc = subprocess.run([sys.executable, '-m', 'mim', 'search', 'lbc_mm', '--field',
                           'config'], capture_output=True, text=True, timeout=300,
                          env=_env(PYTHONPATH=target, LBC_MM_NO_CONFIG_HOOK='1'),
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'config id: lbc-2of4_resnet50_8xb32_in1k' in proc.stdout


@needs_mim
def test_mim_download_says_in_one_line_that_no_weights_are_published(tmp_path):
    """No model of the index has ``Weights`` (nothing is published); mim itself
    would end in a 45-line ``ValueError`` traceback."""
    proc = subprocess.run([sys.executable, '-m', 'mim', 'download', 'lbc_mm',
                           '--config', 'mask-rcnn_r50-lbc-2of4_fpn_1x_coco',
                           '--dest', str(tmp_path)], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    # mim's own imports warn about pkg_resources first; then the one line
    assert proc.stderr.strip().splitlines()[-1] == (
        'mim download lbc_mm: no trained weights are published yet; train the config '
        'instead (mim train lbc_mm CONFIG; configs: mim search lbc_mm)')
    assert os.listdir(tmp_path) == []
