"""Atomic writes: a failure mid-write leaves neither the final file nor a temp."""
import os

import pytest
import torch

from lbc_mm.export.io import atomic_torch_save


def _failing_save(exc):

    def save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a zip file')  # some bytes hit the disk first
        raise exc

    return save


@pytest.mark.parametrize('exc', [OSError('disk full'), KeyboardInterrupt()])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, exc):
    target = tmp_path / 'model.pth'
    monkeypatch.setattr(torch, 'save', _failing_save(exc))
    with pytest.raises(type(exc)):
        atomic_torch_save({'w': torch.ones(3)}, str(target))
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / 'model.pth'
    atomic_torch_save({'w': torch.ones(3)}, str(target))
    monkeypatch.setattr(torch, 'save', _failing_save(OSError('boom')))
    with pytest.raises(OSError):
        atomic_torch_save({'w': torch.zeros(3)}, str(target))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ['model.pth']
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.ones(3))


def test_success_writes_only_the_final_file(tmp_path):
    target = tmp_path / 'sub' / 'model.pth'
    atomic_torch_save({'w': torch.arange(4)}, str(target))
    assert os.listdir(tmp_path / 'sub') == ['model.pth']
    assert torch.equal(torch.load(target, weights_only=True)['w'], torch.arange(4))
