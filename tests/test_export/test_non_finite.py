"""A checkpoint of a diverged run: the export names the non-finite weights instead
of blaming N:M (a NaN survives mask baking and looks like a broken group)."""
import importlib.util
import os.path as osp

import pytest
import torch

from lbc_mm.export import export_checkpoint
from lbc_mm.export.bake import NonFiniteWeightsError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LAYER = 'backbone.layer2.0.conv1'


@pytest.fixture
def nan_ckpt(tiny, tmp_path):
    ckpt = torch.load(tiny['ckpt'], map_location='cpu', weights_only=True)
    ckpt['state_dict'][f'{LAYER}.weight'][0, 0, 0, 0] = float('nan')
    path = str(tmp_path / 'diverged.pth')
    torch.save(ckpt, path)
    return path


def test_export_names_the_non_finite_layer(tiny, nan_ckpt, tmp_path):
    with pytest.raises(NonFiniteWeightsError) as info:
        export_checkpoint(tiny['sparse'], nan_ckpt, str(tmp_path / 'out.pth'))
    message = str(info.value)
    assert message.startswith(f'non-finite weights in 1 tensor: {LAYER}.weight')
    assert 'not N:M' not in message
    assert not (tmp_path / 'out.pth').exists()


def test_convert_tool_says_non_finite(tiny, nan_ckpt, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'lbc_tools_convert_nf', osp.join(REPO, 'tools', 'convert.py'))
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    code = convert.main([tiny['sparse'], nan_ckpt, str(tmp_path / 'out.pth')])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith(f'error: non-finite weights in 1 tensor: {LAYER}.weight'), err
