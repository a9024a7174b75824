"""lbc_mm.compat: transformers>=5 vs mmpretrain, weights-only resume, config prefix."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

from lbc_mm import compat


@pytest.mark.parametrize('version,breaks', [
    ('5.0.0', True), ('5.17.0', True), ('4.57.1', False), ('4.28.0', False)])
def test_transformers_version_judgement(version, breaks):
    assert compat.transformers_breaks_mmpretrain(version) is breaks


def test_installed_transformers_judged_through_metadata(monkeypatch):
    monkeypatch.setattr(compat, 'installed_version',
                        lambda name: '5.17.0' if name == 'transformers' else None)
    assert compat.transformers_breaks_mmpretrain()
    monkeypatch.setattr(compat, 'installed_version', lambda name: None)
    assert not compat.transformers_breaks_mmpretrain()


def _fake_new_transformers(root):
    """A transformers 5 look-alike: version 5.0.0; names mmpretrain 1.2.0 subclasses
    come back as None, which is how transformers 5 breaks it ("NoneType takes no
    arguments"). mmengine's optional ``Adafactor`` import still works, as in 5.x."""
    pkg = os.path.join(root, 'transformers')
    os.makedirs(pkg)
    with open(os.path.join(pkg, '__init__.py'), 'w') as f:
        f.write(textwrap.dedent('''
            __version__ = '5.0.0'

            class Adafactor:
                pass

            def __getattr__(name):
                return None
            '''))
    # mmpretrain's multimodal code imports model internals; here they fail the way
    # the real 5.x ones do under mmpretrain 1.2.0.
    os.makedirs(os.path.join(pkg, 'models'))
    with open(os.path.join(pkg, 'models', '__init__.py'), 'w') as f:
        f.write("raise TypeError('NoneType takes no arguments')\n")
    info = os.path.join(root, 'transformers-5.0.0.dist-info')
    os.makedirs(info)
    with open(os.path.join(info, 'METADATA'), 'w') as f:
        f.write('Metadata-Version: 2.1\nName: transformers\nVersion: 5.0.0\n')


def _run(code, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          env=env, capture_output=True, text=True, timeout=300)


def test_new_transformers_breaks_mmpretrain_without_the_shim(tmp_path):
    _fake_new_transformers(tmp_path)
    proc = _run('import mmpretrain.models', tmp_path)
    assert proc.returncode != 0
    assert 'NoneType takes no arguments' in proc.stderr


def test_shim_keeps_mmdet_and_mmpretrain_importable(tmp_path):
    _fake_new_transformers(tmp_path)
    proc = _run('''
        import lbc_mm
        import mmdet.models, mmpretrain.models
        from mmpretrain.utils import dependency
        assert dependency.WITH_MULTIMODAL is False
        from mmpretrain.registry import MODELS
        assert MODELS.get('ResNet') is not None
        print('ok')
        ''', tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith('ok')


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - labels) ** 2).mean())
        return out


def _toy_dataset(n=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = torch.randn(n, 2, generator=g)
    return [dict(inputs=x[i], labels=y[i]) for i in range(n)]


def _runner(work_dir, max_epochs, resume=False, name='run'):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=_toy_dataset(), batch_size=4,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        resume=resume,
        default_scope='mmengine')


def test_runner_trains_saves_and_resumes_weights_only(tmp_path):
    runner = _runner(tmp_path, max_epochs=1, name='first')
    runner.train()
    ckpt = tmp_path / 'epoch_1.pth'
    assert ckpt.exists()
    # The checkpoint really carries mmengine's HistoryBuffer objects...
    from mmengine.logging.history_buffer import HistoryBuffer
    loaded = torch.load(ckpt, weights_only=True)
    buffers = loaded['message_hub']['log_scalars']
    assert any(isinstance(b, HistoryBuffer) for b in buffers.values())

    # ...and a second run resumes from it (auto-resume finds last_checkpoint).
    resumed = _runner(tmp_path, max_epochs=2, resume=True, name='second')
    resumed.train()
    assert resumed.epoch == 2
    assert resumed.iter == 8
    assert (tmp_path / 'epoch_2.pth').exists()


def test_checkpoint_with_pickled_callable_is_refused(tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': {'hook': os.system}},
               evil)
    from mmengine.runner import load_checkpoint

    from lbc_mm.checkpoint_io import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match='GLOBAL posix.system'):
        load_checkpoint(ToyModel(), str(evil), map_location='cpu')  # one line
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil)


def test_weights_only_stays_the_default():
    # The shim allow-lists globals; it never turns weights-only loading off.
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')
    safe = {g for g in torch.serialization.get_safe_globals()}
    assert not any(getattr(g, '__name__', '') == 'system' for g in safe)


def test_config_prefix_resolves_to_this_package():
    from mmengine.config import config as config_module
    from mmengine.config.utils import MODULE2PACKAGE

    import lbc_mm
    assert MODULE2PACKAGE['lbc_mm'] == 'lbc_mm'
    assert config_module.get_installed_path('lbc_mm') == os.path.dirname(
        lbc_mm.__file__)


def test_lbc_mm_configs_parse_before_lbc_mm_is_imported(tmp_path):
    """mmdet's / mmpretrain's own tools parse the config first: the installed
    ``lbc_mm_config_hook.pth`` registers the ``lbc_mm::`` prefix without importing
    lbc_mm (which the config's custom_imports then import)."""
    (tmp_path / 'downstream.py').write_text(
        "_base_ = 'lbc_mm::mmdet/mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py'\n")
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent('''
        import sys
        from mmengine.config import Config
        from mmengine.config.utils import MODULE2PACKAGE
        assert MODULE2PACKAGE['lbc_mm'] == 'lbc_mm'
        assert 'lbc_mm' not in sys.modules, 'the hook must not import lbc_mm'
        cfg = Config.fromfile('downstream.py')
        print(cfg.model.backbone.conv_cfg.type)
        ''')], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith('NMSparseConv')


def test_config_hook_pth_is_a_guarded_import_line(tmp_path):
    import lbc_mm_config_hook
    path = lbc_mm_config_hook.write_pth(str(tmp_path))
    line = open(path).read()
    # site.py executes .pth lines that start with "import"; the guard keeps a
    # stale .pth harmless once lbc_mm is uninstalled.
    assert line.startswith('import ') and line.count('\n') == 1
    assert "find_spec('lbc_mm_config_hook') and" in line
    assert os.listdir(tmp_path) == ['lbc_mm_config_hook.pth']


def test_config_hook_pth_belongs_to_the_installed_distribution():
    """pip records the start-up ``.pth`` (setup.py puts it into the wheel, the
    editable one included), so ``pip uninstall lbc_mm`` removes it."""
    import importlib.metadata
    files = importlib.metadata.distribution('lbc_mm').files or []
    pth = [f for f in files if f.name == 'lbc_mm_config_hook.pth']
    assert len(pth) == 1, 'lbc_mm_config_hook.pth is not in the RECORD of lbc_mm'
    assert os.path.isfile(pth[0].locate())


def test_config_hook_turned_off_by_environment_variable(tmp_path):
    """``LBC_MM_NO_CONFIG_HOOK=1``: nothing is registered at start-up; importing
    lbc_mm still registers the ``lbc_mm::`` prefix."""
    env = dict(os.environ, LBC_MM_NO_CONFIG_HOOK='1')
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent('''
        from mmengine.config.utils import MODULE2PACKAGE
        assert 'lbc_mm' not in MODULE2PACKAGE, 'the hook ran'
        import lbc_mm  # noqa: F401
        assert MODULE2PACKAGE['lbc_mm'] == 'lbc_mm'
        ''')], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_loaded_history_buffer_cannot_change_the_statistics_table(tmp_path):
    """Stock mmengine (lbc_mm not imported) writes a buffer whose pickled table maps
    'mean' to ``max`` and adds 'median'; loading it leaves the class-wide table as it
    was (issue 22 item 4)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    from lbc_mm.checkpoint_io import read_checkpoint
    path = tmp_path / 'hub.pth'
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent('''
        import sys, torch
        from mmengine.logging.history_buffer import HistoryBuffer
        HistoryBuffer._statistics_methods.update(
            mean=HistoryBuffer.max, median=HistoryBuffer.min)
        buffer = HistoryBuffer([1.0, 3.0], [1, 1])
        torch.save({'message_hub': {'log_scalars': {'loss': buffer}}}, sys.argv[1])
        assert 'lbc_mm' not in sys.modules
        '''), str(path)], env=dict(os.environ, LBC_MM_NO_CONFIG_HOOK='1'),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    HistoryBuffer()  # the defaults, as every process that logs has them
    before = dict(HistoryBuffer._statistics_methods)
    loaded = read_checkpoint(str(path))['message_hub']['log_scalars']['loss']
    assert HistoryBuffer._statistics_methods == before
    assert 'median' not in HistoryBuffer._statistics_methods
    assert loaded.mean() == 2.0 and loaded.statistics('mean') == 2.0
