"""A downstream project outside the repo inherits an lbc_mm config and trains.

The user's config lives in a temporary directory and says only
``_base_ = 'lbc_mm::demo/...'`` plus its own data path; the run happens in a
subprocess whose working directory is that temporary directory.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = 'lbc_mm::demo/lbc-2of4_resnet50_1xb8_demo-shapes.py'

RUN = textwrap.dedent("""
    import lbc_mm  # registers lbc_mm:: configs, layers and hooks
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile('downstream_cfg.py')
    cfg.work_dir = 'work_dir'
    Runner.from_cfg(cfg).train()
""")


def _make_data(out):
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', os.path.join(REPO, 'tools', 'make_demo_data.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # 2 images per class x 3 classes = 6 < batch 8: exactly one iteration.
    return mod.generate(out, image_size=64, num_train=1, num_val=1, cls_image_size=32,
                        cls_train_per_class=2, cls_val_per_class=1)


def test_downstream_config_trains_one_iteration(tmp_path):
    data = _make_data(str(tmp_path / 'data'))
    (tmp_path / 'downstream_cfg.py').write_text(textwrap.dedent(f"""
        _base_ = '{BASE}'
        data_root = '{data}/cls'
        train_dataloader = dict(dataset=dict(data_root=data_root))
        val_dataloader = dict(dataset=dict(data_root=data_root))
        test_dataloader = val_dataloader
        train_cfg = dict(max_epochs=1, val_interval=1)
    """))
    env = dict(os.environ, MPLBACKEND='Agg')
    env.pop('PYTHONPATH', None)  # lbc_mm must come from the installed package
    proc = subprocess.run([sys.executable, '-c', RUN], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Epoch(train) [1][1/1]' in log
    assert 'accuracy/top1' in log  # the val loop ran on the user's data

    # weights-only, like every load in lbc_mm (compat allow-lists mmengine's globals)
    ckpt = torch.load(tmp_path / 'work_dir' / 'epoch_1.pth', map_location='cpu',
                      weights_only=True)
    state = ckpt['state_dict']
    assert ckpt['meta']['epoch'] == 1 and ckpt['meta']['iter'] == 1
    alive = {k: v for k, v in state.items() if k.endswith('.alive')}
    # 52 sparse convs (ResNet-50 without its stem); the stem and fc carry no scores.
    assert len(alive) == 52
    assert 'backbone.conv1.scores' not in state and 'head.fc.scores' not in state
    # The removal window (first half of the one-epoch run) is over: one candidate per
    # group is left in every layer, i.e. the model is exactly 2:4.
    for key, value in alive.items():
        assert (value.sum(dim=1) == 1).all(), key
