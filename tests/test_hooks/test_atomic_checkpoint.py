"""AtomicCheckpointHook: a save that fails half-way leaves the previous checkpoint
and ``last_checkpoint`` intact, and the run resumes from them."""
import errno
import glob
import os.path as osp

import pytest
import torch
from lbc_toy import build_runner, reset_mmengine_globals, toy_cfg  # noqa: I100

import lbc_mm.hooks.checkpoint as atomic_ckpt
from lbc_mm.hooks import AtomicCheckpointHook


def _cfg(work_dir, **kwargs):
    cfg = toy_cfg(str(work_dir), hook=dict(t_f=0.5), **kwargs)
    cfg['default_hooks']['checkpoint'] = dict(
        type='AtomicCheckpointHook', by_epoch=False, interval=4, max_keep_ckpts=1)
    return cfg


def _last_checkpoint(work_dir) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read()


def _disk_full_at(monkeypatch, name: str):
    """Make the write of checkpoint file ``name`` fail half-way (ENOSPC)."""
    real = atomic_ckpt.atomic_write

    def atomic_write(path, write):
        if osp.basename(path) != name:
            return real(path, write)

        def half_then_fail(f):
            class Half:
                def write(self, data):
                    f.write(data[:len(data) // 2])
                    f.flush()
                    raise OSError(errno.ENOSPC, 'No space left on device')
            write(Half())
        return real(path, half_then_fail)

    monkeypatch.setattr(atomic_ckpt, 'atomic_write', atomic_write)


def test_failed_save_keeps_previous_checkpoint_and_resumes(tmp_path, monkeypatch):
    work = tmp_path / 'work'
    work.mkdir()
    stale = work / '.iter_4.pth.x1y2.tmp'  # left by a run killed during a save
    stale.write_bytes(b'partial')
    _disk_full_at(monkeypatch, 'iter_8.pth')
    runner = build_runner(_cfg(work))
    assert any(isinstance(h, AtomicCheckpointHook) for h in runner.hooks)
    with pytest.raises(OSError, match='No space left'):
        runner.train()
    assert not stale.exists()
    # iter_8 never appeared, iter_4 (max_keep_ckpts=1) was not deleted first,
    # last_checkpoint still names it, and no temporary file is left.
    assert not (work / 'iter_8.pth').exists()
    assert (work / 'iter_4.pth').is_file()
    assert _last_checkpoint(work) == str(work / 'iter_4.pth')
    assert glob.glob(str(work / '.*.tmp')) == []
    ckpt = torch.load(str(work / 'iter_4.pth'), map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4

    # Resume (as `tools/train.py --resume` does) and finish the run.
    monkeypatch.undo()
    reset_mmengine_globals()
    cfg = _cfg(work)
    cfg.update(resume=True, load_from=None)
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 12
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_12.pth']
    assert _last_checkpoint(work) == str(work / 'iter_12.pth')


def test_checkpoints_and_pointer_written_atomically(tmp_path):
    """A full run: the atomic backend is used, old checkpoints are pruned (after
    the new one is complete) and no temporary file is left."""
    work = tmp_path / 'work'
    runner = build_runner(_cfg(work))
    runner.train()
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_12.pth']
    assert _last_checkpoint(work) == str(work / 'iter_12.pth')
    assert glob.glob(str(work / '.*')) == []
    hook = next(h for h in runner.hooks if isinstance(h, AtomicCheckpointHook))
    assert hook.backend_args == dict(backend=atomic_ckpt.BACKEND_NAME)
    assert list(hook.keep_ckpt_ids) == [12]


def test_remote_out_dir_keeps_mmengine_behaviour(tmp_path):
    hook = AtomicCheckpointHook(interval=1, out_dir='s3://bucket/ckpts',
                                backend_args=dict(backend='local'))
    assert hook.backend_args == dict(backend='local')  # explicit: left alone
