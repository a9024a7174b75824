"""A checkpoint as users bring it: trained by stock mmpretrain (mmengine's Runner) in
a process that never imports lbc_mm, on generated shapes (issue 22 item 1).

:func:`stock_checkpoint` writes the data, a tiny stock config (a quarter-width
ResNet-18 classifier, the architecture of ``configs/demo/lbc-2of4_resnet18_1xb16_
demo-shapes-study.py`` without its N:M layers) and trains it for one epoch in a
subprocess, which asserts that lbc_mm stayed out of it.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import textwrap

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
STUDY_CONFIG = osp.join(REPO, 'configs', 'demo',
                        'lbc-2of4_resnet18_1xb16_demo-shapes-study.py')

_STOCK_CONFIG = '''
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16,
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=128,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
data_preprocessor = dict(num_classes=3, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32)),
            dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='CustomDataset', data_root={root!r}, data_prefix='train',
                 pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
train_cfg = dict(by_epoch=True, max_epochs=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1),
                     logger=dict(type='LoggerHook', interval=1))
randomness = dict(seed=0)
'''

# What a user's stock training does (mmpretrain's tools/train.py: Config.fromfile,
# Runner.from_cfg, train), checking that nothing imported lbc_mm.
_TRAIN = textwrap.dedent('''
    import sys
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(sys.argv[1])
    cfg.work_dir = sys.argv[2]
    Runner.from_cfg(cfg).train()
    assert 'lbc_mm' not in sys.modules, 'lbc_mm was imported'
    ''')


def make_shapes(root: str) -> str:
    """A few generated shape images in mmpretrain's ``CustomDataset`` layout."""
    spec = importlib.util.spec_from_file_location(
        'make_demo_data', osp.join(REPO, 'tools', 'make_demo_data.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(root, image_size=32, num_train=1, num_val=1, cls_image_size=32,
                    cls_train_per_class=4, cls_val_per_class=1)
    return osp.join(root, 'cls')


def stock_checkpoint(folder: str) -> dict:
    """Train the stock model in ``folder``; its config, checkpoint, work dir, data."""
    data = make_shapes(osp.join(folder, 'data'))
    config = osp.join(folder, 'stock_cfg.py')
    with open(config, 'w') as f:
        f.write(_STOCK_CONFIG.format(root=data))
    work = osp.join(folder, 'stock_work')
    env = dict(os.environ, LBC_MM_NO_CONFIG_HOOK='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', _TRAIN, config, work], env=env,
                          cwd=folder, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return dict(config=config, checkpoint=osp.join(work, 'epoch_1.pth'), work=work,
                data=data)
