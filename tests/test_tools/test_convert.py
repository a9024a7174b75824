"""tools/convert.py: the table on success, one-line errors with exit code 1."""
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'convert.py')

SPARSE = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  base_channels=16, conv_cfg=dict(type='NMSparseConv', n=2, m=4,
                                                  method='srste')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128))
"""


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    import lbc_mm  # noqa: F401
    from lbc_mm.export import build_model, load_config
    folder = tmp_path_factory.mktemp('cli')
    cfg = folder / 'srste.py'
    cfg.write_text(SPARSE)
    model, _ = build_model(load_config(str(cfg)))
    ckpt = folder / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, ckpt)
    return folder, str(cfg), str(ckpt)


def test_converts_and_prints_the_table(setup):
    folder, cfg, ckpt = setup
    out = folder / 'out' / 'model.pth'
    proc = _run(cfg, ckpt, str(out), '--pattern', '2:4')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '| layer | pattern | shape | sparsity | dense bytes | compressed bytes |' \
        in proc.stdout
    assert '| **whole model** |' in proc.stdout
    assert sorted(os.listdir(folder / 'out')) == ['model.nm.pth', 'model.pth']


@pytest.mark.parametrize('case,expect', [
    ('missing', 'error: checkpoint not found'),
    ('pattern', "error: pattern '4:4' is not a valid N:M pattern"),
    ('mismatch', 'does not match the config'),
])
def test_errors_are_one_line(setup, tmp_path, case, expect):
    folder, cfg, ckpt = setup
    args = {'missing': [cfg, str(tmp_path / 'nope.pth'), str(tmp_path / 'o.pth')],
            'pattern': [cfg, ckpt, str(tmp_path / 'o.pth'), '--pattern', '4:4'],
            'mismatch': [cfg.replace('srste.py', 'other.py'), ckpt,
                         str(tmp_path / 'o.pth')]}[case]
    if case == 'mismatch':
        with open(args[0], 'w') as f:
            f.write(SPARSE.replace('num_classes=10', 'num_classes=7'))
    proc = _run(*args)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and expect in err[0], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path) in ([], ['other.py'])
