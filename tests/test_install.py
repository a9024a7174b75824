"""Installing next to a user's stack: version ranges, not pins; mmdet and mmpretrain
as extras, and lbc_mm usable with only one of them.

"Not installed" is simulated in a subprocess by hiding the package from Python's
path finder (``importlib.util.find_spec`` returns None and ``import`` fails, as
without the package); the fresh-venv install itself is a manual check
(docs/get_started.md lists the tested set).
"""
import importlib.metadata
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DET_CFG = osp.join(REPO, 'configs/demo/mask-rcnn_r50-lbc-2of4_fpn_demo-shapes.py')
CLS_CFG = osp.join(REPO, 'configs/demo/lbc-2of4_resnet50_1xb8_demo-shapes.py')

# Wraps the path finder so that the named top-level packages are not found.
HIDE = '''
import importlib.machinery, sys
HIDDEN = {hidden!r}
class Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hide(f) if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
'''


def _run(hidden, code, *argv):
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               MPLBACKEND='Agg')
    return subprocess.run([sys.executable, '-c', HIDE.format(hidden=hidden) + code,
                           *argv], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)


def test_requirements_are_ranges_and_the_libraries_are_extras():
    reqs = importlib.metadata.requires('lbc_mm')
    assert not [r for r in reqs if '==' in r.split(';')[0]], reqs
    core = [r.split(';')[0] for r in reqs if ';' not in r]
    assert not [r for r in core if r.startswith(('mmdet', 'mmpretrain'))], core
    assert any(r.startswith('mmengine') and '<' in r for r in core), core

    def extra(name):
        return {r.split(';')[0].split('<')[0].split('>')[0] for r in reqs
                if f'extra == "{name}"' in r}

    assert extra('det') == {'mmdet'} and extra('cls') == {'mmpretrain'}
    assert extra('all') == {'mmdet', 'mmpretrain'}
    assert {'sphinx', 'myst-parser', 'furo'} <= extra('docs')


def test_mmdet_only_install_imports_registers_and_builds():
    code = '''
import sys
import lbc_mm
from mmengine.registry import MODELS, HOOKS
from lbc_mm.apis import build_model, load_config
from lbc_mm.config_check import find_config_error
assert MODELS.get('NMSparseConv') and MODELS.get('NMSparsify') and HOOKS.get('LBCHook')
cfg = load_config(sys.argv[1])
cfg.model.backbone.init_cfg = None
model, scope = build_model(cfg)
assert scope == 'mmdet' and type(model).__name__ == 'MaskRCNN', scope
assert type(model.backbone.layer1[0].conv1).__name__ == 'NMSparseConv'
assert 'mmpretrain' not in sys.modules, 'mmpretrain was imported'
print(find_config_error(load_config(sys.argv[2]), training=False))
'''
    proc = _run({'mmpretrain'}, code, DET_CFG, CLS_CFG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        "config error: default_scope: 'mmpretrain' needs mmpretrain, which is not "
        'installed; pip install "lbc_mm[cls]" (or "lbc_mm[all]")')


@pytest.mark.parametrize('hidden,config,extra', [
    ('mmpretrain', CLS_CFG, 'cls'), ('mmdet', DET_CFG, 'det')])
def test_train_names_the_missing_extra_in_one_line(hidden, config, extra):
    code = ('import runpy, sys; sys.argv = ["tools/train.py", sys.argv[1]]; '
            'runpy.run_path("tools/train.py", run_name="__main__")')
    proc = _run({hidden}, code, config)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"config error: default_scope: '{hidden}' needs {hidden}, which is not "
        f'installed; pip install "lbc_mm[{extra}]" (or "lbc_mm[all]")')


def test_mmpretrain_only_install_builds_a_classifier():
    code = '''
import sys
import lbc_mm
from lbc_mm.apis import build_model, load_config
model, scope = build_model(load_config(sys.argv[1]))
assert scope == 'mmpretrain' and 'mmdet' not in sys.modules
print(type(model.backbone.layer1[0].conv1).__name__)
'''
    proc = _run({'mmdet'}, code, CLS_CFG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'NMSparseConv'


def _file_tool_argv(tool, config, tmp):
    """Arguments that reach the tool's model build (no trained file needed)."""
    model_file = osp.join(tmp, 'epoch_1.pth')
    return {'convert': [config, model_file, osp.join(tmp, 'out.pth')],
            'get_flops': [config],
            'benchmark': [config, '--dry-run-cpu', '--out-json',
                          osp.join(tmp, 'bench.json')],
            'export_onnx': [config, '--random-weights', '--no-trt',
                            '--out', osp.join(tmp, 'model.onnx')]}[tool]


@pytest.mark.parametrize('tool', ['convert', 'get_flops', 'benchmark', 'export_onnx'])
def test_file_tools_name_the_missing_extra_in_one_line(tool, tmp_path):
    """Not ``ModuleNotFoundError: No module named 'mmpretrain'`` and a traceback."""
    torch_save = ('import torch; torch.save({"state_dict": {}}, '
                  f'{str(tmp_path / "epoch_1.pth")!r}); ')
    code = (torch_save + f'import runpy, sys; sys.argv = ["tools/{tool}.py"] + '
            f'sys.argv[1:]; runpy.run_path("tools/{tool}.py", run_name="__main__")')
    proc = _run({'mmpretrain'}, code, *_file_tool_argv(tool, CLS_CFG, str(tmp_path)))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith('error: ') and line.endswith(
        "'mmpretrain' needs mmpretrain, which is not installed; "
        'pip install "lbc_mm[cls]" (or "lbc_mm[all]")'), line
